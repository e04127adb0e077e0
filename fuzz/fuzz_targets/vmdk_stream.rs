//! The VMDK streamOptimized extent (footer header, grain markers, deflated grains): the input is the whole file.
#![no_main]

use diskimage_formats::fuzzing::exercise;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    exercise("disk.vmdk", data);
});
