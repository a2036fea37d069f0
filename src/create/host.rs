//! What the create pipeline reads from and does to the machine, behind one trait, so that the
//! phases run the same on the host ([`System`]), in a dry run (`ds01ctl explain`: [`DryRun`])
//! and in tests without root ([`Memory`]).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::bundle::Bundle;
use super::grant::GpuHost;
use crate::error::{Error, Result};
use crate::gpu::alloc::{State, World};
use crate::gpu::inventory::{self, Node};
use crate::gpu::nvml::Querier;
use crate::gpu::store::{HostWorld, Store};
use crate::gpu::Gpu;
use crate::host::cgroups::{self, SliceLimits, Tree};
use crate::naming::Placement;
use crate::owner::docker::{self, DockerMeta};
use crate::owner::verified::{self, Verified};
use crate::policy::settings::Settings;
use crate::policy::Policy;

/// A step under the allocation lock: the state, how long the lock took, the world to reconcile
/// against; returns whether to write the state back.
pub type Locked<'a> = dyn FnMut(&mut State, Duration, &dyn World) -> Result<bool> + 'a;

/// The machine as the create pipeline sees it. Gather reads through it before the lock; the
/// reservation runs under [`Host::locked`]; commit writes through the last three methods.
pub trait Host {
    /// The bundle's config.json (as [`Bundle::load`]).
    fn load_bundle(&self, dir: &Path) -> Result<Bundle>;
    /// The policy files.
    fn load_policy(&self, settings: &Settings) -> Result<Policy>;
    /// Docker's metadata of container `id`, if Docker made it.
    fn docker_meta(&self, docker_root: &Path, id: &str) -> Result<Option<DockerMeta>>;
    /// The owner the front door verified for container `id`, or for the build whose token is in
    /// `cgroups_path` ([`crate::owner::verified`]).
    fn verified_owner(
        &self,
        settings: &Settings,
        id: &str,
        cgroups_path: Option<&str>,
    ) -> Result<Option<Verified>>;
    /// A user named by login or uid, as a login (may ask NSS).
    fn to_login(&self, named: &str) -> Result<String>;
    /// Whether `user` is an admin (may ask the group database).
    fn is_admin(&self, policy: &Policy, user: &str) -> bool;
    /// A path with every link resolved.
    fn canonical(&self, path: &Path) -> io::Result<PathBuf>;
    /// A file's text.
    fn read_to_string(&self, path: &Path) -> io::Result<String>;
    /// `(device, inode)` of a file, to tell the host's own namespaces.
    fn file_id(&self, path: &Path) -> Option<(u64, u64)>;
    /// True when the host confines processes with AppArmor.
    fn apparmor_enabled(&self) -> bool;
    /// The GPUs (cached per boot on the host).
    fn inventory(&self, settings: &Settings) -> Result<Vec<Gpu>>;
    /// The device nodes and CDI specs a grant of `inventory`'s GPUs needs.
    fn gpu_host(&self, settings: &Settings, inventory: &[Gpu], with_cdi: bool) -> Result<GpuHost>;
    /// Seconds since the epoch.
    fn now(&self) -> u64;
    /// Runs `step` under the allocation lock; gives how long the lock took.
    fn locked(&self, settings: &Settings, step: &mut Locked) -> Result<Duration>;
    /// Appends audit lines.
    fn record(&self, settings: &Settings, lines: &str) -> Result<()>;
    /// Creates the slice chain (cgroupfs driver) with the slice's limits.
    fn ensure_slice(
        &self,
        settings: &Settings,
        placement: &Placement,
        limits: Option<&SliceLimits>,
    ) -> Result<()>;
    /// Writes the patched config.json.
    fn write_bundle(&self, bundle: &Bundle, spec: &Value) -> Result<()>;
}

/// The real machine.
pub struct System<'a> {
    /// Asked for the inventory when its cache is stale.
    pub nvml: &'a dyn Querier,
}

impl Host for System<'_> {
    fn load_bundle(&self, dir: &Path) -> Result<Bundle> {
        Bundle::load(dir)
    }
    fn load_policy(&self, s: &Settings) -> Result<Policy> {
        Policy::load_cached(&s.policy, &s.state_dir.join("cache"))
    }
    fn docker_meta(&self, docker_root: &Path, id: &str) -> Result<Option<DockerMeta>> {
        docker::load(docker_root, id)
    }
    fn verified_owner(&self, s: &Settings, id: &str, cgroups_path: Option<&str>) -> Result<Option<Verified>> {
        let dir = &s.front_door.verified_dir;
        if let Some(v) = verified::read(dir, id)? {
            return Ok(Some(v));
        }
        match cgroups_path.and_then(verified::build_token) {
            Some(token) => verified::read(dir, &verified::build_key(token)),
            None => Ok(None),
        }
    }
    fn to_login(&self, named: &str) -> Result<String> {
        crate::host::users::to_login(named)
    }
    fn is_admin(&self, policy: &Policy, user: &str) -> bool {
        policy.is_admin(user)
    }
    fn canonical(&self, path: &Path) -> io::Result<PathBuf> {
        crate::host::realpath::canonical(path)
    }
    fn read_to_string(&self, path: &Path) -> io::Result<String> {
        std::fs::read_to_string(path)
    }
    fn file_id(&self, path: &Path) -> Option<(u64, u64)> {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
    }
    fn apparmor_enabled(&self) -> bool {
        std::fs::read_to_string("/sys/module/apparmor/parameters/enabled").is_ok_and(|v| v.trim() == "Y")
    }
    fn inventory(&self, s: &Settings) -> Result<Vec<Gpu>> {
        inventory::load(&s.gpu, &s.state_dir, self.nvml)
    }
    fn gpu_host(&self, s: &Settings, inventory: &[Gpu], with_cdi: bool) -> Result<GpuHost> {
        GpuHost::read(&s.gpu, inventory, with_cdi)
    }
    fn now(&self) -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default()
    }
    fn locked(&self, s: &Settings, step: &mut Locked) -> Result<Duration> {
        let world = HostWorld { docker_root: s.docker_root.clone() };
        let ((), waited) =
            Store::new(&s.state_dir).locked(|state, waited| Ok(((), step(state, waited, &world)?)))?;
        Ok(waited)
    }
    fn record(&self, s: &Settings, lines: &str) -> Result<()> {
        crate::audit::record(s, lines)
    }
    fn ensure_slice(&self, s: &Settings, placement: &Placement, limits: Option<&SliceLimits>) -> Result<()> {
        cgroups::ensure(&Tree::Host, placement, limits, &s.state_dir)
    }
    fn write_bundle(&self, bundle: &Bundle, spec: &Value) -> Result<()> {
        bundle.write(spec)
    }
}

/// The real machine read, nothing written: GPUs are decided against a copy of the allocation
/// state, and commit refuses. `ds01ctl explain` runs the pipeline with it.
pub struct DryRun<'a> {
    /// Reads go here.
    pub system: System<'a>,
    /// The config.json to read (any name), instead of the bundle's.
    pub config: PathBuf,
    /// Plays the owner, as a `ds01.user` annotation on the document read.
    pub user: Option<String>,
}

impl Host for DryRun<'_> {
    fn load_bundle(&self, dir: &Path) -> Result<Bundle> {
        let bytes = std::fs::read(&self.config)
            .map_err(|e| Error::failed(format!("cannot read {}: {e}", self.config.display())))?;
        let mut b = Bundle::parse(dir, bytes, None)?;
        if let Some(u) = &self.user {
            crate::spec::object_mut(&mut b.spec, &["annotations"])?
                .insert(crate::owner::identity::USER_KEY.into(), Value::String(u.clone()));
        }
        Ok(b)
    }
    fn load_policy(&self, s: &Settings) -> Result<Policy> {
        self.system.load_policy(s)
    }
    fn docker_meta(&self, docker_root: &Path, id: &str) -> Result<Option<DockerMeta>> {
        self.system.docker_meta(docker_root, id)
    }
    fn verified_owner(&self, s: &Settings, id: &str, cgroups_path: Option<&str>) -> Result<Option<Verified>> {
        self.system.verified_owner(s, id, cgroups_path)
    }
    fn to_login(&self, named: &str) -> Result<String> {
        self.system.to_login(named)
    }
    fn is_admin(&self, policy: &Policy, user: &str) -> bool {
        self.system.is_admin(policy, user)
    }
    fn canonical(&self, path: &Path) -> io::Result<PathBuf> {
        self.system.canonical(path)
    }
    fn read_to_string(&self, path: &Path) -> io::Result<String> {
        self.system.read_to_string(path)
    }
    fn file_id(&self, path: &Path) -> Option<(u64, u64)> {
        self.system.file_id(path)
    }
    fn apparmor_enabled(&self) -> bool {
        self.system.apparmor_enabled()
    }
    fn inventory(&self, s: &Settings) -> Result<Vec<Gpu>> {
        self.system.inventory(s)
    }
    fn gpu_host(&self, s: &Settings, inventory: &[Gpu], with_cdi: bool) -> Result<GpuHost> {
        self.system.gpu_host(s, inventory, with_cdi)
    }
    fn now(&self) -> u64 {
        self.system.now()
    }
    fn locked(&self, s: &Settings, step: &mut Locked) -> Result<Duration> {
        let mut state = Store::new(&s.state_dir).peek()?;
        step(&mut state, Duration::ZERO, &HostWorld { docker_root: s.docker_root.clone() })?;
        Ok(Duration::ZERO)
    }
    fn record(&self, _: &Settings, _: &str) -> Result<()> {
        Err(Error::failed("a dry run records nothing"))
    }
    fn ensure_slice(&self, _: &Settings, _: &Placement, _: Option<&SliceLimits>) -> Result<()> {
        Err(Error::failed("a dry run creates no slice"))
    }
    fn write_bundle(&self, _: &Bundle, _: &Value) -> Result<()> {
        Err(Error::failed("a dry run writes no bundle"))
    }
}

/// A machine in memory: the bundle, the policy, the users and the GPUs given, every write kept
/// for inspection. For tests of the pipeline without root, and for a config.json explained
/// away from any host.
pub struct Memory {
    /// config.json's bytes.
    pub config: Vec<u8>,
    /// The policy.
    pub policy: Policy,
    /// Docker's metadata, when the container is to look like Docker's.
    pub docker: Option<DockerMeta>,
    /// Admins (the policy's `admin_users` count too).
    pub admins: Vec<String>,
    /// Files by path.
    pub files: BTreeMap<PathBuf, String>,
    /// The GPUs; each has its node `/dev/nvidia<minor>` (major 195).
    pub gpus: Vec<Gpu>,
    /// The clock.
    pub now: u64,
    /// The allocation state.
    pub state: RefCell<State>,
    /// Containers the world still knows (runc's or Docker's); every live pid counts as alive.
    pub known: Vec<String>,
    /// Audit lines recorded.
    pub recorded: RefCell<Vec<String>>,
    /// Slices created.
    pub slices: RefCell<Vec<String>>,
    /// config.json as written.
    pub written: RefCell<Option<Value>>,
    /// Make the bundle write fail, to test the undo.
    pub fail_write: bool,
    /// Carry the parts no step reads as raw bytes, as a create does (default).
    pub carry: bool,
    /// How often the pipeline asked whether someone is an admin.
    pub admin_lookups: std::cell::Cell<u32>,
    /// The owner the front door verified.
    pub verified: Option<Verified>,
}

impl Memory {
    /// A machine holding `config` and `policy`, and nothing else.
    pub fn new(config: impl Into<Vec<u8>>, policy: Policy) -> Memory {
        Memory {
            config: config.into(),
            policy,
            docker: None,
            admins: Vec::new(),
            files: BTreeMap::new(),
            gpus: Vec::new(),
            now: 1_700_000_000,
            state: RefCell::new(State::default()),
            known: Vec::new(),
            recorded: RefCell::new(Vec::new()),
            slices: RefCell::new(Vec::new()),
            written: RefCell::new(None),
            fail_write: false,
            carry: true,
            admin_lookups: std::cell::Cell::new(0),
            verified: None,
        }
    }
}

struct MemoryWorld<'a>(&'a [String]);

impl World for MemoryWorld<'_> {
    fn runc_has(&self, _: &str, container: &str) -> bool {
        self.0.iter().any(|c| c == container)
    }
    fn pid_alive(&self, _: u32) -> bool {
        true
    }
    fn docker_has(&self, container: &str) -> bool {
        self.0.iter().any(|c| c == container)
    }
}

impl Host for Memory {
    fn load_bundle(&self, dir: &Path) -> Result<Bundle> {
        Bundle::parse_as(dir, self.config.clone(), None, self.carry)
    }
    fn load_policy(&self, _: &Settings) -> Result<Policy> {
        Ok(self.policy.clone())
    }
    fn docker_meta(&self, _: &Path, _: &str) -> Result<Option<DockerMeta>> {
        Ok(self.docker.clone())
    }
    fn verified_owner(&self, _: &Settings, _: &str, _: Option<&str>) -> Result<Option<Verified>> {
        Ok(self.verified.clone())
    }
    fn to_login(&self, named: &str) -> Result<String> {
        // Every name is a login here; uids are the user database's (tests/runc_* use it).
        Ok(named.to_owned())
    }
    fn is_admin(&self, policy: &Policy, user: &str) -> bool {
        self.admin_lookups.set(self.admin_lookups.get() + 1);
        self.admins.iter().any(|a| a == user) || policy.is_listed_admin(user)
    }
    fn canonical(&self, path: &Path) -> io::Result<PathBuf> {
        Ok(path.to_path_buf())
    }
    fn read_to_string(&self, path: &Path) -> io::Result<String> {
        self.files.get(path).cloned().ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }
    fn file_id(&self, _: &Path) -> Option<(u64, u64)> {
        None
    }
    fn apparmor_enabled(&self) -> bool {
        false
    }
    fn inventory(&self, _: &Settings) -> Result<Vec<Gpu>> {
        Ok(self.gpus.clone())
    }
    fn gpu_host(&self, _: &Settings, inventory: &[Gpu], _: bool) -> Result<GpuHost> {
        let node =
            |rel: String, minor: i64| (rel.clone(), Node { path: format!("/dev/{rel}"), major: 195, minor });
        Ok(GpuHost {
            nodes: inventory.iter().map(|g| node(format!("nvidia{}", g.minor), g.minor as i64)).collect(),
            control: vec![node("nvidiactl".into(), 255).1],
            majors: vec![195],
            cdi: None,
            dev_root: PathBuf::from("/dev"),
        })
    }
    fn now(&self) -> u64 {
        self.now
    }
    fn locked(&self, _: &Settings, step: &mut Locked) -> Result<Duration> {
        let mut copy = self.state.borrow().clone();
        if step(&mut copy, Duration::ZERO, &MemoryWorld(&self.known))? {
            *self.state.borrow_mut() = copy;
        }
        Ok(Duration::ZERO)
    }
    fn record(&self, _: &Settings, lines: &str) -> Result<()> {
        self.recorded.borrow_mut().extend(lines.lines().map(str::to_owned));
        Ok(())
    }
    fn ensure_slice(&self, _: &Settings, placement: &Placement, _: Option<&SliceLimits>) -> Result<()> {
        self.slices.borrow_mut().push(placement.leaf().to_owned());
        Ok(())
    }
    fn write_bundle(&self, bundle: &Bundle, spec: &Value) -> Result<()> {
        if self.fail_write {
            return Err(Error::failed(format!("cannot replace {}: disk full", bundle.config_path.display())));
        }
        *self.written.borrow_mut() = Some(spec.clone());
        Ok(())
    }
}
