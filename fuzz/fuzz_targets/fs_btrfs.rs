//! The Btrfs file-system adapter: the input is the volume; open it and walk
//! it within a work budget (diskimage_fs::fuzzing).
#![no_main]

use diskimage_fs::fuzzing::exercise_fs;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    exercise_fs(data);
});
