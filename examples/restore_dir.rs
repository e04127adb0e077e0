//! Restoring one directory out of a VM disk with the extraction engine:
//! safe names, renames reported, loops refused, times kept.
//!
//! ```text
//! cargo run --example restore_dir -- fixtures/os/linux.vmdk /etc /tmp/restored
//! ```

use diskimage::extract::{extract, ExtractOptions, Observer, Report};
use diskimage::{DiskSet, OpenOptions};

/// Prints every report (renames, unreadable entries) as it comes.
struct Log;

impl Observer for Log {
    fn report(&self, report: &Report) {
        println!("report: {report}");
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [image, dir, target] = args.as_slice() else {
        return Err("usage: restore_dir IMAGE DIR TARGET".into());
    };
    let set = DiskSet::open(&[image], &OpenOptions::default())?;
    // The system's root volume when there is one, else the one readable volume.
    let report = diskimage::os::detect(&set);
    let volume = match report.systems.first() {
        Some(os) => set
            .volume(os.os_folder.volume)
            .ok_or("the system's volume is not in the set")?,
        None => set.default_volume(None)?,
    };
    let summary = extract(
        &volume.device(),
        dir,
        target.as_ref(),
        &ExtractOptions::new().threads(std::num::NonZeroUsize::new(2)),
        &Log,
    )?;
    println!(
        "restored {dir} of volume {}: {} files, {} renamed, {} failed",
        volume.index, summary.files, summary.renamed, summary.failed
    );
    Ok(())
}
