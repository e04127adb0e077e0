//! The VM configuration parser for `.vmsn` snapshot state files, on arbitrary bytes
//! (through `diskimage::fuzzing::exercise_vm_config`).
#![no_main]

use diskimage::fuzzing::exercise_vm_config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    exercise_vm_config("vmsn", data);
});
