//! ds01ctl: the admin's tool for ds01-runtime.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ds01::install::{self, Options};

/// Admin tool for ds01-runtime, the OCI runtime that places every container in its owner's
/// slice on a shared GPU server.
#[derive(Parser)]
#[command(name = "ds01ctl", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install the binaries and default settings, and register the runtime in daemon.json.
    ///
    /// Every other key of daemon.json is kept; a backup is written first; running it again
    /// changes nothing. A daemon.json that does not parse is an error and is never overwritten.
    ///
    /// Examples:
    ///   ds01ctl install --dry-run            # show the daemon.json diff, change nothing
    ///   ds01ctl install --default            # also make ds01 Docker's default runtime
    ///   ds01ctl install --default --interpose  # and catch `--runtime runc` too
    #[command(verbatim_doc_comment)]
    Install {
        /// Binaries go to PREFIX/bin, the interposed runc to PREFIX/sbin.
        #[arg(long, default_value = "/usr/local")]
        prefix: PathBuf,
        /// Settings and policy directory.
        #[arg(long, default_value = "/etc/ds01")]
        config_dir: PathBuf,
        /// Docker's daemon.json.
        #[arg(long, default_value = "/etc/docker/daemon.json")]
        daemon_json: PathBuf,
        /// Where the record of this install is kept (used by uninstall).
        #[arg(long, default_value = "/var/lib/ds01-runtime")]
        state_dir: PathBuf,
        /// The runtime's name in daemon.json.
        #[arg(long, default_value = "ds01")]
        name: String,
        /// Also set "default-runtime", so plain `docker run` uses it.
        #[arg(long)]
        default: bool,
        /// Also install the shim as `runc` in PREFIX/sbin, ahead of the real runc on dockerd's
        /// PATH, so that `--runtime runc` and `--runtime io.containerd.runc.v2` go through it.
        #[arg(long)]
        interpose: bool,
        /// Print what would change (daemon.json as a diff), write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Directory of the built binaries to install (default: this ds01ctl's own directory).
        #[arg(long)]
        from: Option<PathBuf>,
    },
    /// Reverse exactly what install did (daemon.json entries, files it created, the runc link).
    ///
    /// Example:
    ///   ds01ctl uninstall --dry-run
    #[command(verbatim_doc_comment)]
    Uninstall {
        /// Where install kept its record.
        #[arg(long, default_value = "/var/lib/ds01-runtime")]
        state_dir: PathBuf,
        /// Print what would change, write nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

fn print_report(r: &install::Report, dry_run: bool) {
    for l in &r.lines {
        println!("{}{l}", if dry_run { "would " } else { "" });
    }
    if !r.diff.is_empty() {
        print!("{}", r.diff);
    }
    if r.lines.is_empty() && r.diff.is_empty() {
        println!("nothing to change");
    } else if r.daemon_changed && !dry_run {
        println!("Reload Docker to apply: {}", install::reload_hint());
    }
}

fn run(cli: Cli) -> ds01::error::Result<()> {
    match cli.command {
        Command::Install {
            prefix,
            config_dir,
            daemon_json,
            state_dir,
            name,
            default,
            interpose,
            dry_run,
            from,
        } => {
            let source_dir = match from {
                Some(d) => d,
                None => std::env::current_exe()
                    .ok()
                    .and_then(|p| p.parent().map(PathBuf::from))
                    .unwrap_or_else(|| PathBuf::from(".")),
            };
            let o = Options {
                prefix,
                config_dir,
                daemon_json,
                state_dir,
                name,
                default,
                interpose,
                dry_run,
                source_dir,
            };
            let r = install::install(&o)?;
            print_report(&r, dry_run);
        }
        Command::Uninstall { state_dir, dry_run } => {
            let r = install::uninstall(&state_dir, dry_run)?;
            print_report(&r, dry_run);
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ds01ctl: {e}");
            ExitCode::FAILURE
        }
    }
}
