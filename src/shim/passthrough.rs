//! The pass-through path: every subcommand other than create/run goes straight to the
//! low-level runtime, argv unchanged, with nothing parsed and nothing printed.

use std::ffi::{OsStr, OsString};

use crate::argv::Invocation;
use crate::error::Error;
use crate::host::exec::{resolve_runtime, Exec};
use crate::policy::settings::{low_level_runtime_fast, Located};

/// Execs the low-level runtime with `args` (less our own flag); returns only on failure.
pub fn run(inv: &Invocation, args: &[OsString], settings: &Located, exec: &dyn Exec) -> Error {
    let configured = low_level_runtime_fast(&settings.path);
    let path_env = std::env::var_os("PATH");
    match resolve_runtime(&configured, path_env.as_deref()) {
        Ok(runtime) => exec_runtime(&runtime, inv, args, exec),
        Err(e) => e,
    }
}

/// execs `runtime` with argv\[0\] = its path and the original arguments less `--ds01-config`.
pub fn exec_runtime(
    runtime: &std::path::Path,
    inv: &Invocation,
    args: &[OsString],
    exec: &dyn Exec,
) -> Error {
    let mut argv: Vec<&OsStr> = Vec::with_capacity(args.len() + 1);
    argv.push(runtime.as_os_str());
    argv.extend(inv.runc_args(args));
    exec.exec(runtime, &argv)
}
