//! The calls on a running container that could lift it above its policy, judged before runc
//! runs them: `update` (resources held to the owner's per-container caps) and `exec` (a
//! process may have no more than its container). Each is recorded in the audit log, allowed
//! or refused. The owner is what the create recorded in runc's state ([`Record`]); admins named
//! by a trusted identity source keep everything.

pub mod exec;
pub mod update;

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::argv::Invocation;
use crate::audit::{self, Event, Kind};
use crate::error::{Error, Result};
use crate::policy::settings::Settings;
use crate::policy::Policy;
use crate::spec::annotations::Record;

/// What runc's state says about a container: the runtime's record, what runc applied to its
/// init process, and where its bundle is.
#[derive(Debug, Default)]
pub struct Container {
    /// Container id.
    pub id: String,
    /// The record the create left.
    pub record: Record,
    /// The capabilities runc gave the container (every set, as runc names them).
    pub caps: Caps,
    /// no_new_privileges of the container.
    pub no_new_privileges: bool,
    /// SELinux process label.
    pub process_label: String,
    /// The bundle directory (`bundle=` label).
    pub bundle: Option<PathBuf>,
}

/// Capability sets.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct Caps {
    /// Bounding set.
    #[serde(rename = "Bounding", alias = "bounding", default)]
    pub bounding: Option<Vec<String>>,
    /// Effective set.
    #[serde(rename = "Effective", alias = "effective", default)]
    pub effective: Option<Vec<String>>,
    /// Inheritable set.
    #[serde(rename = "Inheritable", alias = "inheritable", default)]
    pub inheritable: Option<Vec<String>>,
    /// Permitted set.
    #[serde(rename = "Permitted", alias = "permitted", default)]
    pub permitted: Option<Vec<String>>,
    /// Ambient set.
    #[serde(rename = "Ambient", alias = "ambient", default)]
    pub ambient: Option<Vec<String>>,
}

impl Caps {
    /// Every capability in any set.
    pub fn all(&self) -> impl Iterator<Item = &String> {
        [&self.bounding, &self.effective, &self.inheritable, &self.permitted, &self.ambient]
            .into_iter()
            .flatten()
            .flatten()
    }
}

impl Container {
    /// Reads `<root>/<id>/state.json`.
    pub fn load(inv: &Invocation) -> Result<Container> {
        #[derive(Deserialize)]
        struct State {
            config: StateConfig,
        }
        #[derive(Deserialize)]
        struct StateConfig {
            #[serde(default)]
            labels: Option<Vec<String>>,
            #[serde(default)]
            capabilities: Option<Caps>,
            #[serde(default)]
            no_new_privileges: bool,
            #[serde(default)]
            process_label: Option<String>,
        }
        let id = inv
            .container_id
            .as_deref()
            .and_then(|i| i.to_str())
            .ok_or_else(|| Error::failed("no container id, or not UTF-8"))?
            .to_owned();
        let path = Path::new(&crate::create::runc_root(inv)).join(&id).join("state.json");
        let bytes = std::fs::read(&path).map_err(|e| {
            Error::failed(format!("container {id}: cannot read runc's state {}: {e}", path.display()))
        })?;
        let state: State = serde_json::from_slice(&bytes).map_err(|e| {
            Error::failed(format!("container {id}: runc's state {} cannot be read: {e}", path.display()))
        })?;
        let labels = state.config.labels.unwrap_or_default();
        let pairs = labels.iter().filter_map(|l| l.split_once('='));
        let record = Record::parse(pairs.clone());
        // runc appends its own `bundle=` after the annotations: the last one is runc's.
        let bundle = pairs.clone().rfind(|(k, _)| *k == "bundle").map(|(_, v)| PathBuf::from(v));
        Ok(Container {
            id,
            record,
            caps: state.config.capabilities.unwrap_or_default(),
            no_new_privileges: state.config.no_new_privileges,
            process_label: state.config.process_label.unwrap_or_default(),
            bundle,
        })
    }

    /// True when the owner is an admin named by a source trusted for admin rights.
    pub fn trusted_admin(&self, settings: &Settings, policy: &Policy) -> bool {
        let source = self.record.identity_source.as_deref().unwrap_or("");
        settings.identity.trusted_for_admin.iter().any(|s| s.as_str() == source)
            && self.record.user.as_deref().is_some_and(|u| policy.is_admin(u))
    }

    /// An audit event about this container.
    pub fn event(&self, kind: Kind, outcome: &str) -> Event {
        let mut ev = Event::new(kind, std::time::SystemTime::now(), outcome);
        ev.container = Some(self.id.clone());
        ev.name = self.record.name.clone();
        ev.image = self.record.image.clone();
        ev.owner = self.record.user.clone();
        ev.group = self.record.group.clone();
        ev.slice = self.record.slice.clone();
        ev.identity_source = self.record.identity_source.clone();
        ev
    }
}

/// Records `ev` with `verdict`'s outcome and reason, and gives the verdict back.
pub fn recorded(settings: &Settings, mut ev: Event, verdict: Result<()>) -> Result<()> {
    match &verdict {
        Ok(()) => ev.outcome = "allowed".into(),
        Err(e) => {
            ev.outcome = if e.kind == crate::error::Kind::Refused { "refused" } else { "error" }.into();
            ev.reason = Some(e.to_string());
        }
    }
    match verdict {
        Ok(()) => audit::record(settings, &ev.to_line()),
        Err(e) => {
            audit::record_quietly(settings, &ev.to_line());
            Err(e)
        }
    }
}
