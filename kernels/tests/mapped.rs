//! `MappedFile`: an image built on huge pages holds exactly what was written into it, with the
//! same lengths and `MappedF32` ranges as a mapping of the same bytes, for empty, one-byte,
//! odd-sized and multi-huge-page images; a failing fill is an error.

use e5embed_kernels::mapped::{MappedF32, MappedFile};

#[test]
fn an_image_on_huge_pages_matches_a_mapping_of_the_same_bytes() {
    // 5 MiB + 13 bytes spans more than two 2 MiB pages and ends mid-page.
    for (tag, len) in [
        ("empty", 0usize),
        ("one", 1),
        ("odd", 4099),
        ("big", (5 << 20) + 13),
    ] {
        let bytes: Vec<u8> = (0..len)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8)
            .collect();
        let path = std::env::temp_dir().join(format!(
            "e5embed-kernels-mapped-{}-{tag}.bin",
            std::process::id()
        ));
        std::fs::write(&path, &bytes).unwrap();
        let mapped = MappedFile::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let image = MappedFile::build_on_huge_pages(len, |buf| {
            assert_eq!(buf.len(), len, "{tag}");
            assert!(buf.iter().all(|&b| b == 0), "{tag}: not zeroed");
            buf.copy_from_slice(&bytes);
            Ok(())
        })
        .unwrap();
        assert_eq!(image.len(), len, "{tag}");
        assert_eq!(image.is_empty(), len == 0, "{tag}");
        assert_eq!(image.bytes(), &bytes[..], "{tag}");
        assert_eq!(mapped.bytes(), image.bytes(), "{tag}");
        if len >= 64 + 16 * 4 {
            // A 64-byte aligned f32 range reads the same floats from both.
            let a = MappedF32::new(&mapped, 64, 16, 64).unwrap();
            let b = MappedF32::new(&image, 64, 16, 64).unwrap();
            assert_eq!(a.as_slice(), b.as_slice(), "{tag}");
        }
        // Out of bounds is an error, not a panic.
        assert!(MappedF32::new(&image, len, 1, 4).is_err(), "{tag}");
    }
}

#[test]
fn a_failing_fill_is_an_error() {
    let err = MappedFile::build_on_huge_pages(4096, |_| Err(std::io::Error::other("fill failed")))
        .unwrap_err();
    assert_eq!(err.to_string(), "fill failed");
}
