//! Bad input gets a clear, typed error and never a panic: missing and malformed files,
//! truncated or oversized safetensors, missing tensors, wrong shapes, wrong dtypes, NaN/Inf
//! weights, non-BERT configs, out-of-range token ids.

mod common;

use common::*;
use e5embed::{Embedder, Error, Tokens};
use safetensors::tensor::Dtype;

fn tiny_dir(tag: &str) -> TempDir {
    let dir = temp_dir(tag);
    write_tiny_model(&dir, &tiny_tensors(7), Dtype::F32);
    dir
}

fn load_err(dir: &std::path::Path) -> Error {
    match Embedder::load(dir) {
        Ok(_) => panic!("loading {} should fail", dir.display()),
        Err(e) => e,
    }
}

#[test]
fn tiny_model_loads_and_embeds() {
    let dir = tiny_dir("ok");
    let e = Embedder::load(&dir).unwrap();
    let out = e.embed(&["hello world", ""]).unwrap();
    assert_eq!(out.vectors.len(), 2);
    assert_eq!(out.vectors[0].len(), TINY_HIDDEN);
    // The empty string is a valid text: [CLS] [SEP].
    assert_eq!(out.token_counts[1], 2);
}

#[test]
fn missing_directory_names_fetch_script() {
    let e = load_err(std::path::Path::new("/nonexistent/e5embed-model"));
    let msg = e.to_string();
    assert!(matches!(e, Error::MissingFile { .. }), "{e:?}");
    assert!(msg.contains("tools/fetch-models"), "{msg}");
}

#[test]
fn missing_weights_file() {
    let dir = tiny_dir("noweights");
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    assert!(
        matches!(load_err(&dir), Error::MissingFile { file, .. } if file == "model.safetensors")
    );
}

#[test]
fn missing_tokenizer_file() {
    let dir = tiny_dir("notok");
    std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
    assert!(matches!(load_err(&dir), Error::MissingFile { file, .. } if file == "tokenizer.json"));
}

#[test]
fn malformed_tokenizer_file() {
    let dir = tiny_dir("badtok");
    std::fs::write(dir.join("tokenizer.json"), "{ not a tokenizer").unwrap();
    assert!(matches!(load_err(&dir), Error::Tokenizer { .. }));
}

#[test]
fn malformed_config_json() {
    let dir = tiny_dir("badjson");
    std::fs::write(dir.join("config.json"), "{\"model_type\": \"bert\", ").unwrap();
    let e = load_err(&dir);
    assert!(matches!(e, Error::Config { .. }), "{e:?}");
    assert!(e.to_string().contains("config.json"));
}

fn with_config(tag: &str, edit: impl Fn(&mut serde_json::Value)) -> Error {
    let dir = tiny_dir(tag);
    let mut c = tiny_config();
    edit(&mut c);
    std::fs::write(dir.join("config.json"), c.to_string()).unwrap();
    load_err(&dir)
}

#[test]
fn non_bert_configs_are_refused() {
    let e = with_config("gpt2", |c| c["model_type"] = "gpt2".into());
    assert!(matches!(e, Error::Unsupported { .. }), "{e:?}");
    assert!(e.to_string().contains("gpt2"));
    let e = with_config("act", |c| c["hidden_act"] = "gelu_new".into());
    assert!(matches!(e, Error::Unsupported { .. }), "{e:?}");
    let e = with_config("rel", |c| {
        c["position_embedding_type"] = "relative_key".into()
    });
    assert!(matches!(e, Error::Unsupported { .. }), "{e:?}");
    let e = with_config("heads", |c| c["num_attention_heads"] = 3.into());
    assert!(matches!(e, Error::Unsupported { .. }), "{e:?}");
    let e = with_config("nohidden", |c| {
        c.as_object_mut().unwrap().remove("hidden_size");
    });
    assert!(matches!(e, Error::Config { .. }), "{e:?}");
}

#[test]
fn unsupported_pooling_is_refused() {
    let dir = tiny_dir("maxpool");
    std::fs::create_dir_all(dir.join("1_Pooling")).unwrap();
    std::fs::write(
        dir.join("1_Pooling/config.json"),
        r#"{"pooling_mode_max_tokens": true, "pooling_mode_mean_tokens": false}"#,
    )
    .unwrap();
    assert!(matches!(load_err(&dir), Error::Unsupported { .. }));
}

#[test]
fn truncated_safetensors() {
    let dir = tiny_dir("trunc");
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    for cut in [0usize, 4, 100, bytes.len() / 2, bytes.len() - 1] {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let e = load_err(&dir);
        assert!(
            matches!(e, Error::Safetensors { .. }),
            "cut at {cut}: {e:?}"
        );
    }
}

#[test]
fn oversized_header_length() {
    let dir = tiny_dir("oversize");
    let path = dir.join("model.safetensors");
    let mut bytes = std::fs::read(&path).unwrap();
    // The first 8 bytes give the JSON header length: claim far more than the file holds.
    bytes[..8].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    assert!(matches!(load_err(&dir), Error::Safetensors { .. }));
}

#[test]
fn garbage_weights_file() {
    let dir = tiny_dir("garbage");
    std::fs::write(
        dir.join("model.safetensors"),
        b"this is not a safetensors file at all",
    )
    .unwrap();
    assert!(matches!(load_err(&dir), Error::Safetensors { .. }));
}

fn with_tensors(tag: &str, edit: impl Fn(&mut Tensors), dtype: Dtype) -> Error {
    let dir = temp_dir(tag);
    let mut t = tiny_tensors(7);
    edit(&mut t);
    write_tiny_model(&dir, &t, dtype);
    load_err(&dir)
}

#[test]
fn missing_tensor_is_named() {
    let e = with_tensors(
        "missing",
        |t| {
            t.remove("encoder.layer.1.output.dense.bias");
        },
        Dtype::F32,
    );
    match e {
        Error::MissingTensor { name, .. } => assert_eq!(name, "encoder.layer.1.output.dense.bias"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn wrong_shape_is_named() {
    let e = with_tensors(
        "shape",
        |t| {
            t.insert(
                "encoder.layer.0.intermediate.dense.weight".into(),
                (vec![TINY_HIDDEN, 128], vec![0.0; TINY_HIDDEN * 128]),
            );
        },
        Dtype::F32,
    );
    match e {
        Error::TensorShape {
            name,
            got,
            expected,
            ..
        } => {
            assert_eq!(name, "encoder.layer.0.intermediate.dense.weight");
            assert_eq!(got, vec![TINY_HIDDEN, 128]);
            assert_eq!(expected, vec![128, TINY_HIDDEN]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn nan_and_inf_weights_are_refused() {
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let e = with_tensors(
            "nan",
            |t| {
                t.get_mut("encoder.layer.0.attention.self.key.weight")
                    .unwrap()
                    .1[5] = bad
            },
            Dtype::F32,
        );
        match e {
            Error::NonFinite { name, index, .. } => {
                assert_eq!(name, "encoder.layer.0.attention.self.key.weight");
                assert_eq!(index, 5);
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn wrong_dtype_is_refused() {
    let dir = tiny_dir("dtype");
    let t = tiny_tensors(7);
    // Re-serialize one tensor as I32 by hand through the safetensors API.
    let (shape, vals) = &t["embeddings.LayerNorm.bias"];
    let ints: Vec<u8> = vals
        .iter()
        .flat_map(|&v| (v as i32).to_le_bytes())
        .collect();
    let mut data: Vec<(String, Vec<usize>, Vec<u8>, safetensors::Dtype)> = t
        .iter()
        .filter(|(n, _)| n.as_str() != "embeddings.LayerNorm.bias")
        .map(|(n, (s, v))| {
            (
                n.clone(),
                s.clone(),
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                Dtype::F32,
            )
        })
        .collect();
    data.push((
        "embeddings.LayerNorm.bias".into(),
        shape.clone(),
        ints,
        Dtype::I32,
    ));
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = data
        .iter()
        .map(|(n, s, b, d)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
            )
        })
        .collect();
    std::fs::write(
        dir.join("model.safetensors"),
        safetensors::serialize(views, &None).unwrap(),
    )
    .unwrap();
    assert!(matches!(load_err(&dir), Error::TensorDtype { .. }));
}

#[test]
fn bad_token_ids_are_errors() {
    let e = Embedder::load(tiny_dir("ids")).unwrap();
    let bad_vocab = Tokens {
        ids: vec![101, 40000, 102],
        truncated: false,
    };
    assert!(matches!(
        e.embed_tokens(&[bad_vocab]),
        Err(Error::InvalidInput(_))
    ));
    let too_long = Tokens {
        ids: vec![1000; 65],
        truncated: false,
    };
    assert!(matches!(
        e.embed_tokens(&[too_long]),
        Err(Error::InvalidInput(_))
    ));
    let empty = Tokens {
        ids: vec![],
        truncated: false,
    };
    assert!(matches!(
        e.embed_tokens(&[empty]),
        Err(Error::InvalidInput(_))
    ));
}

#[test]
fn zero_threads_is_an_error() {
    let opts = e5embed::EmbedderOptions::default().threads(0);
    assert!(matches!(
        Embedder::load_with(tiny_dir("threads"), &opts),
        Err(Error::InvalidInput(_))
    ));
}
