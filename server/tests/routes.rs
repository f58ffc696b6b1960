//! Every route with a real HTTP client against a server on an ephemeral loopback port:
//! results bitwise equal to the library, the wire shapes OpenAI's and TEI's clients read.

mod common;

use base64::Engine as _;
use common::*;
use serde_json::{json, Value};

/// Parses a float array exactly as f32 (serde_json's f32 parsing of the shortest repr).
fn vectors_f32(body: &str, pointer: &str) -> Vec<Vec<f32>> {
    let v: Value = serde_json::from_str(body).unwrap();
    let arr = if pointer.is_empty() {
        v.as_array().unwrap().clone()
    } else {
        v.pointer(pointer).unwrap().as_array().unwrap().clone()
    };
    arr.iter()
        .map(|x| {
            let x = if pointer.is_empty() {
                x
            } else {
                &x["embedding"]
            };
            serde_json::from_value::<Vec<f32>>(x.clone()).unwrap()
        })
        .collect()
}

#[test]
fn openai_float_is_bitwise_the_library() {
    let s = shared();
    let texts = texts();
    let want = reference().embed(&texts).unwrap();
    let resp = s.post_json("/v1/embeddings", &json!({"input": texts, "model": "x"}));
    assert_eq!(resp.status(), 200);
    let tokens: usize = resp.headers()["x-compute-tokens"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body = resp.text().unwrap();
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["object"], "list");
    assert_eq!(v["model"], model_dir().display().to_string());
    let total: usize = want.token_counts.iter().sum();
    assert_eq!(v["usage"]["prompt_tokens"], total);
    assert_eq!(v["usage"]["total_tokens"], total);
    assert_eq!(tokens, total);
    for (i, d) in v["data"].as_array().unwrap().iter().enumerate() {
        assert_eq!(d["object"], "embedding");
        assert_eq!(d["index"], i);
    }
    let got = vectors_f32(&body, "/data");
    assert_eq!(got.len(), texts.len());
    for (i, (g, w)) in got.iter().zip(&want.vectors).enumerate() {
        assert_eq!(bits(g), bits(w), "text {i} differs from the library");
    }
}

#[test]
fn openai_base64_is_little_endian_f32() {
    let s = shared();
    let texts = texts();
    let want = reference().embed(&texts).unwrap();
    let resp = s.post_json(
        "/v1/embeddings",
        &json!({"input": texts, "encoding_format": "base64"}),
    );
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().unwrap();
    for (d, w) in v["data"].as_array().unwrap().iter().zip(&want.vectors) {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(d["embedding"].as_str().unwrap())
            .unwrap();
        let g: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        assert_eq!(bits(&g), bits(w));
    }
}

#[test]
fn openai_string_and_token_id_inputs() {
    let s = shared();
    let r = reference();
    let text = "how much protein should a female eat";
    let want = r.embed(&[text]).unwrap().vectors.remove(0);
    // A single string.
    let body = s
        .post_json("/embeddings", &json!({"input": text}))
        .text()
        .unwrap();
    assert_eq!(bits(&vectors_f32(&body, "/data")[0]), bits(&want));
    // Its token ids, alone and in a batch.
    let ids = r.tokenize(&[text]).unwrap().remove(0).ids;
    let body = s
        .post_json("/v1/embeddings", &json!({"input": ids}))
        .text()
        .unwrap();
    assert_eq!(bits(&vectors_f32(&body, "/data")[0]), bits(&want));
    let ids2 = r.tokenize(&["a"]).unwrap().remove(0).ids;
    let body = s
        .post_json("/v1/embeddings", &json!({"input": [ids, ids2]}))
        .text()
        .unwrap();
    let got = vectors_f32(&body, "/data");
    assert_eq!(bits(&got[0]), bits(&want));
    assert_eq!(bits(&got[1]), bits(&r.embed(&["a"]).unwrap().vectors[0]));
}

#[test]
fn openai_prompt_name_and_dimensions() {
    let s = shared();
    let r = reference();
    let q = ["how much protein should a female eat", "summit"];
    let want = r.embed_queries(&q).unwrap();
    let body = s
        .post_json(
            "/v1/embeddings",
            &json!({"input": q, "prompt_name": "query"}),
        )
        .text()
        .unwrap();
    let got = vectors_f32(&body, "/data");
    for (g, w) in got.iter().zip(&want.vectors) {
        assert_eq!(bits(g), bits(w));
    }
    // This model does not normalize: dimensions is a plain cut.
    let body = s
        .post_json(
            "/v1/embeddings",
            &json!({"input": q, "dimensions": 16, "prompt_name": "query"}),
        )
        .text()
        .unwrap();
    let got = vectors_f32(&body, "/data");
    assert_eq!(bits(&got[0]), bits(&want.vectors[0][..16]));
}

#[test]
fn tei_embed_normalize_prompts_dimensions() {
    let s = shared();
    let r = reference();
    let texts = texts();
    let raw = r.embed(&texts).unwrap().vectors;
    // normalize defaults to true (TEI), whatever the model's pipeline does.
    let body = s
        .post_json("/embed", &json!({"inputs": texts}))
        .text()
        .unwrap();
    for (g, w) in vectors_f32(&body, "").iter().zip(&raw) {
        assert_eq!(bits(g), bits(&normalized(w)));
    }
    let body = s
        .post_json("/embed", &json!({"inputs": texts, "normalize": false}))
        .text()
        .unwrap();
    for (g, w) in vectors_f32(&body, "").iter().zip(&raw) {
        assert_eq!(bits(g), bits(w));
    }
    // A single string gives one vector too.
    let body = s
        .post_json("/embed", &json!({"inputs": "a", "normalize": false}))
        .text()
        .unwrap();
    assert_eq!(bits(&vectors_f32(&body, "")[0]), bits(&raw[2]));
    // E5 prompts.
    let p = ["The CDC recommends 46 grams of protein a day for women."];
    let want = r.embed_passages(&p).unwrap().vectors.remove(0);
    let body = s
        .post_json(
            "/embed",
            &json!({"inputs": p, "prompt_name": "passage", "normalize": false}),
        )
        .text()
        .unwrap();
    assert_eq!(bits(&vectors_f32(&body, "")[0]), bits(&want));
    // Matryoshka: cut, then normalize.
    let body = s
        .post_json(
            "/embed",
            &json!({"inputs": p, "prompt_name": "passage", "dimensions": 32}),
        )
        .text()
        .unwrap();
    let got = &vectors_f32(&body, "")[0];
    assert_eq!(got.len(), 32);
    assert_eq!(bits(got), bits(&normalized(&want[..32])));
}

#[test]
fn tei_truncation_right_left_and_refused() {
    let s = shared();
    let r = reference();
    // Not periodic, so that its start and its end differ.
    let long = format!("start here: {} and the end", long_text(250, 3));
    let right = r.embed(&[&long]).unwrap();
    assert_eq!(right.truncated, vec![0]);
    let body = s
        .post_json(
            "/embed",
            &json!({"inputs": long, "normalize": false, "truncate": true}),
        )
        .text()
        .unwrap();
    assert_eq!(bits(&vectors_f32(&body, "")[0]), bits(&right.vectors[0]));

    // Left: [CLS] + the last 126 tokens of the text + [SEP].
    let mut tok = tokenizers::Tokenizer::from_file(model_dir().join("tokenizer.json")).unwrap();
    tok.with_padding(None);
    tok.with_truncation(None).unwrap();
    let full = tok.encode(long.as_str(), true).unwrap().get_ids().to_vec();
    let max = r.tokenizer().max_len();
    assert!(full.len() > max);
    let mut ids = vec![full[0]];
    ids.extend_from_slice(&full[full.len() - (max - 1)..full.len() - 1]);
    ids.push(*full.last().unwrap());
    let want_left = r
        .embed_tokens(&[e5embed::Tokens {
            ids,
            truncated: true,
        }])
        .unwrap();
    let body = s
        .post_json(
            "/embed",
            &json!({"inputs": long, "normalize": false, "truncation_direction": "Left"}),
        )
        .text()
        .unwrap();
    let got = vectors_f32(&body, "");
    assert_eq!(bits(&got[0]), bits(&want_left.vectors[0]));
    assert_ne!(bits(&got[0]), bits(&right.vectors[0]));

    // truncate: false refuses the long text with 422, and only it.
    let resp = s.post_json(
        "/embed",
        &json!({"inputs": ["short", long], "truncate": false}),
    );
    assert_eq!(resp.status(), 422);
    let v: Value = resp.json().unwrap();
    assert_eq!(v["error_type"], "Validation");
    assert!(v["error"].as_str().unwrap().contains("input 1"), "{v}");
    let resp = s.post_json("/embed", &json!({"inputs": ["short"], "truncate": false}));
    assert_eq!(resp.status(), 200);
}

#[test]
fn health_info_openapi_metrics() {
    let s = shared();
    let resp = s.get("/health");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().unwrap()["status"], "ok");

    let info: Value = s.get("/info").json().unwrap();
    assert_eq!(info["dimension"], 384);
    assert_eq!(info["max_input_length"], 128);
    // auto: f32, or bf16 where this CPU measured it faster (e5embed::tune).
    assert!(
        matches!(info["precision"].as_str(), Some("f32" | "bf16")),
        "{info}"
    );
    assert_eq!(info["normalize"], false);
    assert_eq!(info["prompts"]["query"], "query: ");
    assert_eq!(info["prompts"]["passage"], "passage: ");
    assert_eq!(info["max_client_batch_size"], 2048);
    assert_eq!(info["model_type"], "embedding");
    assert!(info["isa"].as_str().unwrap().starts_with("gemm_"));
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));

    let spec: Value = s.get("/openapi.json").json().unwrap();
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
    for p in [
        "/embed",
        "/v1/embeddings",
        "/health",
        "/info",
        "/metrics",
        "/openapi.json",
    ] {
        assert!(spec["paths"].get(p).is_some(), "openapi lacks {p}");
    }
    assert!(spec["components"]["schemas"].get("EmbedRequest").is_some());

    assert_eq!(
        s.post_json("/embed", &json!({"inputs": "metrics probe"}))
            .status(),
        200
    );
    let resp = s.get("/metrics");
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = resp.text().unwrap();
    for name in [
        "e5embed_requests_total",
        "e5embed_request_duration_seconds_bucket",
        "e5embed_tokens_total",
        "e5embed_batch_inputs_bucket",
        "e5embed_batch_tokens_bucket",
        "e5embed_queue_duration_seconds_bucket",
        "e5embed_inference_duration_seconds_bucket",
        "e5embed_tokenization_duration_seconds_bucket",
        "e5embed_queue_tokens",
        "e5embed_queue_requests",
    ] {
        assert!(text.contains(name), "/metrics lacks {name}");
    }
    assert!(s.metric("e5embed_requests_total", "route=\"/embed\",status=\"200\"") >= 1.0);
    assert!(s.metric("e5embed_tokens_total", "") >= 4.0);
}

#[test]
fn unknown_route_and_method() {
    let s = shared();
    let resp = s.get("/nope");
    assert_eq!(resp.status(), 404);
    let resp = s.get("/embed");
    assert_eq!(resp.status(), 405);
}
