//! Driving the volume layer the way a fuzz harness does: bytes in memory
//! become one disk (or two, for LVM2 sets), a [`DiskSet`] is built over
//! them, and every volume that opens is read in odd-sized chunks within a
//! budget. Used by `fuzz/fuzz_targets/volumes.rs` and by the seed replay in
//! `cargo test`. Errors are fine; a panic or an over-read is a bug.

use std::path::Path;
use std::sync::Arc;

use diskimage_formats::{BlockDevice, DiskImage, Format, ImageInfo, MemoryDevice, OpenOptions};

use crate::diskset::DiskSet;

/// Bytes read from all volumes of one input at most.
pub const READ_BUDGET: u64 = 16 << 20;

fn disk(name: &str, bytes: &[u8], sector_size: u32) -> DiskImage {
    let dev = MemoryDevice::new(bytes.to_vec()).with_sector_size(sector_size);
    let size = dev.size();
    DiskImage::new(
        Arc::new(dev),
        ImageInfo::new(Path::new(name), Format::Raw, size, sector_size),
    )
}

/// Builds disk sets from `data` and reads what they hold: the whole input
/// as one disk with 512- and 4096-byte sectors, and the input split in two
/// halves as a two-disk set.
pub fn exercise_volumes(data: &[u8]) {
    let half = data.len() / 2;
    let sets = [
        vec![disk("a.img", data, 512)],
        vec![disk("a.img", data, 4096)],
        vec![
            disk("a.img", data.get(..half).unwrap_or_default(), 512),
            disk("b.img", data.get(half..).unwrap_or_default(), 512),
        ],
    ];
    for images in sets {
        let Ok(set) = DiskSet::from_images(images, &OpenOptions::default()) else {
            continue;
        };
        let mut budget = READ_BUDGET;
        for v in set.volumes() {
            let dev = v.device();
            assert_eq!(dev.size(), v.size, "volume {} size", v.index);
            let mut buf = vec![0u8; 4099];
            let mut pos = 0u64;
            while pos < dev.size() && budget > 0 {
                let n = (dev.size() - pos).min(buf.len() as u64) as usize;
                let Some(chunk) = buf.get_mut(..n) else { break };
                if dev.read_at(chunk, pos).is_err() {
                    break;
                }
                pos += n as u64;
                budget = budget.saturating_sub(n as u64);
            }
            let mut one = [0u8; 1];
            assert!(
                dev.read_at(&mut one, dev.size()).is_err(),
                "a read past the end of volume {} must fail",
                v.index
            );
            if let Ok(map) = dev.map(0, dev.size()) {
                let mut expect = 0;
                for e in map {
                    assert_eq!(
                        e.offset, expect,
                        "map of volume {} is not contiguous",
                        v.index
                    );
                    expect = e.end();
                }
                assert_eq!(
                    expect,
                    dev.size(),
                    "map of volume {} does not cover it",
                    v.index
                );
            }
        }
    }
}

/// Values and keys visited in one hive at most.
pub const REGF_BUDGET: usize = 100_000;

/// Opens `data` as a registry hive and walks every key and value it
/// reaches (depth and count bounded), decoding each value's data. Used by
/// `fuzz/fuzz_targets/regf.rs` and the seed replay. Errors are fine; a
/// panic is a bug.
pub fn exercise_regf(data: &[u8]) {
    let Ok(hive) = crate::os::regf::Hive::new("fuzz.hive", data.to_vec()) else {
        return;
    };
    let _ = hive.key("Microsoft\\Windows NT\\CurrentVersion");
    let Ok(root) = hive.root_key() else { return };
    let mut budget = REGF_BUDGET;
    let mut stack = vec![(root, 0u32)];
    let mut seen = std::collections::HashSet::new();
    while let Some((key, depth)) = stack.pop() {
        if !seen.insert(key.offset()) {
            continue;
        }
        let _ = key.name();
        if let Ok(values) = key.values() {
            for v in values {
                let _ = (v.name(), v.data(), v.string(), v.number());
                budget = budget.saturating_sub(1);
            }
        }
        if depth >= 64 || budget == 0 {
            continue;
        }
        if let Ok(subkeys) = key.subkeys() {
            for k in subkeys {
                budget = budget.saturating_sub(1);
                if budget == 0 {
                    break;
                }
                stack.push((k, depth + 1));
            }
        }
    }
}

/// Parses `data` as the VM configuration a fuzz target is named after
/// (`vmx`, `vmsd`, `vbox`; `vmsn`: a snapshot state file) and walks what it gives: errors are fine, a
/// panic, a hang or an unbounded allocation is a bug. Used by
/// `fuzz/fuzz_targets/{vmx,vmsd,vbox,vmsn}.rs` and by the seed replay.
pub fn exercise_vm_config(target: &str, data: &[u8]) {
    use crate::vm::{vbox::Vbox, vmsd::Vmsd, vmx::Vmx};
    match target {
        "vmx" => {
            if let Ok(v) = Vmx::parse(data) {
                for d in &v.disks {
                    assert!(!d.file.trim().is_empty(), "a disk without a file name");
                    let _ = d.independent();
                }
            }
        }
        "vmsd" => {
            if let Ok(v) = Vmsd::parse(data) {
                assert!(v.snapshots.len() <= crate::vm::vmsd::MAX_SNAPSHOTS);
            }
        }
        "vmsn" => {
            if let Ok(text) = crate::snapshot::vmsn::config(data) {
                assert!(text.len() <= data.len());
                let _ = Vmx::parse(&text);
            }
        }
        "vbox" => {
            if let Ok(v) = Vbox::parse(data) {
                assert!(v.disks.len() <= data.len());
            }
        }
        _ => {}
    }
}
