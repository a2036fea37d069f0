//! Arbitrary bytes from a client into `server::serve_io`, once as root (uid 0) and once as a
//! non-root user, with dockerd's socket missing. The client closes its side after writing and
//! reads until the server closes; the whole exchange must end within a few seconds (a hang is
//! reported as a panic). Panics anywhere (hyper's tasks, the blocking pool) abort the process,
//! so libFuzzer sees them.
#![no_main]

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ds01::door::server::{serve_io, Shared};
use ds01::policy::settings::FrontDoorSettings;
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Env {
    rt: tokio::runtime::Runtime,
    shared: Arc<Shared>,
    /// A uid other than 0 with a login in /etc/passwd (so creates reach the body rewrite).
    user: u32,
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let tmp = std::env::temp_dir().join(format!("ds01-fuzz-connection-{}", std::process::id()));
        std::fs::create_dir_all(&tmp).unwrap();
        let settings = FrontDoorSettings {
            upstream: tmp.join("no-dockerd.sock"),
            verified_dir: tmp.join("verified"),
            ..Default::default()
        };
        let shared = Arc::new(Shared::new(settings, PathBuf::from("/nonexistent/ds01/policy.yaml"), None));
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        Env { rt, shared, user: first_user() }
    })
}

fn first_user() -> u32 {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd.lines().filter_map(|l| l.split(':').nth(2)?.parse().ok()).find(|&u| u != 0).unwrap_or(65534)
}

async fn exchange(data: &[u8], uid: u32, shared: Arc<Shared>) {
    let (client, server) = tokio::io::duplex(8 << 10);
    let task = tokio::spawn(serve_io(server, uid, shared));
    let (mut rd, mut wr) = tokio::io::split(client);
    let talk = async {
        let write = async {
            let _ = wr.write_all(data).await;
            let _ = wr.shutdown().await;
        };
        let mut answer = Vec::new();
        let read = rd.read_to_end(&mut answer);
        let (_, _) = tokio::join!(write, read);
        task.await
    };
    match tokio::time::timeout(Duration::from_secs(5), talk).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("the connection task failed: {e}"),
        Err(_) => panic!("the connection did not end within 5 s of the client closing"),
    }
}

fuzz_target!(|data: &[u8]| {
    let e = env();
    for uid in [0, e.user] {
        e.rt.block_on(exchange(data, uid, e.shared.clone()));
    }
});
