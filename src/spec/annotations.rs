//! The `ds01.*` annotations: this type owns their keys. A creator may ask through two of them
//! (`ds01.user`, `ds01.gpus`), which are read from the spec as loaded; every `ds01.*` key the
//! creator wrote is then dropped and the runtime writes its own ([`Record::write`]), so that
//! runc's state, and every follow-up that reads it back ([`Record::parse`]), holds only what
//! the runtime decided.

use serde_json::{Map, Value};

/// The prefix every key here starts with.
pub const PREFIX: &str = "ds01.";

/// One `ds01.*` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// The owner's login. Also the creator's owner request, read before it is replaced.
    User,
    /// The owner's policy group.
    Group,
    /// The owner's slice (absent when the engine's cgroup is kept).
    Slice,
    /// `true` on every container the runtime patched.
    Managed,
    /// Which identity source decided the owner.
    IdentitySource,
    /// The engine's name for the container.
    Name,
    /// The engine's image reference.
    Image,
    /// The settings file the create used, when the shim was told one.
    Settings,
    /// A Kubernetes container: `namespace/pod/container`.
    Pod,
    /// UUIDs of the GPUs granted. Also the creator's GPU request, read before it is replaced.
    Gpus,
    /// The CDI devices applied.
    Cdi,
    /// `true` on a build container (Docker's classic builder).
    Build,
}

impl Key {
    /// Every key, in the order the runtime writes them.
    pub const ALL: [Key; 12] = [
        Key::User,
        Key::Group,
        Key::Slice,
        Key::Pod,
        Key::Managed,
        Key::IdentitySource,
        Key::Name,
        Key::Image,
        Key::Build,
        Key::Gpus,
        Key::Cdi,
        Key::Settings,
    ];

    /// The annotation key.
    pub const fn as_str(self) -> &'static str {
        match self {
            Key::User => "ds01.user",
            Key::Group => "ds01.group",
            Key::Slice => "ds01.slice",
            Key::Managed => "ds01.managed",
            Key::IdentitySource => "ds01.identity-source",
            Key::Name => "ds01.name",
            Key::Image => "ds01.image",
            Key::Settings => "ds01.settings",
            Key::Pod => "ds01.pod",
            Key::Gpus => "ds01.gpus",
            Key::Cdi => "ds01.cdi",
            Key::Build => "ds01.build",
        }
    }

    /// The key named `k`, if it is one of ours.
    pub fn of(k: &str) -> Option<Key> {
        Key::ALL.into_iter().find(|key| key.as_str() == k)
    }
}

/// What the runtime records on a container, written into the spec's annotations at create and
/// read back from runc's state by the calls that follow.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    /// Owner login.
    pub user: Option<String>,
    /// Owner group.
    pub group: Option<String>,
    /// Slice leaf name.
    pub slice: Option<String>,
    /// Kubernetes `namespace/pod/container`.
    pub pod: Option<String>,
    /// The runtime patched this container.
    pub managed: bool,
    /// The identity source that decided.
    pub identity_source: Option<String>,
    /// Engine's container name.
    pub name: Option<String>,
    /// Engine's image.
    pub image: Option<String>,
    /// A build container.
    pub build: bool,
    /// Granted GPU UUIDs.
    pub gpus: Vec<String>,
    /// CDI devices applied.
    pub cdi: Option<String>,
    /// The settings file.
    pub settings: Option<String>,
}

impl Record {
    /// Drops every `ds01.*` key from `ann` (the creator's), then writes this record. runc keeps
    /// annotations as `key=value` labels, so no key of ours may hold a `=`, and none does.
    pub fn write(&self, ann: &mut Map<String, Value>) {
        let ours = self.entries();
        // The creator's ds01.* keys go; a key the runtime writes keeps its place (the creator's
        // `ds01.user` request becomes the runtime's owner where it stood).
        // runc keeps annotations as `key=value` labels beside its own `bundle=<dir>`, and reads
        // the first `bundle=` it finds: a creator's `bundle` key, or any key with a `=`, would
        // read as another label there.
        ann.retain(|k, _| {
            k != "bundle"
                && !k.contains('=')
                && (!k.starts_with(PREFIX) || ours.iter().any(|(key, _)| key.as_str() == k))
        });
        for (k, v) in ours {
            ann.insert(k.as_str().to_owned(), Value::String(v));
        }
    }

    /// The keys this record writes, with their values, in [`Key::ALL`] order.
    fn entries(&self) -> Vec<(Key, String)> {
        let mut out = Vec::new();
        let opt = |v: &Option<String>| v.as_deref().filter(|s| !s.is_empty()).map(str::to_owned);
        for key in Key::ALL {
            let value = match key {
                Key::User => opt(&self.user),
                Key::Group => opt(&self.group),
                Key::Slice => opt(&self.slice),
                Key::Pod => opt(&self.pod),
                Key::Managed => self.managed.then(|| "true".to_owned()),
                Key::IdentitySource => opt(&self.identity_source),
                Key::Name => opt(&self.name),
                Key::Image => opt(&self.image),
                Key::Build => self.build.then(|| "true".to_owned()),
                Key::Gpus => (!self.gpus.is_empty()).then(|| self.gpus.join(",")),
                Key::Cdi => opt(&self.cdi),
                Key::Settings => opt(&self.settings),
            };
            if let Some(v) = value {
                out.push((key, v));
            }
        }
        out
    }

    /// Reads a record from `key=value` labels (runc's state). A key given twice is read as
    /// absent. Anything without `ds01.managed=true` was not written by the runtime (a
    /// container created around it), so nothing of it is believed.
    pub fn parse<'a>(labels: impl IntoIterator<Item = (&'a str, &'a str)>) -> Record {
        let mut seen: Vec<(Key, &str, bool)> = Vec::new();
        for (k, v) in labels {
            let Some(key) = Key::of(k) else { continue };
            match seen.iter_mut().find(|(s, _, _)| *s == key) {
                Some(entry) => entry.2 = true,
                None => seen.push((key, v, false)),
            }
        }
        let get =
            |key: Key| seen.iter().find(|(k, _, twice)| *k == key && !twice).map(|(_, v, _)| (*v).to_owned());
        if get(Key::Managed).as_deref() != Some("true") {
            return Record::default();
        }
        Record {
            user: get(Key::User),
            group: get(Key::Group),
            slice: get(Key::Slice),
            pod: get(Key::Pod),
            managed: true,
            identity_source: get(Key::IdentitySource),
            name: get(Key::Name),
            image: get(Key::Image),
            build: get(Key::Build).as_deref() == Some("true"),
            gpus: get(Key::Gpus)
                .map(|g| g.split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect())
                .unwrap_or_default(),
            cdi: get(Key::Cdi),
            settings: get(Key::Settings),
        }
    }
}

/// Removes every key that starts with `ds01.` (the creator's own): what the runtime records is
/// written only by [`Record::write`].
pub fn drop_creators(ann: &mut Map<String, Value>) {
    ann.retain(|k, _| !k.starts_with(PREFIX));
}

/// A creator's request through annotation `key` (`ds01.user` or `ds01.gpus`) in the spec as
/// loaded.
pub fn request(spec: &Value, key: Key) -> Option<&str> {
    crate::spec::annotation(spec, key.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_key_round_trips_and_creators_keys_are_gone() {
        let mut ann = json!({
            "io.x": "1",
            "ds01.name": "forged",
            "ds01.slice": "ds01-admin-root.slice",
            "ds01.pod": "kube-system/x/y",
            "ds01.whatever": "z",
            "ds01.user=eve": "",
            "bundle": "/home/eve/x",
            "a=b": "c"
        });
        let rec = Record {
            user: Some("alice".into()),
            group: Some("student".into()),
            slice: Some("ds01-student-alice.slice".into()),
            managed: true,
            identity_source: Some("label".into()),
            image: Some("busybox".into()),
            gpus: vec!["GPU-1".into(), "GPU-2".into()],
            ..Record::default()
        };
        let map = ann.as_object_mut().unwrap();
        rec.write(map);
        assert_eq!(map["io.x"], "1", "others kept");
        assert!(map.get("ds01.name").is_none() && map.get("ds01.pod").is_none());
        assert!(map.get("ds01.whatever").is_none() && map.get("ds01.user=eve").is_none());
        assert!(
            map.get("bundle").is_none() && map.get("a=b").is_none(),
            "no key that reads as runc's labels"
        );
        let labels: Vec<(&str, &str)> = map.iter().map(|(k, v)| (k.as_str(), v.as_str().unwrap())).collect();
        assert_eq!(Record::parse(labels), rec);
    }

    #[test]
    fn unmanaged_or_doubled_keys_are_not_believed() {
        assert_eq!(Record::parse([("ds01.user", "eve")]), Record::default(), "no ds01.managed");
        let r = Record::parse([("ds01.managed", "true"), ("ds01.user", "a"), ("ds01.user", "b")]);
        assert!(r.managed && r.user.is_none(), "given twice: absent");
        assert_eq!(Record::parse([("ds01.managed", "true"), ("ds01.name", "n")]).name.as_deref(), Some("n"));
    }
}
