//! 64-byte aligned f32 buffers (packed weights, per-thread scratch).
//!
//! Packed panels start on a cache line so that every vector load of a B micro-panel
//! row (NR floats = 32/64/128 bytes) stays within one or two whole lines.

/// One cache line of f32. `repr(C)` array of f32: a `[Line]` is a valid `[f32]`.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([f32; 16]);

/// A zero-initialised, 64-byte aligned, growable f32 buffer.
#[derive(Clone, Default)]
pub(crate) struct AlignedBuf {
    lines: Vec<Line>,
    len: usize,
}

impl AlignedBuf {
    pub(crate) const fn new() -> AlignedBuf {
        AlignedBuf {
            lines: Vec::new(),
            len: 0,
        }
    }

    /// A buffer of `len` zeros.
    pub(crate) fn zeroed(len: usize) -> AlignedBuf {
        let mut b = AlignedBuf::new();
        b.resize_zeroed(len);
        b
    }

    /// Sets the length to `len` and zero-fills the whole buffer.
    pub(crate) fn resize_zeroed(&mut self, len: usize) {
        let lines = len.div_ceil(16);
        // A fresh allocation (huge pages for big ones: packed weights, large scratch).
        self.lines = crate::hugepage::filled_vec(lines, Line([0.0; 16]));
        self.len = len;
    }

    /// Makes the length at least `len` (never shrinks); contents are unspecified
    /// (but initialised) afterwards. Used for scratch that is fully overwritten.
    pub(crate) fn ensure_len(&mut self, len: usize) {
        if self.len < len {
            self.resize_zeroed(len);
        }
    }

    pub(crate) fn as_slice(&self) -> &[f32] {
        // SAFETY: `Line` is `repr(C)` around `[f32; 16]`, so `lines` is
        // `16 * lines.len() >= len` contiguous, initialised f32.
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr().cast::<f32>(), self.len) }
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [f32] {
        // SAFETY: as in `as_slice`, with unique access through `&mut self`.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr().cast::<f32>(), self.len) }
    }
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AlignedBuf(len={})", self.len)
    }
}

/// A packed weight buffer: owned (packed at load), or a 64-byte aligned range of a mapped
/// file holding the same floats (a packed-weights cache, see [`crate::mapped`]). Read-only.
#[derive(Clone, Debug)]
pub(crate) enum WeightBuf {
    Owned(AlignedBuf),
    Mapped(crate::mapped::MappedF32),
}

/// The alignment a mapped weight buffer must have (a cache line, as [`AlignedBuf`]'s).
pub(crate) const WEIGHT_ALIGN: usize = 64;

impl WeightBuf {
    pub(crate) fn as_slice(&self) -> &[f32] {
        match self {
            WeightBuf::Owned(b) => b.as_slice(),
            WeightBuf::Mapped(m) => m.as_slice(),
        }
    }

    /// A mapped range as a weight buffer of exactly `len` floats: a shape error when its
    /// length differs or it is not [`WEIGHT_ALIGN`]-aligned.
    pub(crate) fn mapped(
        what: &str,
        m: crate::mapped::MappedF32,
        len: usize,
    ) -> Result<WeightBuf, crate::KernelError> {
        if m.len() != len {
            return crate::shape_err!(
                "{what}: the mapped buffer holds {} floats, the layout needs {len}",
                m.len()
            );
        }
        if !(m.as_slice().as_ptr() as usize).is_multiple_of(WEIGHT_ALIGN) {
            return crate::shape_err!(
                "{what}: the mapped buffer is not {WEIGHT_ALIGN}-byte aligned"
            );
        }
        Ok(WeightBuf::Mapped(m))
    }

    /// The buffer's bytes (for writing it to a file).
    pub(crate) fn bytes(&self) -> &[u8] {
        crate::mapped::bytes_of_f32(self.as_slice())
    }
}
