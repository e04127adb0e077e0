//! The volume layer (MBR with its EBR chain, GPT primary and backup, BSD
//! disklabels, Apple Partition Maps, Sun/SGI/Atari recognition, LVM2
//! label, metadata text and LV mapping, whole-disk detection) over the
//! input as an in-memory disk, as two disks (LVM2 across disks), and with
//! 4096-byte sectors.
#![no_main]

use diskimage::fuzzing::exercise_volumes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    exercise_volumes(data);
});
