//! The whole probe: any bytes, under a file name chosen by the first byte
//! (so extension hints are exercised), through `open_in_memory`, then read
//! and mapped.
#![no_main]

use diskimage_formats::fuzzing::{exercise, NAMES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let name = NAMES[usize::from(data.first().copied().unwrap_or(0)) % NAMES.len()];
    exercise(name, data);
});
