//! `ds01ctl doctor` against a private dockerd: its check fails while a user other than root can
//! connect to dockerd's own socket (past the front door), and passes once only root can.

mod common;

use common::dockerd::{require_docker, Dockerd, Opts};
use common::*;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

/// doctor's line for the socket check and the fix line under it.
fn socket_lines(d: &Dockerd) -> (String, String) {
    let o = Command::new(ds01ctl())
        .arg("--config")
        .arg(&d.settings)
        .args(["doctor", "--daemon-json"])
        .arg(d.tmp.path().join("daemon.json"))
        .output()
        .unwrap();
    let out = stdout(&o);
    let mut lines = out.lines().skip_while(|l| !l[6.min(l.len())..].starts_with("dockerd socket "));
    let line = lines.next().unwrap_or_else(|| panic!("no dockerd socket check: {out}{}", stderr(&o)));
    let next = lines.next().unwrap_or_default();
    (line.to_owned(), next.to_owned())
}

/// A group of /etc/group, not root's, that lists a member other than root.
fn group_with_a_member() -> Option<(String, u32)> {
    let text = std::fs::read_to_string("/etc/group").ok()?;
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        let gid: u32 = f.get(2)?.parse().ok()?;
        let members = f.get(3)?.split(',').any(|m| !m.is_empty() && m != "root");
        (gid != 0 && members).then(|| (f[0].to_owned(), gid))
    })
}

#[test]
fn doctor_fails_while_users_can_reach_dockerds_own_socket() {
    if !require_docker() {
        return;
    }
    let d = Dockerd::start("doc", Opts::default());
    let sock = d.sock.display().to_string();

    std::os::unix::fs::chown(&d.sock, Some(0), Some(0)).unwrap();
    std::fs::set_permissions(&d.sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    let (line, fix) = socket_lines(&d);
    assert!(line.starts_with("FAIL  dockerd socket "), "{line}");
    assert!(
        line.contains(&format!(
            "dockerd's socket {sock} can be reached by every user: users bypass the front door"
        )),
        "{line}"
    );
    assert!(
        fix.trim_start().ends_with("fix: ds01ctl install --front-door, or make the socket root-only"),
        "{fix}"
    );

    // Group-owned, by a group someone other than root is in (when this machine has one).
    if let Some((name, gid)) = group_with_a_member() {
        std::os::unix::fs::chown(&d.sock, Some(0), Some(gid)).unwrap();
        std::fs::set_permissions(&d.sock, std::fs::Permissions::from_mode(0o660)).unwrap();
        let (line, _) = socket_lines(&d);
        assert!(
            line.starts_with("FAIL  dockerd socket ")
                && line.contains(&format!("dockerd's socket {sock} can be reached by group {name} (")),
            "{line}"
        );
    }

    std::os::unix::fs::chown(&d.sock, Some(0), Some(0)).unwrap();
    std::fs::set_permissions(&d.sock, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (line, _) = socket_lines(&d);
    assert!(!line.contains(&format!("socket {sock} can be reached")), "{line}");
    // Another dockerd on this machine whose socket users reach would still fail the check;
    // otherwise it passes, naming ours among the sockets only root reaches.
    if !line.starts_with("FAIL") {
        assert!(line.starts_with("ok    dockerd socket ") && line.contains(&sock), "{line}");
    }
}
