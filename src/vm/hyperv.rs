//! A Hyper-V VM folder (an export, or a VM's own folder): its disks are the
//! `.vhdx`/`.vhd` files with their `.avhdx`/`.avhd` checkpoint children,
//! linked by the children's parent locators. The disks of the running
//! state are the leaves: files that no other file of the folder names as
//! its parent. Checkpoint names live in the binary `.vmcx` configuration,
//! which this version does not parse: those files are listed, and
//! checkpoint states are shown as the chains of their differencing disks.
//!
//! The scan goes at most [`MAX_SCAN_DEPTH`] folders deep and looks at most
//! at [`MAX_SCAN_ENTRIES`] directory entries; symbolic links are not followed.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result, Scheme};

/// Deepest folder level scanned below the VM folder.
pub const MAX_SCAN_DEPTH: usize = 4;
/// Most directory entries looked at.
pub const MAX_SCAN_ENTRIES: usize = 20_000;

/// What a Hyper-V folder holds.
#[derive(Debug, Clone, Default)]
pub struct HyperVFolder {
    /// Virtual disk files (`.vhdx`, `.avhdx`, `.vhd`, `.avhd`), sorted.
    pub disks: Vec<PathBuf>,
    /// Configuration and state files (`.vmcx`, `.vmrs`, `.vmgs`, `.xml`), sorted.
    pub configs: Vec<PathBuf>,
}

fn ext(p: &Path) -> String {
    p.extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default()
}

/// Whether a file name is a Hyper-V virtual disk.
pub fn is_disk(p: &Path) -> bool {
    matches!(ext(p).as_str(), "vhdx" | "avhdx" | "vhd" | "avhd")
}

impl HyperVFolder {
    /// Scans `dir` for disks and configuration files.
    pub fn scan(dir: &Path) -> Result<HyperVFolder> {
        let mut out = HyperVFolder::default();
        let mut seen = 0usize;
        let mut todo = vec![(dir.to_path_buf(), 0usize)];
        while let Some((d, depth)) = todo.pop() {
            let entries = std::fs::read_dir(&d).map_err(|e| {
                Error::new(
                    crate::ErrorKind::Io,
                    Scheme::Vm,
                    crate::error::Detail::Io(e),
                )
                .in_file(&d)
            })?;
            for e in entries.flatten() {
                seen += 1;
                if seen > MAX_SCAN_ENTRIES {
                    return Err(Error::limit(
                        Scheme::Vm,
                        "directory entries in the VM folder",
                        seen as u64,
                        MAX_SCAN_ENTRIES as u64,
                    )
                    .in_file(dir));
                }
                let Ok(ft) = e.file_type() else { continue };
                let p = e.path();
                if ft.is_dir() {
                    if depth < MAX_SCAN_DEPTH {
                        todo.push((p, depth + 1));
                    }
                } else if ft.is_file() {
                    if is_disk(&p) {
                        out.disks.push(p);
                    } else if matches!(ext(&p).as_str(), "vmcx" | "vmrs" | "vmgs" | "xml") {
                        out.configs.push(p);
                    }
                }
            }
        }
        out.disks.sort();
        out.configs.sort();
        Ok(out)
    }
}
