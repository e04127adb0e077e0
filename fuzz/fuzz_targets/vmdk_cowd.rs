//! The VMDK COWD (vmfsSparse) extent (2048-byte header, u32 grain directory and 4096-entry tables): the input is the whole file.
#![no_main]

use diskimage_formats::fuzzing::exercise;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    exercise("disk.vmdk", data);
});
