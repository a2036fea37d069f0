//! `runc exec`: the process may have no more than its container. With `--process FILE` runc
//! runs that process as written; without, it takes the bundle's config.json process and
//! applies `--cap`, `--apparmor`, `--process-label` and `--no-new-privs` to it. Either way the
//! process as runc will run it is judged: capabilities beyond the container's own, another
//! AppArmor profile or SELinux label, no-new-privileges dropped.

use serde::Deserialize;

use super::{recorded, Caps, Container};
use crate::argv::Invocation;
use crate::audit::Kind;
use crate::create::modifiers::cap_name;
use crate::error::{Error, Refusal, Result, ADMIN_ONLY};
use crate::policy::settings::Settings;
use crate::policy::Policy;

/// The parts of an OCI process that decide what it may do.
#[derive(Debug, Default, Deserialize)]
pub struct Process {
    /// Command line.
    #[serde(default)]
    pub args: Option<Vec<String>>,
    /// Capability sets.
    #[serde(default)]
    pub capabilities: Option<Caps>,
    /// AppArmor profile (empty: the container's).
    #[serde(default, rename = "apparmorProfile")]
    pub apparmor_profile: Option<String>,
    /// SELinux label (empty: the container's).
    #[serde(default, rename = "selinuxLabel")]
    pub selinux_label: Option<String>,
    /// no_new_privileges.
    #[serde(default, rename = "noNewPrivileges")]
    pub no_new_privileges: Option<bool>,
}

/// What the container itself runs with, for comparison.
#[derive(Debug, Default)]
pub struct Own {
    /// Its capabilities (any set).
    pub caps: Vec<String>,
    /// Its AppArmor profile.
    pub apparmor: String,
    /// Its SELinux label.
    pub label: String,
    /// Its no_new_privileges.
    pub no_new_privileges: bool,
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &std::path::Path, what: &str) -> Result<T> {
    let bytes = std::fs::read(path).map_err(|e| Error::failed(format!("{what} {}: {e}", path.display())))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::failed(format!("{what} {} cannot be read: {e}", path.display())))
}

/// The bundle's config.json process (what the container runs as, and the base of an exec
/// without `--process`).
fn bundle_process(c: &Container) -> Result<Process> {
    #[derive(Deserialize)]
    struct Spec {
        #[serde(default)]
        process: Option<Process>,
    }
    let Some(b) = &c.bundle else { return Ok(Process::default()) };
    let spec: Spec = read_json(&b.join("config.json"), "container's bundle config")?;
    Ok(spec.process.unwrap_or_default())
}

/// The process runc will run for this exec.
pub fn process(inv: &Invocation, base: Process) -> Result<Process> {
    if let Some(p) = inv.flag(&["process", "p"]) {
        return read_json(std::path::Path::new(p), "exec process");
    }
    let mut p = base;
    p.args = Some(inv.rest.iter().map(|a| a.to_string_lossy().into_owned()).collect());
    let added: Vec<String> = inv.flag_all(&["cap", "c"]).map(|c| c.to_string_lossy().into_owned()).collect();
    if !added.is_empty() {
        let caps = p.capabilities.get_or_insert_with(Caps::default);
        for set in [&mut caps.bounding, &mut caps.effective, &mut caps.permitted, &mut caps.ambient] {
            set.get_or_insert_with(Vec::new).extend(added.iter().cloned());
        }
    }
    if let Some(a) = inv.flag(&["apparmor"]).filter(|a| !a.is_empty()) {
        p.apparmor_profile = Some(a.to_string_lossy().into_owned());
    }
    if let Some(l) = inv.flag(&["process-label"]).filter(|l| !l.is_empty()) {
        p.selinux_label = Some(l.to_string_lossy().into_owned());
    }
    if let Some(n) = inv.flag_set(&["no-new-privs"]) {
        p.no_new_privileges = Some(n);
    }
    Ok(p)
}

/// Refuses a process that asks for more than its container has.
pub fn judge(p: &Process, own: &Own) -> Result<()> {
    if let Some(c) = p
        .capabilities
        .as_ref()
        .and_then(|caps| caps.all().map(|c| cap_name(c)).find(|c| !own.caps.contains(c)))
    {
        return Err(refused(
            format!("capability {}", c.trim_start_matches("CAP_")),
            "the container does not have it (docker exec --privileged)".into(),
        ));
    }
    if let Some(a) = p.apparmor_profile.as_deref().filter(|a| !a.is_empty() && *a != own.apparmor) {
        let theirs = if own.apparmor.is_empty() { "none" } else { &own.apparmor };
        return Err(refused(format!("AppArmor profile {a}"), format!("the container runs under {theirs}")));
    }
    if let Some(l) = p.selinux_label.as_deref().filter(|l| !l.is_empty() && *l != own.label) {
        return Err(refused(format!("SELinux label {l}"), "not the container's".into()));
    }
    // runc takes no_new_privileges from the process as given: absent is false.
    if own.no_new_privileges && !p.no_new_privileges.unwrap_or(false) {
        return Err(refused("dropping no-new-privileges".into(), "the container runs with it".into()));
    }
    Ok(())
}

fn refused(what: String, why: String) -> Error {
    Refusal::Exec { what, why: format!("{why}; {ADMIN_ONLY}") }.into()
}

/// Judges and records an exec.
pub fn gate(inv: &Invocation, settings: &Settings) -> Result<()> {
    let c = Container::load(inv)?;
    let base = bundle_process(&c)?;
    let own = Own {
        caps: c.caps.all().map(|x| cap_name(x)).collect(),
        apparmor: base.apparmor_profile.clone().unwrap_or_default(),
        label: c.process_label.clone(),
        no_new_privileges: c.no_new_privileges,
    };
    let p = process(inv, base)?;
    let mut ev = c.event(Kind::Exec, "allowed");
    ev.command = p.args.clone().unwrap_or_default();
    // The policy (admin rights) is read only for a process that would be refused.
    let verdict = match judge(&p, &own) {
        Err(e) => {
            let policy = Policy::load_cached(&settings.policy, &settings.state_dir.join("cache"))?;
            if c.trusted_admin(settings, &policy) {
                Ok(())
            } else {
                Err(e)
            }
        }
        ok => ok,
    };
    recorded(settings, ev, verdict)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    fn scan(line: &str) -> Invocation {
        let a: Vec<OsString> = line.split_whitespace().map(OsString::from).collect();
        crate::argv::scan(&a)
    }

    fn own() -> Own {
        Own {
            caps: crate::create::modifiers::DEFAULT_CAPS.iter().map(|c| c.to_string()).collect(),
            apparmor: "docker-default".into(),
            label: String::new(),
            no_new_privileges: true,
        }
    }

    fn base() -> Process {
        serde_json::from_str(r#"{"args":["sh"],"capabilities":{"bounding":["CAP_CHOWN"]},"apparmorProfile":"docker-default","noNewPrivileges":true}"#).unwrap()
    }

    #[test]
    fn an_exec_gets_no_more_than_its_container() {
        let p = process(&scan("exec --tty id1 sh -c ls"), base()).unwrap();
        assert_eq!(p.args.as_deref(), Some(&["sh".to_owned(), "-c".into(), "ls".into()][..]));
        assert!(judge(&p, &own()).is_ok());
        for (line, want) in [
            ("exec --cap CAP_SYS_ADMIN id1 sh", "exec: capability SYS_ADMIN is refused"),
            ("exec -c sys_module id1 sh", "exec: capability SYS_MODULE is refused"),
            ("exec --apparmor unconfined id1 sh", "exec: AppArmor profile unconfined is refused"),
            ("exec --process-label system_u:system_r:spc_t:s0 id1 sh", "exec: SELinux label"),
            ("exec --no-new-privs=false id1 sh", "exec: dropping no-new-privileges is refused"),
        ] {
            let p = process(&scan(line), base()).unwrap();
            let e = judge(&p, &own()).unwrap_err();
            assert!(e.to_string().starts_with(want), "{line}: {e}");
            assert_eq!(e.kind, crate::error::Kind::Refused);
        }
    }

    #[test]
    fn a_process_file_is_judged_as_written() {
        let dir = std::env::temp_dir().join(format!("ds01-exec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("p.json");
        let all = r#"{"args":["sh"],"capabilities":{"bounding":["CAP_SYS_ADMIN","CAP_CHOWN"],"effective":["CAP_SYS_ADMIN"]},"noNewPrivileges":true}"#;
        std::fs::write(&f, all).unwrap();
        let p = process(&scan(&format!("exec --process {} --detach id1", f.display())), base()).unwrap();
        assert!(judge(&p, &own()).unwrap_err().to_string().contains("SYS_ADMIN"), "docker exec --privileged");
        std::fs::write(
            &f,
            r#"{"args":["sh"],"capabilities":{"bounding":["CAP_CHOWN"]},"noNewPrivileges":true}"#,
        )
        .unwrap();
        let p = process(&scan(&format!("exec -p {} id1", f.display())), base()).unwrap();
        assert!(judge(&p, &own()).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
