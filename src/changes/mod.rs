//! What changed between two states of a VM: the byte runs of each disk
//! that may differ ([`changed_areas`], VDDK's `QueryChangedDiskAreas`) and
//! the files added, removed and changed on each volume ([`changed_files`]).
//!
//! **States** are named as [`Vm::find_snapshot`] names them (a snapshot's
//! display name or uid), or `current` (any case) for the current state; a
//! snapshot that is itself named "current" is reached by its uid. `to` of
//! `None` is the current state. The states come from the VM's own
//! configuration (`.vmx` + `.vmsd`, `.vbox`, a Hyper-V folder, whose only
//! state is `current`), see [`crate::vm`].
//!
//! **Blocks.** Two states of one disk share the part of their delta
//! chains below the newest file both read (their common ancestor: files
//! that became read-only when a snapshot was taken). Every byte the files
//! above it hold, on either side, may differ; every other byte is read from
//! the shared files by both states and is the same. The runs are computed
//! from the allocation maps of those files alone ([`BlockDevice::map`] of
//! each delta opened without its parents: data, zero and compressed
//! ranges), without reading any data, then merged. A byte past the end of
//! the smaller state (a disk grown between them) counts as changed. When
//! the two chains share no file (a disk replaced by another one), or a
//! disk is in one state only, the whole disk is reported, with
//! [`DiskChanges::whole_disk`] set and a note saying why: nothing about
//! the two files says which bytes agree.
//!
//! **Files.** Both states are opened as disk sets; volumes are matched by
//! the disk's slot and the volume's partition GUID or LV UUID, else its
//! byte offset on the disk; both trees are walked in the same order
//! ([`crate::walk::Walk`], NTFS metadata files left out) and merged. A
//! volume none of whose bytes lie in a changed run is not walked: it holds
//! the same bytes in both states. See [`changed_files`] for what counts as
//! a change.
//!
//! ```no_run
//! use diskimage::changes::{changed_areas, ChangeOptions};
//! let disks = changed_areas("vm/vm.vmx".as_ref(), "before-update", None, &ChangeOptions::new())?;
//! for d in &disks {
//!     for r in &d.runs {
//!         println!("{} {:#x}+{:#x}", d.slot, r.offset, r.length);
//!     }
//! }
//! # Ok::<(), diskimage::Error>(())
//! ```
//!
//! [`BlockDevice::map`]: crate::BlockDevice::map

mod block;
mod files;

pub use block::{areas_of, changed_areas, DiskChanges, Run};
pub use files::{changed_files, files_of, Change, FileChange, FileFacts, VolumeChanges};

use std::path::{Path, PathBuf};

use diskimage_formats::{ErrorKind, OpenOptions};

use crate::error::{Detail, Error, Result, Scheme};
use crate::vm::{Snapshot, StateFiles, Vm, VmOptions};

/// How to compare two states: the defaults, changed through the builder
/// methods.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ChangeOptions {
    /// Options for the disk images (`confine_to` and the parent resolver
    /// are set from the VM).
    pub open: OpenOptions,
    /// Allow files outside the configuration's folder.
    pub allow_outside: bool,
    /// [`changed_files`]: compare the data of the two versions of a file
    /// whose size is the same on both sides (default; with the feature
    /// `digests` their sha256 is reported too). Off, such a file is
    /// changed only when its mtime differs, and no data is read.
    pub compare_content: bool,
}

impl Default for ChangeOptions {
    fn default() -> Self {
        ChangeOptions {
            open: OpenOptions::default(),
            allow_outside: false,
            compare_content: true,
        }
    }
}

impl ChangeOptions {
    /// The defaults: confined to the VM's folder, contents compared.
    pub fn new() -> Self {
        Self::default()
    }

    /// Options for the disk images ([`ChangeOptions::open`]).
    #[must_use]
    pub fn open(mut self, open: OpenOptions) -> Self {
        self.open = open;
        self
    }

    /// Allow files outside the configuration's folder.
    #[must_use]
    pub fn allow_outside(mut self, on: bool) -> Self {
        self.allow_outside = on;
        self
    }

    /// Compare the contents of files of equal size ([`ChangeOptions::compare_content`]).
    #[must_use]
    pub fn compare_content(mut self, on: bool) -> Self {
        self.compare_content = on;
        self
    }

    /// The VM options for the state `snapshot` (a uid; `None`: current).
    fn vm_options(&self, snapshot: Option<&Snapshot>) -> VmOptions {
        VmOptions::new()
            .open(self.open.clone())
            .allow_outside(self.allow_outside)
            .snapshot(snapshot.map(|s| s.uid.clone()))
    }
}

/// The snapshot a state name stands for (`None`: the current state).
fn find_state<'v>(vm: &'v Vm, name: &str) -> Result<Option<&'v Snapshot>> {
    if name.trim().eq_ignore_ascii_case("current") {
        return Ok(None);
    }
    vm.find_snapshot(name).map(Some)
}

fn vm_error(kind: ErrorKind, what: String, config: &Path) -> Error {
    Error::new(kind, Scheme::Vm, Detail::Invalid(what)).in_file(config)
}

/// The files of a state, refused when the VM is encrypted or the state
/// cannot be read (a missing or unreadable file: nothing can be compared).
fn complete_state(
    vm: &Vm,
    snapshot: Option<&Snapshot>,
    opts: &ChangeOptions,
) -> Result<StateFiles> {
    if !vm.facts.encryption_keys.is_empty() {
        return Err(vm_error(
            ErrorKind::Unsupported,
            format!(
                "the VM is encrypted ({}): reading its disks is unsupported",
                vm.facts.encryption_keys.join(", ")
            ),
            &vm.config,
        ));
    }
    let state = vm.state(snapshot, &opts.vm_options(snapshot))?;
    let problems: Vec<String> = state
        .disks
        .iter()
        .filter_map(|d| d.problem.as_ref().map(|p| format!("{}: {p}", d.slot)))
        .collect();
    if !problems.is_empty() {
        let missing = state.disks.iter().all(|d| d.problem.is_none() || d.missing);
        if !missing {
            return Err(vm_error(
                ErrorKind::Unsupported,
                format!(
                    "the {} state cannot be read, so it cannot be compared: {}",
                    state.name,
                    problems.join("; ")
                ),
                &vm.config,
            ));
        }
        let tried: Vec<PathBuf> = state
            .disks
            .iter()
            .filter(|d| d.problem.is_some())
            .map(|d| d.top.clone())
            .collect();
        return Err(Error::new(
            ErrorKind::MissingFile,
            Scheme::Vm,
            Detail::Missing {
                what: format!(
                    "the {} state cannot be compared: files of it ({})",
                    state.name,
                    problems.join("; ")
                ),
                tried,
            },
        )
        .in_file(&vm.config));
    }
    Ok(state)
}

/// The slots of two states: `from`'s in its order, then those only `to` has.
fn slots(from: &StateFiles, to: &StateFiles) -> Vec<String> {
    let mut out: Vec<String> = from.disks.iter().map(|d| d.slot.clone()).collect();
    for d in &to.disks {
        if !out.contains(&d.slot) {
            out.push(d.slot.clone());
        }
    }
    out
}

fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}
