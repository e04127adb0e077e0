//! The QCOW2 reader: the input is `disk.qcow2` (header, extensions,
//! L1/L2 tables, compressed and extended-L2 clusters, snapshot table), and
//! the same bytes are also present as `base.qcow2` and `data.bin`, so an
//! input naming those as its backing or external data file reaches the
//! chain and data-file code. Seeds: `corpus/qcow2/` (v2, v3, extended L2,
//! compressed, internal snapshot; 4 KiB and 16 KiB clusters).
#![no_main]

use std::path::PathBuf;

use diskimage_formats::fuzzing::exercise_files;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    exercise_files(&[
        (PathBuf::from("disk.qcow2"), data.to_vec()),
        (PathBuf::from("base.qcow2"), data.to_vec()),
        (PathBuf::from("data.bin"), data.to_vec()),
    ]);
});
