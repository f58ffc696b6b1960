//! `e5embed quantize`: saves a model directory whose Linear weights are int8 (symmetric per
//! output channel, exactly as the int8 path quantizes them at load), so loading it is instant
//! and gives bitwise the results of quantizing at load on the same int8 path.
//!
//! Format: the same HF layout and tensor names; each Linear weight is stored as an `I8`
//! tensor `[out, in]` with its per-channel scales in an `F32` tensor `<name>_scale` `[out]`
//! (`W ≈ q · scale`); embeddings, LayerNorms and biases stay f32. A GEMM smoothed by
//! SmoothQuant (`model::smooth`) stores `q · scale ≈ W · diag(s)` and its factors `s` in
//! `<name>_smooth` `[in]` (Q, K and V each carry the same copy: they share their input). The header metadata records
//! `e5embed_quantization` and the weight range `qmax` (127, or 64 for the AVX2 non-VNNI path,
//! which must not saturate `vpmaddubsw`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use e5embed_kernels::qgemm::QIsa;
use safetensors::tensor::{Dtype, TensorView};

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::model::smooth::Int8Recipe;
use crate::tokenize::TextTokenizer;
use crate::weights::{BertWeights, Matrix, SCALE_SUFFIX, SMOOTH_SUFFIX};

/// What `save_quantized` wrote.
#[derive(Debug, Clone)]
pub struct QuantizeReport {
    pub linear_tensors: usize,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub qmax: i32,
}

/// Files copied unchanged from the source directory when present.
const COPIED: [&str; 6] = [
    "config.json",
    "tokenizer.json",
    "sentence_bert_config.json",
    "modules.json",
    "config_sentence_transformers.json",
    "1_Pooling/config.json",
];

/// The absolute, symlink-free form of `p`, which need not exist yet: its longest existing
/// ancestor is canonicalized and the rest appended.
fn resolved(p: &Path) -> Result<PathBuf> {
    let abs = std::path::absolute(p).map_err(|source| Error::Io {
        path: p.to_owned(),
        source,
    })?;
    let mut base = abs.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(c) = base.canonicalize() {
            let mut out = c;
            out.extend(rest.iter().rev());
            return Ok(out);
        }
        match (base.parent(), base.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                base = parent;
            }
            _ => return Ok(abs),
        }
    }
}

/// Refuses an output directory that is the source directory or inside it (the copies would
/// overwrite, or truncate, the very files they are read from).
fn check_out_dir(src: &Path, out: &Path) -> Result<()> {
    let (s, o) = (resolved(src)?, resolved(out)?);
    if o == s || o.starts_with(&s) {
        return Err(Error::InvalidInput(format!(
            "--out {} is {} the source model directory {}: choose a new directory outside it \
             (nothing was written)",
            out.display(),
            if o == s { "the same as" } else { "inside" },
            src.display()
        )));
    }
    Ok(())
}

/// Copies `from` to `to` through a temporary name in `to`'s directory, renamed into place,
/// so a failed copy never leaves a truncated file under the real name.
fn copy_atomic(from: &Path, to: &Path) -> Result<()> {
    let io = |path: &Path, source| Error::Io {
        path: path.to_owned(),
        source,
    };
    let name = to.file_name().unwrap_or_default().to_string_lossy();
    let tmp = to.with_file_name(format!(".{name}.part"));
    std::fs::copy(from, &tmp).map_err(|e| io(&tmp, e))?;
    std::fs::rename(&tmp, to).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(to, e)
    })
}

/// Quantizes the model in `src` for the int8 path `qisa` and writes it to `out`.
///
/// Refused, before anything is written: an `out` that is `src` or inside it, and a `src` that
/// is itself an int8 model saved by this function (quantizing it again would quantize the
/// already smoothed, already rounded weights a second time; quantize the original instead).
pub fn save_quantized(src: &Path, out: &Path, qisa: QIsa) -> Result<QuantizeReport> {
    check_out_dir(src, out)?;
    let config = ModelConfig::from_dir(src)?;
    let mut w = BertWeights::load(src, &config.bert)?;
    if crate::model::is_prequantized(&w) {
        return Err(Error::InvalidInput(format!(
            "{} is already an int8 model saved by `e5embed quantize`; quantize the original \
             f32/f16/bf16 model instead (this one loads at int8 as it is). Nothing was written.",
            src.display()
        )));
    }
    let recipe = Int8Recipe::default_for(qisa);
    let int8_set = &recipe.gemms;
    // SmoothQuant factors, calibrated exactly as loading the original model at int8 does.
    let tokenizer = TextTokenizer::from_file(&src.join("tokenizer.json"), config.max_seq_length)?;
    crate::model::smooth::calibrate(&mut w, &tokenizer, qisa, &recipe)?;
    let (h, inter) = (config.bert.hidden_size, config.bert.intermediate_size);
    let io = |path: &Path, source| Error::Io {
        path: path.to_owned(),
        source,
    };
    std::fs::create_dir_all(out).map_err(|e| io(out, e))?;
    for f in COPIED {
        let from = src.join(f);
        if from.is_file() {
            let to = out.join(f);
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
            }
            copy_atomic(&from, &to)?;
        }
    }

    // name -> (dtype, shape, little-endian bytes)
    let mut tensors: BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)> = BTreeMap::new();
    let f32_bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let put_f32 = |tensors: &mut BTreeMap<_, _>, name: String, shape: Vec<usize>, v: &[f32]| {
        tensors.insert(name, (Dtype::F32, shape, f32_bytes(v)));
    };
    let mut linear_tensors = 0;
    let mut put_linear = |tensors: &mut BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)>,
                          name: String,
                          which: &str,
                          w: &[f32],
                          smooth: &Option<Vec<f32>>,
                          n: usize,
                          k: usize|
     -> Result<()> {
        if !int8_set.iter().any(|s| s == which) {
            // Kept f32, as the int8 precision runs it (see model::smooth::Int8Recipe::default_for).
            tensors.insert(name, (Dtype::F32, vec![n, k], f32_bytes(w)));
            return Ok(());
        }
        let q =
            crate::model::linear::quantize(qisa, Matrix::F32(w.to_vec()), smooth.as_deref(), n, k)?;
        if let Some(s) = smooth {
            tensors.insert(
                format!("{name}{SMOOTH_SUFFIX}"),
                (Dtype::F32, vec![k], f32_bytes(s)),
            );
        }
        let bytes: Vec<u8> = q.unpack_weights().iter().map(|&v| v as u8).collect();
        let scales = &q.scales()[..n];
        tensors.insert(
            format!("{name}{SCALE_SUFFIX}"),
            (Dtype::F32, vec![n], f32_bytes(scales)),
        );
        tensors.insert(name, (Dtype::I8, vec![n, k], bytes));
        linear_tensors += 1;
        Ok(())
    };
    let c = &config.bert;
    put_f32(
        &mut tensors,
        "embeddings.word_embeddings.weight".into(),
        vec![c.vocab_size, h],
        &w.word_emb,
    );
    put_f32(
        &mut tensors,
        "embeddings.position_embeddings.weight".into(),
        vec![c.max_position_embeddings, h],
        &w.pos_emb,
    );
    put_f32(
        &mut tensors,
        "embeddings.token_type_embeddings.weight".into(),
        vec![c.type_vocab_size, h],
        &w.type_emb,
    );
    put_f32(
        &mut tensors,
        "embeddings.LayerNorm.weight".into(),
        vec![h],
        &w.emb_ln_g,
    );
    put_f32(
        &mut tensors,
        "embeddings.LayerNorm.bias".into(),
        vec![h],
        &w.emb_ln_b,
    );
    for (i, l) in w.layers.iter().enumerate() {
        let p = format!("encoder.layer.{i}.");
        let qkv = l.qkv_w.to_f32();
        for (j, part) in ["query", "key", "value"].iter().enumerate() {
            let rows = &qkv[j * h * h..(j + 1) * h * h];
            put_linear(
                &mut tensors,
                format!("{p}attention.self.{part}.weight"),
                "qkv",
                rows,
                &l.smooth[0],
                h,
                h,
            )?;
            put_f32(
                &mut tensors,
                format!("{p}attention.self.{part}.bias"),
                vec![h],
                &l.qkv_b[j * h..(j + 1) * h],
            );
        }
        put_linear(
            &mut tensors,
            format!("{p}attention.output.dense.weight"),
            "out",
            &l.attn_out_w.to_f32(),
            &l.smooth[1],
            h,
            h,
        )?;
        put_f32(
            &mut tensors,
            format!("{p}attention.output.dense.bias"),
            vec![h],
            &l.attn_out_b,
        );
        put_f32(
            &mut tensors,
            format!("{p}attention.output.LayerNorm.weight"),
            vec![h],
            &l.attn_ln_g,
        );
        put_f32(
            &mut tensors,
            format!("{p}attention.output.LayerNorm.bias"),
            vec![h],
            &l.attn_ln_b,
        );
        put_linear(
            &mut tensors,
            format!("{p}intermediate.dense.weight"),
            "up",
            &l.ffn_up_w.to_f32(),
            &l.smooth[2],
            inter,
            h,
        )?;
        put_f32(
            &mut tensors,
            format!("{p}intermediate.dense.bias"),
            vec![inter],
            &l.ffn_up_b,
        );
        put_linear(
            &mut tensors,
            format!("{p}output.dense.weight"),
            "down",
            &l.ffn_down_w.to_f32(),
            &l.smooth[3],
            h,
            inter,
        )?;
        put_f32(
            &mut tensors,
            format!("{p}output.dense.bias"),
            vec![h],
            &l.ffn_down_b,
        );
        put_f32(
            &mut tensors,
            format!("{p}output.LayerNorm.weight"),
            vec![h],
            &l.ffn_ln_g,
        );
        put_f32(
            &mut tensors,
            format!("{p}output.LayerNorm.bias"),
            vec![h],
            &l.ffn_ln_b,
        );
    }
    let views = tensors
        .iter()
        .map(|(name, (dtype, shape, bytes))| {
            TensorView::new(*dtype, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| Error::InvalidInput(format!("tensor {name}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let qmax = qisa.kind().weight_qmax();
    let meta = std::collections::HashMap::from([
        ("format".to_owned(), "pt".to_owned()),
        (
            "e5embed_quantization".to_owned(),
            "int8 symmetric per output channel, SmoothQuant factors in `<weight>_smooth`"
                .to_owned(),
        ),
        ("qmax".to_owned(), qmax.to_string()),
    ]);
    let dst = out.join("model.safetensors");
    let tmp = out.join(".model.safetensors.part");
    safetensors::serialize_to_file(views, &Some(meta), &tmp).map_err(|e| Error::Safetensors {
        path: tmp.clone(),
        msg: e.to_string(),
    })?;
    std::fs::rename(&tmp, &dst).map_err(|e| io(&dst, e))?;
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    Ok(QuantizeReport {
        linear_tensors,
        bytes_before: size(&src.join("model.safetensors")),
        bytes_after: size(&dst),
        qmax,
    })
}
