//! The packed-weights cache: a model's weights as the engine runs them (converted, int8
//! quantized and smoothed, packed into the kernels' panel layouts) written once to a file in
//! the cache directory, and memory-mapped by later loads instead of reading, converting and
//! packing `model.safetensors` again: a load then costs a `mmap` and a checksum. The packed
//! matrices use their panels where they lie in the mapping
//! (`PackedMatrix::from_packed` and its int8 / bf16 twins), the small vectors (biases,
//! LayerNorm, scales) are copied out, and the word embedding table is the one in
//! `model.safetensors` (mapped too) when that file stores it as f32, else a section here.
//!
//! **Keyed** (`packed/<hash>.bin` in the tuning cache directory) like the calibration cache:
//! the model, config and tokenizer files' path, size and modification time, the precision,
//! the three kernel paths, the int8 recipe, the target architecture, `tune::KERNEL_VERSION`,
//! the kernels' `LAYOUT_VERSION` and [`PACK_VERSION`]. The file name hashes only what names
//! the entry (model path, precision, paths, recipe, architecture), so a rebuild after the
//! model files change replaces the old entry instead of adding one.
//!
//! **Format**: `E5EPACK\x01`, the header's length (u64 LE), a checksum (u64 LE) of everything
//! after these 24 bytes, the header (JSON: the key, the data length, per tensor its section),
//! then the data from the next 64-byte boundary, every section 64-byte aligned (so packed
//! panels are cache-line aligned in the mapping, as the kernels' own buffers are). Written to
//! a temporary name and renamed into place, so readers see a whole file or none.
//!
//! **Trust**: a file that is missing is packed for; one that is truncated, has a bad magic,
//! header, checksum or section, or was written for other files, paths or versions is a
//! warning and the weights are packed again (and the file replaced): never a panic, never
//! different vectors. What was packed from a file is bitwise what packing it again gives, so a
//! cached load gives bitwise the vectors of an uncached one (`tests/packed_cache.rs`).

use std::borrow::Cow;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use e5embed_kernels::bgemm::Bf16Matrix;
use e5embed_kernels::gemm::PackedMatrix;
use e5embed_kernels::mapped::{bytes_of_f32, bytes_of_i32, MappedF32, MappedFile};
use e5embed_kernels::qgemm::{PackedExtras, QuantizedMatrix};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::forward::{FastLayer, FastModel};
use super::linear::{Linear, Paths};
use super::smooth::{Int8Recipe, GEMMS};
use super::Precision;
use crate::config::BertConfig;
use crate::error::{Error, Result};
use crate::weights::Table;

/// Bumped whenever the file format or what it holds changes: files of another version are
/// packed again.
pub const PACK_VERSION: u32 = 1;

/// The cache's subdirectory (in the tuning cache directory).
pub const PACK_DIR: &str = "packed";

/// Models whose `model.safetensors` is smaller than this are packed at every load, never
/// cached: packing them costs less than mapping and checking a file (and tests' tiny models
/// leave no files behind).
pub const MIN_MODEL_BYTES: usize = 8 << 20;

/// Where a load's packed weights came from (`Embedder::weight_source`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WeightSource {
    /// Mapped from this packed-weights cache file.
    Cache(std::path::PathBuf),
    /// Read from `model.safetensors` and packed at this load; `saved`: the cache file then
    /// written (`None`: the cache is off or could not be written).
    Packed { saved: Option<std::path::PathBuf> },
}

const MAGIC: [u8; 8] = *b"E5EPACK\x01";
/// Magic, header length, checksum.
const PREAMBLE: usize = 24;
/// Every section starts on a cache line.
const ALIGN: usize = 64;
/// The checksum hashes the file in chunks of this many bytes (in parallel), then the chunks'
/// hashes in order: the same value whatever the thread count.
const CHECKSUM_CHUNK: usize = 1 << 20;
/// A header longer than this is not one we wrote.
const MAX_HEADER: usize = 16 << 20;

/// What a packed-weights file is valid for (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackKey {
    pub model: String,
    pub model_size: u64,
    pub model_mtime_ns: u128,
    pub config_size: u64,
    pub config_mtime_ns: u128,
    pub tokenizer_size: u64,
    pub tokenizer_mtime_ns: u128,
    pub precision: String,
    pub isa: String,
    pub qisa: String,
    pub bisa: String,
    /// The int8 recipe (empty at f32 and bf16, which do not use it).
    pub recipe: String,
    pub arch: String,
    pub kernel_version: u32,
    pub layout_version: u32,
    pub pack_version: u32,
}

impl PackKey {
    /// The key of a model directory's files at `precision` on `paths` (`None` when their
    /// metadata cannot be read: nothing is cached then).
    pub fn of(
        model_dir: &Path,
        precision: Precision,
        paths: Paths,
        recipe: &Int8Recipe,
    ) -> Option<PackKey> {
        let stat = |name: &str| -> Option<(u64, u128)> {
            let m = std::fs::metadata(model_dir.join(name)).ok()?;
            let t = m.modified().ok()?.duration_since(UNIX_EPOCH).ok()?;
            Some((m.len(), t.as_nanos()))
        };
        let (model_size, model_mtime_ns) = stat("model.safetensors")?;
        let (config_size, config_mtime_ns) = stat("config.json")?;
        let (tokenizer_size, tokenizer_mtime_ns) = stat("tokenizer.json")?;
        let model = std::fs::canonicalize(model_dir.join("model.safetensors")).ok()?;
        Some(PackKey {
            model: model.to_string_lossy().into_owned(),
            model_size,
            model_mtime_ns,
            config_size,
            config_mtime_ns,
            tokenizer_size,
            tokenizer_mtime_ns,
            precision: precision.name().to_owned(),
            isa: paths.isa.name().to_owned(),
            qisa: paths.qisa.name().to_owned(),
            bisa: paths.bisa.name().to_owned(),
            recipe: match precision {
                Precision::Int8 => format!("{recipe:?}"),
                Precision::F32 | Precision::Bf16 => String::new(),
            },
            arch: std::env::consts::ARCH.to_owned(),
            kernel_version: crate::tune::KERNEL_VERSION,
            layout_version: e5embed_kernels::LAYOUT_VERSION,
            pack_version: PACK_VERSION,
        })
    }

    /// The file name: a 64-bit FNV-1a hash of what names the entry (the model's path, the
    /// precision, the paths, the recipe, the architecture), so a newer build of the same
    /// entry replaces it; the file holds the whole key, compared on reading.
    pub fn file_name(&self) -> String {
        let id = [
            self.model.as_str(),
            &self.precision,
            &self.isa,
            &self.qisa,
            &self.bisa,
            &self.recipe,
            &self.arch,
        ]
        .join("\n");
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in id.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        format!("{h:016x}.bin")
    }

    /// The file's path in the cache directory `cache_dir`.
    pub fn path_in(&self, cache_dir: &Path) -> std::path::PathBuf {
        cache_dir.join(PACK_DIR).join(self.file_name())
    }
}

/// A byte range of the data (offset from the data's start, 64-byte aligned).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Sec {
    offset: u64,
    len: u64,
}

#[derive(Debug, Serialize, Deserialize)]
enum LinearRec {
    F32 {
        n: usize,
        k: usize,
        data: Sec,
    },
    Int8 {
        n: usize,
        k: usize,
        data: Sec,
        scales: Sec,
        comp: Sec,
        input_mul: Option<Sec>,
        input_offset_bits: Option<u32>,
    },
    Bf16 {
        n: usize,
        k: usize,
        data: Sec,
    },
}

#[derive(Debug, Serialize, Deserialize)]
struct LayerRec {
    /// QKV, attention output, FFN up, FFN down.
    linears: Vec<LinearRec>,
    /// `qkv_b`, `attn_out_b`, `attn_ln_g`, `attn_ln_b`, `ffn_up_b`, `ffn_down_b`, `ffn_ln_g`,
    /// `ffn_ln_b`.
    vectors: Vec<Sec>,
}

/// A file's header: what it was written for, and where its tensors lie.
#[derive(Debug, Serialize, Deserialize)]
struct Header {
    key: PackKey,
    /// Its fields sit beside the key in the JSON (the format of [`PACK_VERSION`] 1).
    #[serde(flatten)]
    body: Body,
}

/// Where each tensor lies in the data: a file's, or an [`Image`]'s in memory.
#[derive(Debug, Serialize, Deserialize)]
struct Body {
    /// Bytes from the data's start to its end (the file's end).
    data_len: u64,
    /// The word embedding table, when `model.safetensors` does not hold it as f32 (`None`:
    /// it is used from there).
    word_emb: Option<Sec>,
    /// Position and token type embeddings, the embeddings' LayerNorm weight and bias.
    tables: Vec<Sec>,
    layers: Vec<LayerRec>,
}

/// The layer's vectors in [`LayerRec::vectors`] order.
fn layer_vectors(l: &FastLayer) -> [&[f32]; 8] {
    [
        &l.qkv_b,
        &l.attn_out_b,
        &l.attn_ln_g,
        &l.attn_ln_b,
        &l.ffn_up_b,
        &l.ffn_down_b,
        &l.ffn_ln_g,
        &l.ffn_ln_b,
    ]
}

/// The checksum of `bytes`: 1 MiB chunks hashed in parallel on the current rayon pool (8
/// lanes of multiply-rotate over little-endian u64 words, memory speed), then the chunks'
/// hashes in order. Not cryptographic: it catches truncation, zeroed or flipped blocks.
pub(crate) fn checksum(bytes: &[u8]) -> u64 {
    let chunks: Vec<u64> = bytes.par_chunks(CHECKSUM_CHUNK).map(chunk_hash).collect();
    let mut h = mix(0x2545_f491_4f6c_dd1d, bytes.len() as u64);
    for c in chunks {
        h = mix(h, c);
    }
    h ^ (h >> 32)
}

fn mix(h: u64, w: u64) -> u64 {
    (h ^ w).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(31)
}

fn chunk_hash(c: &[u8]) -> u64 {
    let mut lanes: [u64; 8] = std::array::from_fn(|i| 0x243f_6a88_85a3_08d3 ^ (i as u64 + 1));
    let mut blocks = c.chunks_exact(64);
    for b in &mut blocks {
        for (l, w) in lanes.iter_mut().zip(b.chunks_exact(8)) {
            *l = mix(*l, u64::from_le_bytes(w.try_into().unwrap_or([0; 8])));
        }
    }
    let mut tail = [0u8; 64];
    let rest = blocks.remainder();
    tail[..rest.len()].copy_from_slice(rest);
    for (l, w) in lanes.iter_mut().zip(tail.chunks_exact(8)) {
        *l = mix(*l, u64::from_le_bytes(w.try_into().unwrap_or([0; 8])));
    }
    lanes.iter().fold(c.len() as u64, |h, &l| mix(h, l))
}

/// The sections of a file being written, in order.
#[derive(Default)]
struct Plan<'a> {
    parts: Vec<(u64, Cow<'a, [u8]>)>,
    end: u64,
}

impl<'a> Plan<'a> {
    fn add(&mut self, bytes: Cow<'a, [u8]>) -> Sec {
        let offset = self.end.next_multiple_of(ALIGN as u64);
        let len = bytes.len() as u64;
        self.end = offset + len;
        self.parts.push((offset, bytes));
        Sec { offset, len }
    }

    fn f32s(&mut self, v: &'a [f32]) -> Sec {
        self.add(Cow::Borrowed(bytes_of_f32(v)))
    }

    fn linear(&mut self, l: &'a Linear) -> LinearRec {
        match l {
            Linear::F32(m) => LinearRec::F32 {
                n: m.n(),
                k: m.k(),
                data: self.add(Cow::Borrowed(m.packed_bytes())),
            },
            Linear::Bf16(m) => LinearRec::Bf16 {
                n: m.n(),
                k: m.k(),
                data: self.add(Cow::Borrowed(m.packed_bytes())),
            },
            Linear::Int8(m) => {
                let e = m.packed_extras();
                LinearRec::Int8 {
                    n: m.n(),
                    k: m.k(),
                    data: self.add(Cow::Borrowed(m.packed_bytes())),
                    scales: self.add(Cow::Owned(bytes_of_f32(&e.scales).to_vec())),
                    comp: self.add(Cow::Owned(bytes_of_i32(&e.comp).to_vec())),
                    input_mul: e
                        .input_mul
                        .as_ref()
                        .map(|v| self.add(Cow::Owned(bytes_of_f32(v).to_vec()))),
                    input_offset_bits: e.input_offset.map(f32::to_bits),
                }
            }
        }
    }
}

/// Where each tensor of `model` goes in its image, and the data sections in order.
fn layout(model: &FastModel) -> (Body, Plan<'_>) {
    let mut plan = Plan::default();
    let word_emb = match &model.word_emb {
        Table::Mapped(_) => None,
        Table::Owned(v) => Some(plan.f32s(v)),
    };
    let tables = [
        &model.pos_emb,
        &model.type_emb,
        &model.emb_ln_g,
        &model.emb_ln_b,
    ]
    .map(|v| plan.f32s(v))
    .to_vec();
    let mut layers = Vec::with_capacity(model.layers.len());
    for l in &model.layers {
        let linears = [&l.qkv, &l.attn_out, &l.ffn_up, &l.ffn_down]
            .map(|lin| plan.linear(lin))
            .into_iter()
            .collect();
        let vectors = layer_vectors(l).map(|v| plan.f32s(v)).to_vec();
        layers.push(LayerRec { linears, vectors });
    }
    let body = Body {
        data_len: plan.end,
        word_emb,
        tables,
        layers,
    };
    (body, plan)
}

/// A model's packed weights laid out as a cache file's data, built once in one anonymous
/// buffer on transparent huge pages: the model a load packed runs from it ([`rehome`]), and
/// the cache file is written from it ([`Image::save`]).
pub(crate) struct Image {
    body: Body,
    map: Arc<MappedFile>,
}

/// `model` with its packed weights moved into one buffer on transparent huge pages, instead
/// of one heap buffer per matrix on the allocator's 4 KiB pages (a query's forward ~10%
/// faster at e5-small-v2 f32 on the EPYC, kernels/PERF.md, "Packed weights on huge pages"),
/// and that buffer as an [`Image`] to write the cache file from. For models packed at this
/// load (first loads, `weight_cache(false)`, forced paths). Bitwise the same matrices: the
/// same bytes, used where they lie. An error (no memory for the copy) is the caller's to
/// report; it keeps `model`.
pub(crate) fn rehome(
    model: &FastModel,
    paths: Paths,
    recipe: &Int8Recipe,
) -> std::result::Result<(FastModel, Image), Why> {
    let (body, plan) = layout(model);
    let len = usize::try_from(plan.end).map_err(|_| "an image larger than memory".to_owned())?;
    let map = MappedFile::build_on_huge_pages(len, |buf| {
        // The sections are in increasing offset order: cut the buffer into their disjoint
        // destinations and copy them on the pool (the huge pages fault in on both threads).
        // The gaps between them stay zero, as a file's padding.
        let mut jobs = Vec::with_capacity(plan.parts.len());
        let (mut rest, mut base) = (buf, 0usize);
        for (offset, bytes) in &plan.parts {
            let (_, tail) = std::mem::take(&mut rest).split_at_mut(*offset as usize - base);
            let (dst, tail) = tail.split_at_mut(bytes.len());
            jobs.push((dst, &bytes[..]));
            (rest, base) = (tail, *offset as usize + bytes.len());
        }
        jobs.into_par_iter()
            .for_each(|(dst, src)| dst.copy_from_slice(src));
        Ok(())
    })
    .map_err(|e| format!("no memory for the packed weights' huge-page copy ({e})"))?;
    let word_table = match &model.word_emb {
        Table::Mapped(m) => Some(m.clone()),
        Table::Owned(_) => None,
    };
    let cx = Cx {
        map: &map,
        config: &model.config,
        paths,
        precision: model.precision,
        recipe,
    };
    let rehomed = cx.build(&body, 0, &|| word_table.clone())?;
    Ok((rehomed, Image { body, map }))
}

impl Image {
    /// Writes the cache file for `key` to `path` (a temporary file beside it, renamed into
    /// place): the preamble, the header, and the image as its data in one piece. Called
    /// inside the embedder's pool (the checksum runs on it).
    pub(crate) fn save(&self, path: &Path, key: &PackKey) -> Result<()> {
        let io = |p: &Path| {
            let p = p.to_owned();
            move |source| Error::Io { path: p, source }
        };
        #[derive(Serialize)]
        struct HeaderRef<'a> {
            key: &'a PackKey,
            #[serde(flatten)]
            body: &'a Body,
        }
        let json = serde_json::to_vec(&HeaderRef {
            key,
            body: &self.body,
        })
        .map_err(|e| Error::InvalidInput(format!("packed-weights cache header: {e}")))?;
        let data_start = (PREAMBLE + json.len()).next_multiple_of(ALIGN);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        let tmp = crate::hub::TempFile::next_to(path);
        let file = std::fs::File::create(&tmp.path).map_err(io(&tmp.path))?;
        let mut w = BufWriter::with_capacity(1 << 20, file);
        let write = || -> std::io::Result<std::fs::File> {
            w.write_all(&MAGIC)?;
            w.write_all(&(json.len() as u64).to_le_bytes())?;
            w.write_all(&0u64.to_le_bytes())?;
            w.write_all(&json)?;
            w.write_all(&[0u8; ALIGN][..data_start - PREAMBLE - json.len()])?;
            w.write_all(self.map.bytes())?;
            w.into_inner().map_err(|e| e.into_error())
        };
        let mut file = write().map_err(io(&tmp.path))?;
        // The checksum, over the file as written (read back through a mapping).
        let sum = {
            let map = MappedFile::open(&tmp.path).map_err(io(&tmp.path))?;
            checksum(&map.bytes()[PREAMBLE..])
        };
        file.seek(SeekFrom::Start(16))
            .and_then(|_| file.write_all(&sum.to_le_bytes()))
            .map_err(io(&tmp.path))?;
        drop(file);
        tmp.persist(path)
    }
}

/// The word embedding table a cached model takes from `model.safetensors` (the caller maps
/// that file and finds the f32 tensor; `None` when it is not there as mappable f32).
pub(crate) type ModelFileTable<'a> = &'a dyn Fn() -> Option<MappedF32>;

/// A model from the cache file at `path` for `key`, or `None`: absent (silently), or unusable
/// (a warning in `warnings` saying why). Called inside the embedder's pool.
#[allow(clippy::too_many_arguments)]
pub(crate) fn load(
    path: &Path,
    key: &PackKey,
    config: &BertConfig,
    paths: Paths,
    precision: Precision,
    recipe: &Int8Recipe,
    model_file_table: ModelFileTable<'_>,
    warnings: &mut Vec<String>,
) -> Option<FastModel> {
    let map = match MappedFile::open_populated(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            warnings.push(format!(
                "the packed-weights cache {} cannot be read ({e}); packing the weights again",
                path.display()
            ));
            return None;
        }
    };
    let cx = Cx {
        map: &map,
        config,
        paths,
        precision,
        recipe,
    };
    match cx.model(key, model_file_table) {
        Ok(m) => Some(m),
        Err(why) => {
            warnings.push(format!(
                "the packed-weights cache {} {why}; packing the weights again",
                path.display()
            ));
            None
        }
    }
}

/// What reading one file needs.
struct Cx<'a> {
    map: &'a Arc<MappedFile>,
    config: &'a BertConfig,
    paths: Paths,
    precision: Precision,
    recipe: &'a Int8Recipe,
}

type Why = String;

impl Cx<'_> {
    fn model(&self, key: &PackKey, model_file_table: ModelFileTable<'_>) -> Result<FastModel, Why> {
        let b = self.map.bytes();
        if b.len() < PREAMBLE || b[..8] != MAGIC {
            return Err("is not a packed-weights file (bad magic, or truncated)".into());
        }
        let word = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
        let (header_len, stored_sum) = (word(8) as usize, word(16));
        if header_len > MAX_HEADER || PREAMBLE + header_len > b.len() {
            return Err(format!("is truncated ({} bytes, header cut)", b.len()));
        }
        let header: Header = serde_json::from_slice(&b[PREAMBLE..PREAMBLE + header_len])
            .map_err(|e| format!("has an unreadable header ({e})"))?;
        if &header.key != key {
            return Err("is stale (written for other model files, kernel paths or version)".into());
        }
        let data_start = (PREAMBLE + header_len).next_multiple_of(ALIGN);
        let expected = (data_start as u64).checked_add(header.body.data_len);
        if expected != Some(b.len() as u64) {
            return Err(format!(
                "is truncated or padded ({} bytes, the header says {})",
                b.len(),
                expected.map_or_else(|| "an impossible length".into(), |e| e.to_string())
            ));
        }
        if checksum(&b[PREAMBLE..]) != stored_sum {
            return Err("is corrupt (checksum mismatch)".into());
        }
        self.build(&header.body, data_start, model_file_table)
    }

    fn build(
        &self,
        header: &Body,
        data_start: usize,
        model_file_table: ModelFileTable<'_>,
    ) -> Result<FastModel, Why> {
        let c = self.config;
        let (h, i) = (c.hidden_size, c.intermediate_size);
        let vocab = c
            .vocab_size
            .checked_mul(h)
            .ok_or("holds an impossible table size")?;
        let word_emb = match header.word_emb {
            Some(s) => Table::Mapped(self.mapped(s, vocab, data_start)?),
            None => Table::Mapped(
                model_file_table()
                    .filter(|m| m.len() == vocab)
                    .ok_or("was written for a model file whose f32 embedding table is gone")?,
            ),
        };
        let [pos, token_type, ln_g, ln_b] = header.tables.as_slice() else {
            return Err("has no embedding tables".into());
        };
        let pos_len = c.max_position_embeddings.saturating_mul(h);
        let type_len = c.type_vocab_size.saturating_mul(h);
        if header.layers.len() != c.num_hidden_layers {
            return Err(format!(
                "holds {} layers, the model {}",
                header.layers.len(),
                c.num_hidden_layers
            ));
        }
        let shapes = [(3 * h, h), (h, h), (i, h), (h, i)];
        let vector_lens = [3 * h, h, h, h, i, h, h, h];
        let layers = header
            .layers
            .iter()
            .map(|rec| {
                let [qkv, attn_out, ffn_up, ffn_down] = rec.linears.as_slice() else {
                    return Err("has a layer without its four linear layers".to_owned());
                };
                if rec.vectors.len() != vector_lens.len() {
                    return Err("has a layer without its eight vectors".to_owned());
                }
                let v: Vec<Vec<f32>> = rec
                    .vectors
                    .iter()
                    .zip(vector_lens)
                    .map(|(&s, len)| self.f32s(s, len, data_start))
                    .collect::<Result<_, _>>()?;
                let [qkv_b, attn_out_b, attn_ln_g, attn_ln_b, ffn_up_b, ffn_down_b, ffn_ln_g, ffn_ln_b] =
                    <[Vec<f32>; 8]>::try_from(v).map_err(|_| "has a bad layer".to_owned())?;
                let lin = |g: usize, r: &LinearRec| self.linear(g, r, shapes[g], data_start);
                Ok(FastLayer {
                    qkv: lin(0, qkv)?,
                    qkv_b,
                    attn_out: lin(1, attn_out)?,
                    attn_out_b,
                    attn_ln_g,
                    attn_ln_b,
                    ffn_up: lin(2, ffn_up)?,
                    ffn_up_b,
                    ffn_down: lin(3, ffn_down)?,
                    ffn_down_b,
                    ffn_ln_g,
                    ffn_ln_b,
                })
            })
            .collect::<Result<Vec<_>, Why>>()?;
        Ok(FastModel {
            config: c.clone(),
            isa: self.paths.isa,
            qisa: self.paths.qisa,
            bisa: self.paths.bisa,
            precision: self.precision,
            word_emb,
            pos_emb: self.f32s(*pos, pos_len, data_start)?,
            type_emb: self.f32s(*token_type, type_len, data_start)?,
            emb_ln_g: self.f32s(*ln_g, h, data_start)?,
            emb_ln_b: self.f32s(*ln_b, h, data_start)?,
            layers,
        })
    }

    /// Section `s` as `len` floats used in place (64-byte aligned).
    fn mapped(&self, s: Sec, len: usize, data_start: usize) -> Result<MappedF32, Why> {
        if s.len != (len as u64).saturating_mul(4) {
            return Err(format!(
                "has a section of {} bytes where {len} floats belong",
                s.len
            ));
        }
        let offset = usize::try_from(s.offset)
            .ok()
            .and_then(|o| o.checked_add(data_start))
            .ok_or("has a section out of range")?;
        MappedF32::new(self.map, offset, len, ALIGN).map_err(|e| format!("has a bad section ({e})"))
    }

    /// Section `s` as `len` floats, copied.
    fn f32s(&self, s: Sec, len: usize, data_start: usize) -> Result<Vec<f32>, Why> {
        Ok(self.mapped(s, len, data_start)?.as_slice().to_vec())
    }

    /// Section `s` as `len` i32, copied.
    fn i32s(&self, s: Sec, len: usize, data_start: usize) -> Result<Vec<i32>, Why> {
        Ok(self
            .mapped(s, len, data_start)?
            .as_slice()
            .iter()
            .map(|v| v.to_bits() as i32)
            .collect())
    }

    /// Linear layer `g` (0 QKV .. 3 FFN down) of shape `(n, k)`: of the kind the precision and
    /// the recipe give it, with the layout's lengths (checked by the kernels).
    fn linear(
        &self,
        g: usize,
        rec: &LinearRec,
        (n, k): (usize, usize),
        data_start: usize,
    ) -> Result<Linear, Why> {
        let want = match self.precision {
            Precision::Int8 if !self.recipe.is_int8(GEMMS[g]) => Precision::F32,
            p => p,
        };
        let shape_ok = |rn: usize, rk: usize| (rn, rk) == (n, k);
        let bad = |e: e5embed_kernels::KernelError| format!("has a bad matrix ({e})");
        let bytes = |s: Sec| -> Result<MappedF32, Why> {
            if !s.len.is_multiple_of(4) {
                return Err("has a matrix of a length not a multiple of 4".into());
            }
            self.mapped(s, (s.len / 4) as usize, data_start)
        };
        match (rec, want) {
            (&LinearRec::F32 { n: rn, k: rk, data }, Precision::F32) if shape_ok(rn, rk) => {
                PackedMatrix::from_packed(self.paths.isa, n, k, bytes(data)?)
                    .map(Linear::F32)
                    .map_err(bad)
            }
            (&LinearRec::Bf16 { n: rn, k: rk, data }, Precision::Bf16) if shape_ok(rn, rk) => {
                Bf16Matrix::from_packed(self.paths.bisa, n, k, bytes(data)?)
                    .map(Linear::Bf16)
                    .map_err(bad)
            }
            (
                &LinearRec::Int8 {
                    n: rn,
                    k: rk,
                    data,
                    scales,
                    comp,
                    input_mul,
                    input_offset_bits,
                },
                Precision::Int8,
            ) if shape_ok(rn, rk) => {
                let padded = (scales.len / 4) as usize;
                let extras = PackedExtras {
                    scales: self.f32s(scales, padded, data_start)?,
                    comp: self.i32s(comp, padded, data_start)?,
                    input_mul: input_mul.map(|s| self.f32s(s, k, data_start)).transpose()?,
                    input_offset: input_offset_bits.map(f32::from_bits),
                };
                QuantizedMatrix::from_packed(self.paths.qisa, n, k, bytes(data)?, extras)
                    .map(Linear::Int8)
                    .map_err(bad)
            }
            _ => Err(format!(
                "holds a {} linear layer that does not fit this load",
                GEMMS[g]
            )),
        }
    }
}
