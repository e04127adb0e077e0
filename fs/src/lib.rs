//! File systems over any [`BlockDevice`](diskimage_formats::BlockDevice).
//!
//! This crate sees only a device (a whole disk or a volume); it knows
//! nothing about containers. Today it holds [`detect`]: identifying a file
//! system (or other volume content) by its superblock, with its label and
//! serial/UUID. Reading files (NTFS, ext2/3/4, FAT, ISO 9660 behind one
//! `FileSystem` trait) lands with the file-system issue; until then no
//! reader is claimed.

#![deny(unsafe_code)]
#![warn(clippy::indexing_slicing, clippy::unwrap_used, clippy::panic)]
#![cfg_attr(
    test,
    allow(clippy::indexing_slicing, clippy::unwrap_used, clippy::panic)
)]

pub mod detect;

pub use detect::{detect, FsInfo, FsKind};
