//! Names of slices and cgroup paths, and the DS01 rule that makes a user or group name safe in
//! them.

use md5::{Digest, Md5};

use crate::error::{Refusal, Result};

/// The longest name kept whole; longer ones are cut and given a hash suffix.
const MAX_NAME: usize = 32;
/// How much of a long name is kept before `_` and the hash.
const KEEP: usize = 27;

/// Makes a user or group name safe for a slice name, the way DS01 does, so that a DS01 host's
/// existing slices still match: drop an `@domain`, turn every character outside
/// `[A-Za-z0-9_]` into `_` (DS01 keeps `:`; runc's `slice:prefix:name` form cannot), collapse
/// runs of `_`, trim `_` at both ends, and cut a name longer than 32 to its first 27 characters
/// (less trailing `_`), `_` and the first 4 lowercase hex digits of the MD5 of the original name
/// (`@domain` included). A name that is empty after that is an error.
pub fn sanitize(original: &str) -> Result<String> {
    let local = original.split('@').next().unwrap_or("");
    let mut out = String::with_capacity(local.len());
    for c in local.chars() {
        let c = if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' };
        if !(c == '_' && out.ends_with('_')) {
            out.push(c);
        }
    }
    let trimmed = out.trim_matches('_');
    if trimmed.is_empty() {
        return Err(Refusal::UnknownOwner {
            why: format!("user or group name {original:?} is empty once made safe for a slice name"),
        }
        .into());
    }
    if trimmed.len() <= MAX_NAME {
        return Ok(trimmed.to_owned());
    }
    let digest = Md5::digest(original.as_bytes());
    let hex = format!("{:02x}{:02x}", digest[0], digest[1]);
    Ok(format!("{}_{hex}", trimmed[..KEEP].trim_end_matches('_')))
}

/// The top-level slice every container is placed under.
pub const ROOT_SLICE: &str = "ds01.slice";
/// The slice of containers whose owner is unknown, when the policy places them.
pub const UNATTRIBUTED_SLICE: &str = "ds01-unattributed.slice";
/// Where build containers that name no owner go.
pub const BUILD_SLICE: &str = "ds01-build.slice";

/// Where a container goes: the chain of slices from ds01.slice down to the owner's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// Slices from the top, e.g. `[ds01.slice, ds01-student.slice, ds01-student-alice.slice]`.
    pub slices: Vec<String>,
}

impl Placement {
    /// `ds01-<group>-<user>.slice` under `ds01-<group>.slice` under `ds01.slice`; both names
    /// must already be sanitized (no `-`, so systemd's dash nesting adds no level).
    pub fn for_owner(group: &str, user: &str) -> Placement {
        Placement {
            slices: vec![
                ROOT_SLICE.to_owned(),
                format!("ds01-{group}.slice"),
                format!("ds01-{group}-{user}.slice"),
            ],
        }
    }

    /// `ds01-unattributed.slice` under `ds01.slice`.
    pub fn unattributed() -> Placement {
        Placement { slices: vec![ROOT_SLICE.to_owned(), UNATTRIBUTED_SLICE.to_owned()] }
    }

    /// `ds01-build.slice` under `ds01.slice`: build containers that name no owner.
    pub fn build() -> Placement {
        Placement { slices: vec![ROOT_SLICE.to_owned(), BUILD_SLICE.to_owned()] }
    }

    /// No slice: the container keeps the cgroup its engine chose (a Kubernetes pod's, when
    /// `kubernetes.placement` is `pod`).
    pub fn engine_cgroup() -> Placement {
        Placement { slices: Vec::new() }
    }

    /// True when the container keeps the engine's cgroup.
    pub fn is_engine_cgroup(&self) -> bool {
        self.slices.is_empty()
    }

    /// The innermost slice, the one the container lands in.
    pub fn leaf(&self) -> &str {
        self.slices.last().map(String::as_str).unwrap_or(ROOT_SLICE)
    }

    /// The slices as a cgroupfs path, e.g. `/ds01.slice/ds01-g.slice/ds01-g-u.slice`.
    pub fn cgroupfs_dir(&self) -> String {
        self.slices.iter().fold(String::new(), |acc, s| acc + "/" + s)
    }

    /// linux.cgroupsPath for runc: `slice:prefix:id` with `--systemd-cgroup`, else
    /// `/ds01.slice/…/<prefix>-<id>.scope`.
    pub fn cgroups_path(&self, systemd: bool, prefix: &str, id: &str) -> String {
        if systemd {
            format!("{}:{prefix}:{id}", self.leaf())
        } else {
            format!("{}/{prefix}-{id}.scope", self.cgroupfs_dir())
        }
    }
}

/// A value with one pair of surrounding quotes (`"…"` or `'…'`) removed, as YAML scalars and
/// systemd environment files write them.
pub fn unquote(v: &str) -> &str {
    v.strip_prefix('"')
        .and_then(|x| x.strip_suffix('"'))
        .or_else(|| v.strip_prefix('\'').and_then(|x| x.strip_suffix('\'')))
        .unwrap_or(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ds01_rules() {
        let cases = [
            ("alice", "alice"),
            ("alice@uni.example.org", "alice"),
            ("jean-luc.picard", "jean_luc_picard"),
            ("a--b..c", "a_b_c"),
            ("__x__", "x"),
            ("h:m", "h_m"),
            ("Zoë Ünïcode", "Zo_n_code"),
            ("123", "123"),
        ];
        for (input, want) in cases {
            assert_eq!(sanitize(input).unwrap(), want, "{input}");
        }
    }

    #[test]
    fn long_names_are_cut_with_md5_of_the_original() {
        let name = "a.very.long.user.name.from.the.directory@example.org";
        let got = sanitize(name).unwrap();
        let digest = Md5::digest(name.as_bytes());
        let hex = format!("{:02x}{:02x}", digest[0], digest[1]);
        assert_eq!(got, format!("a_very_long_user_name_from_{hex}"));
        // Worked examples of DS01's own scripts/lib/username_utils.py.
        assert_eq!(sanitize(&"a".repeat(50)).unwrap(), "aaaaaaaaaaaaaaaaaaaaaaaaaaa_6eb6");
        assert_eq!(
            sanitize("first.middle.lastname.verylongsurname@hertie-school.lan").unwrap(),
            "first_middle_lastname_veryl_c856"
        );
        assert_eq!(sanitize("h.baker@hertie-school.lan").unwrap(), "h_baker");
        assert_eq!(sanitize(".user.").unwrap(), "user");
        let exact32 = "abcdefghijklmnopqrstuvwxyz012345";
        assert_eq!(sanitize(exact32).unwrap(), exact32);
    }

    #[test]
    fn empty_after_sanitizing_is_refused() {
        for bad in ["", "@example.org", "---", "日本"] {
            assert!(sanitize(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn paths_for_both_drivers() {
        let p = Placement::for_owner("student", "alice");
        assert_eq!(p.cgroups_path(true, "docker", "abc"), "ds01-student-alice.slice:docker:abc");
        assert_eq!(
            p.cgroups_path(false, "docker", "abc"),
            "/ds01.slice/ds01-student.slice/ds01-student-alice.slice/docker-abc.scope"
        );
        let u = Placement::unattributed();
        assert_eq!(u.cgroups_path(true, "docker", "x"), "ds01-unattributed.slice:docker:x");
        assert_eq!(
            u.cgroups_path(false, "docker", "x"),
            "/ds01.slice/ds01-unattributed.slice/docker-x.scope"
        );
    }
}
