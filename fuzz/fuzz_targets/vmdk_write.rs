//! The VMDK writer's own parsing of an image opened for writing (header,
//! embedded descriptor, grain directory and its redundant copy, grain
//! tables): the input is a whole hosted sparse file, opened with
//! `open_writable`, written at a few places, read back and flushed
//! (`diskimage_formats::fuzzing::write::vmdk_target`). An error is fine;
//! a panic, or a completed write that does not read back, is a bug.
#![no_main]

use diskimage_formats::fuzzing::write::vmdk_target;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(finding) = vmdk_target(data) {
        panic!("{finding}");
    }
});
