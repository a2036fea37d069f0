//! The `gpu` section of the runtime's settings: where the inventory comes from, where the
//! device nodes and CDI specs are, and how requests are read.

use std::path::PathBuf;

use serde::Deserialize;

/// Where the GPU inventory comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InventorySource {
    /// NVML, else /proc/driver/nvidia, else the static list.
    Auto,
    /// NVML only.
    Nvml,
    /// /proc/driver/nvidia/gpus/*/information and the /dev/nvidia<N> nodes.
    Proc,
    /// The `static` list below.
    Static,
}

/// GPU settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GpuSettings {
    /// Inventory source.
    pub inventory: InventorySource,
    /// NVML library (soname or path).
    pub nvml_library: String,
    /// Where the NVIDIA device nodes are (`/dev`; tests point it at a fake tree).
    pub dev_root: PathBuf,
    /// The NVIDIA driver's proc tree.
    pub proc_root: PathBuf,
    /// A static inventory, for hosts without NVML or /proc.
    #[serde(rename = "static")]
    pub static_gpus: Vec<super::Gpu>,
    /// Treat NVIDIA_VISIBLE_DEVICES in the container's env as a request (CUDA images carry
    /// NVIDIA_VISIBLE_DEVICES=all, so by default it is not).
    pub env_is_request: bool,
    /// No GPU or MIG instance is handed to two containers at once.
    pub exclusive: bool,
    /// Directories searched for an NVIDIA CDI spec.
    pub cdi_dirs: Vec<PathBuf>,
}

impl Default for GpuSettings {
    fn default() -> Self {
        GpuSettings {
            inventory: InventorySource::Auto,
            nvml_library: "libnvidia-ml.so.1".into(),
            dev_root: "/dev".into(),
            proc_root: "/proc/driver/nvidia".into(),
            static_gpus: Vec::new(),
            env_is_request: false,
            exclusive: true,
            cdi_dirs: vec!["/etc/cdi".into(), "/var/run/cdi".into()],
        }
    }
}
