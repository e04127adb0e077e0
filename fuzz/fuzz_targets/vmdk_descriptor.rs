//! The VMDK descriptor parser and extent/parent resolution: the input is a
//! descriptor file `d.vmdk` next to a 64 KiB flat extent `flat.vmdk`, a
//! small sparse extent `sparse.vmdk` and a parent `base.vmdk` that
//! descriptors may name.
#![no_main]

use std::path::PathBuf;

use diskimage_formats::fuzzing::exercise_files;
use libfuzzer_sys::fuzz_target;

const BASE: &[u8] =
    b"# Disk DescriptorFile\nCID=1\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\nRW 128 FLAT \"flat.vmdk\" 0\n";

fuzz_target!(|data: &[u8]| {
    diskimage_formats::fuzzing::parse_vmdk_descriptor(data);
    let flat: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8).collect();
    exercise_files(&[
        (PathBuf::from("d.vmdk"), data.to_vec()),
        (PathBuf::from("flat.vmdk"), flat),
        (PathBuf::from("base.vmdk"), BASE.to_vec()),
    ]);
});
