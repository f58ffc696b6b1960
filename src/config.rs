//! Model directory configuration: `config.json` (the BERT encoder), and the sentence-transformers
//! files when present: `sentence_bert_config.json` (max_seq_length), `modules.json` (which
//! modules follow the transformer, e.g. Normalize) and `<pooling dir>/config.json` (mean or CLS).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};

/// The BERT encoder hyper-parameters this engine needs, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f32,
}

impl BertConfig {
    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

/// How token vectors become one text vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// Mean over the text's tokens (the padding mask is implicit: only real tokens exist).
    Mean,
    /// The first token's (`[CLS]`) vector.
    Cls,
}

/// Everything read from a model directory's JSON files.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub bert: BertConfig,
    /// Token limit per text, `[CLS]` and `[SEP]` included. From sentence_bert_config.json when
    /// present, otherwise the model's position limit.
    pub max_seq_length: usize,
    pub pooling: Pooling,
    /// Whether the vectors are L2-normalized after pooling.
    pub normalize: bool,
    /// Prompts by name from `config_sentence_transformers.json` (`prompts`), e.g.
    /// `{"query": "query: "}`; empty when the file has none.
    pub prompts: std::collections::BTreeMap<String, String>,
    /// The prompt `Embedder::embed` prepends when none is asked for
    /// (`default_prompt_name`, as sentence-transformers' `encode`), if the model names one.
    pub default_prompt_name: Option<String>,
    /// Whether pooling and normalization came from a `modules.json`. Without one, the model
    /// is run as sentence-transformers runs a plain transformers checkpoint: mean pooling
    /// and no normalization (`e5embed info` says so).
    pub has_modules_json: bool,
}

#[derive(Deserialize)]
struct RawBertConfig {
    model_type: Option<String>,
    architectures: Option<Vec<String>>,
    vocab_size: Option<usize>,
    hidden_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    intermediate_size: Option<usize>,
    max_position_embeddings: Option<usize>,
    type_vocab_size: Option<usize>,
    layer_norm_eps: Option<f64>,
    hidden_act: Option<String>,
    position_embedding_type: Option<String>,
    is_decoder: Option<bool>,
    add_cross_attention: Option<bool>,
}

#[derive(Deserialize)]
struct RawSentenceBertConfig {
    max_seq_length: Option<usize>,
}

#[derive(Deserialize, Default)]
struct RawStConfig {
    #[serde(default)]
    prompts: std::collections::BTreeMap<String, String>,
    default_prompt_name: Option<String>,
}

#[derive(Deserialize)]
struct RawModule {
    path: Option<String>,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct RawPooling {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
    #[serde(default)]
    pooling_mode_weightedmean_tokens: bool,
    #[serde(default)]
    pooling_mode_lasttoken: bool,
    word_embedding_dimension: Option<usize>,
}

pub(crate) fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })?;
    serde_json::from_slice(&text).map_err(|e| Error::Config {
        path: path.to_owned(),
        msg: format!("malformed JSON: {e}"),
    })
}

impl BertConfig {
    /// Reads and validates `config.json`. Anything that is not a BERT encoder this engine runs
    /// (another model type, another activation, relative positions, a decoder) is refused.
    pub fn from_file(path: &Path) -> Result<Self> {
        let raw: RawBertConfig = read_json(path)?;
        let unsupported = |msg: String| Error::Unsupported {
            path: path.to_owned(),
            msg,
        };
        let bert_arch = raw
            .architectures
            .as_ref()
            .is_some_and(|a| a.iter().any(|s| s.starts_with("Bert")));
        match raw.model_type.as_deref() {
            Some("bert") => {}
            Some(other) => {
                return Err(unsupported(format!(
                    "model_type is `{other}`; this engine runs BERT encoders (model_type `bert`)"
                )))
            }
            None if bert_arch => {}
            None => {
                return Err(unsupported(
                    "config.json has no model_type; this engine runs BERT encoders".into(),
                ))
            }
        }
        if raw.is_decoder == Some(true) || raw.add_cross_attention == Some(true) {
            return Err(unsupported(
                "decoder / cross-attention BERT is not supported".into(),
            ));
        }
        match raw.hidden_act.as_deref() {
            Some("gelu") | None => {}
            Some(other) => {
                return Err(unsupported(format!(
                    "hidden_act `{other}`; only `gelu` (exact erf GELU) is supported"
                )))
            }
        }
        match raw.position_embedding_type.as_deref() {
            Some("absolute") | None => {}
            Some(other) => {
                return Err(unsupported(format!(
                    "position_embedding_type `{other}`; only `absolute` is supported"
                )))
            }
        }
        let need = |v: Option<usize>, name: &str| -> Result<usize> {
            match v {
                Some(0) => Err(Error::Config {
                    path: path.to_owned(),
                    msg: format!("`{name}` must be positive"),
                }),
                Some(v) => Ok(v),
                None => Err(Error::Config {
                    path: path.to_owned(),
                    msg: format!("missing `{name}`"),
                }),
            }
        };
        let cfg = BertConfig {
            vocab_size: need(raw.vocab_size, "vocab_size")?,
            hidden_size: need(raw.hidden_size, "hidden_size")?,
            num_hidden_layers: need(raw.num_hidden_layers, "num_hidden_layers")?,
            num_attention_heads: need(raw.num_attention_heads, "num_attention_heads")?,
            intermediate_size: need(raw.intermediate_size, "intermediate_size")?,
            max_position_embeddings: need(raw.max_position_embeddings, "max_position_embeddings")?,
            type_vocab_size: need(raw.type_vocab_size.or(Some(2)), "type_vocab_size")?,
            layer_norm_eps: raw.layer_norm_eps.unwrap_or(1e-12) as f32,
        };
        if !cfg.hidden_size.is_multiple_of(cfg.num_attention_heads) {
            return Err(unsupported(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                cfg.hidden_size, cfg.num_attention_heads
            )));
        }
        // Sanity limits: far above any BERT, low enough that a corrupt file cannot make the
        // loader allocate absurd amounts before the weights are checked.
        let limits = [
            (cfg.hidden_size, 16384, "hidden_size"),
            (cfg.intermediate_size, 65536, "intermediate_size"),
            (cfg.num_hidden_layers, 256, "num_hidden_layers"),
            (
                cfg.max_position_embeddings,
                65536,
                "max_position_embeddings",
            ),
            (cfg.vocab_size, 4_000_000, "vocab_size"),
            (cfg.type_vocab_size, 1024, "type_vocab_size"),
        ];
        for (v, max, name) in limits {
            if v > max {
                return Err(unsupported(format!("{name} = {v} exceeds {max}")));
            }
        }
        if cfg.max_position_embeddings < 2 {
            return Err(Error::Config {
                path: path.to_owned(),
                msg: format!(
                    "max_position_embeddings {} leaves no room for [CLS] and [SEP] (at least 2)",
                    cfg.max_position_embeddings
                ),
            });
        }
        if !(cfg.layer_norm_eps.is_finite() && cfg.layer_norm_eps > 0.0) {
            return Err(Error::Config {
                path: path.to_owned(),
                msg: "layer_norm_eps must be a positive finite number".into(),
            });
        }
        Ok(cfg)
    }
}

impl ModelConfig {
    /// Reads the model directory's configuration files. `config.json` is required; the
    /// sentence-transformers files are optional (defaults: the model's position limit, mean
    /// pooling, L2 normalization as the E5 model card does).
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let config_path = dir.join("config.json");
        if !config_path.is_file() {
            return Err(Error::MissingFile {
                dir: dir.to_owned(),
                file: "config.json".into(),
                hint: hint_for(dir),
            });
        }
        let bert = BertConfig::from_file(&config_path)?;

        let mut max_seq_length = bert.max_position_embeddings;
        let st_path = dir.join("sentence_bert_config.json");
        if st_path.is_file() {
            let st: RawSentenceBertConfig = read_json(&st_path)?;
            if let Some(m) = st.max_seq_length {
                if m < 2 {
                    return Err(Error::Config {
                        path: st_path,
                        msg: format!("max_seq_length {m} leaves no room for [CLS] and [SEP]"),
                    });
                }
                max_seq_length = m.min(bert.max_position_embeddings);
            }
        }

        // Without modules.json, sentence-transformers builds Transformer + mean Pooling and
        // no Normalize ("Creating a new one with mean pooling"): the same here.
        let st_config_path = dir.join("config_sentence_transformers.json");
        let st_config: RawStConfig = if st_config_path.is_file() {
            read_json(&st_config_path)?
        } else {
            RawStConfig::default()
        };
        if let Some(name) = &st_config.default_prompt_name {
            if !st_config.prompts.contains_key(name) {
                return Err(Error::Config {
                    path: st_config_path,
                    msg: format!("default_prompt_name `{name}` is not one of its prompts"),
                });
            }
        }

        let mut pooling = Pooling::Mean;
        let mut normalize = false;
        let modules_path = dir.join("modules.json");
        let has_modules_json = modules_path.is_file();
        let mut pooling_dir: Option<PathBuf> = None;
        if has_modules_json {
            let modules: Vec<RawModule> = read_json(&modules_path)?;
            normalize = modules.iter().any(|m| m.kind.ends_with("Normalize"));
            if let Some(p) = modules.iter().find(|m| m.kind.ends_with("Pooling")) {
                pooling_dir = Some(dir.join(p.path.clone().unwrap_or_default()));
            }
            if let Some(m) = modules.iter().find(|m| {
                !(m.kind.ends_with("Transformer")
                    || m.kind.ends_with("Pooling")
                    || m.kind.ends_with("Normalize"))
            }) {
                return Err(Error::Unsupported {
                    path: modules_path.clone(),
                    msg: format!(
                        "module `{}` is not supported (only Transformer, Pooling, Normalize)",
                        m.kind
                    ),
                });
            }
        } else if dir.join("1_Pooling").is_dir() {
            pooling_dir = Some(dir.join("1_Pooling"));
        }
        if let Some(pdir) = pooling_dir {
            let ppath = pdir.join("config.json");
            if ppath.is_file() {
                let p: RawPooling = read_json(&ppath)?;
                if let Some(d) = p.word_embedding_dimension {
                    if d != bert.hidden_size {
                        return Err(Error::Config {
                            path: ppath,
                            msg: format!(
                                "word_embedding_dimension {d} differs from hidden_size {}",
                                bert.hidden_size
                            ),
                        });
                    }
                }
                let others = p.pooling_mode_max_tokens
                    || p.pooling_mode_mean_sqrt_len_tokens
                    || p.pooling_mode_weightedmean_tokens
                    || p.pooling_mode_lasttoken;
                pooling = match (p.pooling_mode_mean_tokens, p.pooling_mode_cls_token, others) {
                    (true, false, false) => Pooling::Mean,
                    (false, true, false) => Pooling::Cls,
                    _ => {
                        return Err(Error::Unsupported {
                            path: ppath,
                            msg: "only one of mean or CLS pooling is supported".into(),
                        })
                    }
                };
            }
        }
        Ok(ModelConfig {
            bert,
            max_seq_length,
            pooling,
            normalize,
            prompts: st_config.prompts,
            default_prompt_name: st_config.default_prompt_name,
            has_modules_json,
        })
    }

    /// How token vectors become the text's vector, in words (for `info`).
    pub fn pipeline_description(&self) -> String {
        let pooling = match self.pooling {
            Pooling::Mean => "mean pooling",
            Pooling::Cls => "CLS pooling",
        };
        let norm = if self.normalize {
            "L2-normalized"
        } else {
            "not normalized"
        };
        if self.has_modules_json {
            format!("{pooling}, {norm} (modules.json)")
        } else {
            format!(
                "{pooling}, {norm}: no modules.json, so as sentence-transformers runs a plain \
                 transformers checkpoint"
            )
        }
    }
}

/// A hint appended to "missing file" errors: where test models come from.
pub(crate) fn hint_for(dir: &Path) -> String {
    if dir.exists() {
        String::new()
    } else {
        " (the directory does not exist; `tools/fetch-models` downloads the test models)".into()
    }
}
