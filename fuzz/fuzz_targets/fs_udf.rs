//! The UDF reader (volume descriptors, partition maps with VAT, sparing
//! and metadata partitions, file entries, allocation descriptors, FIDs):
//! the input is the volume; open it and walk it within a work budget
//! (diskimage_fs::fuzzing).
#![no_main]

use diskimage_fs::fuzzing::exercise_fs;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    exercise_fs(data);
});
