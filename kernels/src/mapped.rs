//! Files memory-mapped read-only, and f32 ranges of them: what lets packed weights and
//! embedding tables be used where they lie in a file (the engine's packed-weights cache, the
//! f32 embedding table of `model.safetensors`) instead of being read and copied.
//!
//! The one `mmap` of the project (the engine crate has no `unsafe`). What a mapping assumes,
//! and why it holds here:
//! - The mapping is private and read-only: nothing in the process writes through it.
//! - Its address and length never change while the [`MappedFile`] lives (`memmap2::Mmap`
//!   unmaps only on drop), so a range checked once at construction stays in bounds and
//!   aligned: [`MappedF32`] holds an `Arc` of the file and derives its slice from the map on
//!   every access.
//! - Any bit pattern is a valid `f32` (and the packed int8 / bf16 buffers, viewed as f32 by
//!   the matrices, hold `i8` / `u16`, which have no invalid values either): what the bytes
//!   say can change numbers, never memory safety. The matrices built over a range check its
//!   length against their shape before any kernel reads it.
//! - The files are not modified in place while mapped. The engine's own cache files are only
//!   ever replaced by a rename (a mapping keeps the old inode), never rewritten; a model file
//!   that another program truncates or rewrites in place while it is mapped is outside that
//!   contract (a truncation raises `SIGBUS`, as with every mmap-based loader: safetensors,
//!   candle, llama.cpp). The engine's `weight_cache(false)` / `--no-weight-cache` copies
//!   everything out instead.

use std::path::Path;
use std::sync::Arc;

use crate::{shape_err, KernelError};

/// A whole file mapped read-only (private).
pub struct MappedFile {
    map: memmap2::Mmap,
    /// The bytes that are the file's (a map of an empty file holds one extra byte).
    len: usize,
}

impl MappedFile {
    /// Maps `path` read-only; pages are read in on first touch.
    pub fn open(path: &Path) -> std::io::Result<Arc<MappedFile>> {
        Self::map(path, false)
    }

    /// Maps `path` read-only and faults every page in at once (`MAP_POPULATE` on Linux: one
    /// call instead of a fault per 64 KiB at first touch). For files that are read whole.
    pub fn open_populated(path: &Path) -> std::io::Result<Arc<MappedFile>> {
        Self::map(path, true)
    }

    fn map(path: &Path, populate: bool) -> std::io::Result<Arc<MappedFile>> {
        let file = std::fs::File::open(path)?;
        let mut opts = memmap2::MmapOptions::new();
        if populate {
            opts.populate();
        }
        // SAFETY: a private read-only mapping, only ever read; see the module docs for the
        // files mapped and why they are not modified in place while mapped.
        let map = unsafe { opts.map(&file) }?;
        let len = map.len();
        Ok(Arc::new(MappedFile { map, len }))
    }

    /// `len` bytes of anonymous memory advised onto transparent huge pages (Linux; elsewhere,
    /// or where the kernel refuses, ordinary pages), zeroed, filled by `fill`, then sealed
    /// read-only: an image built in memory that the engine uses as it uses a mapped file's
    /// (the packed weights of a model packed at load: 2 MiB pages, so a forward that streams
    /// every weight touches ~45 TLB entries instead of ~22,000 at e5-small-v2 f32).
    pub fn build_on_huge_pages(
        len: usize,
        fill: impl FnOnce(&mut [u8]) -> std::io::Result<()>,
    ) -> std::io::Result<Arc<MappedFile>> {
        // An anonymous map cannot be empty; an empty image is a one-byte map cut to none.
        let mut anon = memmap2::MmapOptions::new().len(len.max(1)).map_anon()?;
        #[cfg(target_os = "linux")]
        {
            // Best effort: only how the kernel backs the range changes, never its contents.
            let _ = anon.advise(memmap2::Advice::HugePage);
        }
        fill(&mut anon[..len])?;
        let map = anon.make_read_only()?;
        Ok(Arc::new(MappedFile { map, len }))
    }

    /// The file's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.map[..self.len]
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl std::fmt::Debug for MappedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MappedFile({} bytes)", self.len)
    }
}

/// `len` f32 (little-endian, as files store them) at byte `offset` of a mapped file, checked
/// once for bounds and alignment; cheap to clone (the file is shared).
#[derive(Clone)]
pub struct MappedF32 {
    file: Arc<MappedFile>,
    offset: usize,
    len: usize,
}

impl MappedF32 {
    /// The range `[offset, offset + 4 · len)` of `file`, whose address must be a multiple of
    /// `align` (a power of two, at least 4: f32's alignment; the packed matrices ask 64). A
    /// range out of bounds or misaligned is a shape error; so is any range on a big-endian
    /// target (the files are little-endian).
    pub fn new(
        file: &Arc<MappedFile>,
        offset: usize,
        len: usize,
        align: usize,
    ) -> Result<MappedF32, KernelError> {
        if cfg!(target_endian = "big") {
            return shape_err!("MappedF32: mapped f32 need a little-endian target");
        }
        if !align.is_power_of_two() || align < std::mem::align_of::<f32>() {
            return shape_err!("MappedF32: alignment {align} is not a power of two >= 4");
        }
        let bytes = crate::checked_len("MappedF32", &[len, 4])?;
        let end = offset.checked_add(bytes);
        if end.is_none_or(|e| e > file.len()) {
            return shape_err!(
                "MappedF32: {bytes} bytes at offset {offset} exceed the {}-byte file",
                file.len()
            );
        }
        let addr = file.bytes().as_ptr() as usize + offset;
        if !addr.is_multiple_of(align) {
            return shape_err!("MappedF32: offset {offset} is not {align}-byte aligned in memory");
        }
        Ok(MappedF32 {
            file: Arc::clone(file),
            offset,
            len,
        })
    }

    /// The floats.
    pub fn as_slice(&self) -> &[f32] {
        let bytes = &self.file.bytes()[self.offset..self.offset + self.len * 4];
        // SAFETY: `bytes` is `4 · len` initialised bytes inside the live map (checked at
        // construction; the map neither moves nor shrinks while `self.file` holds it), its
        // address is a multiple of `align >= 4` (checked at construction, the same address
        // since), and every bit pattern is a valid f32.
        unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<f32>(), self.len) }
    }

    /// Reads one value per 4 KiB page, so every page of the range is resident from then on
    /// (for a range what [`MappedFile::open_populated`] does for a whole file at map time).
    pub fn read_in(&self) {
        let mut acc = 0u32;
        for x in self.as_slice().iter().step_by(4096 / 4) {
            acc ^= x.to_bits();
        }
        std::hint::black_box(acc);
    }

    /// Number of floats.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The range's byte offset in its file.
    pub fn offset(&self) -> usize {
        self.offset
    }
}

impl std::fmt::Debug for MappedF32 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MappedF32({} floats at {})", self.len, self.offset)
    }
}

/// The bytes of an f32 slice (native byte order: little-endian on every target the engine
/// runs), for writing them to a file.
pub fn bytes_of_f32(v: &[f32]) -> &[u8] {
    // SAFETY: `4 · len` initialised bytes of the borrowed slice; u8 has alignment 1 and no
    // invalid values.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), std::mem::size_of_val(v)) }
}

/// The bytes of an i32 slice (as [`bytes_of_f32`]).
pub fn bytes_of_i32(v: &[i32]) -> &[u8] {
    // SAFETY: as in `bytes_of_f32`.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), std::mem::size_of_val(v)) }
}
