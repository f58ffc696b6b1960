//! The scalar emulator of the tile instructions: tile registers as byte arrays, the
//! SDM semantics (module docs of `tiles/mod.rs`), every config, shape and bounds rule
//! checked (a [`TileFault`] where the hardware would fault).

use super::{check_access, check_dp, TileConfig, TileFault, TileUnit, Tmm, MAX_COLSB, MAX_ROWS};
use crate::bgemm::reference::{dot_step, flush};

type Tile = [[u8; MAX_COLSB]; MAX_ROWS];

/// The emulated tile unit of one thread: 8 tiles of 16 x 64 bytes and the config.
#[derive(Clone)]
pub struct Emulator {
    cfg: Option<TileConfig>,
    tiles: Box<[Tile; 8]>,
}

impl Default for Emulator {
    fn default() -> Self {
        Emulator::new()
    }
}

impl std::fmt::Debug for Emulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator").field("cfg", &self.cfg).finish()
    }
}

impl Emulator {
    /// Unconfigured (the init state: every tile instruction but `ldtilecfg` faults).
    pub fn new() -> Emulator {
        Emulator {
            cfg: None,
            tiles: Box::new([[[0; MAX_COLSB]; MAX_ROWS]; 8]),
        }
    }

    /// The current config, if any.
    pub fn config(&self) -> Option<&TileConfig> {
        self.cfg.as_ref()
    }

    /// The raw 16 x 64 bytes of tile `t` (tests: rows / bytes past the configured shape
    /// read as the zeros the instructions leave there).
    pub fn tile_bytes(&self, t: usize) -> &[[u8; MAX_COLSB]; MAX_ROWS] {
        &self.tiles[t]
    }

    fn dword(tile: &Tile, r: usize, d: usize) -> u32 {
        u32::from_le_bytes(tile[r][4 * d..4 * d + 4].try_into().unwrap())
    }

    /// `write_row_and_zero` + `zero_upper_rows`: C's rows of `cols` dwords from `out`,
    /// the rest of the tile zero.
    fn write_c(&mut self, c: usize, rows: usize, cols: usize, out: &[u32]) {
        let t = &mut self.tiles[c];
        *t = [[0; MAX_COLSB]; MAX_ROWS];
        for r in 0..rows {
            for n in 0..cols {
                t[r][4 * n..4 * n + 4].copy_from_slice(&out[r * cols + n].to_le_bytes());
            }
        }
    }
}

impl TileUnit for Emulator {
    fn name(&self) -> &'static str {
        "emulator"
    }

    fn configure(&mut self, cfg: &TileConfig) -> Result<(), TileFault> {
        cfg.validate()?;
        self.cfg = Some(*cfg);
        *self.tiles = [[[0; MAX_COLSB]; MAX_ROWS]; 8];
        Ok(())
    }

    fn zero<const T: usize>(&mut self) -> Result<(), TileFault> {
        let () = Tmm::<T>::OK;
        super::check_zero(self.cfg.as_ref(), T)?;
        self.tiles[T] = [[0; MAX_COLSB]; MAX_ROWS];
        Ok(())
    }

    fn load<const T: usize>(
        &mut self,
        src: &[u8],
        offset: usize,
        stride: usize,
    ) -> Result<(), TileFault> {
        let () = Tmm::<T>::OK;
        let (rows, colsb) =
            check_access(self.cfg.as_ref(), T, "tileloadd", src.len(), offset, stride)?;
        let t = &mut self.tiles[T];
        *t = [[0; MAX_COLSB]; MAX_ROWS];
        for r in 0..rows {
            let at = offset + r * stride;
            t[r][..colsb].copy_from_slice(&src[at..at + colsb]);
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
        let (rows, colsb) = check_access(
            self.cfg.as_ref(),
            T,
            "tilestored",
            dst.len(),
            offset,
            stride,
        )?;
        let t = &self.tiles[T];
        for r in 0..rows {
            let at = offset + r * stride;
            dst[at..at + colsb].copy_from_slice(&t[r][..colsb]);
        }
        Ok(())
    }

    fn dpbusd<const C: usize, const A: usize, const B: usize>(&mut self) -> Result<(), TileFault> {
        let ((), (), ()) = (Tmm::<C>::OK, Tmm::<A>::OK, Tmm::<B>::OK);
        let (rows, cols, kd) = check_dp(self.cfg.as_ref(), "tdpbusd", C, A, B)?;
        let (a, b, c) = (&self.tiles[A], &self.tiles[B], &self.tiles[C]);
        let mut out = vec![0u32; rows * cols];
        for m in 0..rows {
            for n in 0..cols {
                let mut acc = Self::dword(c, m, n) as i32;
                for k in 0..kd {
                    // The four products of one dword pair, exact in i32, then one
                    // wrapping add to the accumulator (no saturation).
                    let mut s = 0i32;
                    for t in 0..4 {
                        s += a[m][4 * k + t] as i32 * b[k][4 * n + t] as i8 as i32;
                    }
                    acc = acc.wrapping_add(s);
                }
                out[m * cols + n] = acc as u32;
            }
        }
        self.write_c(C, rows, cols, &out);
        Ok(())
    }

    fn dpbf16ps<const C: usize, const A: usize, const B: usize>(
        &mut self,
    ) -> Result<(), TileFault> {
        let ((), (), ()) = (Tmm::<C>::OK, Tmm::<A>::OK, Tmm::<B>::OK);
        let (rows, cols, kd) = check_dp(self.cfg.as_ref(), "tdpbf16ps", C, A, B)?;
        let (a, b, c) = (&self.tiles[A], &self.tiles[B], &self.tiles[C]);
        let half = |t: &Tile, r: usize, d: usize, h: usize| {
            u16::from_le_bytes([t[r][4 * d + 2 * h], t[r][4 * d + 2 * h + 1]])
        };
        let mut out = vec![0u32; rows * cols];
        for m in 0..rows {
            for n in 0..cols {
                // The SDM's temp1[2n], temp1[2n+1]: even and odd chains, each step one
                // FMA-rounding (DAZ / FTZ / RNE).
                let (mut even, mut odd) = (0f32, 0f32);
                for k in 0..kd {
                    even = dot_step(even, half(a, m, k, 0), half(b, k, n, 0));
                    odd = dot_step(odd, half(a, m, k, 1), half(b, k, n, 1));
                }
                let tmp = flush(flush(even) + flush(odd));
                let acc = f32::from_bits(Self::dword(c, m, n));
                out[m * cols + n] = flush(flush(acc) + tmp).to_bits();
            }
        }
        self.write_c(C, rows, cols, &out);
        Ok(())
    }

    fn release(&mut self) {
        self.cfg = None;
        *self.tiles = [[[0; MAX_COLSB]; MAX_ROWS]; 8];
    }
}
