//! The integration tests: one binary, one module per topic.
//!
//! - `fixtures`: every image under `fixtures/<topic>/` against the
//!   `expected.tsv`, `errors.tsv` and `warnings.tsv` made with it.
//! - `corpus`: the real-world images of `../shared/corpus/` against `TRUTH.tsv`.
//! - `cli`: the `diskimage` binary, end to end.
//! - `fuzz_corpus`: every fuzz seed and crash reproducer through `open`, never a panic.
//! - `mount`: `diskimage mount` through FUSE (skips without FUSE unless DISKIMAGE_REQUIRE_FUSE=1).
//! - `regression`: one test per bug found, named after it.
//! - `volumes`: MBR, GPT and LVM2 disk sets against sfdisk, mmls, blkid and the lvm tools.

mod cli;
mod common;
mod corpus;
mod filesystems;
mod fixtures;
mod fuzz_corpus;
mod mount;
mod regression;
mod volumes;
