//! The crate's one `unsafe` block: mapping an image file into memory.

#![allow(unsafe_code)]

use std::fs::File;

use memmap2::Mmap;

/// Maps `file` read-only.
pub(crate) fn map_read_only(file: &File) -> std::io::Result<Mmap> {
    // SAFETY: memmap2 requires that the file is not truncated or modified
    // while mapped, which Rust cannot enforce. The file is opened read-only
    // by this crate and never written through any handle of ours; another
    // process truncating it would make accesses fault (SIGBUS). That is why
    // mapping is an option (`OpenOptions::mmap`) and positional reads are
    // the default: callers choose mmap only for images nobody else changes
    // (evidence copies, backups at rest).
    unsafe { Mmap::map(file) }
}
