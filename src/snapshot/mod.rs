//! Snapshots of a powered-off VM, taken, reverted and deleted on its files
//! alone (VIX's `VixVM_CreateSnapshot`, `VixVM_RevertToSnapshot`,
//! `VixVM_RemoveSnapshot` without a running VM).
//!
//! [`create`], [`revert`] and [`delete`] take the VM's configuration and
//! act on the kind it names. VirtualBox `.vbox` machines with VMDK or VHD
//! media are handled (differencing media with VirtualBox's UUIDs,
//! `<Snapshot>` elements, the media registry); any other configuration is
//! an [`Unsupported`](crate::ErrorKind::Unsupported) error.

use std::path::{Path, PathBuf};

use crate::error::{Result, Scheme};
use crate::Error;

mod vbox;

/// Parses `data` as a `.vbox` tree and writes it back (the fuzz target
/// `vbox` and the seed replay): what is written parses to the same text.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn fuzz_vbox_tree(data: &[u8]) {
    vbox::round_trip(data);
}

/// What a snapshot operation is asked to do besides its main job.
#[derive(Debug, Clone, Default)]
pub struct SnapshotOptions {
    /// The snapshot's description (create).
    pub description: Option<String>,
    /// Save the memory state too: refused, a VM that is off has none.
    pub include_memory: bool,
    /// Go on when a state other than the ones acted on has missing files.
    pub fallback: bool,
}

/// What a snapshot operation did.
#[derive(Debug, Clone)]
pub struct SnapshotReport {
    /// The snapshot's name.
    pub snapshot: String,
    /// The snapshot's uid (a VirtualBox UUID without braces).
    pub uid: String,
    /// Files made (differencing media).
    pub created: Vec<PathBuf>,
    /// Files rewritten (the configuration, its previous copy, merged media).
    pub changed: Vec<PathBuf>,
    /// Files deleted (merged or discarded differencing media).
    pub removed: Vec<PathBuf>,
}

fn is_vbox(config: &Path) -> bool {
    config
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("vbox"))
}

fn not_handled(config: &Path) -> Error {
    Error::unsupported(
        Scheme::Vm,
        "snapshots are written for VirtualBox .vbox machines only",
    )
    .in_file(config)
}

/// Takes a snapshot `name` of the powered-off VM `config`.
pub fn create(config: &Path, name: &str, opts: &SnapshotOptions) -> Result<SnapshotReport> {
    if is_vbox(config) {
        return vbox::create(config, name, opts);
    }
    Err(not_handled(config))
}

/// Reverts the VM `config` to the snapshot `which` (name or uid).
pub fn revert(config: &Path, which: &str, opts: &SnapshotOptions) -> Result<SnapshotReport> {
    if is_vbox(config) {
        return vbox::revert(config, which, opts);
    }
    Err(not_handled(config))
}

/// Deletes the snapshot `which` (name or uid) of the VM `config`, merging
/// its media so that every other state reads the same bytes.
pub fn delete(config: &Path, which: &str, opts: &SnapshotOptions) -> Result<SnapshotReport> {
    if is_vbox(config) {
        return vbox::delete(config, which, opts);
    }
    Err(not_handled(config))
}
