//! Writing float32 matrices as NumPy `.npy` files (format version 1.0), streamed: rows are
//! written as they come and the shape in the header is patched when the writer finishes, so a
//! file of any length is written in constant memory.

use std::io::{Seek, SeekFrom, Write};

/// Header bytes reserved (magic + version + length + dict, padded): room for any shape.
const HEADER_LEN: usize = 128;

fn header(rows: usize, cols: usize) -> Vec<u8> {
    let mut dict =
        format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    // magic (6) + version (2) + header length (2) + dict + '\\n' = HEADER_LEN (a multiple of 64).
    dict.push_str(&" ".repeat(HEADER_LEN - 10 - 1 - dict.len()));
    dict.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out
}

/// A `.npy` writer for a `[rows, cols]` float32 matrix whose row count is known at the end.
pub struct NpyWriter<W: Write + Seek> {
    inner: W,
    cols: usize,
    rows: usize,
}

impl<W: Write + Seek> NpyWriter<W> {
    /// Starts the file with a placeholder header.
    pub fn new(mut inner: W, cols: usize) -> std::io::Result<Self> {
        inner.write_all(&header(0, cols))?;
        Ok(NpyWriter {
            inner,
            cols,
            rows: 0,
        })
    }

    /// Appends one row (`cols` floats).
    pub fn write_row(&mut self, row: &[f32]) -> std::io::Result<()> {
        if row.len() != self.cols {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("row of {} floats in a {}-column .npy", row.len(), self.cols),
            ));
        }
        let bytes: Vec<u8> = row.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.inner.write_all(&bytes)?;
        self.rows += 1;
        Ok(())
    }

    /// Rewrites the header with the final row count and flushes.
    pub fn finish(mut self) -> std::io::Result<usize> {
        self.inner.seek(SeekFrom::Start(0))?;
        self.inner.write_all(&header(self.rows, self.cols))?;
        self.inner.seek(SeekFrom::End(0))?;
        self.inner.flush()?;
        Ok(self.rows)
    }
}

/// Writes `rows` vectors of `cols` floats as a complete `.npy` file.
pub fn write_f32_matrix<W: Write + Seek>(
    w: W,
    rows: &[Vec<f32>],
    cols: usize,
) -> std::io::Result<()> {
    let mut npy = NpyWriter::new(w, cols)?;
    for r in rows {
        npy.write_row(r)?;
    }
    npy.finish().map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_aligned_and_holds_the_shape() {
        let mut buf = std::io::Cursor::new(Vec::new());
        write_f32_matrix(
            &mut buf,
            &[vec![1.0, 2.0], vec![3.0, 4.0], vec![5.0, 6.0]],
            2,
        )
        .unwrap();
        let bytes = buf.into_inner();
        assert_eq!(bytes.len(), HEADER_LEN + 6 * 4);
        let dict = std::str::from_utf8(&bytes[10..HEADER_LEN]).unwrap();
        assert!(dict.contains("'shape': (3, 2)"), "{dict}");
        assert!(dict.ends_with('\n'));
        assert_eq!(
            f32::from_le_bytes(bytes[HEADER_LEN..HEADER_LEN + 4].try_into().unwrap()),
            1.0
        );
    }

    #[test]
    fn huge_shapes_fit_the_reserved_header() {
        assert_eq!(header(usize::MAX, usize::MAX).len(), HEADER_LEN);
    }
}
