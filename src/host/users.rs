//! The user database edge: /etc/passwd and /etc/group first, then the system's database through
//! `getent` (NSS: LDAP, SSSD) for names the files do not hold.
//!
//! The shim is linked statically, and a static glibc program cannot safely load NSS modules, so
//! it never calls getpwuid and friends: the files are read here and anything else is asked of
//! `getent`, a program of the host's own glibc.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Error, Refusal, Result};

/// One user: login name, uid and primary gid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Login name.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
}

/// One group: name, gid and its listed members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// Group name.
    pub name: String,
    /// Group id.
    pub gid: u32,
    /// Members listed in the group entry (users whose primary group it is are not listed).
    pub members: Vec<String>,
}

/// Where users and groups are looked up.
#[derive(Debug, Clone)]
pub struct UserDb {
    /// The passwd file (normally /etc/passwd).
    pub passwd: PathBuf,
    /// The group file (normally /etc/group).
    pub group: PathBuf,
    /// The `getent` program asked for what the files lack; None asks nothing more.
    pub getent: Option<PathBuf>,
}

impl UserDb {
    /// The host's database: /etc/passwd, /etc/group, then `getent` from PATH.
    pub fn system() -> UserDb {
        UserDb { passwd: "/etc/passwd".into(), group: "/etc/group".into(), getent: Some("getent".into()) }
    }

    /// The user with this login name or numeric uid.
    pub fn account(&self, key: &str) -> Result<Option<Account>> {
        let numeric = is_numeric(key);
        let field = if numeric { 2 } else { 0 };
        if let Some(line) = find_line(&self.passwd, field, key) {
            return Ok(parse_account(&line));
        }
        Ok(self.getent("passwd", key)?.as_deref().and_then(parse_account))
    }

    /// The group with this name or numeric gid.
    pub fn group(&self, key: &str) -> Result<Option<Group>> {
        let field = if is_numeric(key) { 2 } else { 0 };
        if let Some(line) = find_line(&self.group, field, key) {
            return Ok(parse_group(&line));
        }
        Ok(self.getent("group", key)?.as_deref().and_then(parse_group))
    }

    /// True when `user` is listed in `group` or has it as primary group.
    pub fn is_member(&self, user: &str, group: &str) -> Result<bool> {
        let Some(g) = self.group(group)? else { return Ok(false) };
        if g.members.iter().any(|m| m == user) {
            return Ok(true);
        }
        Ok(self.account(user)?.is_some_and(|a| a.gid == g.gid))
    }

    /// The users whose primary group is `gid`, from the passwd file only (enumerating NSS could
    /// mean a whole directory service; its users are rarely in a local group by gid).
    pub fn primary_members(&self, gid: u32) -> Vec<Account> {
        let text = std::fs::read_to_string(&self.passwd).unwrap_or_default();
        text.lines().filter_map(parse_account).filter(|a| a.gid == gid).collect()
    }

    /// `getent <db> <key>`: Some(line), None when the key is unknown (exit status 2).
    fn getent(&self, db: &str, key: &str) -> Result<Option<String>> {
        let Some(program) = &self.getent else { return Ok(None) };
        let out = Command::new(program)
            .args([db, key])
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .output()
            .map_err(|e| Error::failed(format!("cannot run {} {db} {key}: {e}", program.display())))?;
        match out.status.code() {
            Some(0) => Ok(String::from_utf8_lossy(&out.stdout).lines().next().map(str::to_owned)),
            Some(2) => Ok(None),
            _ => Err(Error::failed(format!("{} {db} {key} failed: {}", program.display(), out.status))),
        }
    }
}

fn is_numeric(key: &str) -> bool {
    !key.is_empty() && key.bytes().all(|b| b.is_ascii_digit())
}

/// The first line of a colon-separated file whose field `field` is `key`.
fn find_line(file: &Path, field: usize, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find(|l| l.split(':').nth(field) == Some(key)).map(str::to_owned)
}

fn parse_account(line: &str) -> Option<Account> {
    let f: Vec<&str> = line.split(':').collect();
    Some(Account {
        name: (*f.first()?).to_owned(),
        uid: f.get(2)?.parse().ok()?,
        gid: f.get(3)?.parse().ok()?,
    })
}

fn parse_group(line: &str) -> Option<Group> {
    let f: Vec<&str> = line.split(':').collect();
    Some(Group {
        name: (*f.first()?).to_owned(),
        gid: f.get(2)?.parse().ok()?,
        members: f
            .get(3)
            .map(|m| m.split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect())
            .unwrap_or_default(),
    })
}

/// A login name as is; a numeric uid through the user database.
pub fn to_login(named: &str) -> Result<String> {
    login_in(&UserDb::system(), named)
}

/// [`to_login`] against a given database.
pub fn login_in(db: &UserDb, named: &str) -> Result<String> {
    if !is_numeric(named) {
        return Ok(named.to_owned());
    }
    let uid: u32 =
        named.parse().map_err(|_| Refusal::UnknownOwner { why: format!("uid {named} is out of range") })?;
    match db.account(&uid.to_string()) {
        Ok(Some(a)) => Ok(a.name),
        Ok(None) => Err(Refusal::UnknownOwner { why: format!("uid {uid} is not a known user") }.into()),
        Err(e) => Err(e.context(format_args!("cannot look up uid {uid}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(dir: &Path, getent: Option<PathBuf>) -> UserDb {
        std::fs::write(dir.join("passwd"), "root:x:0:0:root:/root:/bin/bash\nalice:x:1001:1001::/home/alice:/bin/sh\nbob:x:1002:500::/home/bob:/bin/sh\n").unwrap();
        std::fs::write(
            dir.join("group"),
            "root:x:0:\nalice:x:1001:\nresearch:x:500:\nds01-admin:x:900:alice,carol\n",
        )
        .unwrap();
        UserDb { passwd: dir.join("passwd"), group: dir.join("group"), getent }
    }

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ds01-users-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn files_answer_names_uids_and_membership() {
        let d = tmp("files");
        let db = fixture(&d, None);
        assert_eq!(login_in(&db, "alice").unwrap(), "alice");
        assert_eq!(login_in(&db, "1002").unwrap(), "bob");
        assert!(login_in(&db, "4242").unwrap_err().to_string().contains("not a known user"));
        assert!(login_in(&db, "99999999999").unwrap_err().to_string().contains("out of range"));
        assert!(db.is_member("alice", "ds01-admin").unwrap(), "listed member");
        assert!(db.is_member("bob", "research").unwrap(), "primary group");
        assert!(!db.is_member("bob", "ds01-admin").unwrap());
        assert!(!db.is_member("alice", "no-such-group").unwrap());
        assert_eq!(db.group("900").unwrap().unwrap().name, "ds01-admin");
        let primary: Vec<String> = db.primary_members(500).into_iter().map(|a| a.name).collect();
        assert_eq!(primary, ["bob"]);
        assert!(db.primary_members(4242).is_empty());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn what_the_files_lack_is_asked_of_getent() {
        // A stand-in getent answering for an LDAP-only user and group, with getent's exit codes.
        let d = tmp("getent");
        let script = d.join("getent");
        std::fs::write(
            &script,
            "#!/bin/sh\ncase \"$1 $2\" in\n\"passwd 7001\"|\"passwd dora\") echo 'dora:*:7001:7000:Dora:/home/dora:/bin/sh' ;;\n\"group gpu-admins\") echo 'gpu-admins:*:7000:' ;;\n\"passwd broken\") exit 1 ;;\n*) exit 2 ;;\nesac\n",
        )
        .unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let db = fixture(&d, Some(script));
        assert_eq!(login_in(&db, "7001").unwrap(), "dora");
        assert_eq!(login_in(&db, "1001").unwrap(), "alice", "the files first");
        assert!(db.is_member("dora", "gpu-admins").unwrap(), "primary group from NSS");
        assert!(login_in(&db, "7002").unwrap_err().to_string().contains("not a known user"));
        let e = db.account("broken").unwrap_err().to_string();
        assert!(e.contains("getent passwd broken failed"), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn the_host_database_resolves_root() {
        assert_eq!(to_login("0").unwrap(), "root");
        assert_eq!(to_login("alice").unwrap(), "alice");
        assert!(to_login("4294967000").unwrap_err().to_string().contains("not a known user"));
    }
}
