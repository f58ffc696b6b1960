//! Every documented error: status code, body shape (TEI's `{error, error_type}` on /embed,
//! OpenAI's `{"error": {message, type, ...}}` on /v1/embeddings), and the server keeps serving.

mod common;

use common::*;
use serde_json::{json, Value};

/// Checks a TEI error reply and returns its message.
fn tei_error(resp: reqwest::blocking::Response, status: u16, error_type: &str) -> String {
    assert_eq!(resp.status(), status, "status");
    let v: Value = resp.json().expect("a JSON error body");
    assert_eq!(v["error_type"], error_type, "{v}");
    v["error"].as_str().expect("error message").to_owned()
}

/// Checks an OpenAI error reply and returns its message.
fn openai_error(resp: reqwest::blocking::Response, status: u16, code: &str) -> String {
    assert_eq!(resp.status(), status, "status");
    let v: Value = resp.json().expect("a JSON error body");
    assert_eq!(v["error"]["code"], code, "{v}");
    assert!(v["error"]["type"].is_string(), "{v}");
    v["error"]["message"].as_str().expect("message").to_owned()
}

fn still_serving(s: &TestServer) {
    let resp = s.post_json("/embed", &json!({"inputs": "still here"}));
    assert_eq!(resp.status(), 200);
}

#[test]
fn malformed_json_is_400() {
    let s = shared();
    for body in [
        &b"{"[..],
        b"not json",
        b"",
        b"{\"inputs\": \"a\",}",
        b"[1,2",
        b"{\"inputs\": [\"a\" \"b\"]}",
    ] {
        let shown = String::from_utf8_lossy(body).into_owned();
        let resp = s.post_raw("/embed", body.to_vec());
        assert_eq!(resp.status(), 400, "{shown}: {}", resp.text().unwrap());
        tei_error(s.post_raw("/embed", body.to_vec()), 400, "InvalidJson");
        openai_error(
            s.post_raw("/v1/embeddings", body.to_vec()),
            400,
            "InvalidJson",
        );
    }
    still_serving(s);
}

#[test]
fn invalid_utf8_is_400() {
    let s = shared();
    let mut body = b"{\"inputs\": \"abc".to_vec();
    body.extend_from_slice(&[0xff, 0xfe, 0xc3]);
    body.extend_from_slice(b"\"}");
    tei_error(s.post_raw("/embed", body.clone()), 400, "InvalidJson");
    let body = [b"{\"input\": [\"ok\", \"\xc3\x28\"]}".as_slice()].concat();
    openai_error(s.post_raw("/v1/embeddings", body), 400, "InvalidJson");
    still_serving(s);
}

#[test]
fn wrong_types_and_unknown_fields_are_422() {
    let s = shared();
    for body in [
        json!({"inputs": 5}),
        json!({"inputs": {"a": 1}}),
        json!({"inputs": [1, "a"]}),
        json!({"inputs": [-1, 2]}),
        json!({"inputs": [[1, 2], "a"]}),
        json!({"inputs": [4294967296u64]}),
        json!({"inputs": null}),
        json!({}),
        json!({"inputs": "a", "normalize": "yes"}),
        json!({"inputs": "a", "truncation_direction": "middle"}),
        json!({"inputs": "a", "dimensions": -3}),
        json!({"inputs": "a", "bogus": 1}),
        json!(["a"]),
    ] {
        let msg = tei_error(s.post_json("/embed", &body), 422, "Validation");
        assert!(!msg.is_empty());
    }
    let msg = tei_error(
        s.post_json("/embed", &json!({"inputs": [1, "a"]})),
        422,
        "Validation",
    );
    assert!(msg.contains("array of strings"), "{msg}");
    for body in [
        json!({"input": 5}),
        json!({"input": "a", "encoding_format": "int8"}),
        json!({"input": "a", "extra": true}),
        json!({"inputs": "a"}),
        json!({"input": [[]]}),
    ] {
        openai_error(s.post_json("/v1/embeddings", &body), 422, "Validation");
    }
    still_serving(s);
}

#[test]
fn empty_inputs_400_empty_strings_422() {
    let s = shared();
    tei_error(s.post_json("/embed", &json!({"inputs": []})), 400, "Empty");
    openai_error(
        s.post_json("/v1/embeddings", &json!({"input": []})),
        400,
        "Empty",
    );
    tei_error(
        s.post_json("/embed", &json!({"inputs": ""})),
        422,
        "Validation",
    );
    let msg = openai_error(
        s.post_json("/v1/embeddings", &json!({"input": ["a", ""]})),
        422,
        "Validation",
    );
    assert!(msg.contains("input 1"), "{msg}");
    still_serving(s);
}

#[test]
fn token_id_limits() {
    let s = shared();
    let vocab = reference().config().bert.vocab_size as u64;
    let msg = tei_error(
        s.post_json("/embed", &json!({"inputs": [101, vocab, 102]})),
        422,
        "Validation",
    );
    assert!(msg.contains("vocabulary"), "{msg}");
    // Over max_seq_length: cut when truncating (the default), refused otherwise.
    let long: Vec<u32> = std::iter::once(101)
        .chain(std::iter::repeat_n(2000, 300))
        .chain(std::iter::once(102))
        .collect();
    assert_eq!(
        s.post_json("/embed", &json!({"inputs": long})).status(),
        200
    );
    tei_error(
        s.post_json("/embed", &json!({"inputs": long, "truncate": false})),
        422,
        "Validation",
    );
    // Prompts are for texts.
    tei_error(
        s.post_json(
            "/embed",
            &json!({"inputs": [101, 102], "prompt_name": "query"}),
        ),
        422,
        "Validation",
    );
    still_serving(s);
}

#[test]
fn prompt_and_dimension_validation() {
    let s = shared();
    let msg = tei_error(
        s.post_json("/embed", &json!({"inputs": "a", "prompt_name": "nope"})),
        422,
        "Validation",
    );
    assert!(msg.contains("query") && msg.contains("passage"), "{msg}");
    for d in [0, 385, 100000] {
        tei_error(
            s.post_json("/embed", &json!({"inputs": "a", "dimensions": d})),
            422,
            "Validation",
        );
        openai_error(
            s.post_json("/v1/embeddings", &json!({"input": "a", "dimensions": d})),
            422,
            "Validation",
        );
    }
    still_serving(s);
}

#[test]
fn too_many_inputs_422_big_body_413_big_string_ok() {
    let s = shared();
    // 10,000 inputs > --max-client-batch-size 2048.
    let many: Vec<&str> = vec!["x"; 10_000];
    let msg = tei_error(
        s.post_json("/embed", &json!({"inputs": many})),
        422,
        "Validation",
    );
    assert!(msg.contains("2048"), "{msg}");
    openai_error(
        s.post_json("/v1/embeddings", &json!({"input": many})),
        422,
        "Validation",
    );
    // A body over --payload-limit (2 MB): 413, with and without Content-Length.
    let big = "word ".repeat(500_000);
    tei_error(
        s.post_json("/embed", &json!({"inputs": big})),
        413,
        "PayloadTooLarge",
    );
    // A 1 MB string fits the limit: embedded (cut at max_seq_length).
    let mb = "lighthouse ".repeat(95_000);
    let resp = s.post_json("/v1/embeddings", &json!({"input": mb}));
    assert_eq!(resp.status(), 200);
    still_serving(s);
}

/// A body of unknown length (no Content-Length: chunked on the wire) over the limit: 413 as
/// well. In-process through the router (over a socket, the server's early reply races the
/// client's unsent rest of the body, which a client may see as a reset connection instead).
#[test]
fn chunked_body_over_the_limit_is_413() {
    use std::collections::VecDeque;
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use tower::ServiceExt;

    struct Chunks(VecDeque<axum::body::Bytes>);
    impl http_body::Body for Chunks {
        type Data = axum::body::Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
            Poll::Ready(self.0.pop_front().map(|b| Ok(http_body::Frame::data(b))))
        }
    }
    let mut cfg = e5embed_server::ServerConfig::new(model_dir().display().to_string());
    cfg.payload_limit = 100_000;
    let router = e5embed_server::Server::load(cfg).unwrap().router();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (status, body) = rt.block_on(async move {
        let chunks = (0..30)
            .map(|_| axum::body::Bytes::from(vec![b' '; 10_000]))
            .collect();
        let req = axum::http::Request::post("/v1/embeddings")
            .body(axum::body::Body::new(Chunks(chunks)))
            .unwrap();
        let resp = router.oneshot(req).await.unwrap();
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, body)
    });
    assert_eq!(status, 413);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["code"], "PayloadTooLarge", "{v}");
}

#[test]
fn api_key_is_required_except_for_health() {
    let s = TestServer::start(|c| c.api_key = Some("s3cret-key".into()));
    let url = |p: &str| format!("{}{p}", s.url);
    let c = client();
    for path in ["/info", "/metrics", "/openapi.json"] {
        let resp = c.get(url(path)).send().unwrap();
        assert_eq!(resp.status(), 401, "{path}");
        assert_eq!(resp.headers()["www-authenticate"], "Bearer");
    }
    let body = json!({"input": "hello"});
    let resp = c.post(url("/v1/embeddings")).json(&body).send().unwrap();
    assert_eq!(resp.status(), 401);
    for bad in [
        "Bearer wrong",
        "Bearer s3cret-ke",
        "Bearer s3cret-key2",
        "s3cret-key",
        "Basic s3cret-key",
        "Bearer ",
    ] {
        let resp = c
            .post(url("/v1/embeddings"))
            .header("authorization", bad)
            .json(&body)
            .send()
            .unwrap();
        assert_eq!(resp.status(), 401, "{bad}");
    }
    let resp = c
        .post(url("/v1/embeddings"))
        .bearer_auth("s3cret-key")
        .json(&body)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = c
        .post(url("/embed"))
        .bearer_auth("s3cret-key")
        .json(&json!({"inputs": "hello"}))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(c.get(url("/health")).send().unwrap().status(), 200);
    assert_eq!(
        c.get(url("/info"))
            .bearer_auth("s3cret-key")
            .send()
            .unwrap()
            .status(),
        200
    );
}

#[test]
fn default_prompt_name_applies_to_texts_only() {
    let s = TestServer::start(|c| c.default_prompt_name = Some("query".into()));
    let r = reference();
    let want = r.embed_queries(&["summit"]).unwrap().vectors.remove(0);
    let v: Value = s
        .post_json("/embed", &json!({"inputs": "summit", "normalize": false}))
        .json()
        .unwrap();
    let got: Vec<f32> = serde_json::from_value(v[0].clone()).unwrap();
    assert_eq!(bits(&got), bits(&want));
    // An explicit prompt wins.
    let want = r.embed_passages(&["summit"]).unwrap().vectors.remove(0);
    let v: Value = s
        .post_json(
            "/embed",
            &json!({"inputs": "summit", "normalize": false, "prompt_name": "passage"}),
        )
        .json()
        .unwrap();
    let got: Vec<f32> = serde_json::from_value(v[0].clone()).unwrap();
    assert_eq!(bits(&got), bits(&want));
    // Token ids are used as given.
    let ids = r.tokenize(&["summit"]).unwrap().remove(0);
    let want = r
        .embed_tokens(std::slice::from_ref(&ids))
        .unwrap()
        .vectors
        .remove(0);
    let v: Value = s
        .post_json("/embed", &json!({"inputs": ids.ids, "normalize": false}))
        .json()
        .unwrap();
    let got: Vec<f32> = serde_json::from_value(v[0].clone()).unwrap();
    assert_eq!(bits(&got), bits(&want));
    assert_eq!(
        s.get("/info").json::<Value>().unwrap()["default_prompt_name"],
        "query"
    );
}

#[test]
fn bad_configuration_is_refused_at_start() {
    let mut cfg = e5embed_server::ServerConfig::new(model_dir().display().to_string());
    cfg.default_prompt_name = Some("nope".into());
    assert!(e5embed_server::Server::load(cfg.clone()).is_err());
    cfg.default_prompt_name = None;
    cfg.precision = "f16".into();
    assert!(e5embed_server::Server::load(cfg.clone()).is_err());
    cfg.precision = "auto".into();
    cfg.max_queue_tokens = 10; // below one input of 128 tokens
    assert!(e5embed_server::Server::load(cfg.clone()).is_err());
    cfg.max_queue_tokens = 100_000;
    cfg.max_batch_tokens = Some(64); // below max_seq_length 128
    assert!(e5embed_server::Server::load(cfg.clone()).is_err());
    cfg.max_batch_tokens = None;
    cfg.model = "/nonexistent/model/dir".into();
    assert!(e5embed_server::Server::load(cfg).is_err());
}
