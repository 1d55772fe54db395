//! Fake GPUs (`config/docker/fake_gpus`): reported like real devices, flagged `fake`.

use crate::config::FakeGpu;
use crate::host::{GpuDevice, GpuInventory};

/// Appends `fakes` to the inventory, numbering them after the devices already there.
pub fn append(inv: &mut GpuInventory, fakes: &[FakeGpu]) {
    let first = inv.devices.len() as u32;
    inv.devices
        .extend(fakes.iter().enumerate().map(|(i, g)| GpuDevice {
            index: first + i as u32,
            uuid: g.id.clone(),
            name: g.name.clone(),
            memory_total_bytes: g.ram_total,
            fake: true,
            ..Default::default()
        }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fakes_are_numbered_after_real_devices_and_flagged() {
        let mut inv = GpuInventory {
            devices: vec![GpuDevice {
                index: 0,
                uuid: "GPU-real".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        append(
            &mut inv,
            &[FakeGpu {
                id: "GPU-00000000-0000-0000-0000-000000000001".into(),
                name: "Fake".into(),
                ram_total: 1 << 30,
            }],
        );
        assert_eq!(inv.devices.len(), 2);
        assert_eq!(inv.devices[1].index, 1);
        assert!(inv.devices[1].fake && !inv.devices[0].fake);
        assert_eq!(inv.devices[1].memory_total_bytes, 1 << 30);
    }
}
