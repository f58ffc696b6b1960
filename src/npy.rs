//! Writing float32 matrices as NumPy `.npy` files (format version 1.0).

use std::io::Write;

/// Writes `rows` vectors of `cols` floats as a little-endian float32 `.npy` array.
pub fn write_f32_matrix<W: Write>(mut w: W, rows: &[Vec<f32>], cols: usize) -> std::io::Result<()> {
    let mut header = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': ({}, {}), }}",
        rows.len(),
        cols
    );
    // magic (6) + version (2) + header length (2) + header + '\n' must be a multiple of 64.
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    header.push('\n');
    w.write_all(b"\x93NUMPY\x01\x00")?;
    w.write_all(&(header.len() as u16).to_le_bytes())?;
    w.write_all(header.as_bytes())?;
    for r in rows {
        debug_assert_eq!(r.len(), cols);
        for &v in r {
            w.write_all(&v.to_le_bytes())?;
        }
    }
    w.flush()
}
