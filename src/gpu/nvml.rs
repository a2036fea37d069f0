//! GPU inventory from NVML (libnvidia-ml), loaded at run time through nvml-wrapper.
//!
//! Only a dynamically linked program may load libnvidia-ml: the shim is linked statically (for
//! its start-up cost), so it asks NVML through a helper, `ds01ctl nvml-query`, which prints
//! the same answer as JSON. The inventory is cached per boot, so the helper runs once a boot.

use std::ffi::OsStr;
use std::os::raw::c_uint;
use std::path::PathBuf;
use std::process::Command;

use nvml_wrapper::error::{nvml_try, NvmlError};
use nvml_wrapper::{Device, Nvml};

use super::{Gpu, Mig};
use crate::error::{Error, Result};

/// What failed to be read, and NVML's error.
type Step<T> = std::result::Result<T, (String, NvmlError)>;

/// Names the value an NVML call was reading.
trait Reading<T> {
    fn reading(self, what: &str) -> Step<T>;
}

impl<T> Reading<T> for std::result::Result<T, NvmlError> {
    fn reading(self, what: &str) -> Step<T> {
        self.map_err(|e| (what.to_string(), e))
    }
}

/// Who asks NVML: this process, or a helper program.
pub trait Querier {
    /// Every GPU NVML reports through the library at `lib`, as [`query`] returns them.
    fn query(&self, lib: &OsStr) -> Result<Vec<Gpu>>;
}

/// Loads libnvidia-ml into this process (ds01ctl, which is linked dynamically).
pub struct InProcess;

impl Querier for InProcess {
    fn query(&self, lib: &OsStr) -> Result<Vec<Gpu>> {
        query(lib)
    }
}

/// Runs `<program> nvml-query --library <lib>` and reads the JSON it prints (the shim's way).
pub struct Helper {
    /// The helper program, normally `ds01ctl`.
    pub program: PathBuf,
}

impl Helper {
    /// `ds01ctl` in the directory of the running program (an interposed `runc` link resolves
    /// to the shim itself, so this is where `ds01ctl install` put both).
    pub fn beside_self() -> Helper {
        let dir = std::env::current_exe().ok().and_then(|p| p.parent().map(PathBuf::from));
        Helper { program: dir.unwrap_or_default().join("ds01ctl") }
    }
}

impl Querier for Helper {
    fn query(&self, lib: &OsStr) -> Result<Vec<Gpu>> {
        let ctx = format!("NVML ({})", lib.to_string_lossy());
        let out = Command::new(&self.program)
            .arg("nvml-query")
            .arg("--library")
            .arg(lib)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| Error::failed(format!("{ctx}: cannot run {}: {e}", self.program.display())))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let line = err.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no message");
            let line = line.strip_prefix("ds01ctl: ").unwrap_or(line);
            return Err(Error::failed(if line.starts_with("NVML") {
                line.to_owned()
            } else {
                format!("{ctx}: {} {}: {line}", self.program.display(), out.status)
            }));
        }
        serde_json::from_slice(&out.stdout).map_err(|e| {
            Error::failed(format!("{ctx}: {} printed no inventory: {e}", self.program.display()))
        })
    }
}

/// Queries NVML from the library at `lib` (a path or a soname like "libnvidia-ml.so.1").
///
/// Returns every device with its MIG instances (when MIG mode is on); `caps` is left empty.
pub fn query(lib: &OsStr) -> Result<Vec<Gpu>> {
    let ctx = format!("NVML ({})", lib.to_string_lossy());
    let nvml = Nvml::builder()
        .lib_path(lib)
        .init()
        .map_err(|e| Error::failed(format!("{ctx}: cannot initialize: {e}")))?;
    let count = nvml.device_count().map_err(|e| Error::failed(format!("{ctx}: cannot count GPUs: {e}")))?;
    (0..count)
        .map(|i| {
            gpu(&nvml, i)
                .map_err(|(what, e)| Error::failed(format!("{ctx}: GPU {i}: cannot read {what}: {e}")))
        })
        .collect()
}

/// One physical GPU by NVML index.
fn gpu(nvml: &Nvml, index: u32) -> Step<Gpu> {
    let dev = nvml.device_by_index(index).reading("handle")?;
    let mig_enabled = match dev.mig_mode() {
        Ok(mode) => mode.current == 1, // NVML_DEVICE_MIG_ENABLE
        Err(NvmlError::NotSupported) => false,
        Err(e) => return Err(("MIG mode".into(), e)),
    };
    Ok(Gpu {
        index,
        uuid: dev.uuid().reading("UUID")?,
        minor: dev.minor_number().reading("minor number")?,
        name: dev.name().reading("name")?,
        memory_mib: dev.memory_info().reading("memory")?.total / (1024 * 1024),
        mig_enabled,
        migs: if mig_enabled { migs(nvml, &dev)? } else { Vec::new() },
    })
}

/// The MIG devices of a MIG-enabled GPU, skipping empty slots.
fn migs(nvml: &Nvml, dev: &Device) -> Step<Vec<Mig>> {
    let max = dev.mig_device_count().reading("MIG device count")?;
    let mut out = Vec::new();
    for j in 0..max {
        let mig = match dev.mig_device_by_index(j) {
            Ok(mig) => mig,
            Err(NvmlError::NotFound | NvmlError::InvalidArg) => continue,
            Err(e) => return Err((format!("MIG device {j}"), e)),
        };
        let lib = nvml.lib();
        // SAFETY: no safe equivalent (nvml-wrapper has no getter for a MIG device's GPU and
        // compute instance ids, so the raw handle goes to NVML's own functions below); it is
        // only passed back to NVML while `nvml` is alive.
        let handle = unsafe { mig.handle() };
        out.push(Mig {
            uuid: mig.uuid().reading(&format!("MIG device {j} UUID"))?,
            gi: instance_id(handle, lib.nvmlDeviceGetGpuInstanceId.as_ref())
                .reading(&format!("MIG device {j} GPU instance id"))?,
            ci: instance_id(handle, lib.nvmlDeviceGetComputeInstanceId.as_ref())
                .reading(&format!("MIG device {j} compute instance id"))?,
            caps: Vec::new(),
            slices: slices(&mig),
        });
    }
    Ok(out)
}

/// The compute slices of a MIG device: its GPU instance's slice count, else the profile in its
/// name (`… MIG 2g.20gb`); None when neither says.
fn slices(mig: &Device) -> Option<u32> {
    mig.attributes()
        .ok()
        .map(|a| a.gpu_instance_slice_count)
        .filter(|n| (1..=7).contains(n))
        .or_else(|| mig.name().ok().as_deref().and_then(super::profile_slices))
}

/// Calls a GPU/compute instance id getter on a MIG device handle (nvml-wrapper has no safe
/// wrapper for these).
fn instance_id<H, E: std::fmt::Display>(
    handle: H,
    sym: std::result::Result<&unsafe extern "C" fn(H, *mut c_uint) -> c_uint, &E>,
) -> std::result::Result<u32, NvmlError> {
    let f = sym.map_err(|e| NvmlError::FailedToLoadSymbol(e.to_string()))?;
    let mut id = 0;
    // SAFETY: no safe equivalent (a C function of the loaded NVML); `f` comes from that NVML,
    // `handle` is a live device handle of it and `id` outlives the call.
    unsafe { nvml_try(f(handle, &mut id))? };
    Ok(id)
}
