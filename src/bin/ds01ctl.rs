//! ds01ctl: the admin's tool for ds01-runtime.

use std::path::PathBuf;
use std::process::ExitCode;

use std::io::Write;

use clap::{CommandFactory, Parser, Subcommand};
use ds01::audit::query;
use ds01::ctl::install::{self, Options};
use ds01::ctl::{doctor, explain, gpus as gpus_report, limits as limits_report, slice_units as slices};
use ds01::owner::identity;
use ds01::policy::settings::{self, Located, Settings};
use ds01::policy::Policy;

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
    ///   ds01ctl install --front-door         # users reach dockerd only through ds01-front-door
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
        /// Also install ds01-front-door on the socket users reach (front_door.listen) and move
        /// dockerd's socket unit (docker.socket) to front_door.upstream, root's only. Refused
        /// while dockerd would still listen where users reach it (daemon.json "hosts",
        /// -H unix:// in docker.service).
        #[arg(long)]
        front_door: bool,
        /// The admin's systemd unit directory: read, and where the units go (the front door's,
        /// and the slices' when systemd runs).
        #[arg(long, default_value = "/etc/systemd/system")]
        unit_dir: PathBuf,
        /// The packages' systemd unit directory (read only).
        #[arg(long, default_value = "/lib/systemd/system")]
        vendor_unit_dir: PathBuf,
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
    /// Show the audit trail: who ran what, when, on which GPUs, what was refused and why.
    ///
    /// Reads the log and its rotated (and gzip-compressed) siblings, oldest first, streaming.
    ///
    /// Examples:
    ///   ds01ctl audit --user alice --since 2h
    ///   ds01ctl audit --container notebook._.alice --json
    ///   ds01ctl audit --event create --outcome refused --since 2026-11-22
    ///   ds01ctl audit --follow
    #[command(verbatim_doc_comment)]
    Audit {
        /// Only this owner.
        #[arg(long)]
        user: Option<String>,
        /// Only this container (id prefix or Docker name).
        #[arg(long)]
        container: Option<String>,
        /// Only this event (create, start, kill, delete, gpu_allocate, gpu_hold, gpu_release, reclaim).
        #[arg(long)]
        event: Option<String>,
        /// Only this outcome (allowed, refused, error, ok, sent, released).
        #[arg(long)]
        outcome: Option<String>,
        /// From this time: relative (2h, 30m, 3d) or absolute (2026-11-22, 2026-11-22T13:00:00Z).
        #[arg(long)]
        since: Option<String>,
        /// Up to this time (same forms).
        #[arg(long)]
        until: Option<String>,
        /// One JSON object a line instead of a table.
        #[arg(long)]
        json: bool,
        /// Keep printing new events as they come (like tail -F).
        #[arg(long, short)]
        follow: bool,
        /// Read this log instead of the one in the settings.
        #[arg(long)]
        log: Option<PathBuf>,
    },
    /// Who holds which GPU or MIG instance now, since when, in which container, held until when.
    ///
    /// Example:
    ///   ds01ctl gpus --refresh     # re-read the inventory (NVML) first
    #[command(verbatim_doc_comment)]
    Gpus {
        /// Re-query the inventory instead of using the cache.
        #[arg(long)]
        refresh: bool,
    },
    /// Print what NVML reports, as JSON (the statically linked shim's way to reach NVML).
    #[command(hide = true)]
    NvmlQuery {
        /// libnvidia-ml: a path or a soname.
        #[arg(long, default_value = "libnvidia-ml.so.1")]
        library: PathBuf,
    },
    /// Run the create pipeline on a bundle without writing, and show what would change and why.
    ///
    /// Examples:
    ///   ds01ctl explain /run/containerd/io.containerd.runtime.v2.task/moby/<id>
    ///   ds01ctl explain config.json --user alice
    #[command(verbatim_doc_comment)]
    Explain {
        /// A bundle directory or a config.json.
        path: PathBuf,
        /// Play this owner (as a ds01.user annotation).
        #[arg(long)]
        user: Option<String>,
        /// The container id (default: the one in the spec's cgroupsPath); Docker's metadata for
        /// it is read when it exists.
        #[arg(long)]
        id: Option<String>,
    },
    /// Check the installation and say what is wrong and how to fix it.
    ///
    /// Example:
    ///   ds01ctl doctor --daemon-json /etc/docker/daemon.json
    #[command(verbatim_doc_comment)]
    Doctor {
        /// Docker's daemon.json.
        #[arg(long, default_value = "/etc/docker/daemon.json")]
        daemon_json: PathBuf,
        /// Where processes are listed, to find dockerd's sockets (tests point it elsewhere).
        #[arg(long, default_value = "/proc", hide = true)]
        proc_root: PathBuf,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    ///
    /// Example:
    ///   ds01ctl completions bash > /etc/bash_completion.d/ds01ctl
    #[command(verbatim_doc_comment)]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff).
    ///
    /// Example:
    ///   ds01ctl man > /usr/local/share/man/man8/ds01ctl.8
    #[command(verbatim_doc_comment)]
    Man,
    /// Reverse exactly what install did (daemon.json entries, files it wrote, backups it kept of
    /// the files they replaced, the runc link, the folders it made).
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
    } else if r.daemon_changed && !dry_run && r.apply.is_empty() {
        println!("Reload Docker to apply: {}", install::reload_hint());
    }
    if !r.apply.is_empty() {
        println!("{}:", if dry_run { "Then, to apply it" } else { "To apply it, run" });
        for c in &r.apply {
            println!("  {c}");
        }
    }
}

fn locate(config: &Option<PathBuf>) -> Located {
    match config {
        Some(p) => Located { path: p.clone(), explicit: true },
        None => match std::env::var_os(settings::ENV_VAR) {
            Some(p) => Located { path: p.into(), explicit: true },
            None => Located { path: settings::DEFAULT_PATH.into(), explicit: false },
        },
    }
}

fn load(config: &Option<PathBuf>) -> ds01::error::Result<(Settings, Policy)> {
    let s = Settings::load(&locate(config))?;
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
        Command::Audit { user, container, event, outcome, since, until, json, follow, log } => {
            let s = Settings::load(&locate(&cli.config))?;
            let now = std::time::SystemTime::now();
            let filter = query::Filter {
                user,
                container,
                event,
                outcome,
                since: since.as_deref().map(|t| query::parse_time(t, now)).transpose()?,
                until: until.as_deref().map(|t| query::parse_time(t, now)).transpose()?,
            };
            let path = log.unwrap_or(s.audit_log);
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            if !json {
                let _ = writeln!(out, "{}", query::table_header());
            }
            let mut sink = |e: &ds01::audit::Event, raw: &str| -> ds01::error::Result<()> {
                let r = if json {
                    writeln!(out, "{}", raw.trim_end())
                } else {
                    writeln!(out, "{}", query::table_row(e))
                };
                r.map_err(|e| ds01::error::Error::failed(format!("cannot write output: {e}")))
            };
            if follow {
                query::follow(&path, &filter, &mut sink, &|| false)?;
            } else {
                query::scan(&query::log_files(&path)?, &filter, &mut sink)?;
            }
        }
        Command::Gpus { refresh } => {
            let (s, _) = load(&cli.config)?;
            print!("{}", gpus_report::render(&s, refresh)?);
        }
        Command::NvmlQuery { library } => {
            let gpus = ds01::gpu::nvml::query(library.as_os_str())?;
            let json = serde_json::to_string(&gpus)
                .map_err(|e| ds01::error::Error::failed(format!("cannot write the inventory: {e}")))?;
            println!("{json}");
        }
        Command::Explain { path, user, id } => {
            let (s, _) = load(&cli.config)?;
            print!("{}", explain::explain(&s, &path, user.as_deref(), id.as_deref())?);
        }
        Command::Doctor { daemon_json, proc_root } => {
            let inputs = doctor::Inputs {
                settings: locate(&cli.config),
                daemon_json,
                systemd: std::path::Path::new("/run/systemd/system").exists(),
                proc_root,
                users: ds01::host::users::UserDb::system(),
            };
            let (text, good) = doctor::report(&doctor::run(&inputs));
            print!("{text}");
            if !good {
                return Err(ds01::error::Error::failed("some checks failed (see FAIL lines above)"));
            }
        }
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "ds01ctl", &mut std::io::stdout());
        }
        Command::Man => {
            clap_mangen::Man::new(Cli::command())
                .render(&mut std::io::stdout())
                .map_err(|e| ds01::error::Error::failed(format!("cannot write the man page: {e}")))?;
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
            front_door,
            unit_dir,
            vendor_unit_dir,
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
                front_door,
                unit_dir: unit_dir.clone(),
                vendor_unit_dir,
            };
            let r = install::install(&o)?;
            print_report(&r, dry_run);
            // With systemd, the per-user limits are slice units: write them now.
            if !dry_run && std::path::Path::new("/run/systemd/system").exists() {
                return run(Cli {
                    config: Some(config),
                    command: Command::Slices { apply: true, dir: unit_dir },
                });
            } else if !(dry_run || r.lines.is_empty() && r.diff.is_empty()) {
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
