//! The public API: an [`Embedder`] is loaded once from a model directory and shared by any
//! number of threads (`Send + Sync`); each call tokenizes, runs the fast forward in its own
//! thread pool, pools and normalizes, and returns one vector per text in input order.

use std::path::{Path, PathBuf};

use e5embed_kernels::{Isa, IsaKind};

use crate::config::{ModelConfig, Pooling};
use crate::error::{Error, Result};
use crate::model::FastModel;
use crate::pool::{l2_normalize, pool};
use crate::tokenize::{TextTokenizer, Tokens, PASSAGE_PREFIX, QUERY_PREFIX};
use crate::weights::BertWeights;

/// Tokens per forward pass when a call holds many texts: bounds scratch memory (about
/// 4·(6·hidden + intermediate) bytes per token, 25 MB at e5-small-v2's shapes).
pub const DEFAULT_MAX_BATCH_TOKENS: usize = 8192;

/// Knobs for [`Embedder::load_with`]. API values win over the environment.
#[derive(Debug, Clone, Default)]
pub struct EmbedderOptions {
    /// Worker threads; default: the number of CPUs available to the process.
    pub threads: Option<usize>,
    /// Force a kernel path; default: `E5EMBED_ISA` if set, else the best this CPU has.
    pub isa: Option<IsaKind>,
    /// Tokens per forward pass; default [`DEFAULT_MAX_BATCH_TOKENS`].
    pub max_batch_tokens: Option<usize>,
}

/// The result of embedding a list of texts.
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    /// One vector of `dim` floats per text, in input order.
    pub vectors: Vec<Vec<f32>>,
    /// Token count of each text after truncation, [CLS] and [SEP] included.
    pub token_counts: Vec<usize>,
    /// Indices of the texts that were cut at the model's `max_seq_length`.
    pub truncated: Vec<usize>,
}

/// A loaded embedding model.
pub struct Embedder {
    dir: PathBuf,
    config: ModelConfig,
    tokenizer: TextTokenizer,
    model: FastModel,
    pool: rayon::ThreadPool,
    threads: usize,
    max_batch_tokens: usize,
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder")
            .field("dir", &self.dir)
            .field("config", &self.config)
            .field("isa", &self.model.isa())
            .field("threads", &self.threads)
            .finish()
    }
}

/// Picks the kernel path: the API's choice, else `E5EMBED_ISA`, else the best available.
pub fn resolve_isa(requested: Option<IsaKind>) -> Result<Isa> {
    match requested {
        Some(kind) => Isa::new(kind).ok_or_else(|| {
            Error::Kernel(e5embed_kernels::KernelError::UnsupportedIsa(format!(
                "{kind:?} was requested but this CPU does not support it"
            )))
        }),
        None => Ok(Isa::from_env()?),
    }
}

impl Embedder {
    /// Loads a model directory with default options.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self> {
        Self::load_with(dir, &EmbedderOptions::default())
    }

    /// Loads a model directory (Hugging Face layout: config.json, model.safetensors,
    /// tokenizer.json, and the sentence-transformers files when present).
    pub fn load_with(dir: impl AsRef<Path>, opts: &EmbedderOptions) -> Result<Self> {
        let dir = dir.as_ref();
        let config = ModelConfig::from_dir(dir)?;
        let tokenizer =
            TextTokenizer::from_file(&dir.join("tokenizer.json"), config.max_seq_length)?;
        let isa = resolve_isa(opts.isa)?;
        let weights = BertWeights::load(dir, &config.bert)?;
        let model = FastModel::new(weights, isa)?;
        let threads = match opts.threads {
            Some(0) => return Err(Error::InvalidInput("threads must be at least 1".into())),
            Some(t) => t,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("e5embed-{i}"))
            .build()
            .map_err(|e| Error::ThreadPool(e.to_string()))?;
        let max_batch_tokens = opts.max_batch_tokens.unwrap_or(DEFAULT_MAX_BATCH_TOKENS);
        if max_batch_tokens < config.max_seq_length {
            return Err(Error::InvalidInput(format!(
                "max_batch_tokens {max_batch_tokens} is below the model's max_seq_length {}",
                config.max_seq_length
            )));
        }
        Ok(Embedder {
            dir: dir.to_owned(),
            config,
            tokenizer,
            model,
            pool,
            threads,
            max_batch_tokens,
        })
    }

    /// Embedding width (the model's hidden size: 384 for e5-small-v2).
    pub fn dim(&self) -> usize {
        self.config.bert.hidden_size
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn model_dir(&self) -> &Path {
        &self.dir
    }

    pub fn isa(&self) -> Isa {
        self.model.isa()
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    /// The GEMM microkernel in use.
    pub fn gemm_kernel_name(&self) -> &'static str {
        self.model.gemm_kernel_name()
    }

    /// Embeds texts exactly as given (no prefix).
    pub fn embed<S: AsRef<str>>(&self, texts: &[S]) -> Result<Embeddings> {
        if texts.is_empty() {
            return Err(Error::EmptyInput);
        }
        let tokens = self.tokenizer.encode_batch(texts)?;
        self.embed_tokens(&tokens)
    }

    /// Embeds E5 queries: each text gets the `query: ` prefix.
    pub fn embed_queries<S: AsRef<str>>(&self, texts: &[S]) -> Result<Embeddings> {
        self.embed_prefixed(QUERY_PREFIX, texts)
    }

    /// Embeds E5 passages: each text gets the `passage: ` prefix.
    pub fn embed_passages<S: AsRef<str>>(&self, texts: &[S]) -> Result<Embeddings> {
        self.embed_prefixed(PASSAGE_PREFIX, texts)
    }

    fn embed_prefixed<S: AsRef<str>>(&self, prefix: &str, texts: &[S]) -> Result<Embeddings> {
        let prefixed: Vec<String> = texts
            .iter()
            .map(|t| format!("{prefix}{}", t.as_ref()))
            .collect();
        self.embed(&prefixed)
    }

    /// Embeds already tokenized texts (ids with [CLS]/[SEP], at most `max_seq_length` each).
    pub fn embed_tokens(&self, tokens: &[Tokens]) -> Result<Embeddings> {
        if tokens.is_empty() {
            return Err(Error::EmptyInput);
        }
        let dim = self.dim();
        let mut vectors = vec![Vec::new(); tokens.len()];
        for (start, end) in self.batches(tokens) {
            let seqs: Vec<&[u32]> = tokens[start..end]
                .iter()
                .map(|t| t.ids.as_slice())
                .collect();
            let hidden = self.pool.install(|| self.model.forward(&seqs))?;
            let mut off = 0;
            for (i, ids) in seqs.iter().enumerate() {
                let rows = &hidden[off * dim..(off + ids.len()) * dim];
                let mut v = vec![0.0f32; dim];
                pool(rows, dim, self.config.pooling, &mut v);
                if self.config.normalize {
                    l2_normalize(&mut v);
                }
                vectors[start + i] = v;
                off += ids.len();
            }
        }
        Ok(Embeddings {
            vectors,
            token_counts: tokens.iter().map(|t| t.ids.len()).collect(),
            truncated: tokens
                .iter()
                .enumerate()
                .filter(|(_, t)| t.truncated)
                .map(|(i, _)| i)
                .collect(),
        })
    }

    /// Runs the encoder and returns each text's last hidden state `[tokens, dim]` (no
    /// pooling): what ONNX Runtime's `last_hidden_state` holds for the text's real tokens.
    pub fn last_hidden_states(&self, seqs: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        if seqs.is_empty() {
            return Err(Error::EmptyInput);
        }
        let hidden = self.pool.install(|| self.model.forward(seqs))?;
        let dim = self.dim();
        let mut out = Vec::with_capacity(seqs.len());
        let mut off = 0;
        for s in seqs {
            out.push(hidden[off * dim..(off + s.len()) * dim].to_vec());
            off += s.len();
        }
        Ok(out)
    }

    /// Consecutive ranges of texts whose token total stays within the batch budget.
    fn batches(&self, tokens: &[Tokens]) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        let (mut start, mut sum) = (0, 0);
        for (i, t) in tokens.iter().enumerate() {
            if sum + t.ids.len() > self.max_batch_tokens && i > start {
                out.push((start, i));
                start = i;
                sum = 0;
            }
            sum += t.ids.len();
        }
        out.push((start, tokens.len()));
        out
    }

    /// Pooling mode in use.
    pub fn pooling(&self) -> Pooling {
        self.config.pooling
    }
}
