//! Per-op timings of the forward, switched on by `E5EMBED_TIMING=1`: where the time goes, for
//! the next engineer who profiles (`e5embed bench` prints the table on stderr).

use std::time::{Duration, Instant};

/// The ops of the forward, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Embeddings,
    QkvGemm,
    Attention,
    AttnOutGemm,
    FfnUpGemm,
    FfnDownGemm,
    LayerNorm,
}

impl Op {
    pub const ALL: [Op; 7] = [
        Op::Embeddings,
        Op::QkvGemm,
        Op::Attention,
        Op::AttnOutGemm,
        Op::FfnUpGemm,
        Op::FfnDownGemm,
        Op::LayerNorm,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Op::Embeddings => "embeddings+LN",
            Op::QkvGemm => "QKV GEMM (+bias)",
            Op::Attention => "attention",
            Op::AttnOutGemm => "attn out GEMM (+bias+residual)",
            Op::FfnUpGemm => "FFN up GEMM (+bias+GELU)",
            Op::FfnDownGemm => "FFN down GEMM (+bias+residual)",
            Op::LayerNorm => "LayerNorm (2 per layer)",
        }
    }
}

/// Accumulated time per op; a no-op (no clock reads) unless enabled.
#[derive(Debug, Clone, Default)]
pub struct OpTimes {
    enabled: bool,
    total: [Duration; 7],
    forwards: usize,
}

impl OpTimes {
    /// Enabled when `E5EMBED_TIMING` is set to anything but `0` or empty.
    pub fn from_env() -> Self {
        let enabled = std::env::var("E5EMBED_TIMING").is_ok_and(|v| !v.is_empty() && v != "0");
        OpTimes {
            enabled,
            ..Default::default()
        }
    }

    /// A fresh, empty set with the same switch (no environment read: for per-call use).
    pub fn empty_like(&self) -> Self {
        OpTimes {
            enabled: self.enabled,
            ..Default::default()
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub(crate) fn start(&mut self) -> Option<Instant> {
        if self.enabled {
            self.forwards += 1;
            Some(Instant::now())
        } else {
            None
        }
    }

    pub(crate) fn lap(&mut self, op: Op, clock: &mut Option<Instant>) {
        if let Some(c) = clock {
            let now = Instant::now();
            self.total[op as usize] += now - *c;
            *c = now;
        }
    }

    /// Adds another set of timings into this one.
    pub fn merge(&mut self, other: &OpTimes) {
        for (a, b) in self.total.iter_mut().zip(&other.total) {
            *a += *b;
        }
        self.forwards += other.forwards;
    }

    /// Adds another set of timings taken on one of `threads` threads working at once: its
    /// times divided by `threads` (their sum over the threads is then the wall time), its
    /// forward count not added (the caller's own count has the step).
    pub fn merge_scaled(&mut self, other: &OpTimes, threads: usize) {
        let div = threads.clamp(1, u32::MAX as usize) as u32;
        for (a, b) in self.total.iter_mut().zip(&other.total) {
            *a += *b / div;
        }
    }

    /// A table: op, total ms, share of the forward.
    pub fn report(&self) -> String {
        let sum: Duration = self.total.iter().sum();
        let mut s = format!("per-op timings over {} forward(s):\n", self.forwards);
        for op in Op::ALL {
            let t = self.total[op as usize];
            s += &format!(
                "  {:<32} {:>10.3} ms  {:>5.1}%\n",
                op.name(),
                t.as_secs_f64() * 1e3,
                100.0 * t.as_secs_f64() / sum.as_secs_f64().max(1e-12)
            );
        }
        s += &format!("  {:<32} {:>10.3} ms\n", "total", sum.as_secs_f64() * 1e3);
        s
    }
}

/// Wall time and memory of each stage of a load (and of the CLI's first call), switched on by
/// `E5EMBED_TIMING=1` like [`OpTimes`]: where a cold start goes (`e5embed embed` prints the
/// table on stderr). Off, a lap is one branch.
#[derive(Debug, Clone, Default)]
pub struct StageTimes {
    enabled: bool,
    last: Option<Instant>,
    stages: Vec<Stage>,
}

/// One timed stage.
#[derive(Debug, Clone)]
struct Stage {
    name: &'static str,
    took: Duration,
    /// RSS and peak RSS (bytes) at its end.
    rss: Option<u64>,
    peak: Option<u64>,
    /// Ran beside the others (on a thread of its own): not in the total.
    parallel: bool,
}

impl StageTimes {
    /// Enabled when `E5EMBED_TIMING` is set to anything but `0` or empty; the clock starts now.
    pub fn from_env() -> Self {
        let enabled = std::env::var("E5EMBED_TIMING").is_ok_and(|v| !v.is_empty() && v != "0");
        StageTimes {
            enabled,
            last: enabled.then(Instant::now),
            stages: Vec::new(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Ends the stage `name` (it began at the previous lap, or at `from_env`).
    pub fn lap(&mut self, name: &'static str) {
        if let Some(last) = self.last {
            let now = Instant::now();
            self.stages.push(Stage {
                name,
                took: now - last,
                rss: crate::internals::mem::rss_bytes(),
                peak: crate::internals::mem::peak_rss_bytes(),
                parallel: false,
            });
            // The /proc reads are not charged to the next stage.
            self.last = Some(Instant::now());
        }
    }

    /// Records a stage that ran on another thread, beside the ones lapped here (shown, not
    /// added to the total).
    pub fn record_parallel(&mut self, name: &'static str, took: Duration) {
        if self.enabled {
            self.stages.push(Stage {
                name,
                took,
                rss: None,
                peak: None,
                parallel: true,
            });
        }
    }

    /// Appends another set's stages (a load's, into the CLI's).
    pub fn extend(&mut self, other: &StageTimes) {
        if self.enabled {
            self.stages.extend_from_slice(&other.stages);
            self.last = Some(Instant::now());
        }
    }

    /// The stages recorded so far.
    pub fn stages(&self) -> impl Iterator<Item = (&'static str, Duration)> + '_ {
        self.stages.iter().map(|s| (s.name, s.took))
    }

    /// A table: stage, ms, RSS and peak RSS at its end (MB).
    pub fn report(&self) -> String {
        let mb = |b: Option<u64>| b.map_or(f64::NAN, |b| b as f64 / (1024.0 * 1024.0));
        let mut s = format!(
            "cold start stages:\n  {:<34} {:>9} {:>9} {:>9}\n",
            "stage", "ms", "RSS MB", "peak MB"
        );
        let mut sum = Duration::ZERO;
        for st in &self.stages {
            let (name, t, rss, peak) = (st.name, st.took, st.rss, st.peak);
            if st.parallel {
                s += &format!(
                    "  {:<34} {:>9.2}\n",
                    format!("({name})"),
                    t.as_secs_f64() * 1e3
                );
                continue;
            }
            sum += t;
            s += &format!(
                "  {name:<34} {:>9.2} {:>9.1} {:>9.1}\n",
                t.as_secs_f64() * 1e3,
                mb(rss),
                mb(peak)
            );
        }
        s += "  (parenthesised: on its own thread, beside the stages above it; not in the total)\n";
        s += &format!("  {:<34} {:>9.2}\n", "total", sum.as_secs_f64() * 1e3);
        s
    }
}
