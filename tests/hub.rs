//! Hub downloads (`e5embed::hub`) against a local server that plays the Hugging Face hub: a
//! tiny HTTP/1.1 server on 127.0.0.1 (one request per connection, a bounded number of
//! connections and a deadline, so it always stops by itself) serving a tiny model directory
//! under `/{repo}/resolve/{revision}/{file}`, with `model.safetensors` redirected to a second
//! server that plays the CDN, as the hub does for LFS files.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::*;
use e5embed::error::HubErrorKind;
use e5embed::hub::{resolve_model_with, HubOptions, RepoId};
use e5embed::{Embedder, Error};
use safetensors::tensor::Dtype;
use sha2::{Digest, Sha256};

const REPO: &str = "acme/tiny-e5";
/// Connections one test server accepts before it stops.
const MAX_CONNECTIONS: usize = 64;
/// A test server stops by itself after this long.
const SERVER_DEADLINE: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------------------------
// The local server
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Request {
    path: String,
    headers: Vec<(String, String)>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Content-Length to announce instead of the body's length (a body cut short).
    announce_len: Option<usize>,
}

impl Reply {
    fn ok(body: &[u8]) -> Self {
        Reply {
            status: 200,
            headers: Vec::new(),
            body: body.to_vec(),
            announce_len: None,
        }
    }
    fn status(status: u16) -> Self {
        Reply {
            status,
            ..Reply::ok(b"")
        }
    }
    fn redirect(location: &str) -> Self {
        Reply::status(302).header("Location", location)
    }
    fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.to_owned(), v.to_owned()));
        self
    }
}

type Handler = Box<dyn Fn(&Request) -> Reply + Send>;

struct Server {
    base: String,
    log: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(handler: impl Fn(&Request) -> Reply + Send + 'static) -> Server {
        let handler: Handler = Box::new(handler);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (log2, stop2) = (log.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + SERVER_DEADLINE;
            let mut served = 0;
            while served < MAX_CONNECTIONS
                && !stop2.load(Ordering::Relaxed)
                && Instant::now() < deadline
            {
                match listener.accept() {
                    Ok((stream, _)) => {
                        served += 1;
                        serve_one(stream, &handler, &log2);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(2))
                    }
                    Err(_) => break,
                }
            }
        });
        Server {
            base,
            log,
            stop,
            thread: Some(thread),
        }
    }

    fn requests(&self) -> Vec<Request> {
        self.log.lock().unwrap().clone()
    }

    fn count(&self) -> usize {
        self.log.lock().unwrap().len()
    }

    fn paths(&self) -> Vec<String> {
        self.requests().into_iter().map(|r| r.path).collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads one request head, answers it and closes the connection.
fn serve_one(mut stream: TcpStream, handler: &Handler, log: &Mutex<Vec<Request>>) {
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
        if head.len() > 64 * 1024 {
            return;
        }
    }
    let text = String::from_utf8_lossy(&head);
    let mut lines = text.split("\r\n");
    let path = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .unwrap_or("")
        .to_owned();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let req = Request { path, headers };
    log.lock().unwrap().push(req.clone());
    let reply = handler(&req);
    let mut out = format!(
        "HTTP/1.1 {} X\r\nContent-Length: {}\r\nConnection: close\r\n",
        reply.status,
        reply.announce_len.unwrap_or(reply.body.len())
    );
    for (k, v) in &reply.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    let _ = stream.write_all(out.as_bytes());
    let _ = stream.write_all(&reply.body);
    let _ = stream.flush();
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

// ---------------------------------------------------------------------------------------------
// A tiny model and a hub that serves it
// ---------------------------------------------------------------------------------------------

const MODULES_JSON: &str = r#"[
  {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
  {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
  {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}
]"#;

/// A tiny model directory with the sentence-transformers files, except 1_Pooling/config.json
/// (the engine then pools by mean), so the hub answers 404 for that optional file.
fn tiny_model(tag: &str) -> TempDir {
    let dir = temp_dir(tag);
    write_tiny_model(&dir, &tiny_tensors(11), Dtype::F32);
    std::fs::write(dir.join("modules.json"), MODULES_JSON).unwrap();
    std::fs::write(
        dir.join("sentence_bert_config.json"),
        r#"{"max_seq_length": 32, "do_lower_case": false}"#,
    )
    .unwrap();
    dir
}

/// Every file under `dir`, as relative paths with `/`.
fn files_under(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy();
                out.push(rel.replace('\\', "/"));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn model_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    files_under(dir)
        .into_iter()
        .map(|f| {
            let bytes = std::fs::read(dir.join(&f)).unwrap();
            (f, bytes)
        })
        .collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The file a hub request asks for, if it is `/{REPO}/resolve/{revision}/{file}`.
fn requested_file<'a>(req: &'a Request, revision: &str) -> Option<&'a str> {
    req.path
        .strip_prefix(&format!("/{REPO}/resolve/{revision}/"))
}

/// A CDN that serves the given blobs at `/blobs/{sha256}` (with its own, non-sha256 ETag).
fn cdn(files: &BTreeMap<String, Vec<u8>>) -> Server {
    let blobs: BTreeMap<String, Vec<u8>> = files
        .values()
        .map(|b| (format!("/blobs/{}", sha256_hex(b)), b.clone()))
        .collect();
    Server::start(move |req| match blobs.get(&req.path) {
        Some(b) => Reply::ok(b).header("ETag", "\"0123456789abcdef0123456789abcdef\""),
        None => Reply::status(404),
    })
}

/// How the fake hub treats model.safetensors.
#[derive(Clone)]
struct HubBehaviour {
    revision: String,
    /// Required `Authorization` header value (401 without it).
    require_auth: Option<String>,
    /// Override of the X-Linked-Etag sent with the redirect (None: the true sha256).
    linked_etag: Option<String>,
    /// Send the true X-Linked-Size (or this one).
    linked_size: Option<u64>,
}

impl Default for HubBehaviour {
    fn default() -> Self {
        HubBehaviour {
            revision: "main".into(),
            require_auth: None,
            linked_etag: None,
            linked_size: None,
        }
    }
}

/// A hub that serves `files` like huggingface.co: small files directly (ETag: a git sha1),
/// model.safetensors as a 302 to the CDN with X-Linked-Etag / ETag = sha256 and X-Linked-Size,
/// and 404 + X-Error-Code: EntryNotFound for files the repo lacks.
fn hub(files: BTreeMap<String, Vec<u8>>, cdn_base: String, b: HubBehaviour) -> Server {
    Server::start(move |req| {
        if let Some(want) = &b.require_auth {
            if req.header("authorization") != Some(want.as_str()) {
                return Reply::status(401)
                    .header("X-Error-Code", "GatedRepo")
                    .header(
                        "X-Error-Message",
                        "Access to model acme/tiny-e5 is restricted.",
                    );
            }
        }
        let Some(file) = requested_file(req, &b.revision) else {
            return Reply::status(404).header("X-Error-Code", "RevisionNotFound");
        };
        match files.get(file) {
            Some(bytes) if file == "model.safetensors" => {
                let sha = sha256_hex(bytes);
                let etag = b.linked_etag.clone().unwrap_or_else(|| sha.clone());
                let size = b.linked_size.unwrap_or(bytes.len() as u64);
                Reply::redirect(&format!("{cdn_base}/blobs/{sha}"))
                    .header("X-Linked-Etag", &format!("\"{etag}\""))
                    .header("ETag", &format!("\"{etag}\""))
                    .header("X-Linked-Size", &size.to_string())
            }
            Some(bytes) => Reply::ok(bytes).header(
                "ETag",
                "\"0123456789abcdef0123456789abcdef01234567\"", // a git blob sha1, not a sha256
            ),
            None => Reply::status(404).header("X-Error-Code", "EntryNotFound"),
        }
    })
}

fn options(endpoint: &str, cache: &Path) -> HubOptions {
    HubOptions {
        endpoint: endpoint.to_owned(),
        cache_dir: cache.to_owned(),
        token: None,
        offline: false,
        progress: false,
        hf_cache_dir: None,
    }
}

fn hub_err(r: e5embed::Result<PathBuf>) -> (HubErrorKind, String) {
    match r {
        Ok(p) => panic!("expected an error, got {}", p.display()),
        Err(e @ Error::Hub { kind, .. }) => (kind, e.to_string()),
        Err(e) => panic!("expected Error::Hub, got {e:?}"),
    }
}

fn snapshot(cache: &Path, revision: &str) -> PathBuf {
    cache.join("acme--tiny-e5").join(revision)
}

/// No temporary or partial file is left in the snapshot.
fn assert_no_part_files(dir: &Path) {
    let parts: Vec<String> = files_under(dir)
        .into_iter()
        .filter(|f| f.ends_with(".part"))
        .collect();
    assert!(parts.is_empty(), "temporary files left: {parts:?}");
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn download_then_embed_matches_the_original_and_reuses_the_cache() {
    let orig = tiny_model("hub-orig");
    let files = model_files(&orig);
    let cdn = cdn(&files);
    let hub = hub(
        files.clone(),
        cdn.base.clone(),
        HubBehaviour {
            require_auth: Some("Bearer hf_secret".into()),
            ..Default::default()
        },
    );
    let cache = temp_dir("hub-cache");
    let mut opts = options(&hub.base, &cache);
    opts.token = Some("hf_secret".into());

    let dir = resolve_model_with(REPO, &opts).unwrap();
    assert_eq!(dir, snapshot(&cache, "main"));

    // The snapshot holds exactly the repo's files (byte for byte) and the completion marker:
    // no temporary file, and no 1_Pooling/config.json (the hub said 404).
    let mut got = files_under(&dir);
    got.retain(|f| f != ".e5embed-snapshot.json");
    assert_eq!(got, files.keys().cloned().collect::<Vec<_>>());
    for (f, bytes) in &files {
        assert!(std::fs::read(dir.join(f)).unwrap() == *bytes, "{f} differs");
    }
    assert!(dir.join(".e5embed-snapshot.json").is_file());

    // Requests: 3 required + 4 optional files at the hub, the weights once at the CDN; the
    // token goes to the hub only, never to the CDN.
    let mut hub_paths = hub.paths();
    hub_paths.sort();
    let mut want: Vec<String> = [
        "1_Pooling/config.json",
        "config.json",
        "config_sentence_transformers.json",
        "model.safetensors",
        "modules.json",
        "sentence_bert_config.json",
        "tokenizer.json",
    ]
    .iter()
    .map(|f| format!("/{REPO}/resolve/main/{f}"))
    .collect();
    want.sort();
    assert_eq!(hub_paths, want);
    let cdn_reqs = cdn.requests();
    assert_eq!(cdn_reqs.len(), 1);
    assert_eq!(cdn_reqs[0].header("authorization"), None);

    // Same vectors as the original directory, bit for bit.
    let texts = [
        "how much protein should a female eat",
        "",
        "summit définition",
    ];
    let from_hub = Embedder::load(&dir).unwrap().embed_queries(&texts).unwrap();
    let direct = Embedder::load(&orig)
        .unwrap()
        .embed_queries(&texts)
        .unwrap();
    assert_eq!(from_hub.vectors, direct.vectors);
    assert_eq!(from_hub.vectors[0].len(), TINY_HIDDEN);

    // Again: served from the cache without a single request, online or offline.
    let (hub_n, cdn_n) = (hub.count(), cdn.count());
    assert_eq!(resolve_model_with(REPO, &opts).unwrap(), dir);
    opts.offline = true;
    assert_eq!(resolve_model_with(REPO, &opts).unwrap(), dir);
    assert_eq!((hub.count(), cdn.count()), (hub_n, cdn_n));

    // An existing directory is used as it is.
    let orig_spec = orig.to_str().unwrap();
    assert_eq!(
        resolve_model_with(orig_spec, &opts).unwrap(),
        orig.to_path_buf()
    );
}

#[test]
fn offline_without_cache_is_a_clear_error() {
    let cache = temp_dir("hub-offline");
    let mut opts = options("http://127.0.0.1:9", &cache);
    opts.offline = true;
    let (kind, msg) = hub_err(resolve_model_with(REPO, &opts));
    assert_eq!(kind, HubErrorKind::Offline);
    assert!(msg.contains("HF_HUB_OFFLINE"), "{msg}");
    assert!(msg.contains(REPO) && msg.contains("config.json"), "{msg}");
    assert!(
        !snapshot(&cache, "main").exists(),
        "offline mode created files"
    );
}

#[test]
fn unauthorized_mentions_hf_token() {
    let hub = Server::start(|_| {
        Reply::status(401)
            .header("X-Error-Code", "GatedRepo")
            .header("X-Error-Message", "Access to this model is restricted.")
    });
    let cache = temp_dir("hub-401");
    let mut opts = options(&hub.base, &cache);
    let (kind, msg) = hub_err(resolve_model_with(REPO, &opts));
    assert_eq!(kind, HubErrorKind::Unauthorized);
    assert!(msg.contains("HF_TOKEN") && msg.contains("401"), "{msg}");
    assert!(msg.contains("GatedRepo"), "hub's own reason is kept: {msg}");
    assert!(files_under(&cache).is_empty(), "{:?}", files_under(&cache));

    opts.token = Some("hf_wrong".into());
    let (kind, msg) = hub_err(resolve_model_with(REPO, &opts));
    assert_eq!(kind, HubErrorKind::Unauthorized);
    assert!(msg.contains("token (HF_TOKEN) was refused"), "{msg}");
    let reqs = hub.requests();
    assert_eq!(reqs.len(), 2, "the first failure stops the download");
    assert_eq!(reqs[1].header("authorization"), Some("Bearer hf_wrong"));
}

#[test]
fn missing_config_is_not_found() {
    let hub = Server::start(|_| Reply::status(404).header("X-Error-Code", "EntryNotFound"));
    let cache = temp_dir("hub-404");
    let (kind, msg) = hub_err(resolve_model_with(REPO, &options(&hub.base, &cache)));
    assert_eq!(kind, HubErrorKind::NotFound);
    assert!(msg.contains("404") && msg.contains("config.json"), "{msg}");
    assert!(msg.contains(REPO) && msg.contains("not found"), "{msg}");
    assert!(!msg.contains("local directory"), "{msg}");
    assert_eq!(hub.paths(), [format!("/{REPO}/resolve/main/config.json")]);
    assert!(files_under(&cache).is_empty());

    // `tests/no-such-model` looks like a repo id, but `tests` is a local directory (tests run
    // in the crate root): a mistyped path is hinted at.
    let (kind, msg) = hub_err(resolve_model_with(
        "tests/no-such-model",
        &options(&hub.base, &cache),
    ));
    assert_eq!(kind, HubErrorKind::NotFound);
    assert!(
        msg.contains("`tests/no-such-model` is not a local directory either"),
        "{msg}"
    );
}

#[test]
fn truncated_download_leaves_no_file_and_the_next_run_fetches_only_what_is_missing() {
    let orig = tiny_model("hub-trunc-orig");
    let files = model_files(&orig);
    let weights = files["model.safetensors"].clone();
    let files2 = files.clone();
    // The weights come directly (no redirect), announced whole but cut in half.
    let bad = Server::start(move |req| match requested_file(req, "main") {
        Some("model.safetensors") => Reply {
            announce_len: Some(weights.len()),
            ..Reply::ok(&weights[..weights.len() / 2])
        },
        Some(f) if files2.contains_key(f) => Reply::ok(&files2[f]),
        _ => Reply::status(404),
    });
    let cache = temp_dir("hub-trunc");
    let (kind, msg) = hub_err(resolve_model_with(REPO, &options(&bad.base, &cache)));
    assert!(
        matches!(kind, HubErrorKind::Connection | HubErrorKind::Integrity),
        "{kind:?}: {msg}"
    );
    assert!(msg.contains("model.safetensors"), "{msg}");
    let dir = snapshot(&cache, "main");
    // config.json was complete and is kept; no weights file, no partial file, no marker.
    assert_eq!(files_under(&dir), ["config.json"]);

    // A later run downloads only what is missing.
    let cdn = cdn(&files);
    let good = hub(files.clone(), cdn.base.clone(), HubBehaviour::default());
    let got = resolve_model_with(REPO, &options(&good.base, &cache)).unwrap();
    assert_eq!(got, dir);
    assert!(!good
        .paths()
        .contains(&format!("/{REPO}/resolve/main/config.json")));
    assert_eq!(
        std::fs::read(dir.join("model.safetensors")).unwrap(),
        files["model.safetensors"]
    );
    Embedder::load(&dir).unwrap();
}

#[test]
fn sha256_mismatch_is_rejected() {
    let orig = tiny_model("hub-sha-orig");
    let files = model_files(&orig);
    let cdn = cdn(&files);
    let hub = hub(
        files,
        cdn.base.clone(),
        HubBehaviour {
            linked_etag: Some(sha256_hex(b"some other file")),
            ..Default::default()
        },
    );
    let cache = temp_dir("hub-sha");
    let (kind, msg) = hub_err(resolve_model_with(REPO, &options(&hub.base, &cache)));
    assert_eq!(kind, HubErrorKind::Integrity);
    assert!(
        msg.contains("sha256 mismatch") && msg.contains("model.safetensors"),
        "{msg}"
    );
    let dir = snapshot(&cache, "main");
    assert!(!dir.join("model.safetensors").exists());
    assert_no_part_files(&dir);
    assert_eq!(cdn.count(), 1, "the file was downloaded, then refused");
}

#[test]
fn size_mismatch_is_rejected() {
    let orig = tiny_model("hub-size-orig");
    let files = model_files(&orig);
    let cdn = cdn(&files);
    let hub = hub(
        files,
        cdn.base.clone(),
        HubBehaviour {
            linked_size: Some(12345),
            ..Default::default()
        },
    );
    let cache = temp_dir("hub-size");
    let (kind, msg) = hub_err(resolve_model_with(REPO, &options(&hub.base, &cache)));
    assert_eq!(kind, HubErrorKind::Integrity);
    assert!(
        msg.contains("X-Linked-Size") && msg.contains("12345"),
        "{msg}"
    );
    let dir = snapshot(&cache, "main");
    assert!(!dir.join("model.safetensors").exists());
    assert_no_part_files(&dir);
}

#[test]
fn the_cdn_etag_is_not_taken_for_a_sha256() {
    // A CDN's own ETag may be 64 hex digits without being the file's sha256 (only the hub's
    // X-Linked-Etag / ETag are): a hub redirect without one downloads fine.
    let orig = tiny_model("hub-cdn-etag-orig");
    let files = model_files(&orig);
    let weights = files["model.safetensors"].clone();
    let cdn = Server::start(move |_| {
        Reply::ok(&weights).header("ETag", &format!("\"{}\"", "ab".repeat(32)))
    });
    let files2 = files.clone();
    let cdn_base = cdn.base.clone();
    let hub = Server::start(move |req| match requested_file(req, "main") {
        // A relative redirect first (as for a renamed repo), then an absolute one to the CDN.
        Some("model.safetensors") => Reply::redirect("weights-moved"),
        Some("weights-moved") => Reply::redirect(&format!("{cdn_base}/blob")),
        Some(f) if files2.contains_key(f) => Reply::ok(&files2[f]),
        _ => Reply::status(404),
    });
    let cache = temp_dir("hub-cdn-etag");
    let dir = resolve_model_with(REPO, &options(&hub.base, &cache)).unwrap();
    assert_eq!(
        std::fs::read(dir.join("model.safetensors")).unwrap(),
        files["model.safetensors"]
    );
    assert!(hub
        .paths()
        .contains(&format!("/{REPO}/resolve/main/weights-moved")));
    assert_eq!(cdn.paths(), ["/blob"]);
}

#[test]
fn unreachable_endpoint_is_a_connection_error() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cache = temp_dir("hub-refused");
    let endpoint = format!("http://127.0.0.1:{port}");
    let (kind, msg) = hub_err(resolve_model_with(REPO, &options(&endpoint, &cache)));
    assert_eq!(kind, HubErrorKind::Connection);
    assert!(
        msg.contains("HF_ENDPOINT") && msg.contains("HF_HUB_OFFLINE"),
        "{msg}"
    );
}

#[test]
fn optional_files_fail_on_anything_but_404() {
    let orig = tiny_model("hub-500-orig");
    let files = model_files(&orig);
    let hub = Server::start(move |req| match requested_file(req, "main") {
        Some("modules.json") => Reply::status(500),
        Some(f) if files.contains_key(f) => Reply::ok(&files[f]),
        _ => Reply::status(404),
    });
    let cache = temp_dir("hub-500");
    let (kind, msg) = hub_err(resolve_model_with(REPO, &options(&hub.base, &cache)));
    assert_eq!(kind, HubErrorKind::Status);
    assert!(msg.contains("500") && msg.contains("modules.json"), "{msg}");
    assert!(!snapshot(&cache, "main")
        .join(".e5embed-snapshot.json")
        .exists());
}

#[test]
fn revision_and_pooling_dir_from_modules_json() {
    let orig = tiny_model("hub-rev-orig");
    std::fs::write(
        orig.join("modules.json"),
        MODULES_JSON.replace("1_Pooling", "2_Pool"),
    )
    .unwrap();
    std::fs::create_dir_all(orig.join("2_Pool")).unwrap();
    std::fs::write(
        orig.join("2_Pool/config.json"),
        r#"{"word_embedding_dimension": 64, "pooling_mode_cls_token": true,
            "pooling_mode_mean_tokens": false}"#,
    )
    .unwrap();
    let files = model_files(&orig);
    let cdn = cdn(&files);
    let hub = hub(
        files.clone(),
        cdn.base.clone(),
        HubBehaviour {
            revision: "v1.0".into(),
            ..Default::default()
        },
    );
    let cache = temp_dir("hub-rev");
    let dir = resolve_model_with(&format!("{REPO}@v1.0"), &options(&hub.base, &cache)).unwrap();
    assert_eq!(dir, snapshot(&cache, "v1.0"));
    assert!(hub.paths().iter().all(|p| p.contains("/resolve/v1.0/")));
    assert_eq!(
        std::fs::read(dir.join("2_Pool/config.json")).unwrap(),
        files["2_Pool/config.json"]
    );
    let e = Embedder::load(&dir).unwrap();
    assert_eq!(e.config().pooling, e5embed::Pooling::Cls);
}

#[test]
fn specs_that_are_neither_directories_nor_repo_ids() {
    let cache = temp_dir("hub-specs");
    let opts = options("http://127.0.0.1:9", &cache);
    let file_dir = temp_dir("hub-spec-file");
    let file = file_dir.join("model.safetensors");
    std::fs::write(&file, b"x").unwrap();
    for spec in [
        "/nonexistent/model",
        "a/b/c",
        "no-slash",
        "./acme/tiny",
        "acme/",
        "acme/tiny@",
        "-acme/tiny",
        "acme/ti..ny",
        "acme--x/tiny",
        file.to_str().unwrap(),
    ] {
        match resolve_model_with(spec, &opts) {
            Err(Error::ModelSpec { .. }) => {}
            other => panic!("{spec}: expected Error::ModelSpec, got {other:?}"),
        }
    }
    let id = RepoId::parse("intfloat/e5-small-v2").unwrap();
    assert_eq!(
        (id.owner.as_str(), id.name.as_str(), id.revision.as_str()),
        ("intfloat", "e5-small-v2", "main")
    );
    assert_eq!(
        id.file_url("https://huggingface.co/", "1_Pooling/config.json"),
        "https://huggingface.co/intfloat/e5-small-v2/resolve/main/1_Pooling/config.json"
    );
    let pr = RepoId::parse("intfloat/e5-small-v2@refs/pr/1").unwrap();
    assert_eq!(
        pr.file_url("https://hf.example", "config.json"),
        "https://hf.example/intfloat/e5-small-v2/resolve/refs%2Fpr%2F1/config.json"
    );
    assert_eq!(
        pr.snapshot_dir(Path::new("/c")),
        Path::new("/c/intfloat--e5-small-v2/refs%2Fpr%2F1")
    );
    assert!(RepoId::parse("a/b@../x").is_none());
}

#[test]
fn a_snapshot_in_the_shared_hugging_face_cache_is_used_without_any_request() {
    // huggingface_hub's layout: models--owner--name/{refs/main, snapshots/<commit>/, blobs/}.
    let scratch = tiny_model("hf-cache");
    let files = model_files(&scratch);
    let hf = scratch.join("hf-hub");
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let repo = hf.join("models--intfloat--e5-tiny");
    let snap = repo.join("snapshots").join(commit);
    for (name, bytes) in &files {
        // The blob under its hash, the snapshot entry a link to it, as huggingface_hub does.
        let blob = repo.join("blobs").join(sha256_hex(bytes));
        std::fs::create_dir_all(blob.parent().unwrap()).unwrap();
        std::fs::write(&blob, bytes).unwrap();
        let link = snap.join(name);
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(&blob, &link).unwrap();
    }
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), commit).unwrap();
    // Nothing listens on the endpoint: any request would fail.
    let mut opts = options("http://127.0.0.1:9", &scratch.join("own-cache"));
    opts.hf_cache_dir = Some(hf.clone());
    let dir = resolve_model_with("intfloat/e5-tiny", &opts).unwrap();
    assert_eq!(dir, snap);
    let by_commit = resolve_model_with(&format!("intfloat/e5-tiny@{commit}"), &opts).unwrap();
    assert_eq!(by_commit, snap);
    let e = Embedder::load(&dir).unwrap();
    let original = Embedder::load(&scratch).unwrap();
    assert_eq!(
        e.embed(&["hello"]).unwrap(),
        original.embed(&["hello"]).unwrap()
    );
    // Another revision is not in the shared cache: the own cache / network path is taken.
    let (kind, _) = hub_err(resolve_model_with("intfloat/e5-tiny@v2", &opts));
    assert_eq!(kind, HubErrorKind::Connection);
}
