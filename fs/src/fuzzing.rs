//! The body of the file-system fuzz targets, shared with the corpus replay
//! test: open the input as a file system and walk it within a work budget.

use std::io::Read;
use std::ops::ControlFlow;
use std::sync::Arc;

use diskimage_formats::{BlockDevice, MemoryDevice};

use crate::file_system::{join, FileType, StoredRun};

/// UDF's descriptor tag CRC (CRC-ITU), for tests that patch a descriptor
/// and must keep its tag valid.
pub use crate::udf::descriptor::crc_itu;

/// Most entries visited in one run.
pub const MAX_ENTRIES: usize = 4096;
/// Deepest directory walked in one run.
pub const MAX_DEPTH: usize = 32;
/// Most bytes read from one file.
pub const MAX_FILE_BYTES: u64 = 1 << 20;
/// Most file bytes read in one walk (4,096 files of 1 MiB would be 4 GiB).
pub const MAX_TOTAL_BYTES: u64 = 16 << 20;

/// Reads at most [`MAX_FILE_BYTES`] of `r`, and no more than `left` allows;
/// the bytes and the most it could read, if the read did not fail.
fn drain(r: &mut dyn Read, left: &mut u64) -> Option<(Vec<u8>, u64)> {
    let mut sink = Vec::new();
    let limit = MAX_FILE_BYTES.min(*left);
    let read = r.take(limit).read_to_end(&mut sink);
    *left = left.saturating_sub(sink.len() as u64);
    read.ok().map(|_| (sink, limit))
}

/// Opens `bytes` as a file system (whatever [`crate::detect()`] finds) and
/// lists, stats, reads and resolves links of everything it can reach within
/// the budget, by path and again through `visit_dir`, not entering a
/// directory whose inode is one of its ancestors (a loop), as `ls -r` does.
/// Errors are fine; a panic or a hang is a bug.
pub fn exercise_fs(bytes: &[u8]) {
    let device = Arc::new(MemoryDevice::new(bytes.to_vec()));
    let Ok(fs) = crate::open_fs(device.clone()) else {
        return;
    };
    let _ = (fs.label(), fs.serial(), fs.case_sensitive());
    let mut budget = MAX_ENTRIES;
    let mut left = MAX_TOTAL_BYTES;
    let mut stack = root_stack(fs.as_ref());
    while let Some((dir, depth, ancestors)) = stack.pop() {
        let Ok(entries) = fs.read_dir(&dir) else {
            continue;
        };
        for e in entries {
            if budget == 0 {
                return;
            }
            budget -= 1;
            let path = join(&dir, &e.name);
            let meta = fs.metadata(&path);
            let _ = fs.streams(&path);
            match e.file_type {
                FileType::Directory if depth < MAX_DEPTH => {
                    if let Some(inner) = inside(&ancestors, meta.ok().and_then(|m| m.inode)) {
                        stack.push((path, depth + 1, inner));
                    }
                }
                FileType::File => {
                    if let Ok(mut r) = fs.open(&path) {
                        let _ = drain(&mut r, &mut left);
                    }
                }
                FileType::Symlink => {
                    let _ = fs.read_link(&path);
                }
                _ => {}
            }
        }
    }
    visit(fs.as_ref(), device.as_ref());
}

/// The same walk through [`FileSystem::visit_dir`](crate::FileSystem::visit_dir)
/// (what `extract` does), within its own budget; where a file's data is
/// said to be stored verbatim ([`Visited::stored_runs`], which `extract`
/// has the kernel copy), the volume (`device`) must hold what the reader
/// gives there.
///
/// [`Visited::stored_runs`]: crate::Visited::stored_runs
fn visit(fs: &dyn crate::FileSystem, device: &dyn BlockDevice) {
    let mut budget = MAX_ENTRIES;
    let mut left = MAX_TOTAL_BYTES;
    let mut stack = root_stack(fs);
    while let Some((dir, depth, ancestors)) = stack.pop() {
        let _ = fs.visit_dir(&dir, &mut |v| {
            let Ok(v) = v else {
                return ControlFlow::Continue(());
            };
            if budget == 0 {
                return ControlFlow::Break(());
            }
            budget -= 1;
            let _ = v.streams();
            let meta = v.metadata();
            match meta.as_ref().map(|m| m.file_type) {
                Ok(FileType::Directory) if depth < MAX_DEPTH => {
                    let inode = meta.ok().and_then(|m| m.inode);
                    if let Some(inner) = inside(&ancestors, inode) {
                        stack.push((join(&dir, v.name()), depth + 1, inner));
                    }
                }
                Ok(FileType::File) => {
                    let data = v.open("").ok().and_then(|mut r| drain(&mut r, &mut left));
                    if let (Some(runs), Some((data, limit))) = (v.stored_runs(), data) {
                        check_stored_runs(device, &runs, &data, limit);
                    }
                }
                Ok(FileType::Symlink) => {
                    let _ = v.read_link();
                }
                _ => {}
            }
            ControlFlow::Continue(())
        });
    }
}

/// A walk's starting stack: the root, at depth 0, its inode its only ancestor.
fn root_stack(fs: &dyn crate::FileSystem) -> Vec<(String, usize, Vec<u64>)> {
    let root = fs.metadata("/").ok().and_then(|m| m.inode);
    vec![("/".to_string(), 0, root.into_iter().collect())]
}

/// The ancestors of a subdirectory with `inode`, or `None` when that inode
/// is already one of `ancestors` (a directory loop).
fn inside(ancestors: &[u64], inode: Option<u64>) -> Option<Vec<u64>> {
    let mut inner = ancestors.to_vec();
    if let Some(i) = inode {
        if ancestors.contains(&i) {
            return None;
        }
        inner.push(i);
    }
    Some(inner)
}

/// Panics if the bytes of `runs` on `device`, where they can be read,
/// differ from `data` (what the reader gave, at most `limit` bytes), or
/// if they are not as long as `data` when the reader read less than that.
fn check_stored_runs(device: &dyn BlockDevice, runs: &[StoredRun], data: &[u8], limit: u64) {
    let total: u64 = runs.iter().map(|r| r.len).sum();
    if (data.len() as u64) < limit {
        assert_eq!(
            total,
            data.len() as u64,
            "stored runs and reader disagree on the size"
        );
    }
    let mut at = 0usize;
    for r in runs {
        let Some(want) = data.get(at..).filter(|w| !w.is_empty()) else {
            return;
        };
        let n = usize::try_from(r.len).unwrap_or(usize::MAX).min(want.len());
        let mut got = vec![0u8; n];
        if device.read_at(&mut got, r.at).is_err() {
            return;
        }
        assert!(
            want.get(..n) == Some(&got[..]),
            "stored run at {:#x} differs from the reader's bytes",
            r.at
        );
        at += n;
    }
}
