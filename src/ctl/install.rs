//! `ds01ctl install` / `uninstall`: put the binaries and default settings in place, merge the
//! runtime into daemon.json (backup first, every other key kept), optionally interpose the shim
//! as `runc`, optionally put the front door in place (`ctl::front_door`: its binary and
//! systemd units), and record exactly what was done so that uninstall reverses exactly that.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::ctl::front_door;
use crate::error::{Context, Error, Result};
use crate::host::fs::write_atomic;

/// Default files of runtime-config/, built into the binary so a copied ds01ctl can install them.
pub const DEFAULT_FILES: &[(&str, &str)] = &[
    ("runtime.yaml", include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/runtime-config/runtime.yaml"))),
    (
        "resource-limits.yaml",
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/runtime-config/resource-limits.yaml")),
    ),
    (
        "user-overrides.yaml",
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/runtime-config/user-overrides.yaml")),
    ),
    (
        "groups/student.members",
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/runtime-config/groups/student.members")),
    ),
    (
        "groups/researcher.members",
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/runtime-config/groups/researcher.members")),
    ),
    (
        "groups/faculty.members",
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/runtime-config/groups/faculty.members")),
    ),
    (
        "groups/admin.members",
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/runtime-config/groups/admin.members")),
    ),
];

/// Binaries installed into `<prefix>/bin`.
const BINARIES: &[&str] = &["ds01-runtime", "ds01ctl"];

/// Where and how to install.
#[derive(Debug, Clone)]
pub struct Options {
    /// Binaries go to `<prefix>/bin`, the interposed `runc` to `<prefix>/sbin`.
    pub prefix: PathBuf,
    /// Settings and policy directory.
    pub config_dir: PathBuf,
    /// Docker's daemon.json.
    pub daemon_json: PathBuf,
    /// Where the install manifest is kept.
    pub state_dir: PathBuf,
    /// The runtime's name in daemon.json.
    pub name: String,
    /// Also set default-runtime.
    pub default: bool,
    /// Also install the shim as `runc` ahead of the real one.
    pub interpose: bool,
    /// Print the change, write nothing.
    pub dry_run: bool,
    /// Directory holding the built binaries to install.
    pub source_dir: PathBuf,
    /// Also put the front door in place: its binary, its socket and service units, and
    /// docker.socket moved to the root-only upstream socket.
    pub front_door: bool,
    /// The admin's systemd units (/etc/systemd/system): read, and where the front door's go.
    pub unit_dir: PathBuf,
    /// The packages' systemd units (/lib/systemd/system), read only.
    pub vendor_unit_dir: PathBuf,
}

/// One file install created, with the hash of what it wrote.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct InstalledFile {
    /// Path.
    pub path: PathBuf,
    /// MD5 of the content written (to leave files the admin has edited since).
    pub md5: String,
    /// Where the file that was there before install is kept (uninstall puts it back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<PathBuf>,
}

/// What install did, kept in `<state_dir>/install.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    /// daemon.json that was changed.
    pub daemon_json: PathBuf,
    /// Whether daemon.json existed before.
    pub daemon_json_existed: bool,
    /// The runtime's name.
    pub name: String,
    /// `runtimes.<name>` before install (None: absent).
    pub previous_runtime: Option<Value>,
    /// Whether `runtimes` existed before.
    pub had_runtimes: bool,
    /// Whether install set default-runtime, and what it was before.
    pub set_default: bool,
    /// default-runtime before install (None: absent).
    pub previous_default: Option<Value>,
    /// Files written: created, or (binaries, and units with a backup) replaced.
    pub files: Vec<InstalledFile>,
    /// The interposed `runc` link, if any.
    pub interpose_link: Option<PathBuf>,
    /// Directories install created, parents first (uninstall removes them when empty).
    #[serde(default)]
    pub dirs: Vec<PathBuf>,
    /// Whether install put the front door's units in place.
    #[serde(default)]
    pub front_door: bool,
}

/// What install or uninstall did or would do, for the admin to read.
#[derive(Debug, Default)]
pub struct Report {
    /// One line per action.
    pub lines: Vec<String>,
    /// Unified diff of daemon.json.
    pub diff: String,
    /// Whether daemon.json changed (Docker must reload).
    pub daemon_changed: bool,
    /// Commands the admin runs next to apply the change (the front door's units), in order.
    pub apply: Vec<&'static str>,
}

fn md5_hex(bytes: &[u8]) -> String {
    Md5::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn manifest_path(state_dir: &Path) -> PathBuf {
    state_dir.join("install.json")
}

/// Reads daemon.json as an order-preserving object; absent = empty. Unparseable is an error.
fn read_daemon_json(path: &Path) -> Result<(Option<String>, Map<String, Value>)> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((None, Map::new())),
        Err(e) => return Err(Error::failed(format!("cannot read {}: {e}", path.display()))),
    };
    if text.trim().is_empty() {
        return Ok((Some(text), Map::new()));
    }
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(m)) => Ok((Some(text), m)),
        Ok(_) => Err(Error::failed(format!("{} is not a JSON object; not changing it", path.display()))),
        Err(e) => Err(Error::failed(format!("{} does not parse ({e}); not changing it", path.display()))),
    }
}

fn render(map: &Map<String, Value>) -> String {
    let mut s = serde_json::to_string_pretty(&Value::Object(map.clone())).unwrap_or_default();
    s.push('\n');
    s
}

/// A unified diff of two texts, labelled with `path`.
pub fn unified_diff(old: &str, new: &str, path: &Path) -> String {
    let shown = path.display().to_string();
    similar::TextDiff::from_lines(old, new).unified_diff().header(&shown, &shown).to_string()
}

/// `<path>.ds01-backup-<seconds since the epoch>`.
fn backup_path(path: &Path) -> PathBuf {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    path.with_file_name(format!(
        "{}.ds01-backup-{stamp}",
        path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
    ))
}

/// Writes daemon.json after a timestamped backup of the current file.
fn write_daemon_json(path: &Path, old: Option<&str>, new: &str) -> Result<Option<PathBuf>> {
    let mut backup = None;
    if let Some(old) = old {
        let b = backup_path(path);
        write_atomic(&b, old.as_bytes(), 0o644, None)?;
        backup = Some(b);
    }
    let mode = fs::metadata(path).map(|m| m.permissions().mode() & 0o7777).unwrap_or(0o644);
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).context(format_args!("cannot create {}", dir.display()))?;
    }
    write_atomic(path, new.as_bytes(), mode, None)?;
    Ok(backup)
}

/// Installs, or with `dry_run` only reports what it would do.
pub fn install(o: &Options) -> Result<Report> {
    let mut report = Report::default();
    let (old_text, mut map) = read_daemon_json(&o.daemon_json)?;
    let mpath = manifest_path(&o.state_dir);
    let mut manifest: Manifest = match fs::read(&mpath) {
        Ok(b) => serde_json::from_slice(&b)
            .context(format_args!("malformed install manifest {}", mpath.display()))?,
        Err(_) => Manifest {
            daemon_json: o.daemon_json.clone(),
            daemon_json_existed: old_text.is_some(),
            name: o.name.clone(),
            previous_runtime: map.get("runtimes").and_then(|r| r.get(&o.name)).cloned(),
            had_runtimes: map.contains_key("runtimes"),
            ..Manifest::default()
        },
    };

    // The front door's units, decided (or refused) before anything is written.
    let bin_dir = o.prefix.join("bin");
    let units = if o.front_door { front_door_units(o, &bin_dir, &map)? } else { Vec::new() };

    // Files: binaries (replaced when they differ), default settings (only when absent).
    let front_door_bin = o.front_door.then_some(front_door::BINARY);
    let mut door_bin_changed = false;
    for b in BINARIES.iter().chain(front_door_bin.as_ref()) {
        let src = o.source_dir.join(b);
        let dst = bin_dir.join(b);
        let bytes = fs::read(&src).context(format_args!("cannot read built binary {}", src.display()))?;
        if fs::read(&dst).ok().as_deref() == Some(&bytes[..]) {
            continue;
        }
        door_bin_changed |= *b == front_door::BINARY;
        report.lines.push(format!("install {}", dst.display()));
        if !o.dry_run {
            make_dir(&mut manifest, &bin_dir)?;
            write_atomic(&dst, &bytes, 0o755, None)?;
            record(&mut manifest, &dst, &bytes);
        }
    }
    for (rel, text) in DEFAULT_FILES {
        let dst = o.config_dir.join(rel);
        if dst.exists() {
            continue;
        }
        report.lines.push(format!("install {} (default)", dst.display()));
        if !o.dry_run {
            if let Some(dir) = dst.parent() {
                make_dir(&mut manifest, dir)?;
            }
            write_atomic(&dst, text.as_bytes(), 0o644, None)?;
            record(&mut manifest, &dst, text.as_bytes());
        }
    }
    if o.interpose {
        let link = o.prefix.join("sbin/runc");
        let target = bin_dir.join("ds01-runtime");
        match fs::read_link(&link) {
            Ok(t) if t == target => {}
            Ok(_) | Err(_) if link.symlink_metadata().is_ok() => {
                return Err(Error::failed(format!(
                    "{} exists and is not ds01-runtime; not replacing it (move it away first)",
                    link.display()
                )));
            }
            _ => {
                report.lines.push(format!(
                    "link {} -> {} (interpose: every runtime Docker offers goes through ds01-runtime)",
                    link.display(),
                    target.display()
                ));
                if !o.dry_run {
                    make_dir(&mut manifest, &o.prefix.join("sbin"))?;
                    std::os::unix::fs::symlink(&target, &link)
                        .context(format_args!("cannot create {}", link.display()))?;
                    manifest.interpose_link = Some(link.clone());
                }
            }
        }
    }

    let mut unit_changed = false;
    for (path, text) in &units {
        unit_changed |= place(&mut manifest, &mut report, path, text.as_bytes(), o.dry_run)?;
    }
    if unit_changed {
        manifest.front_door |= !o.dry_run;
        report.apply.extend(front_door::APPLY);
    } else if door_bin_changed && manifest.front_door {
        report.apply.push(front_door::RESTART);
    }

    // daemon.json: runtimes.<name>, and default-runtime with --default.
    let entry = runtime_entry(&bin_dir.join("ds01-runtime"), &o.config_dir.join("runtime.yaml"));
    let note = entry.get("runtimeArgs").is_some().then(|| {
        format!(
            "note: the settings are not at {}, so daemon.json passes them in runtimeArgs; Docker \
             20.10 then calls the runtime through a /bin/sh script of its own (one more process per \
             call, and arguments split at spaces). Setting {}={} in dockerd's environment instead \
             avoids that.",
            crate::policy::settings::DEFAULT_PATH,
            crate::policy::settings::ENV_VAR,
            o.config_dir.join("runtime.yaml").display()
        )
    });
    let runtimes = map.entry("runtimes".to_owned()).or_insert_with(|| Value::Object(Map::new()));
    let Some(runtimes) = runtimes.as_object_mut() else {
        return Err(Error::failed(format!(
            "{}: \"runtimes\" is not an object; not changing it",
            o.daemon_json.display()
        )));
    };
    runtimes.insert(o.name.clone(), entry);
    if o.default {
        let current = map.get("default-runtime").cloned();
        if current.as_ref().and_then(Value::as_str) != Some(o.name.as_str()) && !manifest.set_default {
            manifest.set_default = true;
            manifest.previous_default = current;
        }
        map.insert("default-runtime".into(), Value::String(o.name.clone()));
    }
    let new_text = render(&map);
    let old_cmp = old_text.clone().unwrap_or_default();
    let changed = old_text.as_deref().map(|t| serde_json::from_str::<Value>(t).ok())
        != Some(Some(Value::Object(map.clone())));
    if changed {
        report.diff.insert_str(0, &unified_diff(&old_cmp, &new_text, &o.daemon_json));
        report.daemon_changed = true;
        report.lines.extend(note);
        if !o.dry_run {
            if let Some(dir) = o.daemon_json.parent() {
                make_dir(&mut manifest, dir)?;
            }
            if let Some(b) = write_daemon_json(&o.daemon_json, old_text.as_deref(), &new_text)? {
                report.lines.push(format!("backup {}", b.display()));
            }
            report.lines.push(format!("update {}", o.daemon_json.display()));
        }
    }
    if !o.dry_run {
        make_dir(&mut manifest, &o.state_dir)?;
        let bytes = serde_json::to_vec_pretty(&manifest).context("cannot serialize install manifest")?;
        write_atomic(&mpath, &bytes, 0o644, None)?;
    }
    Ok(report)
}

fn record(m: &mut Manifest, path: &Path, bytes: &[u8]) {
    let backup = m.files.iter().find(|f| f.path == path).and_then(|f| f.backup.clone());
    m.files.retain(|f| f.path != path);
    m.files.push(InstalledFile { path: path.to_path_buf(), md5: md5_hex(bytes), backup });
}

/// Creates `dir` and the parents it lacks, recording each one made.
fn make_dir(m: &mut Manifest, dir: &Path) -> Result<()> {
    let missing: Vec<PathBuf> = dir
        .ancestors()
        .take_while(|d| !d.as_os_str().is_empty() && !d.exists())
        .map(Path::to_path_buf)
        .collect();
    fs::create_dir_all(dir).context(format_args!("cannot create {}", dir.display()))?;
    for d in missing.into_iter().rev() {
        if !m.dirs.contains(&d) {
            m.dirs.push(d);
        }
    }
    Ok(())
}

/// Puts `bytes` at `path` unless it holds them already; returns whether it changed. A file
/// that is not install's own, unchanged since, is kept first as `<path>.ds01-backup-<time>`
/// (the one from before the first install is what uninstall restores).
fn place(m: &mut Manifest, r: &mut Report, path: &Path, bytes: &[u8], dry_run: bool) -> Result<bool> {
    let current = match fs::read(path) {
        Ok(b) => Some(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::failed(format!("cannot read {}: {e}", path.display()))),
    };
    if current.as_deref() == Some(bytes) {
        return Ok(false);
    }
    let old_text = current.as_deref().map(String::from_utf8_lossy).unwrap_or_default();
    r.diff.push_str(&unified_diff(&old_text, &String::from_utf8_lossy(bytes), path));
    let ours = m.files.iter().find(|f| f.path == path);
    let keep = match &current {
        Some(b) if ours.is_none_or(|f| f.md5 != md5_hex(b)) => Some(backup_path(path)),
        _ => None,
    };
    r.lines.push(match (&current, &keep) {
        (None, _) => format!("install {}", path.display()),
        (Some(_), Some(b)) => format!("replace {} (kept as {})", path.display(), b.display()),
        (Some(_), None) => format!("update {}", path.display()),
    });
    if dry_run {
        return Ok(true);
    }
    if let (Some(old), Some(b)) = (&current, &keep) {
        let mode = fs::metadata(path).map(|md| md.permissions().mode() & 0o7777).unwrap_or(0o644);
        write_atomic(b, old, mode, None)?;
    }
    if let Some(dir) = path.parent() {
        make_dir(m, dir)?;
    }
    write_atomic(path, bytes, 0o644, None)?;
    record(m, path, bytes);
    if let Some(b) = keep {
        if let Some(f) = m.files.iter_mut().find(|f| f.path == path) {
            f.backup.get_or_insert(b);
        }
    }
    Ok(true)
}

/// The front door's units for this install (refused when Docker would still listen where
/// users reach it), read against the settings install leaves in `config_dir`.
fn front_door_units(
    o: &Options,
    bin_dir: &Path,
    daemon: &Map<String, Value>,
) -> Result<Vec<(PathBuf, String)>> {
    let file = o.config_dir.join("runtime.yaml");
    let text = match fs::read_to_string(&file) {
        Ok(t) => t,
        // Not there yet: install puts the default there.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => DEFAULT_FILES
            .iter()
            .find(|(rel, _)| *rel == "runtime.yaml")
            .map(|(_, t)| t.to_string())
            .unwrap_or_default(),
        Err(e) => return Err(Error::failed(format!("cannot read settings file {}: {e}", file.display()))),
    };
    let settings = crate::policy::settings::Settings::parse(&text, &file)?;
    let dirs = front_door::UnitDirs { admin: o.unit_dir.clone(), vendor: o.vendor_unit_dir.clone() };
    front_door::plan(
        &dirs,
        &front_door::Inputs {
            settings: &settings.front_door,
            settings_file: &file,
            binary: &bin_dir.join(front_door::BINARY),
            daemon,
            daemon_json: &o.daemon_json,
        },
    )
}

/// Reverses exactly what install recorded: daemon.json entries restored, created files removed
/// (unless edited since), the interposed link removed.
pub fn uninstall(state_dir: &Path, dry_run: bool) -> Result<Report> {
    let mpath = manifest_path(state_dir);
    let bytes = fs::read(&mpath)
        .context(format_args!("no install recorded ({}); nothing to undo", mpath.display()))?;
    let m: Manifest = serde_json::from_slice(&bytes)
        .context(format_args!("malformed install manifest {}", mpath.display()))?;
    let mut report = Report::default();
    let (old_text, mut map) = read_daemon_json(&m.daemon_json)?;
    if let Some(runtimes) = map.get_mut("runtimes").and_then(Value::as_object_mut) {
        match &m.previous_runtime {
            Some(prev) => {
                runtimes.insert(m.name.clone(), prev.clone());
            }
            None => {
                runtimes.shift_remove(&m.name);
            }
        }
        if runtimes.is_empty() && !m.had_runtimes {
            map.shift_remove("runtimes");
        }
    }
    if m.set_default && map.get("default-runtime").and_then(Value::as_str) == Some(m.name.as_str()) {
        match &m.previous_default {
            Some(prev) => {
                map.insert("default-runtime".into(), prev.clone());
            }
            None => {
                map.shift_remove("default-runtime");
            }
        }
    }
    let new_text = render(&map);
    let changed = old_text.as_deref().map(|t| serde_json::from_str::<Value>(t).ok())
        != Some(Some(Value::Object(map.clone())));
    if changed {
        report.diff = unified_diff(old_text.as_deref().unwrap_or(""), &new_text, &m.daemon_json);
        report.daemon_changed = true;
        if !dry_run {
            if map.is_empty() && !m.daemon_json_existed {
                fs::remove_file(&m.daemon_json)
                    .context(format_args!("cannot remove {}", m.daemon_json.display()))?;
                report.lines.push(format!("remove {} (install created it)", m.daemon_json.display()));
            } else {
                if let Some(b) = write_daemon_json(&m.daemon_json, old_text.as_deref(), &new_text)? {
                    report.lines.push(format!("backup {}", b.display()));
                }
                report.lines.push(format!("restore {}", m.daemon_json.display()));
            }
        }
    }
    if let Some(link) = &m.interpose_link {
        report.lines.push(format!("remove {}", link.display()));
        if !dry_run {
            let _ = fs::remove_file(link);
        }
    }
    let mut removed = Vec::new();
    for f in &m.files {
        // A file gone since is as good as unchanged: its backup goes back.
        let unchanged = fs::read(&f.path).map_or(true, |b| md5_hex(&b) == f.md5);
        match (&f.backup, unchanged) {
            (Some(b), true) => {
                report.lines.push(format!("restore {} (from {})", f.path.display(), b.display()));
                if !dry_run {
                    fs::rename(b, &f.path).context(format_args!("cannot restore {}", f.path.display()))?;
                }
            }
            (None, true) if f.path.symlink_metadata().is_ok() => {
                report.lines.push(format!("remove {}", f.path.display()));
                if !dry_run {
                    fs::remove_file(&f.path).context(format_args!("cannot remove {}", f.path.display()))?;
                }
                removed.push(&f.path);
            }
            (None, true) => {}
            (Some(b), false) => report.lines.push(format!(
                "keep {} (edited since install; what was there before is in {})",
                f.path.display(),
                b.display()
            )),
            (None, false) => report.lines.push(format!("keep {} (edited since install)", f.path.display())),
        }
    }
    if m.front_door {
        // `systemctl enable` linked the socket unit; with the unit gone the link would dangle.
        if let Some(unit) = removed.iter().find(|p| p.ends_with(front_door::SOCKET_UNIT)) {
            let wants = unit.with_file_name("sockets.target.wants").join(front_door::SOCKET_UNIT);
            if fs::read_link(&wants).is_ok_and(|t| t == **unit) {
                report.lines.push(format!("remove {} (systemctl enable made it)", wants.display()));
                if !dry_run {
                    fs::remove_file(&wants).context(format_args!("cannot remove {}", wants.display()))?;
                }
            }
        }
        report.apply.extend(front_door::UNAPPLY);
    }
    if !dry_run {
        fs::remove_file(&mpath).context(format_args!("cannot remove {}", mpath.display()))?;
    }
    for d in m.dirs.iter().rev() {
        if dry_run {
            report.lines.push(format!("remove {} (install created it), if empty by then", d.display()));
        } else if fs::remove_dir(d).is_ok() {
            report.lines.push(format!("remove {} (install created it)", d.display()));
        }
    }
    Ok(report)
}

/// The one command that makes Docker pick up daemon.json.
pub fn reload_hint() -> &'static str {
    if Path::new("/run/systemd/system").exists() {
        "systemctl reload docker"
    } else {
        "kill -HUP $(cat /var/run/docker.pid)"
    }
}

/// The daemon.json entry for the shim. Settings at the default path need no argument; any
/// other path goes in `runtimeArgs`, for which Docker 20.10 writes and runs a `/bin/sh` wrapper
/// (`<data-root>/runtimes/<name>`) on every call, so it is left out whenever it can be.
pub fn runtime_entry(shim: &Path, settings: &Path) -> Value {
    if settings == Path::new(crate::policy::settings::DEFAULT_PATH) {
        serde_json::json!({ "path": shim })
    } else {
        serde_json::json!({
            "path": shim,
            "runtimeArgs": [format!("--ds01-config={}", settings.display())],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_settings_path_needs_no_runtime_args() {
        let shim = Path::new("/usr/local/bin/ds01-runtime");
        let e = runtime_entry(shim, Path::new(crate::policy::settings::DEFAULT_PATH));
        assert_eq!(e, serde_json::json!({"path": "/usr/local/bin/ds01-runtime"}));
        let e = runtime_entry(shim, Path::new("/opt/ds01/runtime.yaml"));
        assert_eq!(e["runtimeArgs"][0], "--ds01-config=/opt/ds01/runtime.yaml");
    }
}
