//! The VHDX reader: the input is a patch list over a zeroed file of 4 to
//! 32 MiB (`diskimage_formats::fuzzing::vhdx_input::expand_fuzz_input`: a flags byte, a
//! length byte, then `offset u32, len u16, bytes` records), with the CRC-32C of both headers,
//! both region tables and the log entries recomputed when flag bit 0 is
//! set, so mutations reach the metadata, the BAT, sector bitmaps and log
//! replay instead of stopping at a checksum.
#![no_main]

use diskimage_formats::fuzzing::exercise;
use diskimage_formats::fuzzing::vhdx_input::expand_fuzz_input;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    exercise("fuzz.vhdx", &expand_fuzz_input(data));
});
