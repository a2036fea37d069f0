//! ds01-runtime: the OCI runtime registered in daemon.json. Patches `create`, execs runc.

use std::ffi::OsString;

use ds01::clock::{Clock, SystemClock};
use ds01::error::Error;
use ds01::exec::Execv;
use ds01::settings::{self, Settings};
use ds01::{argv, create, lifecycle, passthrough, runtime_log};

fn main() {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let inv = argv::scan(&args);
    let located = settings::locate(&inv);
    let err: Error = if inv.is_create(&args) && inv.container_id.is_some() && !create::already_done(&inv) {
        match Settings::load(&located).and_then(|s| create::prepare(&inv, &s)) {
            Ok(runtime) => passthrough::exec_runtime(&runtime, &inv, &args, &Execv),
            Err(e) => e,
        }
    } else {
        if lifecycle::needs_followup(&inv, &args) {
            lifecycle::spawn_followup(&inv, &located);
        }
        passthrough::run(&inv, &args, &located, &Execv)
    };
    runtime_log::report(&err.to_string(), inv.log.as_deref(), inv.log_format.as_deref(), SystemClock.now());
    std::process::exit(1);
}
