//! ds01ctl: the admin's tool for ds01-runtime.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ds01::install::{self, Options};
use ds01::policy::Policy;
use ds01::settings::{self, Located, Settings};
use ds01::{identity, limits_report, slices};

/// Admin tool for ds01-runtime, the OCI runtime that places every container in its owner's
/// slice on a shared GPU server.
#[derive(Parser)]
#[command(name = "ds01ctl", version, about)]
struct Cli {
    /// The runtime's settings file (default: $DS01_RUNTIME_CONFIG, else /etc/ds01/runtime.yaml).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
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
    /// Render the systemd slice units of every known user (systemd cgroup driver).
    ///
    /// ds01.slice, each ds01-<group>.slice with accounting on, and for each user named in a
    /// members file or an override, ds01-<group>-<user>.slice with its
    /// 10-resource-limits.conf drop-in (CPUQuota, MemoryMax, MemoryHigh, TasksMax).
    ///
    /// Examples:
    ///   ds01ctl slices                 # print the units
    ///   ds01ctl slices --apply         # write what changed, reload systemd once
    #[command(verbatim_doc_comment)]
    Slices {
        /// Write the units that changed into --dir and reload systemd.
        #[arg(long)]
        apply: bool,
        /// Unit directory.
        #[arg(long, default_value = "/etc/systemd/system")]
        dir: PathBuf,
    },
    /// Show a user's effective limits and where each value comes from.
    ///
    /// Example:
    ///   ds01ctl limits alice
    #[command(verbatim_doc_comment)]
    Limits {
        /// The user (login name).
        user: String,
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

fn load(config: &Option<PathBuf>) -> ds01::error::Result<(Settings, Policy)> {
    let located = match config {
        Some(p) => Located { path: p.clone(), explicit: true },
        None => match std::env::var_os(settings::ENV_VAR) {
            Some(p) => Located { path: p.into(), explicit: true },
            None => Located { path: settings::DEFAULT_PATH.into(), explicit: false },
        },
    };
    let s = Settings::load(&located)?;
    let p = Policy::load(&s.policy)?;
    Ok((s, p))
}

fn run(cli: Cli) -> ds01::error::Result<()> {
    match cli.command {
        Command::Slices { apply, dir } => {
            let (_, policy) = load(&cli.config)?;
            let units = slices::render(&policy, identity::FALLBACK_GROUP)?;
            if !apply {
                for u in &units {
                    println!("# {}\n{}", dir.join(&u.rel).display(), u.text);
                }
                return Ok(());
            }
            let written = slices::write_changed(&dir, &units)?;
            for w in &written {
                println!("wrote {}", w.display());
            }
            if written.is_empty() {
                println!("all {} units up to date", units.len());
            } else if std::path::Path::new("/run/systemd/system").exists() {
                let ok = std::process::Command::new("systemctl").arg("daemon-reload").status();
                match ok {
                    Ok(s) if s.success() => println!("systemctl daemon-reload: done"),
                    _ => return Err(ds01::error::Error::failed("systemctl daemon-reload failed")),
                }
            } else {
                println!("systemd is not running here: no reload needed");
            }
        }
        Command::Limits { user } => {
            let (settings, policy) = load(&cli.config)?;
            print!("{}", limits_report::render(&settings, &policy, &user)?);
        }
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
            let config = config_dir.join("runtime.yaml");
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
            // With systemd, the per-user limits are slice units: write them now.
            if !dry_run && std::path::Path::new("/run/systemd/system").exists() {
                return run(Cli {
                    config: Some(config),
                    command: Command::Slices { apply: true, dir: "/etc/systemd/system".into() },
                });
            } else if !dry_run {
                println!(
                    "systemd is not running: the cgroupfs driver applies the per-user limits at each create"
                );
            }
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
