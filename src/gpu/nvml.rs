//! GPU inventory from NVML (libnvidia-ml), loaded at run time through nvml-wrapper.

use std::ffi::OsStr;
use std::os::raw::c_uint;

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
        // SAFETY: the handle is only passed back to NVML while `nvml` is alive.
        let handle = unsafe { mig.handle() };
        out.push(Mig {
            uuid: mig.uuid().reading(&format!("MIG device {j} UUID"))?,
            gi: instance_id(handle, lib.nvmlDeviceGetGpuInstanceId.as_ref())
                .reading(&format!("MIG device {j} GPU instance id"))?,
            ci: instance_id(handle, lib.nvmlDeviceGetComputeInstanceId.as_ref())
                .reading(&format!("MIG device {j} compute instance id"))?,
            caps: Vec::new(),
        });
    }
    Ok(out)
}

/// Calls a GPU/compute instance id getter on a MIG device handle (nvml-wrapper has no safe
/// wrapper for these).
fn instance_id<H, E: std::fmt::Display>(
    handle: H,
    sym: std::result::Result<&unsafe extern "C" fn(H, *mut c_uint) -> c_uint, &E>,
) -> std::result::Result<u32, NvmlError> {
    let f = sym.map_err(|e| NvmlError::FailedToLoadSymbol(e.to_string()))?;
    let mut id = 0;
    // SAFETY: `f` comes from the loaded NVML, `handle` is a live device handle of that NVML and
    // `id` outlives the call.
    unsafe { nvml_try(f(handle, &mut id))? };
    Ok(id)
}
