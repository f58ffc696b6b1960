//! The hardware tile unit: the AMX instructions through `asm!` (LLVM's assembler takes
//! the AMX mnemonics in Intel syntax, checked with rustc 1.95; tile numbers are `const`
//! operands). Built only through [`Hardware::new`], which requires
//! [`crate::amx::status`] = Available; every instruction is preceded by the same
//! checks as the emulator's, so none of them can fault.

use super::{check_access, check_dp, TileConfig, TileFault, TileUnit, Tmm};
use std::arch::asm;
use std::marker::PhantomData;

/// The 64-byte `ldtilecfg` operand, 64-byte aligned.
#[repr(C, align(64))]
struct CfgBytes([u8; 64]);

/// This thread's AMX tile unit. Not `Send`: the tile state belongs to the thread that
/// configured it. Dropping it releases the tiles (`tilerelease`).
pub struct Hardware {
    cfg: Option<TileConfig>,
    int8: bool,
    bf16: bool,
    _thread: PhantomData<*const ()>,
}

impl std::fmt::Debug for Hardware {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hardware")
            .field("cfg", &self.cfg)
            .field("int8", &self.int8)
            .field("bf16", &self.bf16)
            .finish()
    }
}

impl Hardware {
    /// The tile unit, or `Err` with why not ([`crate::amx::AmxStatus`]'s `Display`
    /// says it in words).
    pub fn new() -> Result<Hardware, crate::amx::AmxStatus> {
        match crate::amx::status() {
            crate::amx::AmxStatus::Available { int8, bf16 } => Ok(Hardware {
                cfg: None,
                int8,
                bf16,
                _thread: PhantomData,
            }),
            other => Err(other),
        }
    }
}

impl Drop for Hardware {
    fn drop(&mut self) {
        self.release();
    }
}

impl TileUnit for Hardware {
    fn name(&self) -> &'static str {
        "hardware"
    }

    fn configure(&mut self, cfg: &TileConfig) -> Result<(), TileFault> {
        cfg.validate()?;
        let bytes = CfgBytes(cfg.to_bytes());
        // SAFETY: AMX is available (only `new` builds a Hardware) and the config is a
        // valid palette-1 one (validated above), so `ldtilecfg` cannot fault; it reads
        // the 64 bytes of `bytes`.
        unsafe {
            asm!("ldtilecfg [{p}]", p = in(reg) bytes.0.as_ptr(),
                 options(nostack, readonly, preserves_flags));
        }
        self.cfg = Some(*cfg);
        Ok(())
    }

    fn zero<const T: usize>(&mut self) -> Result<(), TileFault> {
        let () = Tmm::<T>::OK;
        super::check_zero(self.cfg.as_ref(), T)?;
        // SAFETY: AMX available, tile T configured (checked): no fault, no memory.
        unsafe {
            asm!("tilezero tmm{t}", t = const T, options(nostack, nomem, preserves_flags));
        }
        Ok(())
    }

    fn load<const T: usize>(
        &mut self,
        src: &[u8],
        offset: usize,
        stride: usize,
    ) -> Result<(), TileFault> {
        let () = Tmm::<T>::OK;
        check_access(self.cfg.as_ref(), T, "tileloadd", src.len(), offset, stride)?;
        // SAFETY: AMX available, tile T configured (checked); every row read,
        // `offset + r·stride .. + colsb` for r < rows, lies inside `src` (checked), so
        // `offset < src.len()` and the pointer arithmetic stays in bounds.
        unsafe {
            let p = src.as_ptr().add(offset);
            asm!("tileloadd tmm{t}, [{p} + {s}*1]", t = const T, p = in(reg) p,
                 s = in(reg) stride, options(nostack, readonly, preserves_flags));
        }
        Ok(())
    }

    fn store<const T: usize>(
        &mut self,
        dst: &mut [u8],
        offset: usize,
        stride: usize,
    ) -> Result<(), TileFault> {
        let () = Tmm::<T>::OK;
        check_access(
            self.cfg.as_ref(),
            T,
            "tilestored",
            dst.len(),
            offset,
            stride,
        )?;
        // SAFETY: as `load`; `dst` is exclusively borrowed and every byte written lies
        // inside it.
        unsafe {
            let p = dst.as_mut_ptr().add(offset);
            asm!("tilestored [{p} + {s}*1], tmm{t}", t = const T, p = in(reg) p,
                 s = in(reg) stride, options(nostack, preserves_flags));
        }
        Ok(())
    }

    fn dpbusd<const C: usize, const A: usize, const B: usize>(&mut self) -> Result<(), TileFault> {
        let ((), (), ()) = (Tmm::<C>::OK, Tmm::<A>::OK, Tmm::<B>::OK);
        if !self.int8 {
            return Err(TileFault::Unsupported("tdpbusd: no AMX-INT8"));
        }
        check_dp(self.cfg.as_ref(), "tdpbusd", C, A, B)?;
        // SAFETY: AMX-INT8 available; the AMX-E4 shape rules hold (checked): no fault,
        // registers only.
        unsafe {
            asm!("tdpbusd tmm{c}, tmm{a}, tmm{b}", c = const C, a = const A, b = const B,
                 options(nostack, nomem, preserves_flags));
        }
        Ok(())
    }

    fn dpbf16ps<const C: usize, const A: usize, const B: usize>(
        &mut self,
    ) -> Result<(), TileFault> {
        let ((), (), ()) = (Tmm::<C>::OK, Tmm::<A>::OK, Tmm::<B>::OK);
        if !self.bf16 {
            return Err(TileFault::Unsupported("tdpbf16ps: no AMX-BF16"));
        }
        check_dp(self.cfg.as_ref(), "tdpbf16ps", C, A, B)?;
        // SAFETY: AMX-BF16 available; shapes checked as for `dpbusd`.
        unsafe {
            asm!("tdpbf16ps tmm{c}, tmm{a}, tmm{b}", c = const C, a = const A, b = const B,
                 options(nostack, nomem, preserves_flags));
        }
        Ok(())
    }

    fn release(&mut self) {
        if self.cfg.take().is_some() {
            // SAFETY: AMX available; `tilerelease` only resets this thread's tile state.
            unsafe { asm!("tilerelease", options(nostack, nomem, preserves_flags)) };
        }
    }
}
