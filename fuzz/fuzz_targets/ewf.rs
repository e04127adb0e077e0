//! The EWF reader: the input is `disk.E01` (segment header, section
//! chain, header/header2 text, volume, tables, chunks, hash sections),
//! and the same bytes renumbered as segment 2 are `disk.E02`, so an input
//! whose chain ends in `next` reaches the multi-segment code. Seeds:
//! `corpus/ewf/` (ewfacquire uncompressed, fast, best/EnCase 5, and
//! ewfacquirestream/FTK; made by fixtures/ewf/make.sh).
#![no_main]

use std::path::PathBuf;

use diskimage_formats::fuzzing::exercise_files;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut second = data.to_vec();
    if let Some(n) = second.get_mut(9..11) {
        n.copy_from_slice(&2u16.to_le_bytes());
    }
    exercise_files(&[
        (PathBuf::from("disk.E01"), data.to_vec()),
        (PathBuf::from("disk.E02"), second),
    ]);
});
