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
