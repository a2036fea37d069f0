//! Who is calling: the uid the kernel gave for the connection (SO_PEERCRED), its login from the
//! same user database the runtime reads, and whether the policy makes it an admin.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::policy::Policy;

/// The caller of one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The uid the kernel named.
    pub uid: u32,
    /// Its login name; None when the user database has no entry for the uid.
    pub login: Option<String>,
    /// Root, a user of `access_control.admin_users`, or a member of `admin_group`.
    pub admin: bool,
}

impl Caller {
    /// Root: trusted with everything, its requests passed as they are.
    pub fn is_root(&self) -> bool {
        self.uid == 0
    }

    /// How refusals name the caller: the login, else `uid N`.
    pub fn name(&self) -> String {
        self.login.clone().unwrap_or_else(|| format!("uid {}", self.uid))
    }
}

/// The policy, read again when its file changes (admins come from it).
pub struct PolicyCache {
    path: PathBuf,
    cached: Mutex<Option<(Option<SystemTime>, Arc<Policy>)>>,
}

impl PolicyCache {
    /// A cache of the policy at `path`.
    pub fn new(path: PathBuf) -> PolicyCache {
        PolicyCache { path, cached: Mutex::new(None) }
    }

    /// The policy as the file is now; None when it cannot be read (then nobody but root is an
    /// admin, and the reason is said on stderr).
    pub fn get(&self) -> Option<Arc<Policy>> {
        let mtime = std::fs::metadata(&self.path).and_then(|m| m.modified()).ok();
        let mut slot = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((t, p)) = slot.as_ref() {
            if *t == mtime {
                return Some(p.clone());
            }
        }
        match Policy::load(&self.path) {
            Ok(p) => {
                let p = Arc::new(p);
                *slot = Some((mtime, p.clone()));
                Some(p)
            }
            Err(e) => {
                eprintln!("ds01-front-door: {e}: only root is an admin until it can be read");
                None
            }
        }
    }
}

/// Resolves the caller for `uid` (blocking: the user database may ask NSS).
pub fn resolve(uid: u32, policy: &PolicyCache) -> Caller {
    if uid == 0 {
        return Caller { uid, login: Some("root".into()), admin: true };
    }
    let login = match crate::host::users::UserDb::system().account(&uid.to_string()) {
        Ok(Some(a)) => Some(a.name),
        Ok(None) => None,
        Err(e) => {
            eprintln!("ds01-front-door: uid {uid}: {e}");
            None
        }
    };
    let admin = match (&login, policy.get()) {
        (Some(l), Some(p)) => p.is_admin(l),
        _ => false,
    };
    Caller { uid, login, admin }
}
