//! ds01-runtime: the OCI runtime registered in daemon.json. Patches `create`, execs runc.
//!
//! `main` is the C entry point: every call pays for this binary's start-up, and Rust's own
//! runtime set-up (12 system calls on musl: fd sanitizing, SIGPIPE ignored, SIGSEGV/SIGBUS
//! handlers on an alternate stack) is work the pass-through path does not need before exec,
//! 0.013 ms a call (BENCHMARKS.md, "What each speed-up buys"). It also leaves SIGPIPE as the
//! engine set it, for runc and the container to inherit.
#![no_main]

use std::ffi::{CStr, OsString};
use std::os::raw::{c_char, c_int};
use std::os::unix::ffi::OsStrExt;

use ds01::argv;
use ds01::audit::{self, Event, Kind};
use ds01::create;
use ds01::error::{Error, Kind as ErrorKind, Refusal};
use ds01::gpu::nvml;
use ds01::host::clock::{Clock, SystemClock};
use ds01::host::exec::Execv;
use ds01::policy::settings::{self, Settings};
use ds01::shim::{gates, lifecycle, passthrough, runtime_log};

/// Size classes in 8 MiB of .bss instead of an mmap per allocation; only touched pages count
/// (a create makes about 45 fewer `mmap`/`munmap` calls than with musl's allocator).
#[global_allocator]
static ALLOC: ds01::shim::alloc::Arena<{ 8 << 20 }> = ds01::shim::alloc::Arena::new();

/// The process entry point, called by the C runtime.
///
/// # Safety
///
/// `argv` holds `argc` valid, NUL-terminated strings, as the C runtime passes them.
#[no_mangle]
pub unsafe extern "C" fn main(argc: c_int, argv: *const *const c_char) -> c_int {
    let args: Vec<OsString> = (1..argc.max(0) as isize)
        // SAFETY: no safe equivalent (without Rust's own `main`, `std::env::args` is empty on
        // musl); the C runtime hands main `argc` valid, NUL-terminated strings.
        .map(|i| unsafe { CStr::from_ptr(*argv.offset(i)) })
        .map(|c| std::ffi::OsStr::from_bytes(c.to_bytes()).to_owned())
        .collect();
    run(args)
}

fn run(args: Vec<OsString>) -> c_int {
    let inv = argv::scan(&args);
    let located = settings::locate(&inv);
    let command = inv.command(&args).map(|c| c.as_bytes());
    let err: Error = if let Some(why) = &inv.uncertain {
        // Fail closed: a call the scan cannot read for sure might start a container unpatched.
        Refusal::Argv { why: why.to_string() }.into()
    } else if inv.is_create(&args) && inv.container_id.is_some() && !create::already_done(&inv) {
        let kind = if command == Some(b"restore") { Kind::Restore } else { Kind::Create };
        let mut ev = Event::new(kind, SystemClock.now(), "allowed");
        match Settings::load(&located) {
            Ok(s) => match create::prepare(&inv, &s, &mut ev, &nvml::Helper::beside_self()) {
                Ok(runtime) => passthrough::exec_runtime(&runtime, &inv, &args, &Execv),
                Err(e) => {
                    ev.outcome = if e.kind == ErrorKind::Refused { "refused" } else { "error" }.into();
                    ev.reason = Some(e.to_string());
                    let mut lines = ev.to_line();
                    if let Some(rejected) = ev.gpu_rejection() {
                        lines.push_str(&rejected.to_line());
                    }
                    audit::record_quietly(&s, &lines);
                    e
                }
            },
            Err(e) => e,
        }
    } else if matches!(command, Some(b"update" | b"exec")) && inv.container_id.is_some() {
        // Judged and recorded before runc runs them.
        let judged = Settings::load(&located).and_then(|s| {
            if command == Some(b"update") {
                gates::update::gate(&inv, &s)
                    .and_then(|piped| piped.map_or(Ok(()), |b| ds01::host::exec::stdin_from(&b)))
            } else {
                gates::exec::gate(&inv, &s)
            }
        });
        match judged {
            Ok(()) => passthrough::run(&inv, &args, &located, &Execv),
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
