//! An incremental backup of a VM between two states (VDDK's
//! QueryChangedDiskAreas, then Read): the byte runs of each disk that may
//! differ between a snapshot and a later state, the files added, removed
//! and changed on each volume, and, given an output folder, each disk's
//! changed runs copied out of the later state into a sparse raw file
//! (`OUT/disk-N.raw`; laid over a full copy of the older state, it gives
//! the later one).
//!
//! ```text
//! cargo run --example changes -- VM.vmx FROM [TO|current] [OUT]
//! ```

use std::fs::File;
use std::os::unix::fs::FileExt;

use diskimage::changes::{areas_of, files_of, ChangeOptions};
use diskimage::vm::{Vm, VmOptions};
use diskimage::BlockDevice;

/// Bytes copied per read.
const CHUNK: u64 = 1 << 20;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (vm_path, from, to, out) = match args.as_slice() {
        [v, f] => (v, f.as_str(), "current", None),
        [v, f, t] => (v, f.as_str(), t.as_str(), None),
        [v, f, t, o] => (v, f.as_str(), t.as_str(), Some(o)),
        _ => return Err("usage: changes VM FROM [TO|current] [OUT]".into()),
    };
    let vm = Vm::load(vm_path.as_ref())?;
    let opts = ChangeOptions::new();

    // QueryChangedDiskAreas, per disk.
    let disks = areas_of(&vm, from, to, &opts)?;
    for d in &disks {
        println!(
            "disk {}: {} run(s), {} bytes may differ",
            d.slot,
            d.runs.len(),
            d.changed_bytes()
        );
        if let Some(note) = &d.note {
            println!("  {note}");
        }
    }

    // The files, volume by volume.
    for v in files_of(&vm, from, to, &opts)? {
        let number = v
            .to_volume
            .or(v.from_volume)
            .map_or("-".to_owned(), |n| n.to_string());
        println!("volume {number} ({}):", v.fs.as_deref().unwrap_or("-"));
        for c in &v.changes {
            println!("  {:<8} {} {}", c.change.as_str(), c.path, c.what.join(","));
        }
    }

    // Read: copy the changed runs of the later state.
    let Some(out) = out else { return Ok(()) };
    std::fs::create_dir_all(out)?;
    let snapshot = (!to.eq_ignore_ascii_case("current")).then(|| to.to_owned());
    let opened = vm.open(&VmOptions::new().snapshot(snapshot))?;
    for (i, disk) in opened.set.disks().iter().enumerate() {
        let Some(slot) = opened.state.disks.get(i).map(|d| &d.slot) else {
            continue;
        };
        let Some(changes) = disks.iter().find(|d| &d.slot == slot) else {
            continue;
        };
        let file = File::create(std::path::Path::new(out).join(format!("disk-{i}.raw")))?;
        file.set_len(disk.image.size())?;
        let mut buf = vec![0u8; CHUNK as usize];
        for run in &changes.runs {
            let mut at = run.offset;
            while at < run.end().min(disk.image.size()) {
                let n = CHUNK.min(run.end() - at).min(disk.image.size() - at) as usize;
                disk.image.read_at(&mut buf[..n], at)?;
                file.write_all_at(&buf[..n], at)?;
                at += n as u64;
            }
        }
        println!("disk-{i}.raw: {} bytes copied", changes.changed_bytes());
    }
    Ok(())
}
