//! The registry hive reader (base block, hive bins, cells, nk keys, lf/lh/
//! li/ri subkey lists, vk values with resident, cell and big data) over
//! the input as a hive, walking every key and value it reaches.
#![no_main]

use diskimage::fuzzing::exercise_regf;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    exercise_regf(data);
});
