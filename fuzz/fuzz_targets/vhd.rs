//! The VHD reader: the input is `disk.vhd` (footer at the end or its copy
//! at 0, dynamic header, BAT, sector bitmaps, parent locators), and the
//! same bytes are also present as `parent.vhd`, so a differencing input
//! naming that parent reaches the chain code (unique-ID and size checks,
//! reads through the parent). Seeds: `corpus/vhd/` (tiny fixed, dynamic with
//! 1 KiB blocks and partial bitmaps, differencing, footer copy only).
#![no_main]

use std::path::PathBuf;

use diskimage_formats::fuzzing::exercise_files;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    exercise_files(&[
        (PathBuf::from("disk.vhd"), data.to_vec()),
        (PathBuf::from("parent.vhd"), data.to_vec()),
    ]);
});
