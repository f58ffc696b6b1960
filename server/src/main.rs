//! `e5embed-server --model DIR|owner/name[@rev] [--host 127.0.0.1] [--port 8080] ...`
//! (`e5embed serve` forwards to the same flags). Logs go to stderr (`RUST_LOG`, default
//! `info`); the line `listening on http://ADDR` goes to stdout once the model is loaded and
//! the port is bound. Exits 0 after SIGTERM / SIGINT once the requests in progress are done.

use clap::Parser;

fn main() -> std::process::ExitCode {
    e5embed::tokenize::quiet_caught_panics();
    let cfg = e5embed_server::ServerConfig::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    // The async side only parses, queues and replies: the engine has its own threads and the
    // scheduler its own; two async workers are plenty, more only contend with the engine.
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(e5embed_server::run(cfg)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
