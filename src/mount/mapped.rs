//! Image files mapped into this process, so that a raw mount can answer a
//! read with the image file's own page-cache pages: the kernel copies them
//! straight into the reader's buffer while it takes the reply (`writev` of
//! `/dev/fuse`), where a `pread` into a buffer of ours would copy every
//! byte once more first.
//!
//! The module holds the mount's one `unsafe` block.

#![allow(unsafe_code)]

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, RwLock};

use memmap2::Mmap;

/// The maps of the image files a mount has answered from, each made at
/// its first use and kept for the life of the mount.
#[derive(Default)]
pub(super) struct Maps {
    /// By descriptor: the devices of a mount keep their image files open
    /// (and so their descriptors taken) as long as the mount lives, so a
    /// number names one file throughout. `None`: the file cannot be mapped.
    maps: RwLock<HashMap<RawFd, Option<Arc<Mmap>>>>,
}

impl Maps {
    /// `len` bytes of `file` from `offset`, mapped, or `None` when the file
    /// cannot be mapped or is shorter than that.
    pub(super) fn bytes(&self, file: &File, offset: u64, len: usize) -> Option<Mapped> {
        let fd = file.as_raw_fd();
        let found = self.maps.read().ok().and_then(|m| m.get(&fd).cloned());
        let map = match found {
            Some(map) => map?,
            None => {
                let map = map_read_only(file).map(Arc::new);
                let mut maps = self.maps.write().ok()?;
                maps.entry(fd).or_insert(map).clone()?
            }
        };
        let start = usize::try_from(offset).ok()?;
        let end = start.checked_add(len)?;
        (end <= map.len()).then_some(Mapped { map, start, end })
    }
}

/// Bytes of a mapped image file.
pub(super) struct Mapped {
    map: Arc<Mmap>,
    start: usize,
    end: usize,
}

impl Mapped {
    /// The bytes, to hand to the kernel in a reply; never read here.
    pub(super) fn bytes(&self) -> &[u8] {
        self.map.get(self.start..self.end).unwrap_or_default()
    }
}

fn map_read_only(file: &File) -> Option<Mmap> {
    // SAFETY: a map of a file is sound as long as nobody truncates or
    // changes the file while it is mapped, which Rust cannot enforce. Here
    // the image files are opened read-only and never written through any
    // handle of ours, and the mapped bytes are never read by this process:
    // they are only passed to `writev` of `/dev/fuse`, where the kernel
    // copies them into the reader's pages. Should another process truncate
    // the file, that copy fails (`EFAULT`, the reader gets `EIO`) instead
    // of faulting this process (`SIGBUS`), and a change of the file shows
    // as it would through `pread`.
    unsafe { Mmap::map(file) }.ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn bytes_of_a_file_once_mapped_and_none_past_its_end() {
        let mut f = tempfile::tempfile().expect("tempfile");
        let data: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
        f.write_all(&data).expect("write");
        let maps = Maps::default();
        let m = maps.bytes(&f, 4096, 100).expect("mapped");
        assert_eq!(m.bytes(), &data[4096..4196]);
        assert_eq!(
            maps.bytes(&f, 9_900, 100).map(|m| m.bytes().len()),
            Some(100)
        );
        assert!(maps.bytes(&f, 9_901, 100).is_none());
        assert_eq!(maps.maps.read().map(|m| m.len()).unwrap_or(0), 1);
    }
}
