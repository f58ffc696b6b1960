//! Helpers shared by the fuzz targets in `fuzz_targets/` (see `tools/fuzz`).

use std::path::{Path, PathBuf};

/// A scratch directory for this process, emptied on first use and reused by every
/// iteration: `$E5EMBED_FUZZ_TMP/<name>-<pid>`, by default under this crate's `target/`
/// (nothing is written outside the repository).
pub fn scratch_dir(name: &str) -> PathBuf {
    let root = std::env::var_os("E5EMBED_FUZZ_TMP")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-tmp"));
    let dir = root.join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("cannot create fuzz scratch dir {}: {e}", dir.display()));
    dir
}

/// Writes `contents` to `path`, or removes `path` when `contents` is `None`.
pub fn put(path: &Path, contents: Option<&[u8]>) {
    match contents {
        Some(bytes) => std::fs::write(path, bytes)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display())),
        None => match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("cannot remove {}: {e}", path.display()),
        },
    }
}
