//! The ISO reader: the input is placed at sector 16 of an otherwise empty
//! 17-sector image so that every run reaches the recognition-sequence and
//! primary-descriptor parsing.
#![no_main]

use diskimage_formats::fuzzing::exercise;
use libfuzzer_sys::fuzz_target;

const SYSTEM_AREA: usize = 16 * 2048;

fuzz_target!(|data: &[u8]| {
    let mut image = vec![0u8; SYSTEM_AREA];
    image.extend_from_slice(data);
    let len = image.len().max(SYSTEM_AREA + 2048);
    image.resize(len, 0);
    exercise("fuzz.iso", &image);
});
