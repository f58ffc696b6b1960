//! [`QuantizedMatrix`]: int8 weights quantized per output channel and packed once for one
//! [`QIsa`]'s microkernel (scheme and layout in the module docs of [`crate::qgemm`]).

use super::reference::InputMode;
use super::{padded_k, quantize_rows_impl, validate_mul, validate_offset, QIsa, QK_MAX};
use crate::buf::{AlignedBuf, WeightBuf};
use crate::{shape_err, KernelError};

/// Bytes per column of a weight panel for `isa`: `kp` rounded up to the layout's k-group
/// (8 for `smmla`, else 4: `kp` itself), or on the AMX layout `kp` rounded up to a whole
/// 64-byte tile (`qgemm/amx.rs`).
fn panel_k(isa: QIsa, kp: usize) -> usize {
    if isa.kind() == super::QIsaKind::Amx {
        super::amx::panel_k(kp)
    } else {
        let kg = isa.kind().k_group();
        kp.div_ceil(kg) * kg
    }
}

/// What a [`QuantizedMatrix`] keeps beside its packed weight bytes
/// ([`QuantizedMatrix::packed_extras`], [`QuantizedMatrix::from_packed`]).
#[derive(Debug, Clone, PartialEq)]
pub struct PackedExtras {
    /// `s_w` padded to whole panels (`[npanels · NR]`, zero past `n`).
    pub scales: Vec<f32>,
    /// The `+128` compensation per column (`[npanels · NR]`; zeros in unsigned input mode).
    pub comp: Vec<i32>,
    /// SmoothQuant input multipliers `[k]` (finite, positive), if any.
    pub input_mul: Option<Vec<f32>>,
    /// The unsigned input mode's offset (finite, `>= 0`), if that mode is on.
    pub input_offset: Option<f32>,
}

/// Weights quantized (symmetric int8 per output channel) and packed once for one
/// [`QIsa`]'s microkernel (layout in the module docs). Immutable, `Send + Sync`.
#[derive(Clone)]
pub struct QuantizedMatrix {
    pub(super) isa: QIsa,
    pub(super) n: usize,
    pub(super) k: usize,
    pub(super) kp: usize,
    /// Bytes per column in a panel: `kp` rounded up to the layout's k-group (8 for
    /// `smmla`, else `kp` itself), or for the AMX layout to a whole 64-byte tile (zero
    /// bytes past `kp`). Panel `p` starts at byte `p · pk · NR`.
    pub(super) pk: usize,
    pub(super) nr: usize,
    pub(super) qmax: i32,
    /// `ceil(n / NR)` panels of `[kp / 4][NR][4]` i8 (`[kp8 / 8][NR][8]` for `smmla`),
    /// 64-byte aligned (an f32 buffer viewed as bytes: its length
    /// `npanels · pk · NR` is a multiple of 4); packed here, or mapped from a file that
    /// holds it ([`QuantizedMatrix::from_packed`]).
    pub(super) data: WeightBuf,
    /// `s_w`: `[npanels · NR]`, zero past `n`.
    pub(super) scales: Vec<f32>,
    /// `comp[j] = 128 · Σ_k Wq[j, k]`: `[npanels · NR]`, zero past `n`.
    pub(super) comp: Vec<i32>,
    /// `128 · Σ_k Wq[j, k]` whatever the input mode (`comp` is 0 in unsigned mode):
    /// the aarch64 `sdot` kernel adds it back (`qgemm/aarch64.rs`).
    #[cfg(target_arch = "aarch64")]
    pub(super) colsum128: Vec<i32>,
    /// SmoothQuant: `[k]` per-input-channel multipliers `1 / s` applied to the
    /// activations before they are quantized ([`QuantizedMatrix::quantize_input`]),
    /// when the weights were quantized from `W · diag(s)`.
    pub(super) input_mul: Option<Vec<f32>>,
    /// Unsigned input mode ([`QuantizedMatrix::with_unsigned_input`]): the offset `c`
    /// added to every input element (inputs are `>= -c`); `comp` is then 0.
    pub(super) input_offset: Option<f32>,
}

/// `round_ties_even(v)` clamped to `[-qf, qf]`, as an integer (`qf` <= 127): the clamp first
/// (NaN, which `as i32` made 0, becomes 0), then the `1.5 · 2^23` addition, which rounds a
/// float of magnitude below `2^22` to an integer in f32's default round-to-nearest-even mode
/// and leaves the sum in `[2^23, 2^24)`, where the bit pattern is `MAGIC`'s plus the integer.
/// The same result as rounding then clamping for every input; no libm call (`round_ties_even`
/// is `rintf` on the x86-64 baseline, one per weight, most of packing's time) and no
/// saturating cast, so the loop vectorizes.
#[inline]
fn round_clamped(v: f32, qf: f32) -> i32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 · 2^23
    let c = v.clamp(-qf, qf);
    let c = if c.is_nan() { 0.0 } else { c };
    (c + MAGIC).to_bits() as i32 - MAGIC.to_bits() as i32
}

impl QuantizedMatrix {
    /// Quantizes `w: [n, k]` (PyTorch Linear layout) per output channel with the
    /// weight range of `isa` ([`QIsaKind::weight_qmax`]) and packs it for `isa`.
    pub fn quantize(
        isa: QIsa,
        w: &[f32],
        n: usize,
        k: usize,
    ) -> Result<QuantizedMatrix, KernelError> {
        Self::check_dims("QuantizedMatrix::quantize", isa, n, k)?;
        if w.len() != crate::checked_len("QuantizedMatrix::quantize", &[n, k])? {
            return shape_err!(
                "QuantizedMatrix::quantize: w has {} floats, expected n*k = {n}*{k}",
                w.len()
            );
        }
        if let Some(i) = crate::first_non_finite(w) {
            return shape_err!("QuantizedMatrix::quantize: w[{i}] = {} is not finite", w[i]);
        }
        let qmax = isa.kind().weight_qmax();
        let qf = qmax as f32;
        let mut wq = vec![0i8; n * k];
        let mut scales = vec![0f32; n];
        for j in 0..n {
            let row = &w[j * k..(j + 1) * k];
            // |x|'s bits order as |x| does for finite values (checked above): an integer
            // max, which vectorizes where the float max (NaN rules) does not.
            let amax = f32::from_bits(
                row.iter()
                    .fold(0u32, |m, x| m.max(x.to_bits() & 0x7fff_ffff)),
            );
            if amax == 0.0 {
                continue;
            }
            scales[j] = amax / qf;
            let inv = qf / amax;
            for (d, &x) in wq[j * k..(j + 1) * k].iter_mut().zip(row) {
                *d = round_clamped(x * inv, qf) as i8;
            }
        }
        Self::pack(isa, &wq, &scales, n, k, qmax)
    }

    /// Packs already quantized weights `wq: [n, k]` with their per-channel scales
    /// `scales: [n]` (e.g. from a pre-quantized model file). Every `|wq|` must be at
    /// most `isa`'s [`QIsaKind::weight_qmax`] (64 on Avx2, else 127: -128 is refused).
    pub fn from_quantized(
        isa: QIsa,
        wq: &[i8],
        scales: &[f32],
        n: usize,
        k: usize,
    ) -> Result<QuantizedMatrix, KernelError> {
        Self::check_dims("QuantizedMatrix::from_quantized", isa, n, k)?;
        if wq.len() != crate::checked_len("QuantizedMatrix::from_quantized", &[n, k])?
            || scales.len() != n
        {
            return shape_err!(
                "QuantizedMatrix::from_quantized: wq has {} bytes and scales {} floats, \
                 expected n*k = {n}*{k} and n",
                wq.len(),
                scales.len()
            );
        }
        let qmax = isa.kind().weight_qmax();
        if let Some(i) = wq.iter().position(|&x| (x as i32).abs() > qmax) {
            return shape_err!(
                "QuantizedMatrix::from_quantized: wq[{i}] = {} is outside [-{qmax}, {qmax}] \
                 ({} path)",
                wq[i],
                isa.name()
            );
        }
        Self::pack(isa, wq, scales, n, k, qmax)
    }

    pub(super) fn check_dims(what: &str, isa: QIsa, n: usize, k: usize) -> Result<(), KernelError> {
        if k > QK_MAX {
            return shape_err!("{what}: k = {k} exceeds QK_MAX = {QK_MAX} (i32 accumulators)");
        }
        let nr = isa.tile().1;
        crate::checked_len(what, &[n.div_ceil(nr), nr, panel_k(isa, padded_k(k))])?;
        Ok(())
    }

    /// Packs `wq` into the panel layout (no range check: the callers check).
    pub(super) fn pack(
        isa: QIsa,
        wq: &[i8],
        scales: &[f32],
        n: usize,
        k: usize,
        qmax: i32,
    ) -> Result<QuantizedMatrix, KernelError> {
        let nr = isa.tile().1;
        let kg = isa.kind().k_group();
        let kp = padded_k(k);
        let pk = panel_k(isa, kp);
        let np = n.div_ceil(nr);
        let bytes = np * nr * pk;
        let mut data = AlignedBuf::zeroed(bytes / 4);
        {
            let s = data.as_mut_slice();
            // SAFETY: the f32 buffer holds `bytes / 4` initialised floats = `bytes`
            // bytes (bytes is a multiple of 4 because pk is); u8/i8 have no
            // invalid values and alignment 1.
            let d: &mut [i8] =
                unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr().cast::<i8>(), bytes) };
            // `W[j, q]` goes to `[panel][q / kg][column][q % kg]`: a row's k-groups are
            // copied whole, the row's offsets worked out once.
            for j in 0..n {
                let base = (j / nr) * pk * nr + (j % nr) * kg;
                crate::scatter_groups(&wq[j * k..(j + 1) * k], kg, d, base, nr * kg);
            }
        }
        let mut sc = vec![0f32; np * nr];
        sc[..n].copy_from_slice(scales);
        let mut comp = vec![0i32; np * nr];
        for j in 0..n {
            // Compensation for the +128 offset of the u8 activations:
            // Σ Aq·Wq = Σ (Aq + 128)·Wq − 128·Σ Wq.
            comp[j] = 128
                * wq[j * k..(j + 1) * k]
                    .iter()
                    .map(|&x| x as i32)
                    .sum::<i32>();
        }
        Ok(QuantizedMatrix {
            isa,
            n,
            k,
            kp,
            pk,
            nr,
            qmax,
            data: WeightBuf::Owned(data),
            scales: sc,
            #[cfg(target_arch = "aarch64")]
            colsum128: comp.clone(),
            comp,
            input_mul: None,
            input_offset: None,
        })
    }

    /// The packed weight panels as bytes (`npanels · pk · NR`, a multiple of 4), for saving
    /// them with [`QuantizedMatrix::packed_scales`], [`QuantizedMatrix::packed_comp`], the
    /// input multipliers and offset: [`QuantizedMatrix::from_packed`] takes them back.
    pub fn packed_bytes(&self) -> &[u8] {
        self.data.bytes()
    }

    /// The vectors kept beside the packed bytes (for saving them with
    /// [`QuantizedMatrix::packed_bytes`]).
    pub fn packed_extras(&self) -> PackedExtras {
        PackedExtras {
            scales: self.scales.clone(),
            comp: self.comp.clone(),
            input_mul: self.input_mul.clone(),
            input_offset: self.input_offset,
        }
    }

    /// A matrix over weights packed earlier for `isa` (the bytes of
    /// [`QuantizedMatrix::packed_bytes`] in a mapped file, e.g. the engine's packed-weights
    /// cache, used in place) with the vectors saved beside them: bitwise the matrix that
    /// [`QuantizedMatrix::quantize`] / [`QuantizedMatrix::from_quantized`] (and
    /// [`QuantizedMatrix::with_input_mul`], [`QuantizedMatrix::with_unsigned_input`]) made.
    /// Lengths are checked against the layout (`data`: `npanels · pk · NR` bytes, 64-byte
    /// aligned; the extras as [`PackedExtras`] says); the contents are taken as saved.
    pub fn from_packed(
        isa: QIsa,
        n: usize,
        k: usize,
        data: crate::mapped::MappedF32,
        extras: PackedExtras,
    ) -> Result<QuantizedMatrix, KernelError> {
        const WHAT: &str = "QuantizedMatrix::from_packed";
        let PackedExtras {
            scales,
            comp,
            input_mul,
            input_offset,
        } = extras;
        Self::check_dims(WHAT, isa, n, k)?;
        let nr = isa.tile().1;
        let kp = padded_k(k);
        let pk = panel_k(isa, kp);
        let np = n.div_ceil(nr);
        let bytes = np * nr * pk;
        let data = WeightBuf::mapped(WHAT, data, bytes / 4)?;
        if scales.len() != np * nr || comp.len() != np * nr {
            return shape_err!(
                "{WHAT}: scales has {} and comp {} values, the layout needs {}",
                scales.len(),
                comp.len(),
                np * nr
            );
        }
        if let Some(mul) = &input_mul {
            validate_mul(WHAT, mul, k)?;
        }
        if let Some(offset) = input_offset {
            validate_offset(WHAT, offset)?;
        }
        #[allow(unused_mut)]
        let mut m = QuantizedMatrix {
            isa,
            n,
            k,
            kp,
            pk,
            nr,
            qmax: isa.kind().weight_qmax(),
            data,
            scales,
            #[cfg(target_arch = "aarch64")]
            colsum128: Vec::new(),
            comp,
            input_mul,
            input_offset,
        };
        #[cfg(target_arch = "aarch64")]
        {
            let mut c: Vec<i32> = m.colsums().iter().map(|&s| 128 * s).collect();
            c.resize(np * nr, 0);
            m.colsum128 = c;
        }
        Ok(m)
    }

    /// Attaches SmoothQuant input multipliers `mul: [k]` (`1 / s` when these weights
    /// were quantized from `W · diag(s)`): [`QuantizedMatrix::quantize_input`] then
    /// quantizes `A · diag(mul)`, so `(A · diag(1/s)) · (W · diag(s))ᵀ = A · Wᵀ`.
    /// Every multiplier must be finite and positive.
    pub fn with_input_mul(mut self, mul: Vec<f32>) -> Result<QuantizedMatrix, KernelError> {
        validate_mul("QuantizedMatrix::with_input_mul", &mul, self.k)?;
        self.input_mul = Some(mul);
        Ok(self)
    }

    /// The SmoothQuant input multipliers `[k]`, if any.
    pub fn input_mul(&self) -> Option<&[f32]> {
        self.input_mul.as_deref()
    }

    /// Unsigned input mode for inputs bounded below by `-offset` (e.g. GELU outputs,
    /// `>= -0.17`): [`QuantizedMatrix::quantize_input`] quantizes `t = max(x + offset,
    /// 0)` per row to the full u8 range `[0, 255]` (`s_a = max t / 255`: twice the
    /// resolution of the signed `[-127, 127]` for a one-sided input) and the kernels
    /// drop the `+128` compensation (`comp = 0`). The GEMM then computes
    /// `(X + offset) · Ŵᵀ`: the caller subtracts [`QuantizedMatrix::offset_correction`]
    /// (`offset · Σ_k Ŵ[n, k]`) from its bias. `offset` finite and `>= 0`.
    pub fn with_unsigned_input(mut self, offset: f32) -> Result<QuantizedMatrix, KernelError> {
        validate_offset("QuantizedMatrix::with_unsigned_input", offset)?;
        self.input_offset = Some(offset);
        self.comp.fill(0);
        Ok(self)
    }

    /// The unsigned-input offset, if that mode is on.
    pub fn input_offset(&self) -> Option<f32> {
        self.input_offset
    }

    /// `[n]`: what the unsigned input mode adds to each output,
    /// `offset · (s_w[n] · Σ_k Wq[n, k])` (zeros without that mode).
    pub fn offset_correction(&self) -> Vec<f32> {
        let c = self.input_offset.unwrap_or(0.0);
        self.colsums()
            .iter()
            .zip(self.scales())
            .map(|(&sum, &sw)| c * (sw * sum as f32))
            .collect()
    }

    pub(super) fn input_mode(&self) -> InputMode<'_> {
        InputMode {
            mul: self.input_mul(),
            offset: self.input_offset,
        }
    }

    /// Quantizes this matrix's input `a: [m, k]` for it: [`quantize_rows`], or
    /// [`quantize_rows_smoothed`] with the matrix's input multipliers.
    pub fn quantize_input(
        &self,
        a: &[f32],
        m: usize,
        out: &mut [u8],
        scales: &mut [f32],
    ) -> Result<(), KernelError> {
        quantize_rows_impl(self.isa, a, m, self.k, self.input_mode(), out, scales)
    }

    /// Output features (columns of C).
    pub fn n(&self) -> usize {
        self.n
    }

    /// Input features (reduction length).
    pub fn k(&self) -> usize {
        self.k
    }

    /// Row length in bytes of the quantized activations this matrix multiplies
    /// (`padded_k(k)`).
    pub fn k_padded(&self) -> usize {
        self.kp
    }

    /// Per-output-channel scales `s_w: [n]`.
    pub fn scales(&self) -> &[f32] {
        &self.scales[..self.n]
    }

    /// `Σ_k Wq[j, k]` per output channel (`[n]`).
    pub fn colsums(&self) -> Vec<i32> {
        self.unpack_weights()
            .chunks_exact(self.k.max(1))
            .take(self.n)
            .map(|row| row.iter().map(|&x| x as i32).sum())
            .chain(std::iter::repeat(0))
            .take(self.n)
            .collect()
    }

    /// Largest |Wq| of the range used: 127, or 64 for the reduced-range Avx2 path.
    pub fn qmax(&self) -> i32 {
        self.qmax
    }

    /// True when the weights use the reduced (7-bit) range.
    pub fn reduced_range(&self) -> bool {
        self.qmax < 127
    }

    pub fn isa(&self) -> QIsa {
        self.isa
    }

    /// The microkernel's name, e.g. `"gemm_u8s8_avx512vnni_12x32"`.
    pub fn kernel_name(&self) -> &'static str {
        self.isa.kernel_name()
    }

    /// Panel width NR of the layout.
    pub fn panel_width(&self) -> usize {
        self.nr
    }

    /// The quantized weights unpacked back to `[n, k]` (tests, debugging).
    pub fn unpack_weights(&self) -> Vec<i8> {
        let d = self.bytes();
        let mut w = vec![0i8; self.n * self.k];
        for j in 0..self.n {
            for q in 0..self.k {
                w[j * self.k + q] = d[self.index(j, q)];
            }
        }
        w
    }

    /// Byte index of `Wq[j, q]` in the packed buffer.
    #[inline]
    pub(super) fn index(&self, j: usize, q: usize) -> usize {
        let (nr, kg) = (self.nr, self.isa.kind().k_group());
        (j / nr) * self.pk * nr + (q / kg) * nr * kg + (j % nr) * kg + q % kg
    }

    pub(super) fn bytes(&self) -> &[i8] {
        let s = self.data.as_slice();
        // SAFETY: see `pack`: `4 · s.len()` initialised bytes.
        unsafe { std::slice::from_raw_parts(s.as_ptr().cast::<i8>(), s.len() * 4) }
    }
}

impl std::fmt::Debug for QuantizedMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuantizedMatrix")
            .field("kernel", &self.kernel_name())
            .field("n", &self.n)
            .field("k", &self.k)
            .field("qmax", &self.qmax)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::round_clamped;

    /// The formula `round_clamped` replaced: round half to even, then clamp.
    fn plain(v: f32, qmax: i32) -> i32 {
        (v.round_ties_even() as i32).clamp(-qmax, qmax)
    }

    #[test]
    fn round_clamped_equals_round_then_clamp() {
        for qmax in [64, 127] {
            let qf = qmax as f32;
            let mut vals = vec![
                0.0,
                -0.0,
                f32::NAN,
                f32::INFINITY,
                f32::NEG_INFINITY,
                f32::MAX,
                f32::MIN,
                f32::MIN_POSITIVE,
                1e-45,
                4_194_304.5,
                8_388_609.0,
            ];
            // Every half and near-half in and around the range.
            for i in -2 * 130..=2 * 130 {
                let h = i as f32 * 0.5;
                vals.extend([h, h.next_up(), h.next_down()]);
            }
            // Pseudo-random values of every magnitude.
            let mut s = 0x9E37_79B9_7F4A_7C15u64;
            for _ in 0..200_000 {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                let v = f32::from_bits((s >> 32) as u32);
                vals.extend([v, (s as i32 as f32) / 1e7]);
            }
            for v in vals {
                assert_eq!(
                    round_clamped(v, qf),
                    plain(v, qmax),
                    "v = {v:e}, qmax {qmax}"
                );
            }
        }
    }
}
