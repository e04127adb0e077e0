//! The write side through the library (VixDiskLib_Create, CreateChild,
//! Write, Clone; MergeVirtualDisk): a new VMDK, a delta of it, writes
//! into the delta (copy-on-write from the parent), a streamOptimized
//! clone of the chain, and the delta committed into its parent.
//!
//! ```text
//! cargo run --example write_flow -- /tmp/folder
//! ```

use std::path::Path;

use diskimage::formats::write::{self, commit::commit, convert::convert, CreateOptions, Subformat};
use diskimage::{BlockDevice, Format, OpenOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [folder] = args.as_slice() else {
        return Err("usage: write_flow FOLDER".into());
    };
    let dir = Path::new(folder);
    let base = dir.join("base.vmdk");
    let delta = dir.join("delta.vmdk");
    let clone = dir.join("clone.vmdk");

    // VixDiskLib_Create: a 64 MiB monolithicSparse disk.
    write::create(&base, &CreateOptions::new(Format::Vmdk, 64 << 20))?;
    // VixDiskLib_Open (writable) + Write + Flush.
    {
        let disk = write::open_writable(&base, &OpenOptions::new())?;
        disk.write_at(b"written into the base", 1 << 20)?;
        disk.flush()?;
    }
    // VixDiskLib_CreateChild: the base is only read.
    write::create_child(&delta, &base, &CreateOptions::new(Format::Vmdk, 0))?;
    {
        let disk = write::open_writable(&delta, &OpenOptions::new())?;
        // Inside the base's grain: the rest of the grain is copied from the base.
        disk.write_at(b"THE", (1 << 20) + 13)?;
        disk.flush()?;
    }
    // VixDiskLib_Clone: the chain as one streamOptimized file.
    let chain = diskimage::open(&delta, &OpenOptions::new())?;
    let options = CreateOptions::new(Format::Vmdk, 0).subformat(Some(Subformat::StreamOptimized));
    convert(
        chain.device().as_ref(),
        &clone,
        &options,
        &mut |done, total| {
            if done == total {
                println!("cloned {total} bytes");
            }
        },
    )?;
    drop(chain);
    // MergeVirtualDisk: the delta's grains into the base.
    let report = commit(&delta, &OpenOptions::new(), false, &mut |_, _| {})?;
    println!(
        "committed {} bytes into {}",
        report.bytes,
        report.parent.display()
    );
    let mut text = [0u8; 21];
    let merged = diskimage::open(&base, &OpenOptions::new())?;
    merged.device().read_at(&mut text, 1 << 20)?;
    println!("base now reads: {}", String::from_utf8_lossy(&text));
    Ok(())
}
