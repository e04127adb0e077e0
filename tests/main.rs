//! The integration tests: one binary, one module per topic.
//!
//! - `fixtures`: every image under `fixtures/<topic>/` against the
//!   `expected.tsv`, `errors.tsv` and `warnings.tsv` made with it.
//! - `corpus`: the real-world images of `../shared/corpus/` against `TRUTH.tsv`.
//! - `cli`: the `diskimage` binary, end to end.
//! - `iso`: ISO 9660 / Joliet / Rock Ridge / El Torito images against xorriso, isoinfo and TSK.
//! - `fuzz_corpus`: every fuzz seed and crash reproducer through `open`, never a panic.
//! - `regression`: one test per bug found, named after it.
//! - `volumes`: MBR, GPT and LVM2 disk sets against sfdisk, mmls, blkid and the lvm tools.

mod cli;
mod common;
mod corpus;
mod filesystems;
mod fixtures;
mod fuzz_corpus;
mod iso;
mod regression;
mod volumes;
