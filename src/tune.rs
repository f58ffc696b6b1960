//! Kernel choice by measurement, cached per CPU (as FFTW's wisdom).
//!
//! At the first load on a machine, every kernel path the CPU supports is timed on the model's
//! own GEMM shapes (the four Linear layers of one encoder layer at their depth `k` and half
//! their columns, see [`timed_columns`], `M` rows, one thread): the
//! f32 paths (AVX2, AVX-512), the int8 paths that share the best path's recipe (AVX-512 VNNI,
//! AVX-VNNI), the bf16 paths (`vdpbf16ps`, the widening path). The fastest of each family
//! runs, and `auto` precision takes bf16 when its fastest path beats f32's by at least
//! [`BF16_MIN_GAIN`] (bf16's mean cosine to f32 is >= 0.9999, which the project takes as equal
//! accuracy; int8 is not, so `auto` never picks it for an f32 model). The result is written
//! as JSON to `tuning.json` in the cache directory ([`default_cache_dir`]), keyed by the CPU's
//! model string, its kernel-relevant feature set (microcode-independent: the instruction sets
//! the kernels use, not the microcode revision) and [`KERNEL_VERSION`]; an entry per model
//! shape. The next load reads it (no measurement). `e5embed tune` re-measures. A corrupt or
//! unreadable file is a warning and a re-measurement, never an error.
//!
//! The measurement is bounded: `M` shrinks for large models so one pass of the four GEMMs
//! stays near a fixed FLOP count; each candidate is packed (its shapes on threads of their
//! own) and gets one warm-up pass, then rounds of two timed passes per candidate (`M` rows
//! with the weights in cache, [`STREAMED_M`] rows with them evicted to memory: [`Regime`]),
//! the candidates interleaved, at most [`MAX_ROUNDS`] and only while the next round fits in
//! [`BUDGET_MS`]; a candidate's time in each regime is its best round, and a family's winner
//! has the least [`row_score`].

use std::path::{Path, PathBuf};
use std::time::Instant;

use e5embed_kernels::bgemm::{self, BIsa, BIsaKind, Bf16Matrix};
use e5embed_kernels::gemm::{self, PackedMatrix};
use e5embed_kernels::isa::Features;
use e5embed_kernels::qgemm::{self, QIsa, QIsaKind, QuantizedMatrix};
use e5embed_kernels::{Epilogue, Isa, IsaKind};
use serde::{Deserialize, Serialize};

use crate::config::BertConfig;
use crate::error::{Error, Result};
use crate::model::{Int8Recipe, Precision};

/// Bumped whenever a kernel changes speed enough that old measurements mislead: a cache
/// written under another version is measured again. 2: the bf16 tiles' weight prefetch
/// (x86: short batches faster on both bf16 paths) and the aarch64 bf16 paths (`bfmmla`,
/// NEON widening) in place of the scalar one there. 3: interleaved rounds and bf16's 1.2x
/// margin for `auto` (a choice measured back to back could be a burst of load's doing).
/// 4: half of each matrix's columns timed ([`timed_columns`]), so three rounds fit the budget.
/// 5: the `vdpbf16ps` GEMM's 8 x 32 tile (2-3.5% faster than the 12 x 32 one on Zen 4).
/// 6: each path also timed streaming its weights from memory ([`Regime::Streamed`]), the
/// AVX2 f32 skinny path's prefetch 8 KB ahead (its short GEMMs 1.2-1.5x faster from
/// memory), and the `vdpbf16ps` path's 8-row tile prefetching (1 x 8 1.1x faster).
pub const KERNEL_VERSION: u32 = 6;

/// The file in the cache directory.
pub const CACHE_FILE: &str = "tuning.json";

/// `auto` takes bf16 only when its fastest path needs at most this fraction of f32's time on
/// the GEMMs (1.2x faster at least). f32 is exact, and the GEMMs at `M` rows overstate what
/// bf16 gains end to end: attention and the element-wise kernels run in f32 at either
/// precision, and at large batches the widening path is f32's FMAs plus a conversion. On an
/// Intel Xeon of the Sapphire Rapids class (`vdpbf16ps` at half the FMA's rate, so the
/// widening path is the faster bf16 one) the widening path measured 1.0-1.3x f32 here from
/// run to run, and tools/compare then had bf16 1.24x faster at one 128-token text and 1.14x
/// slower on the 2,000-text corpus: with the old 5% margin `auto` flipped between the two
/// from one measurement to the next. On Zen 4 (`vdpbf16ps` at the FMA's rate) bf16 measured
/// 1.88x.
pub const BF16_MIN_GAIN: f64 = 1.0 / 1.2;

/// The measurement's target wall time (ms): a further round of timed passes starts only if
/// it is expected to end within it.
pub const BUDGET_MS: f64 = 50.0;

/// At most this many rounds of timed passes; each round times every candidate once, in turn
/// (after its packing and one warm-up pass in the first), and a candidate's time is its best
/// round. Interleaving the candidates spreads a burst of load from elsewhere on the machine
/// over them instead of onto one: measured back to back on a noisy 2-core VM, a 2 ms burst
/// during one candidate's passes chose the AVX2 f32 path over the twice as fast AVX-512 one.
pub const MAX_ROUNDS: usize = 3;

/// FLOPs of one timed pass (the four GEMMs at `M` rows): `M` is chosen to stay near this
/// (48 rows at e5-small-v2's shapes).
const PASS_FLOPS: f64 = 2.0 * 48.0 * 884_736.0;

/// Rows of the [`Regime::Streamed`] pass: a short query's.
pub const STREAMED_M: usize = 8;

/// The two passes each candidate is timed in, each round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Regime {
    /// `M` rows, the weights in cache from the pass before: the kernels' arithmetic.
    Cached,
    /// [`STREAMED_M`] rows, the weights evicted from every cache level first
    /// ([`e5embed_kernels::cache::evict`]): how a path streams weights from memory, as a
    /// short text's forward does whenever the model's weights exceed the last-level cache
    /// (e5-small-v2: 85 MB at f32, 42 MB at bf16). Added when, on Zen 4, the f32 AVX2 and
    /// AVX-512 paths tied within 3-7% in cache while the AVX2 path's 8-row GEMMs took 1.6x
    /// as long from memory and a 1 x 8 forward 1.4x, and the cached pass alone chose AVX2
    /// (its prefetch distance, found so, has since been fixed: kernels/PERF.md, "The f32
    /// choice from memory").
    Streamed,
}

/// `$XDG_CACHE_HOME/e5embed`, else `~/.cache/e5embed` (where `tools/fetch-models` puts the
/// test models). `None` without either variable: tuning then measures and does not cache.
pub fn default_cache_dir() -> Option<PathBuf> {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(x) = var("XDG_CACHE_HOME") {
        return Some(PathBuf::from(x).join("e5embed"));
    }
    var("HOME").map(|h| PathBuf::from(h).join(".cache/e5embed"))
}

/// What the cache is keyed by: the machine and the kernels' version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineKey {
    /// The CPU's model string (`/proc/cpuinfo` `model name`, with family / model / stepping).
    pub cpu: String,
    /// The instruction sets the kernels use (not the microcode revision).
    pub features: String,
    pub kernel_version: u32,
}

impl MachineKey {
    /// This machine.
    pub fn current() -> MachineKey {
        MachineKey {
            cpu: cpu_model(),
            features: format!("{:?}", Features::detected()),
            kernel_version: KERNEL_VERSION,
        }
    }
}

/// The CPU's model string: `model name (family F model M stepping S)` from `/proc/cpuinfo`
/// on x86-64 Linux; the `CPU part` fields on aarch64 Linux; `unknown` elsewhere.
pub fn cpu_model() -> String {
    let Ok(info) = std::fs::read_to_string("/proc/cpuinfo") else {
        return "unknown".into();
    };
    let field = |name: &str| {
        info.lines()
            .find(|l| l.split(':').next().is_some_and(|k| k.trim() == name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_owned())
    };
    match field("model name") {
        Some(m) => format!(
            "{m} (family {} model {} stepping {})",
            field("cpu family").unwrap_or_default(),
            field("model").unwrap_or_default(),
            field("stepping").unwrap_or_default()
        ),
        None => match (field("CPU implementer"), field("CPU part")) {
            (Some(i), Some(p)) => format!("implementer {i} part {p}"),
            _ => "unknown".into(),
        },
    }
}

/// The GEMM shapes a model's tuning is measured on: `(n, k)` of QKV, output, FFN up, FFN
/// down, `n` their [`timed_columns`], at `m` rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shapes {
    pub m: usize,
    pub nk: Vec<(usize, usize)>,
}

impl Shapes {
    pub fn of(c: &BertConfig) -> Shapes {
        let (h, i) = (c.hidden_size, c.intermediate_size);
        let nk = [(3 * h, h), (h, h), (i, h), (h, i)]
            .map(|(n, k)| (timed_columns(n), k))
            .to_vec();
        let per_row: f64 = nk.iter().map(|&(n, k)| 2.0 * (n * k) as f64).sum();
        // A multiple of 12 (every f32 / int8 / bf16 tile height divides 12 or 24 rows
        // evenly enough), at least 12, at most 48.
        let m = ((PASS_FLOPS / per_row.max(1.0)) as usize / 12 * 12).clamp(12, 48);
        Shapes { m, nk }
    }

    /// Rows of the [`Regime::Streamed`] pass: [`STREAMED_M`], at most `m`.
    pub fn streamed_m(&self) -> usize {
        STREAMED_M.min(self.m)
    }
}

/// The columns of an `n`-column weight matrix that are timed: half of them, rounded up to a
/// multiple of 64 (whole panels of every tile width), at most `n`. A GEMM's time is linear in
/// its column panels, and the candidates' ratios stay (each pass still reads its weights from
/// beyond L2, the other candidates' passes running in between), but packing and first-touch
/// page faults were most of the measurement: with every column the whole measurement took
/// 45.6-84.6 ms (median 54.2) on a 2-core Xeon VM (family 6 model 207), often one round only;
/// with half, 32.4-49.3 ms (median 37.7), three rounds (kernels/PERF.md, "Tuning at half the
/// columns").
pub fn timed_columns(n: usize) -> usize {
    (n / 2).next_multiple_of(64).min(n)
}

/// One kernel path that can be timed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Candidate {
    F32(IsaKind),
    Int8(QIsaKind),
    Bf16(BIsaKind),
}

impl Candidate {
    pub fn name(self) -> &'static str {
        match self {
            Candidate::F32(k) => k.name(),
            Candidate::Int8(k) => k.name(),
            Candidate::Bf16(k) => k.name(),
        }
    }
}

/// One family's measurement: each candidate's best times (ms per pass, `None` when it was
/// the only candidate and was not timed) in the two regimes, and the winner: the least
/// [`row_score`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FamilyResult {
    pub choice: String,
    /// [`Regime::Cached`].
    pub times_ms: Vec<(String, Option<f64>)>,
    /// [`Regime::Streamed`] (absent from caches of [`KERNEL_VERSION`] 5 and older, which
    /// are measured again).
    #[serde(default)]
    pub streamed_ms: Vec<(String, Option<f64>)>,
}

impl FamilyResult {
    /// The winner's [`Regime::Cached`] time (what `auto` compares).
    pub fn choice_ms(&self) -> Option<f64> {
        self.times_ms
            .iter()
            .find(|(n, _)| *n == self.choice)
            .and_then(|(_, t)| *t)
    }
}

/// A model shape's tuning: the winners, the measured times and `auto`'s choice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tuning {
    pub shapes: Shapes,
    pub f32: FamilyResult,
    pub int8: FamilyResult,
    pub bf16: FamilyResult,
    /// The precision `auto` takes for an f32 model.
    pub auto: String,
    /// Why.
    pub auto_reason: String,
    /// How long the measurement took (ms).
    pub measure_ms: f64,
}

/// The kernel paths and `auto` precision a tuning chose, as tokens.
#[derive(Debug, Clone, Copy)]
pub struct Choice {
    pub isa: Isa,
    pub qisa: QIsa,
    pub bisa: BIsa,
    pub auto: Precision,
}

impl Tuning {
    /// The tokens, or `None` when a recorded path does not exist on this CPU (a cache written
    /// elsewhere; it is then measured again).
    pub fn choice(&self) -> Option<Choice> {
        Some(Choice {
            isa: Isa::new(self.f32.choice.parse().ok()?)?,
            qisa: QIsa::new(self.int8.choice.parse().ok()?)?,
            bisa: BIsa::new(self.bf16.choice.parse().ok()?)?,
            auto: self.auto.parse().ok()?,
        })
    }

    /// One line per family for `info`: `f32 avx512 (avx2 0.78 + 0.30 ms, avx512 0.74 + 0.18
    /// ms)`, each path's `M`-row pass in cache + its short pass from memory.
    pub fn summary(&self) -> Vec<String> {
        let fam = |label: &str, r: &FamilyResult| {
            let times: Vec<String> = r
                .times_ms
                .iter()
                .zip(&r.streamed_ms)
                .map(|((n, t), (_, s))| match (t, s) {
                    (Some(t), Some(s)) => format!("{n} {t:.2} + {s:.2} ms"),
                    _ => "the only path, not timed".to_owned(),
                })
                .collect();
            format!("{label} {} ({})", r.choice, times.join(", "))
        };
        vec![
            fam("f32", &self.f32),
            fam("int8", &self.int8),
            fam("bf16", &self.bf16),
        ]
    }
}

/// The candidates of each family on this CPU: f32 and bf16 paths with SIMD (the scalar one
/// only where there is nothing else); int8 paths that run the best path's recipe (the AVX2
/// path's 7-bit weights take another recipe, with different accuracy: never by speed).
pub fn candidates() -> [Vec<Candidate>; 3] {
    fn simd<F: e5embed_kernels::isa::Family>(
        avail: Vec<e5embed_kernels::isa::Path<F>>,
        scalar: F,
    ) -> Vec<F> {
        let v: Vec<F> = avail
            .iter()
            .map(|p| p.kind())
            .filter(|&k| k != scalar)
            .collect();
        if v.is_empty() {
            vec![scalar]
        } else {
            v
        }
    }
    let f32s = simd(Isa::available(), IsaKind::Scalar);
    let best_recipe = Int8Recipe::default_for(QIsa::best());
    let int8s: Vec<QIsaKind> = QIsa::available()
        .into_iter()
        .filter(|q| Int8Recipe::default_for(*q) == best_recipe)
        .map(|q| q.kind())
        .filter(|&k| k != QIsaKind::Scalar || QIsa::best().kind() == QIsaKind::Scalar)
        .collect();
    let bf16s = simd(BIsa::available(), BIsaKind::Scalar);
    [
        f32s.into_iter().map(Candidate::F32).collect(),
        int8s.into_iter().map(Candidate::Int8).collect(),
        bf16s.into_iter().map(Candidate::Bf16).collect(),
    ]
}

/// Times the candidates with `time` (one timed pass of a candidate in a regime, in ms; the
/// real timer packs and warms a candidate up at its first call; the seam tests inject
/// timings through) and chooses. A family with one candidate is not timed, except f32 and
/// bf16 when `auto` needs both times to compare (bf16 has a SIMD path). Up to
/// [`MAX_ROUNDS`] rounds within [`BUDGET_MS`], the candidates interleaved (each one's
/// [`Regime::Cached`] pass, then its [`Regime::Streamed`] one), each one's best round per
/// regime kept. A family's winner has the least [`row_score`]; `auto` compares the f32 and
/// bf16 winners' cached times, as before the streamed regime existed (on a CPU whose only
/// bf16 path widens to f32, bf16's half-size weights would win the streamed pass while
/// long batches run it slower than f32: "Tuning on Sapphire Rapids" in kernels/PERF.md).
pub fn measure_with(
    shapes: Shapes,
    cands: &[Vec<Candidate>; 3],
    time: &mut dyn FnMut(Candidate, Regime) -> Result<f64>,
) -> Result<Tuning> {
    let start = Instant::now();
    let bf16_simd = cands[2]
        .iter()
        .any(|c| !matches!(c, Candidate::Bf16(BIsaKind::Scalar)));
    // Which families are timed: index 0 f32, 1 int8, 2 bf16.
    let timed_family = |f: usize| cands[f].len() > 1 || (f != 1 && bf16_simd);
    // The timed candidates in round order: f32, bf16, int8 (the two `auto` compares first).
    let order: Vec<(usize, usize)> = [0, 2, 1]
        .into_iter()
        .filter(|&f| timed_family(f))
        .flat_map(|f| (0..cands[f].len()).map(move |i| (f, i)))
        .collect();
    // Per family, per candidate: the best (cached, streamed) times.
    let mut best: [Vec<[Option<f64>; 2]>; 3] = [0, 1, 2].map(|f| vec![[None; 2]; cands[f].len()]);
    for round in 0..MAX_ROUNDS {
        let mut passes = 0.0;
        for &(f, i) in &order {
            for (r, regime) in [Regime::Cached, Regime::Streamed].into_iter().enumerate() {
                let t = time(cands[f][i], regime)?;
                passes += t;
                let b = &mut best[f][i][r];
                *b = Some(b.map_or(t, |x| x.min(t)));
            }
        }
        // The next round costs about this round's passes (the first one also packed).
        let spent = start.elapsed().as_secs_f64() * 1e3;
        if order.is_empty() || round + 1 == MAX_ROUNDS || spent + passes > BUDGET_MS {
            break;
        }
    }
    let family = |f: usize| -> Result<FamilyResult> {
        let regime = |r: usize| -> Vec<(String, Option<f64>)> {
            cands[f]
                .iter()
                .zip(&best[f])
                .map(|(c, t)| (c.name().to_owned(), t[r]))
                .collect()
        };
        let score = |t: &[Option<f64>; 2]| match t {
            [Some(c), Some(s)] => row_score(&shapes, *c, *s),
            _ => f64::INFINITY,
        };
        let best = cands[f]
            .iter()
            .zip(&best[f])
            .min_by(|a, b| score(a.1).total_cmp(&score(b.1)))
            .map(|(c, _)| c.name().to_owned())
            .ok_or_else(|| Error::InvalidInput("tuning: a family with no kernel path".into()))?;
        Ok(FamilyResult {
            choice: best,
            times_ms: regime(0),
            streamed_ms: regime(1),
        })
    };
    let f32 = family(0)?;
    let int8 = family(1)?;
    let bf16 = family(2)?;
    let (auto, auto_reason) = match (f32.choice_ms(), bf16.choice_ms()) {
        (Some(f), Some(b)) if b <= BF16_MIN_GAIN * f => (
            Precision::Bf16,
            format!(
                "auto: bf16 ({}) measured {:.2} ms vs f32 ({}) {:.2} ms on this model's GEMMs: \
                 {:.2}x, at the accuracy taken as equal (cosine to f32 >= 0.9999)",
                bf16.choice,
                b,
                f32.choice,
                f,
                f / b
            ),
        ),
        (Some(f), Some(b)) => (
            Precision::F32,
            format!(
                "auto: bf16 ({}) measured {:.2} ms vs f32 ({}) {:.2} ms on this model's GEMMs, \
                 not {:.2}x faster, so f32 (exact)",
                bf16.choice,
                b,
                f32.choice,
                f,
                1.0 / BF16_MIN_GAIN
            ),
        ),
        _ => (
            Precision::F32,
            "auto: no bf16 SIMD path on this CPU, so f32".to_owned(),
        ),
    };
    Ok(Tuning {
        shapes,
        f32,
        int8,
        bf16,
        auto: auto.name().to_owned(),
        auto_reason,
        measure_ms: start.elapsed().as_secs_f64() * 1e3,
    })
}

/// How a family's winner is chosen (lower is better): the time per row of each regime's
/// pass, summed, so a row of a long batch (weights in cache) and a row of a short text
/// (weights from memory) weigh the same. A plain sum of the two passes would let the
/// `M`-row pass decide alone: on Zen 4, before the AVX2 prefetch fix, the f32 AVX2 path
/// measured 0.74-0.80 + 0.20-0.22 ms against AVX-512's 0.73-0.77 + 0.13-0.16, a 7-9% margin
/// inside the cached pass's own run-to-run spread, while a 1 x 8 forward ran 1.4x slower on
/// AVX2 and 1 x 128 1.1x.
pub fn row_score(shapes: &Shapes, cached_ms: f64, streamed_ms: f64) -> f64 {
    cached_ms / shapes.m.max(1) as f64 + streamed_ms / shapes.streamed_m().max(1) as f64
}

/// Measures this CPU's candidates on `shapes` with the real kernels.
pub fn measure(shapes: &Shapes) -> Result<Tuning> {
    let start = Instant::now();
    let mut timer = GemmTimer::new(shapes);
    let mut t = measure_with(shapes.clone(), &candidates(), &mut |c, r| timer.time(c, r))?;
    // The whole cost, the weights' set-up included.
    t.measure_ms = start.elapsed().as_secs_f64() * 1e3;
    Ok(t)
}

/// A candidate's timed work: `run(rows, a, out)` is one pass of its GEMMs on the first
/// `rows` rows of the activations `a` into the output buffer; `evict` drops its packed
/// weights from every cache level.
struct Pass {
    run: Box<RunPass>,
    evict: Box<dyn Fn()>,
}

/// [`Pass::run`].
type RunPass = dyn FnMut(usize, &[f32], &mut [f32]) -> Result<()>;

/// A [`Pass`] over packed matrices: `gemm(b, rows, a, out)` runs one of them.
fn pass_over<T: 'static>(
    packed: Vec<T>,
    bytes: fn(&T) -> &[u8],
    mut gemm: impl FnMut(&T, usize, &[f32], &mut [f32]) -> Result<()> + 'static,
) -> Pass {
    let packed = std::rc::Rc::new(packed);
    let mine = std::rc::Rc::clone(&packed);
    Pass {
        run: Box::new(move |rows, a, out| {
            for b in mine.iter() {
                gemm(b, rows, a, out)?;
            }
            Ok(())
        }),
        evict: Box::new(move || {
            for b in packed.iter() {
                e5embed_kernels::cache::evict(bytes(b));
            }
        }),
    }
}

/// Pseudo-random values in `[-scale/2, scale/2)`, each from its index alone (a multiplicative
/// hash), so the fill has no serial dependency and vectorizes.
fn pseudo_random(len: usize, seed: u32, scale: f32) -> Vec<f32> {
    (0..len)
        .map(|i| {
            let h = (i as u32 ^ seed).wrapping_mul(0x9E37_79B1);
            ((h >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * scale
        })
        .collect()
}

/// Times one pass of the four GEMMs per candidate on pseudo-random weights (the kernels'
/// speed does not depend on the values).
struct GemmTimer {
    shapes: Shapes,
    /// The f32 weights of the largest shape; each shape `[n, k]` takes the first `n · k`.
    weights: Vec<f32>,
    a: Vec<f32>,
    /// `[m, max n]`, every pass's output.
    out: Vec<f32>,
    /// The candidates packed so far, with their passes (kept for the later rounds).
    ready: Vec<(Candidate, Pass)>,
}

impl GemmTimer {
    fn new(shapes: &Shapes) -> GemmTimer {
        let wmax = shapes.nk.iter().map(|&(n, k)| n * k).max().unwrap_or(0);
        let kmax = shapes.nk.iter().map(|&(_, k)| k).max().unwrap_or(0);
        let nmax = shapes.nk.iter().map(|&(n, _)| n).max().unwrap_or(0);
        GemmTimer {
            shapes: shapes.clone(),
            weights: pseudo_random(wmax, 0x2545_F491, 0.1),
            a: pseudo_random(shapes.m * kmax, 0x4F6C_DD1D, 1.0),
            out: vec![0f32; shapes.m * nmax],
            ready: Vec::new(),
        }
    }

    /// Each shape's weights packed by `pack(w, n, k)` for one candidate, the shapes on
    /// threads of their own (packing is most of the measurement's time otherwise; the
    /// timed passes that follow run on this thread alone).
    fn pack<T: Send>(
        &self,
        pack: impl Fn(&[f32], usize, usize) -> std::result::Result<T, e5embed_kernels::KernelError>
            + Sync,
    ) -> Result<Vec<T>> {
        let (w, pack) = (&self.weights, &pack);
        let packed = std::thread::scope(|s| {
            // A shape whose thread cannot be started is packed here, after the others start.
            let jobs: Vec<_> = self
                .shapes
                .nk
                .iter()
                .map(|&(n, k)| {
                    let job = move || pack(&w[..n * k], n, k);
                    std::thread::Builder::new()
                        .spawn_scoped(s, job)
                        .map_err(|_| (n, k))
                })
                .collect();
            jobs.into_iter()
                .map(|j| match j {
                    Ok(h) => h.join().unwrap_or_else(|_| {
                        Err(e5embed_kernels::KernelError::Shape(
                            "tuning: a packing thread panicked".into(),
                        ))
                    }),
                    Err((n, k)) => pack(&w[..n * k], n, k),
                })
                .collect::<std::result::Result<Vec<_>, _>>()
        })?;
        Ok(packed)
    }

    /// One timed pass of `c` in `regime`, in ms; at the first call for `c`, its weights are
    /// packed and one untimed warm-up pass runs first. A [`Regime::Streamed`] pass evicts
    /// the weights first (not timed).
    fn time(&mut self, c: Candidate, regime: Regime) -> Result<f64> {
        let (m, sm) = (self.shapes.m, self.shapes.streamed_m());
        let idx = match self.ready.iter().position(|(r, _)| *r == c) {
            Some(i) => i,
            None => {
                let mut pass = self.prepare(c)?;
                (pass.run)(m, &self.a, &mut self.out)?;
                self.ready.push((c, pass));
                self.ready.len() - 1
            }
        };
        let pass = &mut self.ready[idx].1;
        let rows = match regime {
            Regime::Cached => m,
            Regime::Streamed => {
                (pass.evict)();
                sm
            }
        };
        let t = Instant::now();
        (pass.run)(rows, &self.a, &mut self.out)?;
        Ok(t.elapsed().as_secs_f64() * 1e3)
    }

    /// Packs the weights for `c` (not timed) and returns its pass.
    fn prepare(&self, c: Candidate) -> Result<Pass> {
        let m = self.shapes.m;
        let unsupported = |name: &str| {
            Error::Kernel(e5embed_kernels::KernelError::UnsupportedIsa(format!(
                "tuning candidate {name}"
            )))
        };
        let pass: Pass = match c {
            Candidate::F32(kind) => {
                let isa = Isa::new(kind).ok_or_else(|| unsupported(kind.name()))?;
                let packed = self.pack(|w, n, k| PackedMatrix::pack(isa, w, n, k))?;
                pass_over(packed, PackedMatrix::packed_bytes, |b, m, a, out| {
                    let (n, k) = (b.n(), b.k());
                    gemm::gemm_f32(&a[..m * k], m, b, &mut out[..m * n], Epilogue::None)?;
                    Ok(())
                })
            }
            Candidate::Bf16(kind) => {
                let isa = BIsa::new(kind).ok_or_else(|| unsupported(kind.name()))?;
                let packed = self.pack(|w, n, k| Bf16Matrix::from_f32(isa, w, n, k))?;
                pass_over(packed, Bf16Matrix::packed_bytes, |b, m, a, out| {
                    let (n, k) = (b.n(), b.k());
                    bgemm::gemm_bf16(&a[..m * k], m, b, &mut out[..m * n], Epilogue::None)?;
                    Ok(())
                })
            }
            Candidate::Int8(kind) => {
                let isa = QIsa::new(kind).ok_or_else(|| unsupported(kind.name()))?;
                let packed = self.pack(|w, n, k| QuantizedMatrix::quantize(isa, w, n, k))?;
                let kpmax = packed.iter().map(|b| b.k_padded()).max().unwrap_or(0);
                let aq: Vec<u8> = (0..m * kpmax).map(|i| (i * 37 % 251) as u8).collect();
                let scales = vec![0.01f32; m];
                pass_over(
                    packed,
                    QuantizedMatrix::packed_bytes,
                    move |b, m, _a, out| {
                        let (n, kp) = (b.n(), b.k_padded());
                        qgemm::gemm_u8s8(
                            &aq[..m * kp],
                            &scales[..m],
                            m,
                            b,
                            &mut out[..m * n],
                            Epilogue::None,
                        )?;
                        Ok(())
                    },
                )
            }
        };
        Ok(pass)
    }
}

/// The cache file's content.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CacheFile {
    machine: MachineKey,
    entries: Vec<Tuning>,
}

/// Where a tuning came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Read from the cache file.
    Cached,
    /// Measured at this load (and written to the cache where there is one).
    Measured,
}

/// A tuning with its origin and any warning met on the way (a corrupt cache, a failed write).
#[derive(Debug, Clone)]
pub struct Tuned {
    pub tuning: Tuning,
    pub source: Source,
    pub path: Option<PathBuf>,
    pub warnings: Vec<String>,
}

/// Reads the cache entry for `key` and `shapes` from `dir`, or measures with `measure` and
/// writes it (to a temporary name, renamed into place). `force`: measure even when an entry
/// exists (`e5embed tune`). A corrupt or unreadable file, or an entry whose paths this CPU
/// lacks, gives a warning and a new measurement; a failed write gives a warning.
pub fn load_or_measure_with(
    dir: Option<&Path>,
    key: &MachineKey,
    shapes: &Shapes,
    force: bool,
    measure: &mut dyn FnMut(&Shapes) -> Result<Tuning>,
) -> Result<Tuned> {
    let mut warnings = Vec::new();
    let path = dir.map(|d| d.join(CACHE_FILE));
    let mut file = None;
    if let Some(p) = &path {
        match std::fs::read(p) {
            Ok(bytes) => match serde_json::from_slice::<CacheFile>(&bytes) {
                Ok(f) => file = Some(f),
                Err(e) => warnings.push(format!(
                    "the tuning cache {} is unreadable ({e}); measuring again",
                    p.display()
                )),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => warnings.push(format!(
                "the tuning cache {} cannot be read ({e}); measuring again",
                p.display()
            )),
        }
    }
    // Entries of this machine and kernel version only: any other key is dropped.
    let mut entries = file
        .filter(|f| f.machine == *key)
        .map(|f| f.entries)
        .unwrap_or_default();
    if !force {
        if let Some(t) = entries.iter().find(|t| t.shapes == *shapes) {
            if t.choice().is_some() {
                return Ok(Tuned {
                    tuning: t.clone(),
                    source: Source::Cached,
                    path,
                    warnings,
                });
            }
            warnings.push(
                "the tuning cache names a kernel path this CPU lacks; measuring again".into(),
            );
        }
    }
    let tuning = measure(shapes)?;
    entries.retain(|t| t.shapes != *shapes);
    entries.push(tuning.clone());
    if let (Some(d), Some(p)) = (dir, &path) {
        let file = CacheFile {
            machine: key.clone(),
            entries,
        };
        let written = std::fs::create_dir_all(d)
            .map_err(|e| Error::Io {
                path: d.to_owned(),
                source: e,
            })
            .and_then(|()| {
                let json = serde_json::to_vec_pretty(&file)
                    .map_err(|e| Error::InvalidInput(format!("tuning cache: {e}")))?;
                crate::hub::write_atomic(p, &json)
            });
        if let Err(e) = written {
            warnings.push(format!("the tuning cache could not be written: {e}"));
        }
    }
    Ok(Tuned {
        tuning,
        source: Source::Measured,
        path,
        warnings,
    })
}

/// [`load_or_measure_with`] on this machine with the real kernels.
pub fn load_or_measure(dir: Option<&Path>, c: &BertConfig, force: bool) -> Result<Tuned> {
    load_or_measure_with(
        dir,
        &MachineKey::current(),
        &Shapes::of(c),
        force,
        &mut measure,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shapes() -> Shapes {
        Shapes {
            m: 48,
            nk: vec![(1152, 384), (384, 384), (1536, 384), (384, 1536)],
        }
    }

    fn key() -> MachineKey {
        MachineKey {
            cpu: "Test CPU".into(),
            features: "Features(avx2+fma)".into(),
            kernel_version: KERNEL_VERSION,
        }
    }

    /// Fake times: a table by candidate name of cached times; each streamed pass takes the
    /// same time per row as the cached one (so the cached times decide).
    fn timer<'a>(table: &'a [(&'a str, f64)]) -> impl FnMut(Candidate, Regime) -> Result<f64> + 'a {
        move |c, r| {
            let t = table
                .iter()
                .find(|(n, _)| *n == c.name())
                .map(|(_, t)| *t)
                .unwrap_or(99.0);
            Ok(match r {
                Regime::Cached => t,
                Regime::Streamed => t * STREAMED_M as f64 / shapes().m as f64,
            })
        }
    }

    fn all_cands() -> [Vec<Candidate>; 3] {
        [
            vec![
                Candidate::F32(IsaKind::Avx2),
                Candidate::F32(IsaKind::Avx512),
            ],
            vec![
                Candidate::Int8(QIsaKind::AvxVnni),
                Candidate::Int8(QIsaKind::Avx512Vnni),
            ],
            vec![
                Candidate::Bf16(BIsaKind::Avx512Widen),
                Candidate::Bf16(BIsaKind::Avx512Bf16),
            ],
        ]
    }

    #[test]
    fn auto_picks_the_measured_faster_precision() {
        // bf16 clearly faster: bf16, with its faster path.
        let mut t = timer(&[
            ("avx2", 4.0),
            ("avx512", 3.0),
            ("avx512widen", 3.1),
            ("avx512bf16", 1.8),
            ("avxvnni", 1.5),
            ("avx512vnni", 1.0),
        ]);
        let r = measure_with(shapes(), &all_cands(), &mut t).unwrap();
        assert_eq!(r.auto, "bf16");
        assert_eq!(r.f32.choice, "avx512");
        assert_eq!(r.bf16.choice, "avx512bf16");
        assert_eq!(r.int8.choice, "avx512vnni");
        assert!(r.auto_reason.contains("1.67x"), "{}", r.auto_reason);
        // bf16 slower, or within the margin: f32.
        for bf in [3.5, 2.9] {
            let table = [
                ("avx2", 4.0),
                ("avx512", 3.0),
                ("avx512widen", 9.0),
                ("avx512bf16", bf),
            ];
            let mut t = timer(&table);
            let r = measure_with(shapes(), &all_cands(), &mut t).unwrap();
            assert_eq!(r.auto, "f32", "bf16 at {bf} ms vs f32 3.0 ms");
        }
        // The f32 family's winner is the measured one, not the widest.
        let mut t = timer(&[("avx2", 2.0), ("avx512", 3.0)]);
        let r = measure_with(shapes(), &all_cands(), &mut t).unwrap();
        assert_eq!(r.f32.choice, "avx2");
    }

    /// Zen 4's f32 paths (the best of three `e5embed tune` runs): a tie in cache, AVX2 1.6x
    /// slower from memory. The streamed pass decides; `auto` still compares cached times.
    #[test]
    fn a_path_slower_from_memory_loses_a_tie_in_cache() {
        let mut table = |c: Candidate, r: Regime| -> Result<f64> {
            Ok(match (c.name(), r) {
                ("avx2", Regime::Cached) => 0.74,
                ("avx2", Regime::Streamed) => 0.21,
                ("avx512", Regime::Cached) => 0.76,
                ("avx512", Regime::Streamed) => 0.13,
                // bf16: far ahead from memory, within auto's margin in cache.
                ("avx512bf16", Regime::Cached) => 0.70,
                ("avx512bf16", Regime::Streamed) => 0.01,
                _ => 9.0,
            })
        };
        let r = measure_with(shapes(), &all_cands(), &mut table).unwrap();
        assert_eq!(r.f32.choice, "avx512", "{:?}", r.f32);
        assert_eq!(r.f32.times_ms[0], ("avx2".to_owned(), Some(0.74)));
        assert_eq!(r.f32.streamed_ms[1], ("avx512".to_owned(), Some(0.13)));
        assert_eq!(r.bf16.choice, "avx512bf16");
        assert_eq!(r.auto, "f32", "{}", r.auto_reason);
        assert!(
            r.summary()[0].contains("avx2 0.74 + 0.21 ms"),
            "{:?}",
            r.summary()
        );
        // Equal per row in both regimes but twice as slow in cache: the cached pass decides.
        let mut t = |c: Candidate, r: Regime| -> Result<f64> {
            Ok(match (c.name(), r) {
                ("avx2", Regime::Cached) => 0.70,
                ("avx512", Regime::Cached) => 1.40,
                (_, Regime::Streamed) => 0.15,
                _ => 9.0,
            })
        };
        let r = measure_with(shapes(), &all_cands(), &mut t).unwrap();
        assert_eq!(r.f32.choice, "avx2", "{:?}", r.f32);
    }

    #[test]
    fn row_score_weighs_a_row_of_each_regime_the_same() {
        let s = shapes();
        let (m, sm) = (s.m as f64, STREAMED_M as f64);
        assert_eq!(row_score(&s, m, sm), 2.0);
        assert!(row_score(&s, 0.74, 0.21) > row_score(&s, 0.76, 0.13));
        // Fewer rows than STREAMED_M in a tiny model's pass: the streamed pass has m rows.
        let tiny = Shapes {
            m: 4,
            nk: vec![(64, 64)],
        };
        assert_eq!(row_score(&tiny, 4.0, 4.0), 2.0);
    }

    #[test]
    fn rounds_interleave_the_candidates_and_keep_each_ones_best() {
        // avx512 (f32) meets a burst of load at its first pass: 10 ms instead of 3.
        let mut calls: Vec<&'static str> = Vec::new();
        let mut seen_avx512 = 0;
        let mut t = |c: Candidate, r: Regime| -> Result<f64> {
            calls.push(c.name());
            if r == Regime::Streamed {
                return Ok(0.5);
            }
            Ok(match c.name() {
                "avx512" => {
                    seen_avx512 += 1;
                    if seen_avx512 == 1 {
                        10.0
                    } else {
                        3.0
                    }
                }
                "avx2" => 5.0,
                "avx512widen" => 3.1,
                "avx512bf16" => 6.0,
                _ => 1.0,
            })
        };
        let r = measure_with(shapes(), &all_cands(), &mut t).unwrap();
        assert_eq!(r.f32.choice, "avx512", "{:?}", r.f32);
        assert_eq!(r.f32.choice_ms(), Some(3.0));
        assert_eq!(r.auto, "f32", "{}", r.auto_reason);
        // Every candidate once per round (its cached pass, then its streamed one), f32 then
        // bf16 then int8, MAX_ROUNDS rounds (the fake passes take no time, so the budget
        // allows them all).
        let round = [
            "avx2",
            "avx2",
            "avx512",
            "avx512",
            "avx512widen",
            "avx512widen",
            "avx512bf16",
            "avx512bf16",
            "avxvnni",
            "avxvnni",
            "avx512vnni",
            "avx512vnni",
        ];
        assert_eq!(calls, round.repeat(MAX_ROUNDS));
    }

    #[test]
    fn rounds_stop_at_the_budget() {
        // Each pass "takes" the whole budget: after the first round, a second would exceed it
        // (the real timer's passes are timed, not
        // slept, so the wall clock is ~0 here and the rounds' pass sums decide).
        let mut calls = 0;
        let mut t = |_: Candidate, _: Regime| -> Result<f64> {
            calls += 1;
            Ok(BUDGET_MS)
        };
        measure_with(shapes(), &all_cands(), &mut t).unwrap();
        assert_eq!(calls, 12, "one round of the 6 candidates' two passes");
    }

    #[test]
    fn a_lone_candidate_is_not_timed() {
        let cands = [
            vec![Candidate::F32(IsaKind::Avx2)],
            vec![Candidate::Int8(QIsaKind::Avx2)],
            vec![Candidate::Bf16(BIsaKind::Scalar)],
        ];
        let mut calls = 0;
        let mut t = |_: Candidate, _: Regime| -> Result<f64> {
            calls += 1;
            Ok(1.0)
        };
        let r = measure_with(shapes(), &cands, &mut t).unwrap();
        assert_eq!(calls, 0);
        assert_eq!(r.auto, "f32");
        assert_eq!(r.f32.times_ms, vec![("avx2".to_owned(), None)]);
        assert_eq!(r.f32.streamed_ms, vec![("avx2".to_owned(), None)]);
    }

    /// A measurement that counts its calls and answers with scalar paths (present on every
    /// CPU, so `Tuning::choice` accepts the cached entry anywhere).
    fn counting(calls: &mut usize) -> impl FnMut(&Shapes) -> Result<Tuning> + '_ {
        move |s| {
            *calls += 1;
            let cands = [
                vec![Candidate::F32(IsaKind::Scalar)],
                vec![Candidate::Int8(QIsaKind::Scalar)],
                vec![Candidate::Bf16(BIsaKind::Scalar)],
            ];
            measure_with(s.clone(), &cands, &mut |_, _| Ok(1.0))
        }
    }

    fn tempdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("e5embed-tune-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    /// The cache holds measured f64 times, and a cached tuning must equal the measured one:
    /// serde_json parses floats exactly only with its `float_roundtrip` feature (without it,
    /// 89k of 1M random times in [0, 60) came back one ULP off, and the round-trip test below
    /// failed about one run in seven).
    #[test]
    fn json_floats_round_trip_exactly() {
        for v in [13.613122256926541f64, 31.628901008946414, 0.1, 1e-300] {
            let back: f64 = serde_json::from_str(&serde_json::to_string(&v).unwrap()).unwrap();
            assert_eq!(back.to_bits(), v.to_bits(), "{v:?}");
        }
    }

    #[test]
    fn cache_round_trip_then_reuse() {
        let dir = tempdir("roundtrip");
        let mut calls = 0;
        let first = load_or_measure_with(
            Some(&dir),
            &key(),
            &shapes(),
            false,
            &mut counting(&mut calls),
        )
        .unwrap();
        assert_eq!(first.source, Source::Measured);
        assert!(first.warnings.is_empty(), "{:?}", first.warnings);
        let second = load_or_measure_with(
            Some(&dir),
            &key(),
            &shapes(),
            false,
            &mut counting(&mut calls),
        )
        .unwrap();
        assert_eq!(second.source, Source::Cached);
        assert_eq!(second.tuning, first.tuning);
        assert_eq!(calls, 1, "the second load must not measure");
        // Another model shape is a second entry beside the first.
        let other = Shapes {
            m: 24,
            nk: vec![(3072, 1024)],
        };
        load_or_measure_with(Some(&dir), &key(), &other, false, &mut counting(&mut calls)).unwrap();
        let again = load_or_measure_with(
            Some(&dir),
            &key(),
            &shapes(),
            false,
            &mut counting(&mut calls),
        )
        .unwrap();
        assert_eq!(again.source, Source::Cached);
        assert_eq!(calls, 2);
        // `force` (e5embed tune) measures again.
        let forced = load_or_measure_with(
            Some(&dir),
            &key(),
            &shapes(),
            true,
            &mut counting(&mut calls),
        )
        .unwrap();
        assert_eq!(forced.source, Source::Measured);
        assert_eq!(calls, 3);
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(CACHE_FILE)]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn corrupt_cache_warns_and_measures() {
        let dir = tempdir("corrupt");
        std::fs::create_dir_all(&dir).unwrap();
        for junk in [&b"{not json"[..], b"", b"\xff\xfe", b"{\"machine\": 3}"] {
            std::fs::write(dir.join(CACHE_FILE), junk).unwrap();
            let mut calls = 0;
            let t = load_or_measure_with(
                Some(&dir),
                &key(),
                &shapes(),
                false,
                &mut counting(&mut calls),
            )
            .unwrap();
            assert_eq!(t.source, Source::Measured);
            assert_eq!(calls, 1);
            assert!(
                t.warnings.iter().any(|w| w.contains("unreadable")),
                "{:?}",
                t.warnings
            );
            // And the file is whole again.
            let mut calls = 0;
            let t = load_or_measure_with(
                Some(&dir),
                &key(),
                &shapes(),
                false,
                &mut counting(&mut calls),
            )
            .unwrap();
            assert_eq!((t.source, calls), (Source::Cached, 0));
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn key_mismatch_measures_again() {
        let dir = tempdir("key");
        let mut calls = 0;
        load_or_measure_with(
            Some(&dir),
            &key(),
            &shapes(),
            false,
            &mut counting(&mut calls),
        )
        .unwrap();
        let variants = [
            MachineKey {
                cpu: "Other CPU".into(),
                ..key()
            },
            MachineKey {
                features: "Features(avx2+fma avx512f/bw/vl/dq)".into(),
                ..key()
            },
            MachineKey {
                kernel_version: KERNEL_VERSION + 1,
                ..key()
            },
        ];
        for (i, k) in variants.iter().enumerate() {
            let t =
                load_or_measure_with(Some(&dir), k, &shapes(), false, &mut counting(&mut calls))
                    .unwrap();
            assert_eq!(t.source, Source::Measured, "variant {i}");
            assert_eq!(calls, i + 2);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_cached_path_this_cpu_lacks_is_measured_again() {
        let dir = tempdir("lacks");
        let mut calls = 0;
        let mut t = load_or_measure_with(
            Some(&dir),
            &key(),
            &shapes(),
            false,
            &mut counting(&mut calls),
        )
        .unwrap()
        .tuning;
        t.f32.choice = "no-such-path".into();
        let file = CacheFile {
            machine: key(),
            entries: vec![t],
        };
        std::fs::write(dir.join(CACHE_FILE), serde_json::to_vec(&file).unwrap()).unwrap();
        let r = load_or_measure_with(
            Some(&dir),
            &key(),
            &shapes(),
            false,
            &mut counting(&mut calls),
        )
        .unwrap();
        assert_eq!(r.source, Source::Measured);
        assert_eq!(calls, 2);
        assert!(!r.warnings.is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn no_cache_dir_measures_without_writing() {
        let mut calls = 0;
        let t = load_or_measure_with(None, &key(), &shapes(), false, &mut counting(&mut calls))
            .unwrap();
        assert_eq!((t.source, calls), (Source::Measured, 1));
        assert!(t.path.is_none());
    }

    #[test]
    fn shapes_stay_within_the_budget() {
        let mut c = BertConfig {
            vocab_size: 30522,
            hidden_size: 384,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            intermediate_size: 1536,
            max_position_embeddings: 512,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
        };
        assert_eq!(Shapes::of(&c).m, 48);
        c.hidden_size = 1024;
        c.intermediate_size = 4096;
        let s = Shapes::of(&c);
        assert!(s.m >= 12 && s.m < 48 && s.m.is_multiple_of(12), "{s:?}");
    }
}
