//! GPUs: the inventory (NVML, /proc, or static settings), requests, exclusive allocation with
//! quotas and holds, and the device nodes that make an allocation visible in a container.

pub mod alloc;
pub mod cdi;
pub mod inventory;
pub mod nvml;
pub mod request;
pub mod store;

use serde::{Deserialize, Serialize};

/// A physical GPU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gpu {
    /// NVML index (CUDA order with CUDA_DEVICE_ORDER=PCI_BUS_ID).
    pub index: u32,
    /// `GPU-…` UUID.
    pub uuid: String,
    /// Minor number of /dev/nvidia<minor>.
    pub minor: u32,
    /// Product name.
    #[serde(default)]
    pub name: String,
    /// Memory in MiB.
    #[serde(default)]
    pub memory_mib: u64,
    /// MIG mode enabled.
    #[serde(default)]
    pub mig_enabled: bool,
    /// MIG instances (when MIG mode is on).
    #[serde(default)]
    pub migs: Vec<Mig>,
}

/// A MIG instance of a GPU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mig {
    /// `MIG-…` UUID.
    pub uuid: String,
    /// GPU instance id.
    pub gi: u32,
    /// Compute instance id.
    pub ci: u32,
    /// /dev/nvidia-caps nodes granting access to this instance (e.g. `/dev/nvidia-caps/nvidia-cap21`).
    #[serde(default)]
    pub caps: Vec<String>,
}
