//! The VixMntapi flow without VDDK: open the disks of a VM state (or disk
//! images) as one set, list its volumes, find the installed systems, open
//! the system's volume and read one file from it.
//!
//! ```text
//! cargo run --example mntapi_flow -- fixtures/os/linux.vmdk
//! cargo run --example mntapi_flow -- VM.vmx --snapshot NAME --file /etc/hostname
//! ```
//!
//! | VixMntapi / VIX            | here                                   |
//! |----------------------------|----------------------------------------|
//! | VixVM_Open + snapshot      | `Vm::load`, `VmOptions::snapshot`      |
//! | VixMntapi_OpenDiskSet      | `Vm::open` / `DiskSet::open`           |
//! | VixMntapi_GetVolumeHandles | `DiskSet::volumes`                     |
//! | VixMntapi_GetOsInfo        | `os::detect`                           |
//! | VixMntapi_MountVolume      | `DiskSet::mount`                       |

use std::io::Read;
use std::path::PathBuf;

use diskimage::vm::{is_vm_path, Vm, VmOptions};
use diskimage::{DiskSet, OpenOptions, OsFamily};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut paths: Vec<PathBuf> = Vec::new();
    let mut snapshot = None;
    let mut file = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--snapshot" => snapshot = args.next(),
            "--file" => file = args.next(),
            _ => paths.push(a.into()),
        }
    }
    if paths.is_empty() {
        return Err("usage: mntapi_flow IMAGE...|VM.vmx [--snapshot NAME] [--file PATH]".into());
    }

    // VixVM_Open + VixMntapi_OpenDiskSet: a VM state, or images, as one set.
    let set = match paths.as_slice() {
        [vm] if is_vm_path(vm) => {
            let vm = Vm::load(vm)?;
            let opened = vm.open(&VmOptions::new().snapshot(snapshot))?;
            println!("state: {}", opened.state.name);
            opened.set
        }
        _ => DiskSet::open(&paths, &OpenOptions::default())?,
    };

    // VixMntapi_GetVolumeHandles + GetVolumeInfo.
    for v in set.volumes() {
        let fs = v.fs.as_ref();
        println!(
            "volume {}: {} {} bytes, {} {}",
            v.index,
            v.scheme.as_str(),
            v.size,
            fs.map_or("-", |f| f.kind.as_str()),
            fs.and_then(|f| f.label.as_deref()).unwrap_or("-"),
        );
    }

    // VixMntapi_GetOsInfo.
    let report = diskimage::os::detect(&set);
    let system = report.systems.first();
    if let Some(os) = system {
        println!(
            "os: {} {} {} ({}), host {}, on volume {}",
            os.family.as_str(),
            os.product_name.as_deref().unwrap_or("-"),
            os.version.as_deref().unwrap_or("-"),
            os.architecture.as_deref().unwrap_or("-"),
            os.hostname.as_deref().unwrap_or("-"),
            os.os_folder.volume,
        );
    }

    // VixMntapi_MountVolume: the system's volume, or the one readable volume.
    let volume = match system {
        Some(os) => set
            .volume(os.os_folder.volume)
            .ok_or("the system's volume is not in the set")?,
        None => set.default_volume(None)?,
    };
    let fs = set.mount(volume)?;
    let path = file.unwrap_or_else(|| match system.map(|s| s.family) {
        Some(OsFamily::Windows) => "/Windows/System32/config/SOFTWARE".into(),
        _ => "/etc/hostname".into(),
    });
    let mut data = Vec::new();
    fs.open(&path)?.read_to_end(&mut data)?;
    let head = String::from_utf8_lossy(data.get(..16).unwrap_or(&data))
        .escape_debug()
        .to_string();
    println!("{path}: {} bytes, starting \"{head}\"", data.len());
    Ok(())
}
