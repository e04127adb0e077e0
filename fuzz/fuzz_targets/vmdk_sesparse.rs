//! The VMDK seSparse extent (constant and volatile headers, u64 grain directory and tables): the input is the whole file.
#![no_main]

use diskimage_formats::fuzzing::exercise;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    exercise("disk.vmdk", data);
});
