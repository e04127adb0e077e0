//! The VHD and VHDX writers' open and write paths on hostile files: the
//! input's first byte picks the format (bit 0 set: VHDX, the rest a patch
//! list; clear: VHD, the rest the file's bytes). The file is opened with
//! `open_writable`, written at a few places, read back and flushed, then
//! read again through `open`
//! (`diskimage_formats::fuzzing::write::vhd_target`). Seeds:
//! `corpus/write_vhd/` (small dynamic and fixed VHDs made by the writer,
//! a few writes in them).
#![no_main]

use diskimage_formats::fuzzing::write::vhd_target;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(finding) = vhd_target(data) {
        panic!("{finding}");
    }
});
