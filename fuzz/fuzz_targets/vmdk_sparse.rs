//! The VMDK hosted sparse extent (KDMV header, embedded descriptor, grain directory and tables, zeroed grains): the input is the whole file.
#![no_main]

use diskimage_formats::fuzzing::exercise;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    exercise("disk.vmdk", data);
});
