//! Driving a reader the way a fuzz harness does: open bytes held in memory,
//! read every byte of what opened in odd-sized chunks within a budget, and
//! walk its map checking the [`BlockDevice`] contract. Used by the
//! cargo-fuzz targets in `fuzz/` and by the corpus replay in `cargo test`;
//! built only with the `fuzzing` feature and not part of the public API.
//! [`vmdk_input`] and [`vhdx_input`] are the structure-aware targets' recipes;
//! [`write`] drives the writers.

pub mod vhdx_input;
pub mod vmdk_input;
pub mod write;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::block_device::BlockDevice;
use crate::context::MemoryFiles;
use crate::options::OpenOptions;
use crate::probe::open_in_memory;

/// Bytes read from one opened input at most (inputs may claim terabytes).
pub const READ_BUDGET: u64 = 64 << 20;
/// Extents checked per map at most.
pub const MAP_BUDGET: usize = 1_000_000;

/// File names a harness can give its input, so that extension hints are
/// exercised too (`names[data[0] % len]`).
pub const NAMES: [&str; 8] = [
    "disk.img",
    "disk.iso",
    "disk.vmdk",
    "disk.vhd",
    "disk.vhdx",
    "disk.001",
    "disk",
    "disk.avhdx",
];

/// Opens `files` (the first is the image) with default and strict options;
/// reads and maps whatever opens. Panics only when the contract is broken:
/// a map that is not contiguous, an extent outside the device, or a
/// successful read beyond the device's size.
pub fn exercise_files(files: &[(PathBuf, Vec<u8>)]) {
    let Some((root, _)) = files.first() else {
        return;
    };
    let mem: MemoryFiles = files
        .iter()
        .map(|(p, d)| (p.clone(), Arc::from(d.as_slice())))
        .collect();
    exercise_memory(root, &mem);
}

/// Opens `data` as the single file `name` (see [`exercise_files`]),
/// copied once into the file store (inputs of many MiB, such as the
/// VHDX target's, cost their copies in every run).
pub fn exercise(name: &str, data: &[u8]) {
    let root = PathBuf::from(name);
    let mem: MemoryFiles = [(root.clone(), Arc::from(data))].into_iter().collect();
    exercise_memory(&root, &mem);
}

/// [`exercise_files`] over files already in memory.
fn exercise_memory(root: &Path, mem: &MemoryFiles) {
    for options in [
        OpenOptions::default(),
        OpenOptions {
            strict: true,
            ..OpenOptions::default()
        },
    ] {
        let Ok(img) = open_in_memory(root, mem, &options) else {
            continue;
        };
        exercise_device(&img);
    }
}

/// Reads a device in odd-sized chunks within [`READ_BUDGET`] and checks its map.
pub fn exercise_device(dev: &dyn BlockDevice) {
    let size = dev.size();
    let mut buf = vec![0u8; 65_537];
    let mut off = 0u64;
    let mut step = 511usize;
    while off < size.min(READ_BUDGET) {
        let n = usize::try_from((size - off).min(step as u64)).unwrap_or(step);
        if let Some(chunk) = buf.get_mut(..n) {
            let _ = dev.read_at(chunk, off);
        }
        off += n as u64;
        step = (step * 3 + 1) % 65_537 + 1;
    }
    if let Some(past) = buf.get_mut(..16) {
        assert!(
            dev.read_at(past, size.saturating_sub(8)).is_err() || size < 8,
            "read past the end succeeded"
        );
    }
    if let Ok(map) = dev.map(0, size) {
        let mut expect = 0;
        for e in map.iter().take(MAP_BUDGET) {
            assert_eq!(e.offset, expect, "map not contiguous");
            assert!(
                e.len > 0 && e.end() <= size,
                "bad extent {e:?} in a device of {size} bytes"
            );
            expect = e.end();
        }
    }
}

/// A chain of `links` VMDK descriptors in memory, `l0.vmdk` (the child)
/// to `l{links-1}.vmdk` (the base), each naming the next as its parent
/// and holding the one extent line `extent` under `createType`: deep and
/// hostile chains for tests and harnesses. Add the extent's file yourself.
pub fn vmdk_descriptor_chain(links: usize, create_type: &str, extent: &str) -> MemoryFiles {
    let mut files = MemoryFiles::new();
    for i in 0..links {
        let parent = if i + 1 < links {
            format!(
                "parentCID=00000001\nparentFileNameHint=\"l{}.vmdk\"\n",
                i + 1
            )
        } else {
            "parentCID=ffffffff\n".into()
        };
        let d = format!(
            "# Disk DescriptorFile\nversion=1\nCID=00000001\n{parent}\
             createType=\"{create_type}\"\n{extent}\n"
        );
        files.insert(PathBuf::from(format!("l{i}.vmdk")), Arc::from(d.as_bytes()));
    }
    files
}

/// Parses `data` as VMDK descriptor text (the parser alone, for the
/// `vmdk_descriptor` target).
pub fn parse_vmdk_descriptor(data: &[u8]) {
    let _ = crate::vmdk::descriptor::Descriptor::parse(data);
}
