//! GPUs: the inventory (NVML, /proc, or static settings), requests, exclusive allocation with
//! quotas and holds, and the device nodes that make an allocation visible in a container.

pub mod alloc;
pub mod cdi;
pub mod inventory;
pub mod nvml;
pub mod request;
pub mod settings;
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
    /// Compute slices of the instance's profile (the `2` of `2g.20gb`), when known: its weight
    /// in GPU-equivalents is this over 7, as DS01 counts it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slices: Option<u32>,
}

/// The compute slices in a MIG profile or a MIG device's name: the `N` of the first `Ng`
/// (`2g.20gb`, `NVIDIA A100-SXM4-80GB MIG 3g.40gb`, `1c.2g.20gb`).
pub fn profile_slices(text: &str) -> Option<u32> {
    text.split(|c: char| c == '.' || c.is_whitespace())
        .find_map(|part| part.strip_suffix('g').and_then(|n| n.parse::<u32>().ok()))
        .filter(|n| (1..=7).contains(n))
}

#[cfg(test)]
mod tests {
    use super::profile_slices;

    #[test]
    fn compute_slices_from_a_profile_or_a_device_name() {
        assert_eq!(profile_slices("2g.20gb"), Some(2));
        assert_eq!(profile_slices("NVIDIA A100-SXM4-80GB MIG 3g.40gb"), Some(3));
        assert_eq!(profile_slices("1c.2g.20gb"), Some(2), "a compute instance of a 2g GPU instance");
        assert_eq!(profile_slices("7g.80gb"), Some(7));
        assert_eq!(profile_slices("NVIDIA H100 80GB HBM3"), None);
        assert_eq!(profile_slices(""), None);
    }
}
