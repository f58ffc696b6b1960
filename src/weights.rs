//! Loading BERT weights from `model.safetensors`: memory-mapped, validated (shapes against the
//! config, dtype f32/f16/bf16 converted to f32, every value finite), tensor names accepted with
//! or without the `bert.` prefix. The result is plain row-major f32 in the PyTorch layout
//! (Linear weights `[out_features, in_features]`); the fast model packs it for its kernels.
//! The word embedding table, the one big tensor used as is, stays where it lies in the
//! mapped file when the file stores it as f32 ([`Table`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use e5embed_kernels::mapped::{MappedF32, MappedFile};
use rayon::prelude::*;
use safetensors::{Dtype, SafeTensors};

use crate::config::BertConfig;
use crate::error::{Error, Result};

/// A Linear weight `[out, in]`: f32 (from f32/f16/bf16 files), or int8 as saved by
/// `e5embed quantize` (symmetric per output channel: `W[n, k] ≈ q[n, k] · scales[n]`).
#[derive(Debug, Clone, PartialEq)]
pub enum Matrix {
    F32(Vec<f32>),
    Int8 { q: Vec<i8>, scales: Vec<f32> },
}

impl Matrix {
    /// The weights as f32 (int8 dequantized: `q · scale`).
    pub fn to_f32(&self) -> std::borrow::Cow<'_, [f32]> {
        match self {
            Matrix::F32(w) => std::borrow::Cow::Borrowed(w),
            Matrix::Int8 { q, scales } => {
                let k = q.len() / scales.len().max(1);
                std::borrow::Cow::Owned(
                    q.chunks_exact(k.max(1))
                        .zip(scales)
                        .flat_map(|(row, &s)| row.iter().map(move |&v| v as f32 * s))
                        .collect(),
                )
            }
        }
    }

    /// Number of weights.
    fn len(&self) -> usize {
        match self {
            Matrix::F32(w) => w.len(),
            Matrix::Int8 { q, .. } => q.len(),
        }
    }

    /// Stacks matrices with the same `in` dimension along `out` (Q, K, V → QKV). Int8 stays
    /// int8 when all parts are (per-channel scales stack with their rows); otherwise f32.
    fn stack(parts: Vec<Matrix>) -> Matrix {
        if parts.iter().all(|m| matches!(m, Matrix::Int8 { .. })) {
            let (mut q, mut scales) = (Vec::new(), Vec::new());
            for m in parts {
                if let Matrix::Int8 { q: pq, scales: ps } = m {
                    q.extend(pq);
                    scales.extend(ps);
                }
            }
            Matrix::Int8 { q, scales }
        } else {
            let mut w = Vec::with_capacity(parts.iter().map(|m| m.len()).sum());
            for m in &parts {
                w.extend_from_slice(&m.to_f32());
            }
            Matrix::F32(w)
        }
    }
}

/// An f32 table `[rows, width]` (the word embeddings): converted into memory, or used where it
/// lies in the mapped `model.safetensors` (an f32 tensor there: nothing is copied, and only
/// the rows that texts use are ever read in, so the 47 MB of e5-small-v2's table cost the
/// process a few pages per query instead of its whole size). Derefs to `[f32]`.
#[derive(Clone)]
pub enum Table {
    Owned(Vec<f32>),
    Mapped(MappedF32),
}

impl std::ops::Deref for Table {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        match self {
            Table::Owned(v) => v,
            Table::Mapped(m) => m.as_slice(),
        }
    }
}

impl From<Vec<f32>> for Table {
    fn from(v: Vec<f32>) -> Table {
        Table::Owned(v)
    }
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Table::Owned(v) => write!(f, "Table::Owned({} floats)", v.len()),
            Table::Mapped(m) => write!(f, "Table::{m:?}"),
        }
    }
}

/// Suffix of the per-channel scale tensor saved beside an int8 weight.
pub const SCALE_SUFFIX: &str = "_scale";

/// Suffix of the SmoothQuant factor tensor `[in]` saved beside a smoothed int8 weight
/// (see `model::smooth`).
pub const SMOOTH_SUFFIX: &str = "_smooth";

/// One encoder layer's parameters (row-major, PyTorch layout).
#[derive(Debug, Clone)]
pub struct LayerWeights {
    /// Q, K and V projections stacked: `[3*hidden, hidden]` (query rows, then key, then value).
    pub qkv_w: Matrix,
    /// `[3*hidden]`
    pub qkv_b: Vec<f32>,
    /// Attention output projection `[hidden, hidden]`.
    pub attn_out_w: Matrix,
    pub attn_out_b: Vec<f32>,
    pub attn_ln_g: Vec<f32>,
    pub attn_ln_b: Vec<f32>,
    /// FFN up projection `[intermediate, hidden]`.
    pub ffn_up_w: Matrix,
    pub ffn_up_b: Vec<f32>,
    /// FFN down projection `[hidden, intermediate]`.
    pub ffn_down_w: Matrix,
    pub ffn_down_b: Vec<f32>,
    pub ffn_ln_g: Vec<f32>,
    pub ffn_ln_b: Vec<f32>,
    /// SmoothQuant factors `s: [in]` of the four Linear layers (qkv, out, up, down), see
    /// `model::smooth`. For an f32 matrix: the int8 path quantizes `W · diag(s)` (set by the
    /// calibration at load); for a saved int8 matrix: `q · scale` already is `W · diag(s)`.
    pub smooth: [Option<Vec<f32>>; 4],
}

impl LayerWeights {
    /// Linear layer `g` (0 qkv, 1 attention output, 2 FFN up, 3 FFN down).
    pub fn linear(&self, g: usize) -> &Matrix {
        match g {
            0 => &self.qkv_w,
            1 => &self.attn_out_w,
            2 => &self.ffn_up_w,
            _ => &self.ffn_down_w,
        }
    }
}

/// All parameters of a BERT encoder.
#[derive(Debug, Clone)]
pub struct BertWeights {
    pub config: BertConfig,
    /// `[vocab, hidden]`
    pub word_emb: Table,
    /// `[max_positions, hidden]`
    pub pos_emb: Vec<f32>,
    /// `[type_vocab, hidden]`
    pub type_emb: Vec<f32>,
    pub emb_ln_g: Vec<f32>,
    pub emb_ln_b: Vec<f32>,
    pub layers: Vec<LayerWeights>,
}

struct TensorSource<'a> {
    path: &'a Path,
    st: SafeTensors<'a>,
    /// The mapped file the tensors' bytes lie in, when they do (not for `from_bytes`).
    map: Option<&'a Arc<MappedFile>>,
}

impl TensorSource<'_> {
    /// Fetches a Linear weight: f32/f16/bf16, or int8 with its `<name>_scale` tensor.
    fn matrix(&self, name: &str, shape: &[usize]) -> Result<Matrix> {
        let view = self.view(name)?;
        if view.dtype() != Dtype::I8 {
            return self.get(name, shape).map(Matrix::F32);
        }
        self.check_shape(&view, name, shape)?;
        let q: Vec<i8> = view.data().iter().map(|&b| b as i8).collect();
        if let Some(index) = q.iter().position(|&v| v == i8::MIN) {
            return Err(Error::Safetensors {
                path: self.path.to_owned(),
                msg: format!("int8 tensor `{name}` holds -128 at flat index {index}; symmetric int8 weights lie in [-127, 127]"),
            });
        }
        let scales = self.get(&format!("{name}{SCALE_SUFFIX}"), &shape[..1])?;
        Ok(Matrix::Int8 { q, scales })
    }

    /// The SmoothQuant factors `<name>_smooth` `[k]` saved beside an int8 weight, if any
    /// (finite and positive).
    fn smooth(&self, name: &str, k: usize) -> Result<Option<Vec<f32>>> {
        let full = format!("{name}{SMOOTH_SUFFIX}");
        if self.view(&full).is_err() {
            return Ok(None);
        }
        let s = self.get(&full, &[k])?;
        if let Some(i) = s.iter().position(|&v| v <= 0.0) {
            return Err(Error::Safetensors {
                path: self.path.to_owned(),
                msg: format!(
                    "`{full}` holds {} at index {i}; factors must be positive",
                    s[i]
                ),
            });
        }
        Ok(Some(s))
    }

    fn check_shape(
        &self,
        view: &safetensors::tensor::TensorView<'_>,
        name: &str,
        shape: &[usize],
    ) -> Result<()> {
        if view.shape() == shape {
            return Ok(());
        }
        Err(Error::TensorShape {
            path: self.path.to_owned(),
            name: name.to_owned(),
            got: view.shape().to_vec(),
            expected: shape.to_vec(),
        })
    }

    fn view(&self, name: &str) -> Result<safetensors::tensor::TensorView<'_>> {
        let prefixed = format!("bert.{name}");
        self.st
            .tensor(name)
            .or_else(|_| self.st.tensor(&prefixed))
            .map_err(|_| Error::MissingTensor {
                path: self.path.to_owned(),
                name: name.to_owned(),
            })
    }

    /// [`TensorSource::get`] for a big table: an f32 tensor in a mapped file is checked in
    /// place and used there (see [`Table`]); anything else is converted into memory.
    fn table(&self, name: &str, shape: &[usize]) -> Result<Table> {
        let view = self.view(name)?;
        self.check_shape(&view, name, shape)?;
        if let (Some(map), Dtype::F32) = (self.map, view.dtype()) {
            let offset =
                (view.data().as_ptr() as usize).wrapping_sub(map.bytes().as_ptr() as usize);
            let n = view.data().len() / 4;
            if let Ok(m) = MappedF32::new(map, offset, n, 4) {
                let values = m.as_slice();
                if let Some(index) = e5embed_kernels::first_non_finite(values) {
                    return Err(Error::NonFinite {
                        path: self.path.to_owned(),
                        name: name.to_owned(),
                        index,
                        value: values[index],
                    });
                }
                return Ok(Table::Mapped(m));
            }
        }
        self.get(name, shape).map(Table::Owned)
    }

    /// Fetches `name` (or `bert.name`), checks its shape, converts it to f32 and checks that
    /// every value is finite.
    fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let view = self.view(name)?;
        self.check_shape(&view, name, shape)?;
        let bytes = view.data();
        let values: Vec<f32> = match view.dtype() {
            Dtype::F32 => bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F16 => bytes
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::BF16 => bytes
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            other => {
                return Err(Error::TensorDtype {
                    path: self.path.to_owned(),
                    name: name.to_owned(),
                    dtype: format!("{other:?}"),
                })
            }
        };
        if let Some(index) = e5embed_kernels::first_non_finite(&values) {
            let value = values[index];
            return Err(Error::NonFinite {
                path: self.path.to_owned(),
                name: name.to_owned(),
                index,
                value,
            });
        }
        Ok(values)
    }
}

/// Maps a file read-only (`e5embed_kernels::mapped`: the project's one `mmap`, with its
/// contract).
pub(crate) fn map_file(path: &Path) -> Result<Arc<MappedFile>> {
    MappedFile::open(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })
}

/// Whether a safetensors file holds int8 Linear weights (a model saved by `e5embed
/// quantize`): read from its header alone, before any tensor is loaded.
pub(crate) fn file_is_prequantized(st: &SafeTensors<'_>) -> bool {
    const LINEARS: [&str; 6] = [
        "attention.self.query.weight",
        "attention.self.key.weight",
        "attention.self.value.weight",
        "attention.output.dense.weight",
        "intermediate.dense.weight",
        "output.dense.weight",
    ];
    st.tensors()
        .iter()
        .any(|(name, view)| view.dtype() == Dtype::I8 && LINEARS.iter().any(|l| name.ends_with(l)))
}

/// The word embedding table of a mapped `model.safetensors` as it lies there, when the file
/// holds it as f32 of the config's shape, aligned (`None` otherwise). Not checked for finite
/// values: for a load from the packed-weights cache, whose key says this file was checked
/// when the cache was written.
pub(crate) fn mapped_table(
    map: &Arc<MappedFile>,
    st: &SafeTensors<'_>,
    config: &BertConfig,
) -> Option<MappedF32> {
    const NAME: &str = "embeddings.word_embeddings.weight";
    let view = st
        .tensor(NAME)
        .or_else(|_| st.tensor(&format!("bert.{NAME}")))
        .ok()?;
    if view.dtype() != Dtype::F32 || view.shape() != [config.vocab_size, config.hidden_size] {
        return None;
    }
    let offset = (view.data().as_ptr() as usize).wrapping_sub(map.bytes().as_ptr() as usize);
    MappedF32::new(map, offset, view.data().len() / 4, 4).ok()
}

/// Parses the header of a mapped `model.safetensors` (errors name `path`).
pub(crate) fn parse_header<'a>(bytes: &'a [u8], path: &Path) -> Result<SafeTensors<'a>> {
    SafeTensors::deserialize(bytes).map_err(|e| Error::Safetensors {
        path: path.to_owned(),
        msg: describe_safetensors_error(&e, bytes.len()),
    })
}

impl BertWeights {
    /// Loads `model.safetensors` from a model directory and validates it against `config`.
    pub fn load(dir: &Path, config: &BertConfig) -> Result<Self> {
        let path: PathBuf = dir.join("model.safetensors");
        if !path.is_file() {
            return Err(Error::MissingFile {
                dir: dir.to_owned(),
                file: "model.safetensors".into(),
                hint: crate::config::hint_for(dir),
            });
        }
        let map = map_file(&path)?;
        let st = parse_header(map.bytes(), &path)?;
        Self::from_mapped(&map, st, &path, config)
    }

    /// Loads the weights of a mapped `model.safetensors` whose header `st` is already parsed:
    /// [`BertWeights::load`] once the file is open (the embedder parses the header first to
    /// choose the precision). The word embedding table stays in the mapping when it is f32.
    pub(crate) fn from_mapped(
        map: &Arc<MappedFile>,
        st: SafeTensors<'_>,
        path: &Path,
        config: &BertConfig,
    ) -> Result<Self> {
        let src = TensorSource {
            path,
            st,
            map: Some(map),
        };
        Self::from_source(&src, config)
    }

    /// Parses and validates the bytes of a `model.safetensors` file against `config`: what
    /// [`BertWeights::load`] does once the file is mapped (`path` only names the file in
    /// errors). Public for the fuzz targets (`fuzz/`), which feed it arbitrary bytes without
    /// writing files; not part of the stable API.
    #[doc(hidden)]
    pub fn from_bytes(bytes: &[u8], path: &Path, config: &BertConfig) -> Result<Self> {
        let st = parse_header(bytes, path)?;
        let src = TensorSource {
            path,
            st,
            map: None,
        };
        Self::from_source(&src, config)
    }

    fn from_source(src: &TensorSource<'_>, c: &BertConfig) -> Result<Self> {
        let h = c.hidden_size;
        let i = c.intermediate_size;
        // Layers are read, converted and checked in parallel (on the caller's rayon pool); the
        // first error in file order is the one reported, as a sequential read would.
        let layer = |l: usize| -> Result<LayerWeights> {
            let p = format!("encoder.layer.{l}.");
            let q_w = src.matrix(&format!("{p}attention.self.query.weight"), &[h, h])?;
            let k_w = src.matrix(&format!("{p}attention.self.key.weight"), &[h, h])?;
            let v_w = src.matrix(&format!("{p}attention.self.value.weight"), &[h, h])?;
            let q_b = src.get(&format!("{p}attention.self.query.bias"), &[h])?;
            let k_b = src.get(&format!("{p}attention.self.key.bias"), &[h])?;
            let v_b = src.get(&format!("{p}attention.self.value.bias"), &[h])?;
            let names = [
                "attention.self.query.weight",
                "attention.output.dense.weight",
                "intermediate.dense.weight",
                "output.dense.weight",
            ];
            let ks = [h, h, h, i];
            let mut smooth: [Option<Vec<f32>>; 4] = Default::default();
            for g in 0..4 {
                smooth[g] = src.smooth(&format!("{p}{}", names[g]), ks[g])?;
            }
            // Q, K and V share their input, so their factors must be the same.
            for part in ["key", "value"] {
                let other = src.smooth(&format!("{p}attention.self.{part}.weight"), h)?;
                if other != smooth[0] {
                    return Err(Error::Safetensors {
                        path: src.path.to_owned(),
                        msg: format!(
                            "layer {l}: the {part} projection's smoothing factors differ from \
                             the query projection's (they share one input)"
                        ),
                    });
                }
            }
            let layer = LayerWeights {
                qkv_w: Matrix::stack(vec![q_w, k_w, v_w]),
                qkv_b: [q_b, k_b, v_b].concat(),
                attn_out_w: src.matrix(&format!("{p}attention.output.dense.weight"), &[h, h])?,
                attn_out_b: src.get(&format!("{p}attention.output.dense.bias"), &[h])?,
                attn_ln_g: src.get(&format!("{p}attention.output.LayerNorm.weight"), &[h])?,
                attn_ln_b: src.get(&format!("{p}attention.output.LayerNorm.bias"), &[h])?,
                ffn_up_w: src.matrix(&format!("{p}intermediate.dense.weight"), &[i, h])?,
                ffn_up_b: src.get(&format!("{p}intermediate.dense.bias"), &[i])?,
                ffn_down_w: src.matrix(&format!("{p}output.dense.weight"), &[h, i])?,
                ffn_down_b: src.get(&format!("{p}output.dense.bias"), &[h])?,
                ffn_ln_g: src.get(&format!("{p}output.LayerNorm.weight"), &[h])?,
                ffn_ln_b: src.get(&format!("{p}output.LayerNorm.bias"), &[h])?,
                smooth,
            };
            for (g, name) in names.iter().enumerate() {
                if layer.smooth[g].is_some() && !matches!(layer.linear(g), Matrix::Int8 { .. }) {
                    return Err(Error::Safetensors {
                        path: src.path.to_owned(),
                        msg: format!(
                            "layer {l}: `{name}{SMOOTH_SUFFIX}` belongs beside int8 weights only"
                        ),
                    });
                }
            }
            Ok(layer)
        };
        let (layers, word_emb) = rayon::join(
            || {
                (0..c.num_hidden_layers)
                    .into_par_iter()
                    .map(layer)
                    .collect::<Vec<Result<LayerWeights>>>()
            },
            || src.table("embeddings.word_embeddings.weight", &[c.vocab_size, h]),
        );
        let layers = layers.into_iter().collect::<Result<Vec<_>>>()?;
        Ok(BertWeights {
            config: c.clone(),
            word_emb: word_emb?,
            pos_emb: src.get(
                "embeddings.position_embeddings.weight",
                &[c.max_position_embeddings, h],
            )?,
            type_emb: src.get(
                "embeddings.token_type_embeddings.weight",
                &[c.type_vocab_size, h],
            )?,
            emb_ln_g: src.get("embeddings.LayerNorm.weight", &[h])?,
            emb_ln_b: src.get("embeddings.LayerNorm.bias", &[h])?,
            layers,
        })
    }
}

fn describe_safetensors_error(e: &safetensors::SafeTensorError, file_len: usize) -> String {
    use safetensors::SafeTensorError as E;
    match e {
        E::HeaderTooSmall => format!("file is {file_len} bytes, too short for a header (truncated?)"),
        E::InvalidHeaderLength => format!(
            "the header length field points past the end of the {file_len}-byte file (truncated or not safetensors)"
        ),
        E::MetadataIncompleteBuffer => format!(
            "the tensors' data extends past the end of the {file_len}-byte file (truncated download?)"
        ),
        other => other.to_string(),
    }
}
