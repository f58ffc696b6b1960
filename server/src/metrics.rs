//! Prometheus metrics, one registry per server (so several servers can run in one process,
//! as the integration tests do). Served as text on `GET /metrics`.

use prometheus::{
    exponential_buckets, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter,
    IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

/// Every metric the server exports (names prefixed `e5embed_`).
pub struct Metrics {
    registry: Registry,
    /// Requests by route (the matched path) and status code.
    pub requests: IntCounterVec,
    /// Request duration by route, first byte to reply.
    pub request_seconds: HistogramVec,
    /// Inputs embedded.
    pub inputs: IntCounter,
    /// Tokens embedded (after truncation, specials included).
    pub tokens: IntCounter,
    /// Inputs cut at the model's max_seq_length.
    pub truncated_inputs: IntCounter,
    /// Inputs dropped from the queue because their client went away (disconnect, timeout).
    pub cancelled_inputs: IntCounter,
    /// Tokenization time per request.
    pub tokenization_seconds: Histogram,
    /// Time from admission to the request's first forward.
    pub queue_seconds: Histogram,
    /// Time per forward (one engine call).
    pub inference_seconds: Histogram,
    /// Inputs per forward.
    pub batch_inputs: Histogram,
    /// Tokens per forward.
    pub batch_tokens: Histogram,
    /// Tokens admitted and not yet in a forward.
    pub queue_tokens: IntGauge,
    /// Requests with inputs not yet in a forward (as the scheduler last saw it).
    pub queue_requests: IntGauge,
    /// Requests being handled.
    pub in_flight: IntGauge,
}

impl Metrics {
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let seconds = exponential_buckets(0.0005, 2.0, 18)?; // 0.5 ms .. 65 s
        let counts = exponential_buckets(1.0, 2.0, 13)?; // 1 .. 4096
        let tokens = exponential_buckets(4.0, 2.0, 15)?; // 4 .. 65,536
        let m = Metrics {
            requests: IntCounterVec::new(
                Opts::new(
                    "e5embed_requests_total",
                    "HTTP requests by route and status",
                ),
                &["route", "status"],
            )?,
            request_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "e5embed_request_duration_seconds",
                    "HTTP request duration by route",
                )
                .buckets(seconds.clone()),
                &["route"],
            )?,
            inputs: IntCounter::new("e5embed_inputs_total", "Inputs embedded")?,
            tokens: IntCounter::new("e5embed_tokens_total", "Tokens embedded")?,
            truncated_inputs: IntCounter::new(
                "e5embed_truncated_inputs_total",
                "Inputs cut at the model's max_seq_length",
            )?,
            cancelled_inputs: IntCounter::new(
                "e5embed_cancelled_inputs_total",
                "Queued inputs dropped because their client went away",
            )?,
            tokenization_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "e5embed_tokenization_duration_seconds",
                    "Tokenization time per request",
                )
                .buckets(seconds.clone()),
            )?,
            queue_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "e5embed_queue_duration_seconds",
                    "Time from admission to the request's first forward",
                )
                .buckets(seconds.clone()),
            )?,
            inference_seconds: Histogram::with_opts(
                HistogramOpts::new("e5embed_inference_duration_seconds", "Time per forward")
                    .buckets(seconds),
            )?,
            batch_inputs: Histogram::with_opts(
                HistogramOpts::new("e5embed_batch_inputs", "Inputs per forward").buckets(counts),
            )?,
            batch_tokens: Histogram::with_opts(
                HistogramOpts::new("e5embed_batch_tokens", "Tokens per forward").buckets(tokens),
            )?,
            queue_tokens: IntGauge::new(
                "e5embed_queue_tokens",
                "Tokens admitted and not yet in a forward",
            )?,
            queue_requests: IntGauge::new(
                "e5embed_queue_requests",
                "Requests with inputs not yet in a forward",
            )?,
            in_flight: IntGauge::new("e5embed_requests_in_flight", "Requests being handled")?,
            registry,
        };
        m.registry.register(Box::new(m.requests.clone()))?;
        m.registry.register(Box::new(m.request_seconds.clone()))?;
        m.registry.register(Box::new(m.inputs.clone()))?;
        m.registry.register(Box::new(m.tokens.clone()))?;
        m.registry.register(Box::new(m.truncated_inputs.clone()))?;
        m.registry.register(Box::new(m.cancelled_inputs.clone()))?;
        m.registry
            .register(Box::new(m.tokenization_seconds.clone()))?;
        m.registry.register(Box::new(m.queue_seconds.clone()))?;
        m.registry.register(Box::new(m.inference_seconds.clone()))?;
        m.registry.register(Box::new(m.batch_inputs.clone()))?;
        m.registry.register(Box::new(m.batch_tokens.clone()))?;
        m.registry.register(Box::new(m.queue_tokens.clone()))?;
        m.registry.register(Box::new(m.queue_requests.clone()))?;
        m.registry.register(Box::new(m.in_flight.clone()))?;
        Ok(m)
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}
