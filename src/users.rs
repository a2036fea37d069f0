//! The user database edge: turning what an identity source named into a login name.

use crate::error::{Error, Result};

/// A login name as is; a numeric uid through the system's user database (NSS, so LDAP users
/// resolve too).
pub fn to_login(named: &str) -> Result<String> {
    if !named.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(named.to_owned());
    }
    let uid: u32 = named.parse().map_err(|_| Error::refused(format!("uid {named} is out of range")))?;
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(u)) => Ok(u.name),
        Ok(None) => Err(Error::refused(format!("uid {uid} is not a known user"))),
        Err(e) => Err(Error::failed(format!("cannot look up uid {uid}: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_pass_and_uids_resolve() {
        assert_eq!(to_login("alice").unwrap(), "alice");
        assert_eq!(to_login("0").unwrap(), "root");
        assert!(to_login("4294967000").unwrap_err().to_string().contains("not a known user"));
        assert!(to_login("99999999999").is_err());
    }
}
