//! The VDI reader: the input is `disk.vdi` (pre-header, header versions 0
//! and 1.x, block map, data blocks), and the same bytes are also present
//! as `parent.vdi` in the same folder, so a differencing input whose
//! parent UUID is its own reaches the parent search and the chain code.
//! Seeds: `corpus/vdi/` (a qemu-made dynamic image, a 256 KiB-block image
//! with block extra data and ZERO blocks, a differencing image; each cut
//! to a few KiB by `fixtures/vdi/make.sh`).
#![no_main]

use std::path::PathBuf;

use diskimage_formats::fuzzing::exercise_files;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    exercise_files(&[
        (PathBuf::from("disk.vdi"), data.to_vec()),
        (PathBuf::from("parent.vdi"), data.to_vec()),
    ]);
});
