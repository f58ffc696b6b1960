//! Dynamic batching, backpressure, cancellation, timeouts and shutdown, with real clients.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// These tests measure relative timings: run them one at a time, whatever the test threads.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// `n` texts of exactly 128 tokens each for this model (126 words + [CLS] [SEP], cut).
fn big_request(n: usize) -> Vec<String> {
    (0..n).map(|i| long_text(200, i)).collect()
}

#[test]
fn concurrent_requests_share_forwards_and_stay_bitwise() {
    let _serial = serial();
    let s = TestServer::start(|_| {});
    let r = reference();
    let texts: Vec<String> = (0..96)
        .map(|i| format!("query number {i}: {}", long_text(i % 23 + 1, i)))
        .collect();
    let want = r.embed(&texts).unwrap().vectors;
    std::thread::scope(|scope| {
        for t in 0..16 {
            let (s, texts, want) = (&s, &texts, &want);
            scope.spawn(move || {
                let c = client();
                for i in (t..texts.len()).step_by(16) {
                    let v: Value = c
                        .post(format!("{}/v1/embeddings", s.url))
                        .json(&json!({"input": texts[i]}))
                        .send()
                        .unwrap()
                        .json()
                        .unwrap();
                    let got: Vec<f32> =
                        serde_json::from_value(v["data"][0]["embedding"].clone()).unwrap();
                    assert_eq!(bits(&got), bits(&want[i]), "text {i}");
                }
            });
        }
    });
    // One input per request, so a forward with more than one input packed several requests.
    let forwards = s.metric("e5embed_batch_inputs_count", "");
    let inputs = s.metric("e5embed_batch_inputs_sum", "");
    assert_eq!(inputs, 96.0);
    assert!(
        forwards < inputs,
        "no forward packed two requests ({forwards} forwards for {inputs} inputs)"
    );
}

#[test]
fn a_short_query_does_not_wait_behind_a_big_request() {
    let _serial = serial();
    // 128-token forwards: the big request needs 200 of them.
    let s = TestServer::start(|c| c.max_batch_tokens = Some(128));
    let big = big_request(200);
    std::thread::scope(|scope| {
        let started = Instant::now();
        let h = scope.spawn(|| {
            let resp = s.post_json("/embed", &json!({"inputs": big}));
            assert_eq!(resp.status(), 200);
            Instant::now()
        });
        assert!(
            s.wait_for(Duration::from_secs(30), |s| s
                .metric("e5embed_queue_tokens", "")
                > 0.0),
            "the big request never queued"
        );
        let admitted = started.elapsed();
        let q0 = Instant::now();
        let resp = s.post_json("/embed", &json!({"inputs": "how much protein"}));
        assert_eq!(resp.status(), 200);
        let query_done = Instant::now();
        let query_latency = q0.elapsed();
        let big_done = h.join().unwrap();
        let big_total = big_done.duration_since(started) - admitted;
        assert!(
            query_done < big_done,
            "the query ({query_latency:?}) finished after the big request ({big_total:?})"
        );
        assert!(
            query_latency * 5 < big_total,
            "query {query_latency:?} vs big request {big_total:?}"
        );
    });
}

#[test]
fn full_queue_is_429_and_oversized_request_413() {
    let _serial = serial();
    // The queue holds exactly one big request; a second one while the first is queued: 429.
    let n = 200;
    let s = TestServer::start(|c| {
        c.max_batch_tokens = Some(128);
        c.max_queue_tokens = n * 128;
    });
    let big = big_request(n);
    // More tokens than the whole queue: 413 (it could never be admitted).
    let resp = s.post_json("/embed", &json!({"inputs": big_request(n + 1)}));
    assert_eq!(resp.status(), 413);
    assert_eq!(
        resp.json::<Value>().unwrap()["error_type"],
        "PayloadTooLarge"
    );

    std::thread::scope(|scope| {
        let h = scope.spawn(|| s.post_json("/embed", &json!({"inputs": big})).status());
        assert!(s.wait_for(Duration::from_secs(30), |s| s
            .metric("e5embed_queue_tokens", "")
            > (n * 128 / 2) as f64));
        let half = big_request(n / 2);
        let resp = s.post_json("/v1/embeddings", &json!({"input": half}));
        assert_eq!(resp.status(), 429);
        assert_eq!(resp.headers()["retry-after"], "1");
        let v: Value = resp.json().unwrap();
        assert_eq!(v["error"]["code"], "Overloaded");
        assert_eq!(v["error"]["type"], "rate_limit_error");
        assert_eq!(h.join().unwrap(), 200);
    });
    // Once drained, the same request is served.
    assert!(s.wait_for(Duration::from_secs(10), |s| s
        .metric("e5embed_queue_tokens", "")
        == 0.0));
    let resp = s.post_json("/v1/embeddings", &json!({"input": big_request(n / 2)}));
    assert_eq!(resp.status(), 200);
    assert!(s.metric("e5embed_requests_total", "status=\"429\"") >= 1.0);
}

/// After a request of `n` inputs was abandoned: the queue drains (and stays drained) within
/// 20 s, and fewer than half of the inputs were embedded.
fn work_was_dropped(s: &TestServer, n: usize) -> bool {
    let drained = |s: &TestServer| s.metric("e5embed_queue_tokens", "") == 0.0;
    if !s.wait_for(Duration::from_secs(20), drained) {
        return false;
    }
    std::thread::sleep(Duration::from_secs(1));
    drained(s) && s.metric("e5embed_batch_inputs_sum", "") < (n / 2) as f64
}

#[test]
fn a_client_that_disconnects_cancels_its_queued_work() {
    let _serial = serial();
    let s = TestServer::start(|c| c.max_batch_tokens = Some(128));
    let n = 600;
    let big = big_request(n);
    let impatient = reqwest::blocking::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let t0 = Instant::now();
    let r = impatient
        .post(format!("{}/embed", s.url))
        .json(&json!({"inputs": big}))
        .send();
    assert!(
        r.is_err(),
        "the request should have timed out on the client side"
    );
    // The work is dropped, not done: the queue empties long before the 600 inputs' forwards
    // would have run, and most inputs are never embedded. (On a loaded machine the client may
    // give up while the request is still being tokenized: then nothing is ever queued, and
    // nothing is counted as cancelled either, so the test checks what was embedded.)
    assert!(
        work_was_dropped(&s, n),
        "cancelled {} queued {} embedded {} after {:?}",
        s.metric("e5embed_cancelled_inputs_total", ""),
        s.metric("e5embed_queue_tokens", ""),
        s.metric("e5embed_batch_inputs_sum", ""),
        t0.elapsed()
    );
    assert_eq!(
        s.post_json("/embed", &json!({"inputs": "next"})).status(),
        200
    );
}

#[test]
fn request_timeout_is_408_and_drops_the_work() {
    let _serial = serial();
    let s = TestServer::start(|c| {
        c.max_batch_tokens = Some(128);
        c.request_timeout = 0.3;
    });
    let resp = s.post_json("/embed", &json!({"inputs": big_request(600)}));
    assert_eq!(resp.status(), 408);
    assert!(
        work_was_dropped(&s, 600),
        "cancelled {} queued {} embedded {}",
        s.metric("e5embed_cancelled_inputs_total", ""),
        s.metric("e5embed_queue_tokens", ""),
        s.metric("e5embed_batch_inputs_sum", "")
    );
    assert_eq!(
        s.post_json("/embed", &json!({"inputs": "next"})).status(),
        200
    );
    assert!(s.metric("e5embed_requests_total", "status=\"408\"") >= 1.0);
}

#[test]
fn too_many_concurrent_requests_is_429() {
    let _serial = serial();
    let s = TestServer::start(|c| {
        c.max_batch_tokens = Some(128);
        c.max_concurrent_requests = 1;
    });
    std::thread::scope(|scope| {
        let h = scope.spawn(|| {
            s.post_json("/embed", &json!({"inputs": big_request(150)}))
                .status()
        });
        assert!(s.wait_for(Duration::from_secs(30), |s| s
            .metric("e5embed_queue_tokens", "")
            > 0.0));
        let resp = s.post_json("/embed", &json!({"inputs": "one more"}));
        assert_eq!(resp.status(), 429);
        assert_eq!(resp.json::<Value>().unwrap()["error_type"], "Overloaded");
        assert_eq!(h.join().unwrap(), 200);
    });
    assert_eq!(
        s.post_json("/embed", &json!({"inputs": "now"})).status(),
        200
    );
}

#[test]
fn graceful_shutdown_finishes_requests_in_progress() {
    let _serial = serial();
    let mut s = TestServer::start(|c| c.max_batch_tokens = Some(128));
    let url = s.url.clone();
    let big = big_request(150);
    let want = reference().embed(&big[..1]).unwrap().vectors.remove(0);
    let h = std::thread::spawn(move || {
        client()
            .post(format!("{url}/embed"))
            .json(&json!({"inputs": big, "normalize": false}))
            .send()
            .unwrap()
    });
    assert!(s.wait_for(Duration::from_secs(30), |s| s
        .metric("e5embed_queue_tokens", "")
        > 0.0));
    s.signal_shutdown();
    let resp = h.join().unwrap();
    assert_eq!(resp.status(), 200);
    let v: Vec<Vec<f32>> = resp.json().unwrap();
    assert_eq!(v.len(), 150);
    assert_eq!(bits(&v[0]), bits(&want));
    let url = s.url.clone();
    s.stop().expect("serve returned Ok");
    // No longer accepting.
    assert!(client().get(format!("{url}/health")).send().is_err());
}

#[test]
fn the_binary_serves_and_exits_0_on_sigterm() {
    let _serial = serial();
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_e5embed-server"))
        .args([
            "--model",
            &model_dir().display().to_string(),
            "--port",
            "0",
            "--threads",
            "2",
        ])
        .args(["--max-batch-tokens", "128"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    assert_eq!(
        client()
            .get(format!("{url}/health"))
            .send()
            .unwrap()
            .status(),
        200
    );
    // A request in progress when SIGTERM arrives still gets its answer.
    let u = url.clone();
    let h = std::thread::spawn(move || {
        client()
            .post(format!("{u}/embed"))
            .json(&json!({"inputs": big_request(150)}))
            .send()
            .unwrap()
            .status()
    });
    std::thread::sleep(Duration::from_millis(300));
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert_eq!(h.join().unwrap(), 200);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{status}");
}
