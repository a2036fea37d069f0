//! Who besides root can connect to a unix socket, and which unix sockets a program listens on,
//! read from /proc: `ds01ctl doctor`'s check that no user reaches dockerd past the front door.
//!
//! connect() needs write permission on the socket file and search (x) permission on every
//! directory above it. The answer is by class, as the kernel checks them: the socket's owner
//! (when not root), its group (when anyone but root is in it) and everyone else, each counted
//! only when every directory above the socket is searchable by that same class. ACLs and
//! capabilities are not read.

use std::collections::BTreeSet;
use std::fmt;
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::{Context, Result};
use crate::host::users::UserDb;

/// Someone other than root who can connect to a socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reacher {
    /// The socket's owner, a user other than root.
    Owner(String),
    /// The socket's group, with its members other than root (listed, or by primary group).
    Group {
        /// The group's name (its gid when it has no entry).
        name: String,
        /// Its members, sorted.
        members: Vec<String>,
    },
    /// Every user: the socket is writable by others.
    Everyone,
}

impl fmt::Display for Reacher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reacher::Owner(u) => write!(f, "user {u}"),
            Reacher::Group { name, members } => {
                const SHOWN: usize = 6;
                let mut list = members.iter().take(SHOWN).cloned().collect::<Vec<_>>().join(", ");
                if members.len() > SHOWN {
                    list.push_str(&format!(" and {} more", members.len() - SHOWN));
                }
                write!(f, "group {name} ({list})")
            }
            Reacher::Everyone => f.write_str("every user"),
        }
    }
}

/// Who other than root can connect to the socket at `path` (empty: root only).
pub fn reachers(path: &Path, db: &UserDb) -> Result<Vec<Reacher>> {
    let sock = std::fs::metadata(path).context(format_args!("cannot stat {}", path.display()))?;
    // The directories a caller passes through: those of the real path (any other path to the
    // socket passes through these too, and a caller may use this one).
    let parent = path.parent().unwrap_or(Path::new("/"));
    let real = std::fs::canonicalize(parent).context(format_args!("cannot resolve {}", parent.display()))?;
    let dirs = real
        .ancestors()
        .map(|d| std::fs::metadata(d).context(format_args!("cannot stat {}", d.display())))
        .collect::<Result<Vec<Metadata>>>()?;
    let mode = sock.mode();
    let mut out = Vec::new();
    if sock.uid() != 0 && mode & 0o200 != 0 {
        let account = db.account(&sock.uid().to_string())?;
        let primary_gid = account.as_ref().map(|a| a.gid);
        if dirs.iter().all(|d| searchable_by_user(d, sock.uid(), primary_gid)) {
            out.push(Reacher::Owner(account.map_or_else(|| sock.uid().to_string(), |a| a.name)));
        }
    }
    if mode & 0o020 != 0 && dirs.iter().all(|d| searchable_by_group(d, sock.gid())) {
        let (name, members) = group_members(db, sock.gid())?;
        if !members.is_empty() {
            out.push(Reacher::Group { name, members });
        }
    }
    if mode & 0o002 != 0 && dirs.iter().all(|d| d.mode() & 0o001 != 0) {
        out.push(Reacher::Everyone);
    }
    Ok(out)
}

/// Search permission for user `uid` (primary group `gid`) by the class the kernel picks.
fn searchable_by_user(dir: &Metadata, uid: u32, gid: Option<u32>) -> bool {
    let bit = if dir.uid() == uid {
        0o100
    } else if Some(dir.gid()) == gid {
        0o010
    } else {
        0o001
    };
    dir.mode() & bit != 0
}

/// Search permission for the members of group `gid` (who do not own the directory).
fn searchable_by_group(dir: &Metadata, gid: u32) -> bool {
    dir.mode() & if dir.gid() == gid { 0o010 } else { 0o001 } != 0
}

/// The group's name and its members other than root: listed in its entry, or having it as
/// their primary group.
fn group_members(db: &UserDb, gid: u32) -> Result<(String, Vec<String>)> {
    let group = db.group(&gid.to_string())?;
    let mut members: BTreeSet<String> = BTreeSet::new();
    members.extend(db.primary_members(gid).into_iter().filter(|a| a.uid != 0).map(|a| a.name));
    let name = match group {
        Some(g) => {
            members.extend(g.members.into_iter().filter(|m| m != "root"));
            g.name
        }
        None => gid.to_string(),
    };
    Ok((name, members.into_iter().collect()))
}

/// The unix sockets the processes of one program listen on.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Listening {
    /// How many processes run it.
    pub processes: usize,
    /// The paths their listening sockets are bound to (abstract and unnamed ones left out).
    pub paths: Vec<PathBuf>,
    /// Processes whose open files could not be read, with why.
    pub unreadable: Vec<String>,
}

/// The sockets processes whose `comm` is `comm` listen on, from `proc_root` (normally /proc):
/// their fds that are `socket:[INODE]`, matched with the rows of the process's own
/// `net/unix` (its network namespace) in the listening state.
pub fn listening(proc_root: &Path, comm: &str) -> Result<Listening> {
    let mut out = Listening::default();
    let entries =
        std::fs::read_dir(proc_root).context(format_args!("cannot read {}", proc_root.display()))?;
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let dir = e.path();
        match std::fs::read_to_string(dir.join("comm")) {
            Ok(c) if c.trim_end_matches('\n') == comm => {}
            _ => continue,
        }
        out.processes += 1;
        let inodes = match socket_inodes(&dir.join("fd")) {
            Ok(i) => i,
            Err(e) => {
                out.unreadable.push(format!("{pid}: {e}"));
                continue;
            }
        };
        let table = std::fs::read_to_string(dir.join("net/unix"))
            .or_else(|_| std::fs::read_to_string(proc_root.join("net/unix")))
            .context(format_args!("cannot read {}/net/unix", dir.display()))?;
        out.paths.extend(listening_paths(&table, &inodes));
    }
    out.paths.sort();
    out.paths.dedup();
    Ok(out)
}

/// The inodes of the sockets among the fds in `fd_dir`.
fn socket_inodes(fd_dir: &Path) -> std::io::Result<BTreeSet<u64>> {
    let mut set = BTreeSet::new();
    for fd in std::fs::read_dir(fd_dir)?.flatten() {
        let Ok(target) = std::fs::read_link(fd.path()) else { continue };
        let t = target.to_string_lossy();
        if let Some(n) = t.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) {
            if let Ok(n) = n.parse() {
                set.insert(n);
            }
        }
    }
    Ok(set)
}

/// Paths of the rows of /proc/net/unix that listen (flags `00010000`, state `01`) and whose
/// inode is in `inodes`.
fn listening_paths(table: &str, inodes: &BTreeSet<u64>) -> Vec<PathBuf> {
    // Num RefCount Protocol Flags Type St Inode Path; the path may hold spaces.
    table
        .lines()
        .skip(1)
        .filter_map(|row| {
            let mut f = row.split_whitespace();
            let flags = f.nth(3)?;
            let state = f.nth(1)?;
            let inode: u64 = f.next()?.parse().ok()?;
            let path = row_path(row)?;
            (flags == "00010000" && state == "01" && inodes.contains(&inode) && path.starts_with('/'))
                .then(|| PathBuf::from(path))
        })
        .collect()
}

/// The path column of a /proc/net/unix row: everything after the seventh field.
fn row_path(row: &str) -> Option<&str> {
    let mut rest = row.trim_start();
    for _ in 0..7 {
        let end = rest.find(char::is_whitespace)?;
        rest = rest[end..].trim_start();
    }
    (!rest.is_empty()).then_some(rest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ds01-reach-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        d
    }

    fn chmod(p: &Path, mode: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// A passwd and group naming `gid` `lab` (alice, bob listed; carol by primary group) and uid
    /// 4321 `dora`.
    fn db(dir: &Path, gid: u32) -> UserDb {
        std::fs::write(
            dir.join("passwd"),
            format!("root:x:0:0::/root:/bin/sh\ndora:x:4321:4321::/home/dora:/bin/sh\ncarol:x:1003:{gid}::/home/carol:/bin/sh\n"),
        )
        .unwrap();
        std::fs::write(dir.join("group"), format!("root:x:0:root\nlab:x:{gid}:bob,alice,root\n")).unwrap();
        UserDb { passwd: dir.join("passwd"), group: dir.join("group"), getent: None }
    }

    #[test]
    fn who_reaches_a_socket_by_its_mode_and_its_folders() {
        let d = tmp("mode");
        let root = nix::unistd::geteuid().is_root();
        // The group of the files: one of ours, or any gid root chooses.
        let gid = if root { 4242 } else { nix::unistd::getegid().as_raw() };
        let users = db(&d, gid);
        let sub = d.join("s");
        std::fs::create_dir(&sub).unwrap();
        chmod(&sub, 0o755);
        let path = sub.join("api.sock");
        let _l = std::os::unix::net::UnixListener::bind(&path).unwrap();
        if root {
            std::os::unix::fs::chown(&sub, None, Some(gid)).unwrap();
            std::os::unix::fs::chown(&path, None, Some(gid)).unwrap();
        }
        let lab = Reacher::Group {
            name: "lab".into(),
            members: vec!["alice".into(), "bob".into(), "carol".into()],
        };

        chmod(&path, 0o600);
        if root {
            assert_eq!(reachers(&path, &users).unwrap(), [], "root's own socket, 0600");
        }
        chmod(&path, 0o660);
        assert!(reachers(&path, &users).unwrap().contains(&lab), "group members listed or by primary gid");
        assert_eq!(lab.to_string(), "group lab (alice, bob, carol)");
        chmod(&path, 0o666);
        let all = reachers(&path, &users).unwrap();
        assert!(all.contains(&lab) && all.contains(&Reacher::Everyone), "{all:?}");
        // A folder above that others cannot search: only the group still gets through.
        chmod(&sub, 0o750);
        let r = reachers(&path, &users).unwrap();
        assert!(r.contains(&lab) && !r.contains(&Reacher::Everyone), "{r:?}");
        // Nor the group.
        chmod(&sub, 0o700);
        let r = reachers(&path, &users).unwrap();
        assert!(!r.contains(&lab) && !r.contains(&Reacher::Everyone), "{r:?}");
        chmod(&sub, 0o711);
        assert!(reachers(&path, &users).unwrap().contains(&Reacher::Everyone), "search is enough");

        // A group nobody but root is in does not count.
        std::fs::write(d.join("group"), format!("lab:x:{gid}:root\n")).unwrap();
        std::fs::write(d.join("passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
        chmod(&path, 0o660);
        if root {
            assert_eq!(reachers(&path, &users).unwrap(), []);
        }
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_socket_owned_by_a_user_other_than_root_is_theirs_to_reach() {
        let d = tmp("owner");
        let users = db(&d, 4321);
        let path = d.join("api.sock");
        let _l = std::os::unix::net::UnixListener::bind(&path).unwrap();
        chmod(&path, 0o600);
        let root = nix::unistd::geteuid().is_root();
        if root {
            std::os::unix::fs::chown(&path, Some(4321), Some(0)).unwrap();
            assert_eq!(reachers(&path, &users).unwrap(), [Reacher::Owner("dora".into())]);
            chmod(&path, 0o400);
            assert_eq!(reachers(&path, &users).unwrap(), [], "no write permission, no connect");
        } else {
            let me = nix::unistd::geteuid().to_string();
            assert_eq!(reachers(&path, &users).unwrap(), [Reacher::Owner(me)], "named by uid");
        }
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn listening_sockets_of_a_program_come_from_its_fds_and_net_unix() {
        let d = tmp("proc");
        let proc_root = d.join("proc");
        let mk = |pid: &str, comm: &str, fds: &[&str], table: Option<&str>| {
            let p = proc_root.join(pid);
            std::fs::create_dir_all(p.join("fd")).unwrap();
            std::fs::create_dir_all(p.join("net")).unwrap();
            std::fs::write(p.join("comm"), format!("{comm}\n")).unwrap();
            for (i, t) in fds.iter().enumerate() {
                std::os::unix::fs::symlink(t, p.join("fd").join(i.to_string())).unwrap();
            }
            if let Some(t) = table {
                std::fs::write(p.join("net/unix"), t).unwrap();
            }
        };
        let header = "Num       RefCount Protocol Flags    Type St Inode Path\n";
        let table = format!(
            "{header}\
             0000000000000000: 00000002 00000000 00010000 0001 01 4242 /run/docker.sock\n\
             0000000000000000: 00000002 00000000 00010000 0001 01 4243 /run/with space.sock\n\
             0000000000000000: 00000003 00000000 00000000 0001 03 4244 /run/docker.sock\n\
             0000000000000000: 00000002 00000000 00010000 0001 01 4245 @abstract\n\
             0000000000000000: 00000002 00000000 00010000 0001 01 4246\n\
             0000000000000000: 00000002 00000000 00010000 0001 01 5555 /run/other.sock\n"
        );
        mk(
            "100",
            "dockerd",
            &[
                "socket:[4242]",
                "socket:[4243]",
                "socket:[4244]",
                "socket:[4245]",
                "socket:[4246]",
                "/dev/null",
                "pipe:[9]",
            ],
            Some(&table),
        );
        mk("200", "containerd", &["socket:[5555]"], Some(&table));
        std::fs::create_dir_all(proc_root.join("self")).unwrap(); // not a pid: skipped
        let l = listening(&proc_root, "dockerd").unwrap();
        assert_eq!(l.processes, 1);
        assert_eq!(l.paths, [PathBuf::from("/run/docker.sock"), PathBuf::from("/run/with space.sock")]);
        assert!(l.unreadable.is_empty());
        // Without a per-process table, the one at the root.
        mk("300", "dockerd", &["socket:[5555]"], None);
        std::fs::create_dir_all(proc_root.join("net")).unwrap();
        std::fs::write(proc_root.join("net/unix"), &table).unwrap();
        let l = listening(&proc_root, "dockerd").unwrap();
        assert_eq!(l.processes, 2);
        assert!(l.paths.contains(&PathBuf::from("/run/other.sock")), "{l:?}");
        assert_eq!(listening(&proc_root, "podman").unwrap(), Listening::default());
        let _ = std::fs::remove_dir_all(&d);
    }
}
