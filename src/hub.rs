//! Model directories from the Hugging Face hub.
//!
//! [`resolve_model`] turns what a user typed after `--model` into a model directory:
//!
//! - an existing directory is used as it is;
//! - a hub repo id, `owner/name` or `owner/name@revision` (a branch, tag or commit; default
//!   `main`), becomes a local snapshot under
//!   `<cache>/<owner>--<name>/<revision>/` holding the files the engine reads:
//!   `config.json`, `model.safetensors`, `tokenizer.json` (required) and
//!   `sentence_bert_config.json`, `modules.json`, `1_Pooling/config.json` (optional: a 404 just
//!   means the repo does not have it). Missing files are downloaded from
//!   `<endpoint>/<owner>/<name>/resolve/<revision>/<file>`; a snapshot that is complete is used
//!   without any network request, so a branch like `main` stays as first downloaded (pin a
//!   commit or tag, or delete the directory, to refresh).
//!
//! Before anything else, the cache every Hugging Face tool shares is consulted
//! ([`hf_cache_snapshot`]: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
//! `~/.cache/huggingface/hub`): a model downloaded there by Python or `huggingface-cli` is used
//! in place, with no request, offline too. (e5embed's own downloads still go to its own
//! cache below, not into that shared layout.)
//!
//! Environment (read by [`HubOptions::from_env`]):
//!
//! | variable | meaning | default |
//! | --- | --- | --- |
//! | `E5EMBED_HUB_CACHE` | snapshot cache | `$HF_HOME/e5embed/hub` if `HF_HOME` is set, else `~/.cache/e5embed/hub` |
//! | `HF_ENDPOINT` | hub base URL (a mirror, or a test server) | `https://huggingface.co` |
//! | `HF_TOKEN` | access token for gated or private repos (sent as `Authorization: Bearer`) | `HUGGING_FACE_HUB_TOKEN`, else the token file `huggingface-cli login` writes (`$HF_TOKEN_PATH`, `$HF_HOME/token` or `~/.cache/huggingface/token`) |
//! | `HF_HUB_OFFLINE` | `1`/`true`/`yes`/`on`: never touch the network; use the cache or fail | off |
//!
//! Downloads are safe to interrupt: each file is written to a hidden temporary file in the
//! snapshot directory and renamed into place only once complete and checked, so a file with its
//! final name is always whole. Checks: the byte count against `Content-Length` and the hub's
//! `X-Linked-Size`, and the sha256 against the hub's `X-Linked-Etag` / `ETag` when it is a
//! sha256 (the hub sends one for LFS files such as `model.safetensors`). Redirects are followed
//! (the hub sends large files to a CDN); the token is sent to the endpoint's own origin only,
//! never to the CDN. Failures are [`Error::Hub`] values whose [`HubErrorKind`] tells
//! unauthorized (gated/private: set `HF_TOKEN`), not found, connection, unexpected status,
//! integrity (size or sha256 mismatch) and offline-but-not-cached apart. A progress bar is drawn
//! on stderr for large files when stderr is a terminal.

use std::fs::File;
use std::io::{IsTerminal, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};
use ureq::http::{HeaderMap, Uri};

use crate::error::{Error, HubErrorKind, Result};

/// The public hub.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";
/// The revision used when a repo id has no `@revision`.
pub const DEFAULT_REVISION: &str = "main";
/// Files a snapshot must have.
pub const REQUIRED_FILES: [&str; 3] = ["config.json", "model.safetensors", "tokenizer.json"];
/// Files fetched when the repo has them (sentence-transformers settings).
pub const OPTIONAL_FILES: [&str; 4] = [
    "sentence_bert_config.json",
    "modules.json",
    "1_Pooling/config.json",
    "config_sentence_transformers.json",
];
/// Written last into a snapshot directory: the snapshot is complete, optional files that the
/// repo lacks included, so no request is needed to use it.
const MARKER: &str = ".e5embed-snapshot.json";
const MAX_REDIRECTS: usize = 10;
/// Files at least this large get a progress bar (when stderr is a terminal).
const PROGRESS_MIN_BYTES: u64 = 1 << 20;

/// Where and how to reach the hub. Tests build one directly; the CLI uses
/// [`HubOptions::from_env`].
#[derive(Debug, Clone)]
pub struct HubOptions {
    /// Base URL, without a trailing slash (e.g. `https://huggingface.co`).
    pub endpoint: String,
    /// Root of the snapshot cache.
    pub cache_dir: PathBuf,
    /// Bearer token for gated or private repos.
    pub token: Option<String>,
    /// Never use the network: a snapshot must already be cached.
    pub offline: bool,
    /// Draw progress bars on stderr for large files.
    pub progress: bool,
    /// The cache every Hugging Face tool shares (`huggingface_hub`'s layout:
    /// `models--owner--name/{refs,snapshots,blobs}`): a snapshot already there (downloaded
    /// from Python, `huggingface-cli`, another Rust tool) is used as it is, with no request.
    /// `None`: not consulted.
    pub hf_cache_dir: Option<PathBuf>,
}

impl HubOptions {
    /// The options the environment asks for (see the module docs for the variables).
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."));
        let hf_home = var("HF_HOME").map(PathBuf::from);
        let cache_dir = match (var("E5EMBED_HUB_CACHE"), &hf_home) {
            (Some(d), _) => PathBuf::from(d),
            (None, Some(h)) => h.join("e5embed/hub"),
            (None, None) => home.join(".cache/e5embed/hub"),
        };
        let token = var("HF_TOKEN")
            .or_else(|| var("HUGGING_FACE_HUB_TOKEN"))
            .or_else(|| {
                let path = var("HF_TOKEN_PATH").map(PathBuf::from).unwrap_or_else(|| {
                    hf_home
                        .clone()
                        .unwrap_or_else(|| home.join(".cache/huggingface"))
                        .join("token")
                });
                std::fs::read_to_string(path).ok()
            })
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty());
        let offline = var("HF_HUB_OFFLINE").is_some_and(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "true" | "yes" | "on"
            )
        });
        let hf_cache_dir = var("HF_HUB_CACHE")
            .map(PathBuf::from)
            .or_else(|| hf_home.as_ref().map(|h| h.join("hub")))
            .unwrap_or_else(|| home.join(".cache/huggingface/hub"));
        HubOptions {
            hf_cache_dir: Some(hf_cache_dir),
            endpoint: var("HF_ENDPOINT")
                .unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned())
                .trim_end_matches('/')
                .to_owned(),
            cache_dir,
            token,
            offline,
            progress: std::io::stderr().is_terminal(),
        }
    }
}

/// A hub repo at a revision: `owner/name[@revision]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoId {
    pub owner: String,
    pub name: String,
    pub revision: String,
}

impl RepoId {
    /// Parses `owner/name` or `owner/name@revision`; `None` if `spec` is not shaped like one.
    /// Owner and name follow the hub's rules (letters, digits, `-`, `_`, `.`; no `--` or `..`;
    /// not starting or ending with `-` or `.`), which also makes `<owner>--<name>` unambiguous.
    /// A revision is a branch, tag or commit (`/` allowed, as in `refs/pr/1`).
    pub fn parse(spec: &str) -> Option<Self> {
        let (repo, revision) = match spec.split_once('@') {
            Some((r, rev)) => (r, rev),
            None => (spec, DEFAULT_REVISION),
        };
        let (owner, name) = repo.split_once('/')?;
        let part_ok = |p: &str| {
            (1..=96).contains(&p.len())
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                && !p.starts_with(['-', '.'])
                && !p.ends_with(['-', '.'])
                && !p.contains("--")
                && !p.contains("..")
        };
        let rev_ok = (1..=255).contains(&revision.len())
            && revision
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
            && !revision.starts_with(['/', '.', '-'])
            && !revision.ends_with('/')
            && !revision.contains("//")
            && !revision.contains("..");
        (part_ok(owner) && part_ok(name) && rev_ok).then(|| RepoId {
            owner: owner.to_owned(),
            name: name.to_owned(),
            revision: revision.to_owned(),
        })
    }

    /// `owner/name`.
    pub fn repo(&self) -> String {
        format!("{}/{}", self.owner, self.name)
    }

    /// The revision as one path segment (`refs/pr/1` → `refs%2Fpr%2F1`), for URLs and the cache.
    fn revision_segment(&self) -> String {
        self.revision.replace('/', "%2F")
    }

    /// `<endpoint>/<owner>/<name>/resolve/<revision>/<file>`.
    pub fn file_url(&self, endpoint: &str, file: &str) -> String {
        format!(
            "{}/{}/resolve/{}/{file}",
            endpoint.trim_end_matches('/'),
            self.repo(),
            self.revision_segment()
        )
    }

    /// `<cache_dir>/<owner>--<name>/<revision>`.
    pub fn snapshot_dir(&self, cache_dir: &Path) -> PathBuf {
        cache_dir
            .join(format!("{}--{}", self.owner, self.name))
            .join(self.revision_segment())
    }
}

/// A model directory for `spec`: an existing directory as it is, or the local snapshot of a hub
/// repo id (downloaded if needed), with the options from the environment.
pub fn resolve_model(spec: &str) -> Result<PathBuf> {
    resolve_model_with(spec, &HubOptions::from_env())
}

/// [`resolve_model`] with explicit options.
pub fn resolve_model_with(spec: &str, opts: &HubOptions) -> Result<PathBuf> {
    let path = Path::new(spec);
    if path.is_dir() {
        return Ok(path.to_owned());
    }
    let spec_err = |msg: &str| Error::ModelSpec {
        spec: spec.to_owned(),
        msg: msg.to_owned(),
    };
    if path.exists() {
        return Err(spec_err(
            "is a file, not a model directory (expected a directory holding config.json, \
             model.safetensors and tokenizer.json, or a Hugging Face repo id like \
             intfloat/e5-small-v2)",
        ));
    }
    let Some(id) = RepoId::parse(spec) else {
        return Err(spec_err(
            "no such directory, and not a Hugging Face hub repo id \
             (`owner/name` or `owner/name@revision`, e.g. intfloat/e5-small-v2); \
             `tools/fetch-models` downloads the test models",
        ));
    };
    // `models/e5-small-v2` may be a mistyped local path rather than a repo id: say so when the
    // hub has nothing and a local `models` exists.
    let maybe_path = Path::new(&id.owner).exists();
    download_snapshot(&id, opts).map_err(|e| match e {
        Error::Hub { url, kind, msg }
            if maybe_path
                && matches!(
                    kind,
                    HubErrorKind::NotFound | HubErrorKind::Unauthorized | HubErrorKind::Offline
                ) =>
        {
            Error::Hub {
                url,
                kind,
                msg: format!("{msg} (`{spec}` is not a local directory either)"),
            }
        }
        other => other,
    })
}

/// The snapshot of `id` in the shared Hugging Face cache (`huggingface_hub`'s layout), if it
/// is there with every file the engine requires: `<cache>/models--<owner>--<name>/snapshots/
/// <commit>/`, the commit read from `refs/<revision>` (or the revision itself when it is a
/// commit hash). Files there are links into `blobs/`; they are only read.
pub fn hf_cache_snapshot(id: &RepoId, hf_cache: &Path) -> Option<PathBuf> {
    let repo = hf_cache.join(format!("models--{}--{}", id.owner, id.name));
    let from_ref = std::fs::read_to_string(repo.join("refs").join(&id.revision))
        .ok()
        .map(|c| c.trim().to_owned());
    let is_commit = id.revision.len() == 40 && id.revision.chars().all(|c| c.is_ascii_hexdigit());
    let commit = from_ref.or_else(|| is_commit.then(|| id.revision.clone()))?;
    if commit.is_empty() || !commit.chars().all(|c| c.is_ascii_alphanumeric()) {
        return None;
    }
    let dir = repo.join("snapshots").join(commit);
    REQUIRED_FILES
        .iter()
        .all(|f| dir.join(f).is_file())
        .then_some(dir)
}

/// Ensures the snapshot of `id` is complete and returns its directory: the shared Hugging Face
/// cache's when it has the model ([`hf_cache_snapshot`]), else e5embed's own in
/// `opts.cache_dir`. A complete snapshot is returned without any request; otherwise only the
/// missing files are downloaded.
pub fn download_snapshot(id: &RepoId, opts: &HubOptions) -> Result<PathBuf> {
    if let Some(dir) = opts
        .hf_cache_dir
        .as_deref()
        .and_then(|c| hf_cache_snapshot(id, c))
    {
        return Ok(dir);
    }
    let dir = id.snapshot_dir(&opts.cache_dir);
    let missing: Vec<&str> = REQUIRED_FILES
        .into_iter()
        .filter(|f| !dir.join(f).is_file())
        .collect();
    if missing.is_empty() && (opts.offline || dir.join(MARKER).is_file()) {
        return Ok(dir);
    }
    if opts.offline {
        return Err(Error::Hub {
            url: id.file_url(&opts.endpoint, missing[0]),
            kind: HubErrorKind::Offline,
            msg: format!(
                "{}@{} is not in the cache {} (missing {}) and offline mode is on \
                 (HF_HUB_OFFLINE): unset HF_HUB_OFFLINE to download it",
                id.repo(),
                id.revision,
                dir.display(),
                missing.join(", ")
            ),
        });
    }
    create_dir(&dir)?;
    if opts.progress {
        eprintln!(
            "e5embed: fetching {}@{} into {}",
            id.repo(),
            id.revision,
            dir.display()
        );
    }
    let agent = agent();
    let mut absent = Vec::new();
    for file in REQUIRED_FILES {
        if !dir.join(file).is_file() {
            fetch_file(&agent, opts, id, &dir, file, true)?;
        }
    }
    let mut optional: Vec<String> = OPTIONAL_FILES.iter().map(|f| f.to_string()).collect();
    let mut i = 0;
    while let Some(file) = optional.get(i).cloned() {
        i += 1;
        if !dir.join(&file).is_file() && !fetch_file(&agent, opts, id, &dir, &file, false)? {
            absent.push(file.clone());
        }
        if file == "modules.json" {
            if let Some(extra) = pooling_config_file(&dir) {
                if !optional.contains(&extra) {
                    optional.push(extra);
                }
            }
        }
    }
    let marker = serde_json::json!({
        "repo": id.repo(),
        "revision": id.revision,
        "endpoint": opts.endpoint,
        "absent": absent,
    });
    write_atomic(&dir.join(MARKER), marker.to_string().as_bytes())?;
    Ok(dir)
}

/// The pooling module's config file when `modules.json` puts it somewhere other than
/// `1_Pooling` (the engine reads it from there). Only plain relative paths are accepted.
fn pooling_config_file(dir: &Path) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Module {
        path: Option<String>,
        #[serde(rename = "type")]
        kind: String,
    }
    let text = std::fs::read(dir.join("modules.json")).ok()?;
    let modules: Vec<Module> = serde_json::from_slice(&text).ok()?;
    let p = modules
        .into_iter()
        .find(|m| m.kind.ends_with("Pooling"))?
        .path?;
    let safe = !p.is_empty()
        && p.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
        && Path::new(&p)
            .components()
            .all(|c| matches!(c, Component::Normal(_)));
    (safe && p != "1_Pooling").then(|| format!("{}/config.json", p.trim_end_matches('/')))
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_per_read(Some(Duration::from_secs(60)))
        .user_agent(concat!("e5embed/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.to_owned(),
        source,
    })
}

/// `scheme://authority` of a URL, lowercased, for "same origin" checks.
fn origin(url: &str) -> Option<String> {
    let uri: Uri = url.parse().ok()?;
    Some(format!("{}://{}", uri.scheme_str()?, uri.authority()?).to_ascii_lowercase())
}

/// Resolves a `Location` header against the URL that sent it.
fn join_url(base: &str, location: &str) -> Option<String> {
    let lower = location.to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        return Some(location.to_owned());
    }
    let uri: Uri = base.parse().ok()?;
    let scheme = uri.scheme_str()?;
    let authority = uri.authority()?;
    Some(if location.starts_with("//") {
        format!("{scheme}:{location}")
    } else if location.starts_with('/') {
        format!("{scheme}://{authority}{location}")
    } else {
        let path = uri.path();
        let base_dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
        format!("{scheme}://{authority}{base_dir}{location}")
    })
}

/// The sha256 an ETag names, if it is one (64 hex digits, quoted or weak or not).
fn etag_sha256(value: &str) -> Option<String> {
    let v = value.trim();
    let v = v.strip_prefix("W/").unwrap_or(v).trim_matches('"');
    (v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit())).then(|| v.to_ascii_lowercase())
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// What the responses along a redirect chain announced about the file.
#[derive(Default)]
struct Announced {
    /// `X-Linked-Etag` (the hub's sha256 of an LFS file), from any hop.
    linked_sha: Option<String>,
    /// `ETag` of a response from the endpoint's own origin (not a CDN's own ETag).
    origin_sha: Option<String>,
    /// `X-Linked-Size`, from any hop.
    linked_size: Option<u64>,
}

impl Announced {
    fn absorb(&mut self, h: &HeaderMap, from_origin: bool) {
        if self.linked_sha.is_none() {
            self.linked_sha = header(h, "x-linked-etag").and_then(etag_sha256);
        }
        if from_origin && self.origin_sha.is_none() {
            self.origin_sha = header(h, "etag").and_then(etag_sha256);
        }
        if self.linked_size.is_none() {
            self.linked_size = header(h, "x-linked-size").and_then(|v| v.trim().parse().ok());
        }
    }

    fn sha256(&self) -> Option<&str> {
        self.linked_sha.as_deref().or(self.origin_sha.as_deref())
    }
}

/// A hidden, unique temporary file next to its destination (same directory, so the final
/// rename is atomic), removed on drop unless it was renamed into place.
pub(crate) struct TempFile {
    pub(crate) path: PathBuf,
    keep: bool,
}

impl TempFile {
    pub(crate) fn next_to(dest: &Path) -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        TempFile {
            path: dest.with_file_name(format!(
                ".{name}.{}.{}.part",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            )),
            keep: false,
        }
    }

    /// Renames the file to `dest`.
    pub(crate) fn persist(mut self, dest: &Path) -> Result<()> {
        std::fs::rename(&self.path, dest).map_err(io_err(dest))?;
        self.keep = true;
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_owned(),
        source,
    }
}

pub(crate) fn write_atomic(dest: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = TempFile::next_to(dest);
    std::fs::write(&tmp.path, bytes).map_err(io_err(&tmp.path))?;
    tmp.persist(dest)
}

/// Downloads one file of the snapshot into `dir`. Returns `false` when an optional file does
/// not exist (404); any other failure is an error, and leaves no file under the final name.
fn fetch_file(
    agent: &ureq::Agent,
    opts: &HubOptions,
    id: &RepoId,
    dir: &Path,
    file: &str,
    required: bool,
) -> Result<bool> {
    let file_url = id.file_url(&opts.endpoint, file);
    let hub_err = |kind: HubErrorKind, msg: String| Error::Hub {
        url: file_url.clone(),
        kind,
        msg,
    };
    let endpoint_origin = origin(&opts.endpoint);
    let mut url = file_url.clone();
    let mut announced = Announced::default();
    let mut redirects = 0;
    let response = loop {
        let from_origin = endpoint_origin.is_some() && origin(&url) == endpoint_origin;
        let mut request = agent.get(&url);
        if let Some(token) = opts.token.as_deref().filter(|_| from_origin) {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        let response = request.call().map_err(|e| {
            let from = if url == file_url {
                String::new()
            } else {
                format!(" (redirected to {url})")
            };
            hub_err(
                HubErrorKind::Connection,
                format!(
                    "cannot download {file}{from}: {e}. Check the network connection; \
                     HF_ENDPOINT sets another hub or mirror (now {}), and HF_HUB_OFFLINE=1 uses \
                     only models already in the cache",
                    opts.endpoint
                ),
            )
        })?;
        let status = response.status().as_u16();
        let headers = response.headers();
        announced.absorb(headers, from_origin);
        let hub_says = match (
            header(headers, "x-error-code"),
            header(headers, "x-error-message"),
        ) {
            (Some(c), Some(m)) => format!(" (hub: {c}: {m})"),
            (Some(c), None) => format!(" (hub: {c})"),
            (None, Some(m)) => format!(" (hub: {m})"),
            (None, None) => String::new(),
        };
        match status {
            200 => break response,
            301 | 302 | 303 | 307 | 308 => {
                redirects += 1;
                let next = header(headers, "location").and_then(|l| join_url(&url, l));
                match next {
                    Some(next) if redirects <= MAX_REDIRECTS => url = next,
                    Some(_) => {
                        return Err(hub_err(
                            HubErrorKind::Status,
                            format!("more than {MAX_REDIRECTS} redirects (last: {url})"),
                        ))
                    }
                    None => {
                        return Err(hub_err(
                            HubErrorKind::Status,
                            format!("HTTP {status} redirect from {url} without a valid Location"),
                        ))
                    }
                }
            }
            401 | 403 => {
                let why = if opts.token.is_some() {
                    "the token (HF_TOKEN) was refused or has no access to it; for a gated model, \
                     accept its terms on the model's hub page with the token's account"
                } else {
                    "it is gated or private, or does not exist; set HF_TOKEN to a Hugging Face \
                     access token that can read it (for a gated model, accept its terms on the \
                     model's hub page first)"
                };
                return Err(hub_err(
                    HubErrorKind::Unauthorized,
                    format!(
                        "HTTP {status}: access to {}@{} denied: {why}{hub_says}",
                        id.repo(),
                        id.revision
                    ),
                ));
            }
            404 if !required => return Ok(false),
            404 => {
                let extra = if file == "model.safetensors" {
                    "; this engine reads safetensors weights only"
                } else {
                    ""
                };
                return Err(hub_err(
                    HubErrorKind::NotFound,
                    format!(
                        "HTTP 404: not found: {} at revision `{}` has no {file}, or the repo or \
                         revision does not exist{extra}{hub_says}",
                        id.repo(),
                        id.revision
                    ),
                ));
            }
            _ => {
                return Err(hub_err(
                    HubErrorKind::Status,
                    format!("unexpected HTTP {status} from {url}{hub_says}"),
                ))
            }
        }
    };

    let content_length: Option<u64> =
        header(response.headers(), "content-length").and_then(|v| v.trim().parse().ok());
    let total = announced.linked_size.or(content_length);
    let dest = dir.join(file);
    if let Some(parent) = dest.parent() {
        create_dir(parent)?;
    }
    let tmp = TempFile::next_to(&dest);
    let tmp_path = tmp.path.clone();
    let mut out = File::create(&tmp_path).map_err(io_err(&tmp_path))?;
    let bar = (opts.progress && total.is_some_and(|t| t >= PROGRESS_MIN_BYTES)).then(|| {
        let bar = indicatif::ProgressBar::new(total.unwrap_or(0));
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(format!("{} {file}", id.repo()));
        bar
    });
    let mut reader = response.into_body().into_reader();
    let mut hasher = Sha256::new();
    let mut received: u64 = 0;
    let mut buf = vec![0u8; 256 * 1024];
    let copied: Result<()> = loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let of = total.map(|t| format!(" of {t}")).unwrap_or_default();
                break Err(hub_err(
                    HubErrorKind::Connection,
                    format!("download of {file} interrupted after {received}{of} bytes: {e}"),
                ));
            }
        };
        hasher.update(&buf[..n]);
        if let Err(e) = out.write_all(&buf[..n]) {
            break Err(io_err(&tmp_path)(e));
        }
        received += n as u64;
        if let Some(bar) = &bar {
            bar.inc(n as u64);
        }
    };
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    copied?;
    for (what, expected) in [
        ("Content-Length", content_length),
        ("X-Linked-Size", announced.linked_size),
    ] {
        if let Some(expected) = expected.filter(|&e| e != received) {
            return Err(hub_err(
                HubErrorKind::Integrity,
                format!(
                    "size mismatch: received {received} bytes of {file}, the server announced \
                     {expected} ({what}); the download was cut short or corrupted, nothing was \
                     kept: try again"
                ),
            ));
        }
    }
    if let Some(expected) = announced.sha256() {
        let got: String = hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if got != expected {
            return Err(hub_err(
                HubErrorKind::Integrity,
                format!(
                    "sha256 mismatch: {file} hashes to {got}, the hub announced {expected}; \
                     nothing was kept: try again"
                ),
            ));
        }
    }
    out.sync_all().map_err(io_err(&tmp_path))?;
    drop(out);
    tmp.persist(&dest)?;
    Ok(true)
}
