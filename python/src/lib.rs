//! The `e5embed` Python package's native module (`e5embed._e5embed`): a thin PyO3 layer over
//! [`e5embed::Embedder`]. The package's Python side (`python/e5embed/__init__.py`) re-exports
//! [`PyEmbedder`] as `e5embed.Embedder` and adds the LangChain adapter.
//!
//! - Vectors are written by the engine straight into a fresh numpy array's buffer
//!   ([`Embedder::embed_tokens_into`]): no per-vector Python objects.
//! - The GIL is released while a model loads and while the engine tokenizes and runs, so one
//!   `Embedder` (frozen: no interior Python-side state) serves many Python threads at once.
//! - Engine errors become Python exceptions carrying the engine's message: `ValueError` for
//!   bad input, `OSError` for files and models, `RuntimeError` otherwise (see [`to_py_err`]).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use e5embed::{Embedder, EmbedderOptions, Error, ModelConfig, Precision};
use numpy::{PyArray1, PyArray2, PyArrayMethods};
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};

/// Whether an error happened while loading a model (a tokenizer error is then a file's fault)
/// or while embedding (it is then the text's).
#[derive(Clone, Copy)]
enum Stage {
    Load,
    Call,
}

/// Maps an engine error to the Python exception a user expects, keeping the engine's message.
fn to_py_err(e: Error, stage: Stage) -> PyErr {
    let msg = e.to_string();
    match e {
        Error::Io { .. }
        | Error::MissingFile { .. }
        | Error::Config { .. }
        | Error::Unsupported { .. }
        | Error::Safetensors { .. }
        | Error::MissingTensor { .. }
        | Error::TensorShape { .. }
        | Error::TensorDtype { .. }
        | Error::NonFinite { .. }
        | Error::ModelSpec { .. }
        | Error::Hub { .. } => PyOSError::new_err(msg),
        Error::Tokenizer { .. } => match stage {
            Stage::Load => PyOSError::new_err(msg),
            Stage::Call => PyValueError::new_err(msg),
        },
        Error::EmptyInput
        | Error::InvalidInput(_)
        | Error::Limit { .. }
        | Error::NonFiniteOutput { .. } => PyValueError::new_err(msg),
        _ => PyRuntimeError::new_err(msg),
    }
}

/// The texts of an `encode` call: one string (a 1-D result) or a sequence of strings.
enum Sentences {
    One(String),
    Many(Vec<String>),
}

fn extract_sentences(obj: &Bound<'_, PyAny>) -> PyResult<Sentences> {
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(Sentences::One(s.to_cow()?.into_owned()));
    }
    // Any sequence or iterable of str (list, tuple, numpy array of str, generator).
    let mut out = Vec::with_capacity(obj.len().unwrap_or(0));
    let iter = obj.try_iter().map_err(|_| {
        PyTypeError::new_err(format!(
            "sentences must be a str or a sequence of str, not {}",
            obj.get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default()
        ))
    })?;
    for (i, item) in iter.enumerate() {
        let item = item?;
        match item.cast::<PyString>() {
            Ok(s) => out.push(s.to_cow()?.into_owned()),
            Err(_) => {
                return Err(PyTypeError::new_err(format!(
                    "sentences[{i}] is a {}, not a str",
                    item.get_type()
                        .name()
                        .map(|n| n.to_string())
                        .unwrap_or_default()
                )))
            }
        }
    }
    Ok(Sentences::Many(out))
}

/// A loaded embedding model (see the package docstring and `e5embed/__init__.pyi`).
#[pyclass(name = "Embedder", module = "e5embed", frozen, subclass)]
pub struct PyEmbedder {
    inner: Embedder,
    /// Whether the model's own pipeline L2-normalizes (its `modules.json`), or what the caller
    /// asked for at load. The engine itself is loaded with normalization off and each call
    /// normalizes (or not) with the engine's own `l2_normalize`, so `normalize_embeddings`
    /// can differ per call and the default stays bitwise equal to the engine.
    normalize: bool,
    /// Nanoseconds the last `embed_flat` took inside Rust without the GIL (tokenize, forward,
    /// pool, normalize): what `tools/pybench` subtracts from the same call's wall time to get
    /// the Python-side overhead. With several threads calling at once it is any one of theirs.
    last_engine_ns: AtomicU64,
}

impl PyEmbedder {
    /// The prompt a call uses: `prompt` as given, else the one named `prompt_name`, else the
    /// model's default prompt (sentence-transformers' order).
    fn resolve_prompt(
        &self,
        prompt: Option<String>,
        prompt_name: Option<&str>,
    ) -> PyResult<String> {
        if let Some(p) = prompt {
            return Ok(p);
        }
        let name = prompt_name.or(self.inner.config().default_prompt_name.as_deref());
        match name {
            None => Ok(String::new()),
            Some(name) => self.inner.prompt(name).map(str::to_owned).ok_or_else(|| {
                PyValueError::new_err(format!(
                    "invalid input: unknown prompt name `{name}`; this model knows: {}",
                    self.inner.prompt_names().join(", ")
                ))
            }),
        }
    }

    /// Tokenizes (prompt included) and embeds `texts` into `out` (`[texts, dim]`), normalizing
    /// when asked. Runs without the GIL.
    fn embed_flat(
        &self,
        texts: &[String],
        prompt: &str,
        normalize: bool,
        out: &mut [f32],
    ) -> Result<(), Error> {
        let start = Instant::now();
        let r = self.embed_flat_timed(texts, prompt, normalize, out);
        let ns = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last_engine_ns.store(ns, Ordering::Relaxed);
        r
    }

    fn embed_flat_timed(
        &self,
        texts: &[String],
        prompt: &str,
        normalize: bool,
        out: &mut [f32],
    ) -> Result<(), Error> {
        let tokens = if prompt.is_empty() {
            self.inner.tokenize(texts)?
        } else {
            let with: Vec<String> = texts.iter().map(|t| format!("{prompt}{t}")).collect();
            self.inner.tokenize(&with)?
        };
        self.inner
            .embed_tokens_into(&tokens, out)
            .map_err(|e| match e {
                Error::NonFiniteOutput { index, .. } => Error::NonFiniteOutput {
                    index,
                    text: preview(&texts[index]),
                },
                e => e,
            })?;
        if normalize {
            for v in out.chunks_exact_mut(self.inner.dim()) {
                e5embed::pool::l2_normalize(v);
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn encode_impl<'py>(
        &self,
        py: Python<'py>,
        sentences: &Bound<'py, PyAny>,
        prompt: Option<String>,
        prompt_name: Option<&str>,
        batch_size: Option<usize>,
        normalize_embeddings: Option<bool>,
        show_progress_bar: bool,
        convert_to_numpy: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let prompt = self.resolve_prompt(prompt, prompt_name)?;
        let normalize = normalize_embeddings.unwrap_or(self.normalize);
        if batch_size == Some(0) {
            return Err(PyValueError::new_err(
                "invalid input: batch_size must be at least 1",
            ));
        }
        let dim = self.inner.dim();
        match extract_sentences(sentences)? {
            Sentences::One(text) => {
                let texts = [text];
                let arr = PyArray1::<f32>::zeros(py, [dim], false);
                {
                    let mut rw = arr.readwrite();
                    let out = rw
                        .as_slice_mut()
                        .map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
                    py.detach(|| self.embed_flat(&texts, &prompt, normalize, out))
                        .map_err(|e| to_py_err(e, Stage::Call))?;
                }
                if convert_to_numpy {
                    Ok(arr.into_any())
                } else {
                    Ok(arr.call_method0("tolist")?)
                }
            }
            Sentences::Many(texts) => {
                let n = texts.len();
                let arr = PyArray2::<f32>::zeros(py, [n, dim], false);
                {
                    let mut rw = arr.readwrite();
                    let out = rw
                        .as_slice_mut()
                        .map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
                    let step = match (batch_size, show_progress_bar) {
                        (Some(b), _) => b,
                        // A progress bar needs steps; otherwise one call (the engine packs
                        // its own forwards by tokens).
                        (None, true) => 256,
                        (None, false) => n.max(1),
                    };
                    let bar = if show_progress_bar {
                        Some(Progress::new(py, n)?)
                    } else {
                        None
                    };
                    for (chunk, out) in texts.chunks(step).zip(out.chunks_mut(step * dim)) {
                        py.detach(|| self.embed_flat(chunk, &prompt, normalize, out))
                            .map_err(|e| to_py_err(e, Stage::Call))?;
                        if let Some(bar) = &bar {
                            bar.update(chunk.len())?;
                        }
                    }
                    if let Some(bar) = &bar {
                        bar.close()?;
                    }
                }
                if convert_to_numpy {
                    Ok(arr.into_any())
                } else {
                    // sentence-transformers returns a list of per-text vectors here.
                    let list = PyList::empty(py);
                    for row in arr.try_iter()? {
                        list.append(row?)?;
                    }
                    Ok(list.into_any())
                }
            }
        }
    }
}

/// A progress bar: tqdm when it is installed, else a line on stderr.
struct Progress<'py> {
    tqdm: Option<Bound<'py, PyAny>>,
    py: Python<'py>,
    total: usize,
    done: std::cell::Cell<usize>,
}

impl<'py> Progress<'py> {
    fn new(py: Python<'py>, total: usize) -> PyResult<Self> {
        let tqdm = match py.import("tqdm.auto") {
            Ok(m) => {
                let kw = PyDict::new(py);
                kw.set_item("total", total)?;
                kw.set_item("desc", "Batches")?;
                kw.set_item("unit", "text")?;
                Some(m.getattr("tqdm")?.call((), Some(&kw))?)
            }
            Err(_) => None,
        };
        Ok(Progress {
            tqdm,
            py,
            total,
            done: 0.into(),
        })
    }

    fn update(&self, n: usize) -> PyResult<()> {
        self.done.set(self.done.get() + n);
        match &self.tqdm {
            Some(t) => {
                t.call_method1("update", (n,))?;
            }
            None => {
                let stderr = self.py.import("sys")?.getattr("stderr")?;
                stderr.call_method1(
                    "write",
                    (format!(
                        "\rencoded {}/{} texts",
                        self.done.get(),
                        self.total
                    ),),
                )?;
                stderr.call_method0("flush")?;
            }
        }
        Ok(())
    }

    fn close(&self) -> PyResult<()> {
        match &self.tqdm {
            Some(t) => {
                t.call_method0("close")?;
            }
            None => {
                self.py
                    .import("sys")?
                    .getattr("stderr")?
                    .call_method1("write", ("\n",))?;
            }
        }
        Ok(())
    }
}

fn preview(text: &str) -> String {
    let mut p: String = text.chars().take(60).collect();
    if p.len() < text.len() {
        p.push('…');
    }
    format!("{p:?}")
}

/// Loads a model directory or hub id with the given knobs (no GIL needed).
// `EmbedderOptions` is becoming `#[non_exhaustive]`: outside the engine crate it can only be
// built by field assignment on `default()`, never by a struct literal.
#[allow(clippy::field_reassign_with_default)]
fn load(
    model: &str,
    precision: &str,
    threads: Option<usize>,
    max_batch_tokens: Option<usize>,
    isa: Option<&str>,
    normalize: Option<bool>,
    weight_cache: Option<bool>,
) -> Result<(Embedder, bool), Error> {
    let local = Path::new(model);
    let dir = if local.is_dir() {
        local.to_owned()
    } else {
        e5embed::hub::resolve_model(model)?
    };
    let model_normalize = match normalize {
        Some(n) => n,
        None => ModelConfig::from_dir(&dir)?.normalize,
    };
    let mut o = EmbedderOptions::default();
    o.threads = threads;
    o.max_batch_tokens = max_batch_tokens;
    o.precision = Precision::parse_request(precision)?;
    o.normalize = Some(false);
    o.weight_cache = weight_cache;
    if let Some(spec) = isa {
        let req = e5embed::embedder::parse_isa_spec(spec)?;
        o.isa = req.isa;
        o.qisa = req.qisa;
        o.bisa = req.bisa;
    }
    Ok((Embedder::load_with(dir, &o)?, model_normalize))
}

#[pymethods]
impl PyEmbedder {
    #[new]
    #[pyo3(signature = (model, precision="auto", threads=None, max_batch_tokens=None, *, isa=None, normalize=None, weight_cache=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        model: &Bound<'_, PyAny>,
        precision: &str,
        threads: Option<usize>,
        max_batch_tokens: Option<usize>,
        isa: Option<String>,
        normalize: Option<bool>,
        weight_cache: Option<bool>,
    ) -> PyResult<Self> {
        // A str or an os.PathLike.
        let model: String = match model.cast::<PyString>() {
            Ok(s) => s.to_cow()?.into_owned(),
            Err(_) => py
                .import("os")?
                .call_method1("fspath", (model,))?
                .extract()?,
        };
        let (inner, normalize) = py
            .detach(|| {
                load(
                    &model,
                    precision,
                    threads,
                    max_batch_tokens,
                    isa.as_deref(),
                    normalize,
                    weight_cache,
                )
            })
            .map_err(|e| to_py_err(e, Stage::Load))?;
        Ok(PyEmbedder {
            inner,
            normalize,
            last_engine_ns: AtomicU64::new(0),
        })
    }

    #[pyo3(signature = (sentences, prompt=None, prompt_name=None, batch_size=None, normalize_embeddings=None, show_progress_bar=false, convert_to_numpy=true))]
    #[allow(clippy::too_many_arguments)]
    fn encode<'py>(
        &self,
        py: Python<'py>,
        sentences: &Bound<'py, PyAny>,
        prompt: Option<String>,
        prompt_name: Option<&str>,
        batch_size: Option<usize>,
        normalize_embeddings: Option<bool>,
        show_progress_bar: bool,
        convert_to_numpy: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.encode_impl(
            py,
            sentences,
            prompt,
            prompt_name,
            batch_size,
            normalize_embeddings,
            show_progress_bar,
            convert_to_numpy,
        )
    }

    #[pyo3(signature = (sentences, batch_size=None, normalize_embeddings=None, show_progress_bar=false, convert_to_numpy=true))]
    fn encode_queries<'py>(
        &self,
        py: Python<'py>,
        sentences: &Bound<'py, PyAny>,
        batch_size: Option<usize>,
        normalize_embeddings: Option<bool>,
        show_progress_bar: bool,
        convert_to_numpy: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.encode_impl(
            py,
            sentences,
            None,
            Some("query"),
            batch_size,
            normalize_embeddings,
            show_progress_bar,
            convert_to_numpy,
        )
    }

    #[pyo3(signature = (sentences, batch_size=None, normalize_embeddings=None, show_progress_bar=false, convert_to_numpy=true))]
    fn encode_passages<'py>(
        &self,
        py: Python<'py>,
        sentences: &Bound<'py, PyAny>,
        batch_size: Option<usize>,
        normalize_embeddings: Option<bool>,
        show_progress_bar: bool,
        convert_to_numpy: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.encode_impl(
            py,
            sentences,
            None,
            Some("passage"),
            batch_size,
            normalize_embeddings,
            show_progress_bar,
            convert_to_numpy,
        )
    }

    /// Token ids as the model sees them (`[CLS]` ... `[SEP]`, truncated at
    /// `max_seq_length`; no prompt added).
    fn tokenize<'py>(
        &self,
        py: Python<'py>,
        sentences: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let texts = match extract_sentences(sentences)? {
            Sentences::One(t) => vec![t],
            Sentences::Many(v) => v,
        };
        let tokens = py
            .detach(|| self.inner.tokenize(&texts))
            .map_err(|e| to_py_err(e, Stage::Call))?;
        let d = PyDict::new(py);
        let ids: Vec<&Vec<u32>> = tokens.iter().map(|t| &t.ids).collect();
        d.set_item("input_ids", ids)?;
        d.set_item(
            "truncated",
            tokens.iter().map(|t| t.truncated).collect::<Vec<bool>>(),
        )?;
        Ok(d)
    }

    /// Embedding width.
    #[getter]
    fn dim(&self) -> usize {
        self.inner.dim()
    }

    /// sentence-transformers' name for `dim`.
    fn get_sentence_embedding_dimension(&self) -> usize {
        self.inner.dim()
    }

    /// Longest text in tokens (longer ones are truncated).
    #[getter]
    fn max_seq_length(&self) -> usize {
        self.inner.config().max_seq_length
    }

    /// GEMM precision in use: "f32", "int8" or "bf16".
    #[getter]
    fn precision(&self) -> &'static str {
        self.inner.precision().name()
    }

    /// The f32 kernel path in use (e.g. "avx512").
    #[getter]
    fn isa(&self) -> String {
        self.inner.isa().to_string()
    }

    /// Worker threads of this embedder's pool.
    #[getter]
    fn threads(&self) -> usize {
        self.inner.threads()
    }

    /// Whether `encode` L2-normalizes by default.
    #[getter]
    fn normalize_embeddings(&self) -> bool {
        self.normalize
    }

    /// The model directory loaded (a hub id resolves to its cached snapshot).
    #[getter]
    fn model_dir(&self) -> String {
        self.inner.model_dir().to_string_lossy().into_owned()
    }

    /// Prompts by name (the model's own, then E5's `query` and `passage`).
    #[getter]
    fn prompts(&self) -> std::collections::BTreeMap<String, String> {
        self.inner
            .prompt_names()
            .into_iter()
            .filter_map(|n| self.inner.prompt(&n).map(|p| (n.clone(), p.to_owned())))
            .collect()
    }

    /// The prompt name applied when neither `prompt` nor `prompt_name` is given.
    #[getter]
    fn default_prompt_name(&self) -> Option<String> {
        self.inner.config().default_prompt_name.clone()
    }

    /// Seconds the last call spent in the engine (Rust, GIL released: tokenize, forward, pool,
    /// normalize), for measuring the Python-side overhead of the same call (`tools/pybench`).
    fn _last_engine_seconds(&self) -> f64 {
        self.last_engine_ns.load(Ordering::Relaxed) as f64 * 1e-9
    }

    fn __repr__(&self) -> String {
        format!(
            "Embedder(model_dir={:?}, dim={}, precision={:?}, isa={:?}, threads={})",
            self.inner.model_dir().to_string_lossy(),
            self.inner.dim(),
            self.inner.precision().name(),
            self.inner.isa().to_string(),
            self.inner.threads()
        )
    }
}

/// The native module; `e5embed/__init__.py` re-exports it.
#[pymodule]
fn _e5embed(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyEmbedder>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
