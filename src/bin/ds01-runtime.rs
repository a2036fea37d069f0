//! ds01-runtime: the OCI runtime registered in daemon.json. Patches `create`, execs runc.

use std::ffi::OsString;

use ds01::audit::{self, Event, Kind};
use ds01::clock::{Clock, SystemClock};
use ds01::error::{Error, Kind as ErrorKind};
use ds01::exec::Execv;
use ds01::settings::{self, Settings};
use ds01::{argv, create, lifecycle, passthrough, runtime_log};

fn main() {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let inv = argv::scan(&args);
    let located = settings::locate(&inv);
    let err: Error = if inv.is_create(&args) && inv.container_id.is_some() && !create::already_done(&inv) {
        let mut ev = Event::new(Kind::Create, SystemClock.now(), "allowed");
        match Settings::load(&located) {
            Ok(s) => match create::prepare(&inv, &s, &mut ev) {
                Ok(runtime) => passthrough::exec_runtime(&runtime, &inv, &args, &Execv),
                Err(e) => {
                    ev.outcome = if e.kind == ErrorKind::Refused { "refused" } else { "error" }.into();
                    ev.reason = Some(e.to_string());
                    audit::record_quietly(&s, &ev.to_line());
                    e
                }
            },
            Err(e) => e,
        }
    } else {
        if lifecycle::needs_followup(&inv, &args) {
            lifecycle::spawn_followup(&inv, &args, &located);
        }
        passthrough::run(&inv, &args, &located, &Execv)
    };
    runtime_log::report(&err.to_string(), inv.log.as_deref(), inv.log_format.as_deref(), SystemClock.now());
    std::process::exit(1);
}
