//! The body of the file-system fuzz targets, shared with the corpus replay
//! test: open the input as a file system and walk it within a work budget.

use std::io::Read;
use std::ops::ControlFlow;
use std::sync::Arc;

use diskimage_formats::MemoryDevice;

use crate::file_system::{join, FileType};

/// Most entries visited in one run.
pub const MAX_ENTRIES: usize = 4096;
/// Deepest directory walked in one run.
pub const MAX_DEPTH: usize = 32;
/// Most bytes read from one file.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// Opens `bytes` as a file system (whatever [`crate::detect`] finds) and
/// lists, stats, reads and resolves links of everything it can reach within
/// the budget, by path and again through `visit_dir`. Errors are fine; a panic or a hang is a bug.
pub fn exercise_fs(bytes: &[u8]) {
    let device = Arc::new(MemoryDevice::new(bytes.to_vec()));
    let Ok(fs) = crate::open_fs(device) else {
        return;
    };
    let _ = (fs.label(), fs.serial(), fs.case_sensitive());
    let mut budget = MAX_ENTRIES;
    let mut stack = vec![("/".to_string(), 0usize)];
    while let Some((dir, depth)) = stack.pop() {
        let Ok(entries) = fs.read_dir(&dir) else {
            continue;
        };
        for e in entries {
            if budget == 0 {
                return;
            }
            budget -= 1;
            let path = join(&dir, &e.name);
            let _ = fs.metadata(&path);
            let _ = fs.streams(&path);
            match e.file_type {
                FileType::Directory if depth < MAX_DEPTH => stack.push((path, depth + 1)),
                FileType::File => {
                    if let Ok(mut r) = fs.open(&path) {
                        let mut sink = Vec::new();
                        let _ = r.by_ref().take(MAX_FILE_BYTES).read_to_end(&mut sink);
                    }
                }
                FileType::Symlink => {
                    let _ = fs.read_link(&path);
                }
                _ => {}
            }
        }
    }
    visit(fs.as_ref());
}

/// The same walk through [`FileSystem::visit_dir`](crate::FileSystem::visit_dir)
/// (what `extract` does), within its own budget.
fn visit(fs: &dyn crate::FileSystem) {
    let mut budget = MAX_ENTRIES;
    let mut stack = vec![("/".to_string(), 0usize)];
    while let Some((dir, depth)) = stack.pop() {
        let _ = fs.visit_dir(&dir, &mut |v| {
            let Ok(v) = v else {
                return ControlFlow::Continue(());
            };
            if budget == 0 {
                return ControlFlow::Break(());
            }
            budget -= 1;
            let _ = v.streams();
            match v.metadata().map(|m| m.file_type) {
                Ok(FileType::Directory) if depth < MAX_DEPTH => {
                    stack.push((join(&dir, v.name()), depth + 1));
                }
                Ok(FileType::File) => {
                    if let Ok(mut r) = v.open("") {
                        let mut sink = Vec::new();
                        let _ = r.by_ref().take(MAX_FILE_BYTES).read_to_end(&mut sink);
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
