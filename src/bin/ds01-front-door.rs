//! ds01-front-door: listens on the socket users reach and forwards to dockerd's root-only
//! socket, knowing each caller from the kernel (see `ds01::door`).

use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use ds01::door::{listener, server};
use ds01::policy::settings::{Located, Settings, DEFAULT_PATH, ENV_VAR};

/// The Docker socket front door of ds01-runtime.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// The runtime's settings file (default: $DS01_RUNTIME_CONFIG, else /etc/ds01/runtime.yaml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Listen here instead of front_door.listen (ignored under socket activation).
    #[arg(long)]
    listen: Option<PathBuf>,
    /// dockerd's socket instead of front_door.upstream.
    #[arg(long)]
    upstream: Option<PathBuf>,
}

fn main() {
    let args = Args::parse();
    let loc = match args
        .config
        .clone()
        .or_else(|| std::env::var_os(ENV_VAR).filter(|v| !v.is_empty()).map(PathBuf::from))
    {
        Some(path) => Located { path, explicit: true },
        None => Located { path: DEFAULT_PATH.into(), explicit: false },
    };
    if let Err(e) = run(args, &loc) {
        eprintln!("ds01-front-door: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args, loc: &Located) -> ds01::error::Result<()> {
    let settings = Settings::load(loc)?;
    let mut door = settings.front_door.clone();
    if let Some(l) = args.listen {
        door.listen = l;
    }
    if let Some(u) = args.upstream {
        door.upstream = u;
    }
    let std_listener = match listener::from_systemd() {
        Some(l) => l,
        None => listener::bind(&door.listen, &door.listen_group)?,
    };
    std_listener.set_nonblocking(true).map_err(|e| ds01::error::Error::failed(format!("socket: {e}")))?;
    // One thread: a stream's frames pass from dockerd's connection task to the caller's without
    // waking another thread for each (with two workers, a third of the front door's time in a
    // 1 GiB `docker cp` went to thread switches); the user database is asked on the blocking pool.
    let rt = tokio::runtime::Builder::new_current_thread()
        .max_blocking_threads(4)
        .enable_all()
        .build()
        .map_err(|e| ds01::error::Error::failed(format!("starting: {e}")))?;
    eprintln!(
        "ds01-front-door: listening on {}, dockerd at {}",
        door.listen.display(),
        door.upstream.display()
    );
    let shared = Arc::new(server::Shared::new(door, settings.policy.clone(), Some(settings.clone())));
    rt.block_on(async move {
        let l = tokio::net::UnixListener::from_std(std_listener)
            .map_err(|e| ds01::error::Error::failed(format!("socket: {e}")))?;
        tokio::spawn(server::sweep_hourly(shared.clone()));
        tokio::select! {
            _ = server::serve(l, shared) => {}
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate() => {}
        }
        Ok(())
    })
}

async fn terminate() {
    if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        s.recv().await;
    }
}
