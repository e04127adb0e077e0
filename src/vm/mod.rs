//! Virtual machines: the disks of a VM as of now or as of a snapshot.
//!
//! [`Vm::load`] reads a VMware `.vmx`/`.vmtx` (with the `.vmsd` snapshot
//! database beside it), a VirtualBox `.vbox`, or a Hyper-V folder, into one
//! model: VM facts, the hard disks of the current state, the snapshot tree,
//! and the other files of the VM. [`Vm::open`] opens the disks of one
//! state as a [`DiskSet`](crate::DiskSet).
//!
//! **Which files hold a snapshot's state.** When VMware takes a snapshot,
//! each (non-independent) disk's current file becomes read-only and a new
//! delta is created on top of it for the running VM; the `.vmsd` records,
//! per snapshot and disk, the file that became read-only (`snapshot0` of a
//! VM that had no snapshot names the base disk). Nothing writes to that file
//! afterwards, so the state of a disk at snapshot X is the chain whose top
//! is the file X records. VirtualBox does the same: a snapshot's attachments
//! name the medium that became immutable. Independent disks are not
//! captured by snapshots: every state reads them as they are now. The
//! current state is the file each `.vmx` `fileName` (or the machine's own
//! attachment) names.
//!
//! **Paths.** Paths in configurations are resolved against the
//! configuration's folder; an absolute path from another host
//! (`/vmfs/volumes/...`, `C:\...`) falls back to the same file name in the
//! folder. Unless [`VmOptions::allow_outside`] is set, nothing outside the
//! folder is opened: a relative path leading out of it is an
//! [`ErrorKind::OutsideFolder`] error, and the delta chains are opened with
//! [`OpenOptions::confine_to`](crate::OpenOptions::confine_to) set to the folder.

mod facts;
pub mod hyperv;
mod state;
pub mod vbox;
pub mod vmsd;
pub mod vmx;
pub(crate) mod xml;

use facts::check_tree;
pub use facts::{Snapshot, SnapshotDisk, VmDisk, VmFacts, VmFile};
pub use state::{OpenedVm, StateDisk, StateFiles, VmOptions};

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use diskimage_formats::ErrorKind;

use crate::diskset::MAX_DISKS;
use crate::error::{Detail, Error, Result, Scheme};

/// The kind of configuration a VM was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmKind {
    /// VMware `.vmx` / `.vmtx` (+ `.vmsd`).
    Vmware,
    /// VirtualBox `.vbox`.
    VirtualBox,
    /// A Hyper-V folder of `.vhdx`/`.avhdx` files.
    HyperV,
}

impl VmKind {
    /// A stable, lower-case name for JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            VmKind::Vmware => "vmware",
            VmKind::VirtualBox => "virtualbox",
            VmKind::HyperV => "hyper-v",
        }
    }
}

/// A VM read from its configuration.
#[derive(Debug, Clone)]
pub struct Vm {
    /// What it was read from.
    pub kind: VmKind,
    /// The configuration file (or the Hyper-V folder).
    pub config: PathBuf,
    /// The folder paths are resolved against.
    pub folder: PathBuf,
    /// Facts.
    pub facts: VmFacts,
    /// Hard disks of the current state.
    pub disks: Vec<VmDisk>,
    /// The snapshot tree (disk files as recorded).
    pub snapshots: Vec<Snapshot>,
    /// The uid of the snapshot the current state descends from.
    pub current_snapshot: Option<String>,
    /// Configuration and other non-disk files of the VM.
    pub files: Vec<VmFile>,
    /// Child file -> parent file, as recorded (a `.vbox`'s media registry).
    parents: HashMap<String, String>,
}

/// Whether `path` names a VM rather than a disk image: a `.vmx`, `.vmtx`
/// or `.vbox` file, or a folder.
pub fn is_vm_path(path: &Path) -> bool {
    path.is_dir()
        || path.extension().is_some_and(|e| {
            let e = e.to_string_lossy().to_ascii_lowercase();
            matches!(e.as_str(), "vmx" | "vmtx" | "vbox")
        })
}

fn vm_error(kind: ErrorKind, what: String) -> Error {
    Error::new(kind, Scheme::Vm, Detail::Invalid(what))
}

impl Vm {
    /// Reads the VM at `path`: a `.vmx`/`.vmtx` (and the `.vmsd` beside it),
    /// a `.vbox`, or a folder (a Hyper-V VM, or a folder holding one `.vmx`
    /// or `.vbox`).
    pub fn load(path: &Path) -> Result<Vm> {
        if path.is_dir() {
            return Self::load_dir(path);
        }
        let folder = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        let mut vm = Vm {
            kind: VmKind::Vmware,
            config: path.to_path_buf(),
            folder,
            facts: VmFacts::default(),
            disks: Vec::new(),
            snapshots: Vec::new(),
            current_snapshot: None,
            files: vec![VmFile {
                path: path.to_path_buf(),
                role: "configuration",
            }],
            parents: HashMap::new(),
        };
        if ext == "vbox" {
            vm.read_vbox()?;
        } else {
            vm.read_vmx()?;
        }
        if vm.disks.len() > MAX_DISKS {
            return Err(Error::limit(
                Scheme::Vm,
                "disks of the VM",
                vm.disks.len() as u64,
                MAX_DISKS as u64,
            )
            .in_file(path));
        }
        Ok(vm)
    }

    fn load_dir(dir: &Path) -> Result<Vm> {
        let mut configs = Vec::new();
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten().take(hyperv::MAX_SCAN_ENTRIES) {
                let p = e.path();
                if p.is_file() && is_vm_path(&p) {
                    configs.push(p);
                }
            }
        }
        configs.sort();
        match configs.as_slice() {
            [one] => return Self::load(one),
            [] => {}
            many => {
                let names: Vec<String> = many.iter().map(|p| p.display().to_string()).collect();
                return Err(vm_error(
                    ErrorKind::Unsupported,
                    format!(
                        "the folder holds several VM configurations; name one: {}",
                        names.join(", ")
                    ),
                )
                .in_file(dir));
            }
        }
        let scan = hyperv::HyperVFolder::scan(dir)?;
        let mut vm = Vm {
            kind: VmKind::HyperV,
            config: dir.to_path_buf(),
            folder: dir.to_path_buf(),
            facts: VmFacts::default(),
            disks: Vec::new(),
            snapshots: Vec::new(),
            current_snapshot: None,
            files: scan
                .configs
                .iter()
                .map(|p| VmFile {
                    path: p.clone(),
                    role: "hyper-v configuration (binary, listed, not parsed)",
                })
                .collect(),
            parents: HashMap::new(),
        };
        // The leaves: disks no other disk of the folder has as a parent.
        let options = vm.open_options(&VmOptions::default());
        let mut parents: HashSet<PathBuf> = HashSet::new();
        for d in &scan.disks {
            if let Ok(files) = diskimage_formats::dependencies(d, &options) {
                parents.extend(files.into_iter().skip(1).map(|p| canonical(&p)));
            }
        }
        for d in &scan.disks {
            if !parents.contains(&canonical(d)) {
                let rel = d.strip_prefix(dir).unwrap_or(d);
                vm.disks.push(VmDisk {
                    slot: vm.disks.len().to_string(),
                    file: rel.to_string_lossy().into_owned(),
                    mode: None,
                });
            }
        }
        if vm.disks.is_empty() {
            return Err(vm_error(
                ErrorKind::NotThisFormat,
                "is a directory, not a disk image, and holds no VM (.vmx, .vbox, or .vhdx/.avhdx/.vhd disks)".into(),
            )
            .in_file(dir));
        }
        Ok(vm)
    }

    fn read_vmx(&mut self) -> Result<()> {
        let v = vmx::Vmx::read(&self.config)?;
        self.facts = v.facts;
        self.disks = v.disks;
        let vmsd = self.config.with_extension("vmsd");
        if vmsd.is_file() {
            let db = vmsd::Vmsd::parse(&vmx::read_config(&vmsd)?).map_err(|e| e.in_file(&vmsd))?;
            self.files.push(VmFile {
                path: vmsd,
                role: "snapshot database",
            });
            self.snapshots = db.snapshots;
            self.current_snapshot = db.current;
        }
        Ok(())
    }

    fn read_vbox(&mut self) -> Result<()> {
        self.kind = VmKind::VirtualBox;
        let v = vbox::Vbox::parse(&vmx::read_config(&self.config)?)
            .map_err(|e| e.in_file(&self.config))?;
        self.facts = v.facts.clone();
        let location = |uuid: &str| {
            v.media
                .get(uuid)
                .map(|m| m.location.clone())
                .unwrap_or_else(|| format!("{{{uuid}}} (not in the media registry)"))
        };
        for m in v.media.values() {
            if let Some(p) = m.parent.as_deref().and_then(|p| v.media.get(p)) {
                self.parents.insert(m.location.clone(), p.location.clone());
            }
        }
        self.disks = v
            .disks
            .iter()
            .map(|a| VmDisk {
                slot: a.slot.clone(),
                file: location(&a.uuid),
                mode: None,
            })
            .collect();
        self.snapshots = v
            .snapshots
            .into_iter()
            .map(|mut s| {
                for d in &mut s.disks {
                    d.file = location(&d.file);
                }
                s
            })
            .collect();
        self.current_snapshot = v.current;
        Ok(())
    }
}

fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}
