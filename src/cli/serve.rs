//! `e5embed serve`: the HTTP server. It lives in its own crate and binary (`e5embed-server`,
//! `server/`) so that the engine library pulls in no async runtime; this subcommand runs that
//! binary with the same arguments (`e5embed serve --help` shows them).

use std::ffi::OsString;
use std::path::PathBuf;

use clap::Args;
use e5embed::Error;

#[derive(Args)]
pub struct ServeArgs {
    /// Arguments for e5embed-server (--model, --host, --port, --precision, ...).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<OsString>,
}

/// The server binary: beside this executable (as cargo builds and installs them), else on PATH.
fn server_binary() -> PathBuf {
    let name = format!("e5embed-server{}", std::env::consts::EXE_SUFFIX);
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join(&name)))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}

pub fn run(a: ServeArgs) -> Result<(), Error> {
    let bin = server_binary();
    let status = std::process::Command::new(&bin)
        .args(&a.args)
        .status()
        .map_err(|e| {
            Error::InvalidInput(format!(
                "cannot run the server binary {} ({e}): build it with `cargo build --release -p \
                 e5embed-server` (it is installed beside e5embed)",
                bin.display()
            ))
        })?;
    match status.code() {
        Some(0) => Ok(()),
        code => Err(Error::InvalidInput(format!(
            "e5embed-server exited with {}",
            code.map_or("a signal".to_owned(), |c| format!("status {c}"))
        ))),
    }
}
