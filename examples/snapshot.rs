//! Snapshots of a powered-off VMware VM through the library
//! (VixVM_CreateSnapshot without memory, VixVM_RevertToSnapshot,
//! VixVM_RemoveSnapshot), on a small VM made in FOLDER: one disk, a
//! snapshot, a write into the new delta, a revert to the snapshot (the
//! write is no longer seen), and the snapshot deleted again.
//!
//! ```text
//! cargo run --example snapshot -- /tmp/folder
//! ```

use std::path::Path;

use diskimage::formats::write::{self, CreateOptions};
use diskimage::snapshot::{self, SnapshotOptions};
use diskimage::vm::{Vm, VmOptions};
use diskimage::{BlockDevice, Format, OpenOptions};

/// The first 16 bytes at 1 MiB of the VM's current state.
fn head(vmx: &Path) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let opened = Vm::load(vmx)?.open(&VmOptions::new())?;
    let disk = opened.set.disks().first().ok_or("no disk")?;
    let mut buf = vec![0u8; 16];
    disk.image.read_at(&mut buf, 1 << 20)?;
    Ok(buf)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [folder] = args.as_slice() else {
        return Err("usage: snapshot FOLDER (an empty folder to build the VM in)".into());
    };
    let dir = Path::new(folder);
    std::fs::create_dir_all(dir)?;
    let disk = dir.join("demo.vmdk");
    let vmx = dir.join("demo.vmx");

    // A VM: one 16 MiB disk holding a few bytes, and its .vmx.
    write::create(&disk, &CreateOptions::new(Format::Vmdk, 16 << 20))?;
    {
        let w = write::open_writable(&disk, &OpenOptions::new())?;
        w.write_at(b"before snapshot.", 1 << 20)?;
        w.flush()?;
    }
    std::fs::write(
        &vmx,
        ".encoding = \"UTF-8\"\nconfig.version = \"8\"\nvirtualHW.version = \"19\"\n\
         displayName = \"demo\"\nscsi0.present = \"TRUE\"\nscsi0:0.present = \"TRUE\"\n\
         scsi0:0.fileName = \"demo.vmdk\"\n",
    )?;

    // VixVM_CreateSnapshot: a delta on the disk, the .vmsd and a .vmsn.
    let opts = SnapshotOptions::new().description(Some("before the change".into()));
    let made = snapshot::create(&vmx, "clean", &opts)?;
    println!("created {:?} (uid {}):", made.snapshot, made.uid);
    for f in &made.created {
        println!("  {}", f.display());
    }

    // The VM writes into its new delta (here: through the write side).
    let delta = &made.created[0];
    {
        let w = write::open_writable(delta, &OpenOptions::new())?;
        w.write_at(b"after snapshot..", 1 << 20)?;
        w.flush()?;
    }
    println!("current state: {:?}", String::from_utf8_lossy(&head(&vmx)?));

    // VixVM_RevertToSnapshot: a new delta on the snapshot's disk.
    snapshot::revert(&vmx, "clean", &SnapshotOptions::new())?;
    println!("after revert:  {:?}", String::from_utf8_lossy(&head(&vmx)?));

    // VixVM_RemoveSnapshot: merged back, the tree empty again.
    let gone = snapshot::delete(&vmx, "clean", &SnapshotOptions::new())?;
    println!("deleted {:?}; removed:", gone.snapshot);
    for f in &gone.removed {
        println!("  {}", f.display());
    }
    println!("after delete:  {:?}", String::from_utf8_lossy(&head(&vmx)?));
    println!("snapshots left: {}", Vm::load(&vmx)?.snapshots.len());
    Ok(())
}
