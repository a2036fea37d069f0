//! `ds01ctl gpus`: who holds which GPU or MIG instance now, since when, in which container, and
//! which are held after a stop until when.

use std::fmt::Write;
use std::time::{Duration, UNIX_EPOCH};

use crate::error::Result;
use crate::gpu::alloc::{self, Status};
use crate::gpu::nvml::InProcess;
use crate::gpu::store::{HostWorld, Store};
use crate::gpu::{inventory, Gpu};
use crate::host::clock::rfc3339;
use crate::policy::settings::Settings;

fn when(secs: u64) -> String {
    rfc3339(UNIX_EPOCH + Duration::from_secs(secs)).chars().take(19).collect::<String>().replace('T', " ")
}

/// The table; `refresh` re-queries the inventory instead of using the cache.
pub fn render(settings: &Settings, refresh: bool) -> Result<String> {
    if refresh {
        let _ = std::fs::remove_file(settings.state_dir.join("inventory.json"));
    }
    let inv: Vec<Gpu> = inventory::load(&settings.gpu, &settings.state_dir, &InProcess)?;
    let mut state = Store::new(&settings.state_dir).peek()?;
    let now =
        std::time::SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default();
    // Show the world as the next create will see it (nothing is written).
    alloc::reconcile(&mut state, now, &HostWorld { docker_root: settings.docker_root.clone() });
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<6} {:<44} {:<8} {:<12} {:<24} {:<19} HELD UNTIL",
        "GPU", "UUID", "STATUS", "OWNER", "CONTAINER", "SINCE"
    );
    for u in alloc::units(&inv) {
        let g = &inv[u.gpu];
        let label = match u.mig {
            Some(m) => format!("{}:{m}", g.index),
            None => g.index.to_string(),
        };
        let holders: Vec<&alloc::Allocation> =
            state.allocations.iter().filter(|a| a.devices.contains(&u.uuid)).collect();
        if holders.is_empty() {
            let _ = writeln!(out, "{label:<6} {:<44} {:<8}", u.uuid, "free");
        }
        for a in holders {
            let (status, until) = match a.status {
                Status::Running => ("in use", "-".to_owned()),
                Status::Held => ("held", a.held_until.map(when).unwrap_or_else(|| "indefinitely".into())),
            };
            let name = a.name.clone().unwrap_or_else(|| a.container.chars().take(12).collect());
            let _ = writeln!(
                out,
                "{label:<6} {:<44} {status:<8} {:<12} {name:<24} {:<19} {until}",
                u.uuid,
                a.owner,
                when(a.since)
            );
        }
    }
    if inv.is_empty() {
        let _ = writeln!(
            out,
            "(no GPUs in the inventory: NVML, /proc/driver/nvidia and the static list are all empty)"
        );
    }
    Ok(out)
}
