//! Snapshots of a powered-off VM, taken, reverted to and deleted on its
//! files alone (VIX's `VixVM_CreateSnapshot` without memory,
//! `VixVM_RevertToSnapshot`, `VixVM_RemoveSnapshot`).
//!
//! [`create`], [`revert`] and [`delete`] load the VM ([`Vm::load`]) and
//! act by its kind: a VMware VM (`.vmx` + `.vmsd`, see `vmware`) and a
//! VirtualBox VM (`.vbox` over VMDK or VHD media, see `vbox`) are
//! changed; a Hyper-V folder is refused with an [`ErrorKind::Unsupported`]
//! error.
//!
//! What every kind shares:
//! - a VM that is running, locked or suspended is refused, naming what was
//!   found (VMware: `*.lck`, `*.vmem`, `*.vmss`; VirtualBox: a saved state,
//!   a process holding its files open, an interrupted settings save);
//! - a VM whose chains are incomplete is refused, unless
//!   [`SnapshotOptions::fallback`] lets the change go on when the states it
//!   needs are complete;
//! - nothing outside the VM's folder is written;
//! - new files are written first, configuration files are written beside
//!   the old ones and renamed over them last, so an interruption leaves the
//!   old or the new configuration, and either opens;
//! - memory is never saved: [`SnapshotOptions::include_memory`] is refused
//!   (a VM that is off has no memory state).

mod files;
mod vbox;
pub mod vmsn;
mod vmware;

use std::path::{Path, PathBuf};

use crate::error::{Detail, Error, ErrorKind, Result, Scheme};
use crate::vm::{Vm, VmKind};

/// Parses `data` as a `.vbox` tree and writes it back (the fuzz target
/// `vbox` and the seed replay): what is written parses to the same text.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn fuzz_vbox_tree(data: &[u8]) {
    crate::vm::xml::round_trip(data);
}

/// How a snapshot is taken, reverted to or deleted: the defaults, changed
/// through the fields or the builder methods.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct SnapshotOptions {
    /// The new snapshot's description ([`create`] only).
    pub description: Option<String>,
    /// Save the memory state too: refused (a powered-off VM has none).
    pub include_memory: bool,
    /// Go on when states the change does not need are incomplete (and, for
    /// [`revert`] to a snapshot without a state file, keep the current
    /// configuration with the snapshot's disks).
    pub fallback: bool,
    /// Test hook: fail with an injected error before the named step, to
    /// show what an interruption there leaves. VMware: `deltas`, `vmsn`,
    /// `merge`, `relink`, `vmsd`, `vmx`, `remove`; VirtualBox: `media`
    /// (new differencing media), `merge`, `relink`, `stage` (the new
    /// `.vbox` written beside the old one), `prev` (the `.vbox-prev`
    /// copy), `vbox` (the rename into place), `remove`.
    #[doc(hidden)]
    pub fail_before: Option<String>,
}

impl SnapshotOptions {
    /// The defaults: no description, no memory, no fallback.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the description.
    #[must_use]
    pub fn description(mut self, text: Option<String>) -> Self {
        self.description = text;
        self
    }

    /// Asks for the memory state (refused).
    #[must_use]
    pub fn include_memory(mut self, on: bool) -> Self {
        self.include_memory = on;
        self
    }

    /// Goes on when only states the change does not need are incomplete.
    #[must_use]
    pub fn fallback(mut self, on: bool) -> Self {
        self.fallback = on;
        self
    }
}

/// What a change did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotReport {
    /// The snapshot's display name.
    pub snapshot: String,
    /// The snapshot's uid.
    pub uid: String,
    /// Files made (deltas, state files).
    pub created: Vec<PathBuf>,
    /// Files rewritten (configurations, disks merged into, deltas relinked).
    pub changed: Vec<PathBuf>,
    /// Files removed (merged deltas, the state file of a deleted snapshot).
    pub removed: Vec<PathBuf>,
}

/// Loads the VM at `vm` and refuses what no kind supports.
fn load(vm: &Path, opts: &SnapshotOptions) -> Result<Vm> {
    let v = Vm::load(vm)?;
    if opts.include_memory {
        return Err(Error::unsupported(
            Scheme::Vm,
            "a snapshot with memory: the VM is powered off and has no memory state to save (take it without --include-memory)",
        )
        .in_file(&v.config));
    }
    match v.kind {
        VmKind::Vmware => {
            files::refuse_unless_powered_off(&v, &files::VMWARE_SIGNS)?;
            if !v.facts.encryption_keys.is_empty() {
                return Err(Error::unsupported(
                    Scheme::Vm,
                    format!(
                        "the VM is encrypted ({}): its snapshots are not changed",
                        v.facts.encryption_keys.join(", ")
                    ),
                )
                .in_file(&v.config));
            }
            Ok(v)
        }
        VmKind::VirtualBox => Ok(v),
        VmKind::HyperV => Err(Error::unsupported(
            Scheme::Vm,
            "Hyper-V checkpoints: a Hyper-V VM's .vmcx is not written",
        )
        .in_file(&v.config)),
    }
}

fn refuse_empty_name(name: &str, vm: &Vm) -> Result<()> {
    if name.trim().is_empty() {
        return Err(Error::new(
            ErrorKind::Unsupported,
            Scheme::Vm,
            Detail::Invalid("a snapshot needs a name".into()),
        )
        .in_file(&vm.config));
    }
    Ok(())
}

/// Takes a snapshot named `name` of the powered-off VM at `vm` (a `.vmx`
/// or its folder): every captured disk gets a new delta, the snapshot
/// database and the configuration are updated (see the module docs).
pub fn create(vm: &Path, name: &str, opts: &SnapshotOptions) -> Result<SnapshotReport> {
    let v = load(vm, opts)?;
    refuse_empty_name(name, &v)?;
    match v.kind {
        VmKind::VirtualBox => vbox::create(&v, name, opts),
        _ => vmware::create(&v, name, opts),
    }
}

/// Reverts the powered-off VM at `vm` to the snapshot `which` (display
/// name or uid): new deltas on the snapshot's disks and its configuration
/// restored; the files of the state left are kept.
pub fn revert(vm: &Path, which: &str, opts: &SnapshotOptions) -> Result<SnapshotReport> {
    let v = load(vm, opts)?;
    match v.kind {
        VmKind::VirtualBox => vbox::revert(&v, which, opts),
        _ => vmware::revert(&v, which, opts),
    }
}

/// Deletes the snapshot `which` (display name or uid) of the powered-off
/// VM at `vm`: it leaves the tree, its data is merged so that every other
/// state reads the same bytes, and its state file is removed.
pub fn delete(vm: &Path, which: &str, opts: &SnapshotOptions) -> Result<SnapshotReport> {
    let v = load(vm, opts)?;
    match v.kind {
        VmKind::VirtualBox => vbox::delete(&v, which, opts),
        _ => vmware::delete(&v, which, opts),
    }
}
