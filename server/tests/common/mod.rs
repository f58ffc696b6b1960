//! Starting servers in-process on an ephemeral loopback port, and a real HTTP client.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use e5embed::{Embedder, EmbedderOptions};
use e5embed_server::{Server, ServerConfig};

/// The small test model (tools/fetch-models makes it).
pub fn model_dir() -> PathBuf {
    let d = e5embed::models_dir().join("paraphrase-MiniLM-L3-v2");
    assert!(
        d.join("model.safetensors").is_file(),
        "{} is missing: run tools/fetch-models",
        d.display()
    );
    d
}

/// A server running on its own runtime thread; dropping it shuts it down gracefully and
/// waits for `serve` to return.
pub struct TestServer {
    pub url: String,
    pub embedder: Arc<Embedder>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    pub fn start(edit: impl FnOnce(&mut ServerConfig)) -> TestServer {
        let mut cfg = ServerConfig::new(model_dir().display().to_string());
        cfg.port = 0;
        cfg.threads = Some(2);
        // Generous: the machines that run these tests are shared and can be slow.
        cfg.request_timeout = 600.0;
        edit(&mut cfg);
        let server = Server::load(cfg).expect("server loads");
        let embedder = server.embedder().clone();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                addr_tx.send(listener.local_addr()?).ok();
                server
                    .serve(listener, async move {
                        let _ = rx.await;
                    })
                    .await
            })
        });
        let addr = addr_rx.recv().expect("server thread bound a port");
        TestServer {
            url: format!("http://{addr}"),
            embedder,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    /// Sends the shutdown signal and returns what `serve` returned.
    pub fn stop(mut self) -> std::io::Result<()> {
        self.stop_inner()
    }

    /// Sends the shutdown signal without waiting.
    pub fn signal_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    fn stop_inner(&mut self) -> std::io::Result<()> {
        self.signal_shutdown();
        match self.thread.take() {
            Some(t) => t.join().expect("server thread panicked"),
            None => Ok(()),
        }
    }

    pub fn get(&self, path: &str) -> reqwest::blocking::Response {
        client()
            .get(format!("{}{path}", self.url))
            .send()
            .expect("GET")
    }

    pub fn post_json(&self, path: &str, body: &serde_json::Value) -> reqwest::blocking::Response {
        self.post_raw(path, serde_json::to_vec(body).unwrap())
    }

    pub fn post_raw(&self, path: &str, body: Vec<u8>) -> reqwest::blocking::Response {
        client()
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .expect("POST")
    }

    /// One metric's value from /metrics (the sum over its label sets matching `labels`).
    pub fn metric(&self, name: &str, labels: &str) -> f64 {
        let text = self.get("/metrics").text().unwrap();
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (key, value) = l.rsplit_once(' ')?;
                let (n, rest) = key.split_once('{').unwrap_or((key, ""));
                (n == name && rest.contains(labels)).then(|| value.parse::<f64>().unwrap())
            })
            .sum()
    }

    /// Waits until `cond` holds (polling every 2 ms), at most `limit`.
    pub fn wait_for(&self, limit: Duration, mut cond: impl FnMut(&TestServer) -> bool) -> bool {
        let start = Instant::now();
        while start.elapsed() < limit {
            if cond(self) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        false
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.stop_inner();
    }
}

pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

/// The server most tests share (default configuration).
pub fn shared() -> &'static TestServer {
    static S: OnceLock<TestServer> = OnceLock::new();
    S.get_or_init(|| TestServer::start(|_| {}))
}

/// The library, loaded separately with its defaults (one thread: results do not depend on
/// the thread count), as a user of `e5embed` would.
pub fn reference() -> &'static Embedder {
    static E: OnceLock<Embedder> = OnceLock::new();
    E.get_or_init(|| {
        Embedder::load_with(model_dir(), &EmbedderOptions::default().threads(1))
            .expect("reference loads")
    })
}

/// Texts of many lengths, one over the model's 128 tokens.
pub fn texts() -> Vec<String> {
    let mut t: Vec<String> = [
        "how much protein should a female eat",
        "The CDC recommends 46 grams of protein a day for women.",
        "a",
        "Ünïcödé àccents, 中文字符, emoji 🚀 and a literal [SEP] token",
        "   leading and trailing spaces   ",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    t.push("the lighthouse on the northern cape ".repeat(40)); // ~240 tokens: cut at 128
    t.push("word ".repeat(50));
    t
}

pub fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

pub fn normalized(v: &[f32]) -> Vec<f32> {
    let mut v = v.to_vec();
    e5embed::pool::l2_normalize(&mut v);
    v
}

/// A long text of exactly `words` repeated words (each one token for this tokenizer).
pub fn long_text(words: usize, seed: usize) -> String {
    let vocab = [
        "river", "market", "energy", "system", "research", "study", "report", "health", "school",
        "family", "history", "music", "science", "company", "country", "house",
    ];
    (0..words)
        .map(|i| vocab[(i * 7 + seed * 13 + i / 3) % vocab.len()])
        .collect::<Vec<_>>()
        .join(" ")
}
