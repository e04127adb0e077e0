//! The states of a VM (current, or a snapshot): which files each disk
//! needs, and opening them as a disk set.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use diskimage_formats::context::is_absolute_anywhere;
use diskimage_formats::{DiskImage, ErrorKind, OpenOptions, ParentRequest};

use super::{canonical, vm_error, Snapshot, Vm, VmFile, VmKind};
use crate::diskset::DiskSet;
use crate::error::{Detail, Error, Result, Scheme};

/// How to open a VM: the defaults, changed through the builder methods.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct VmOptions {
    /// Options for the disk images (`confine_to` and the parent resolver
    /// are set by the VM).
    pub open: OpenOptions,
    /// Open the state of this snapshot (name or uid) instead of the current one.
    pub snapshot: Option<String>,
    /// When the wanted state is incomplete, open the newest complete one.
    pub fallback: bool,
    /// Allow files outside the configuration's folder.
    pub allow_outside: bool,
}

impl VmOptions {
    /// The current state, complete or refused, confined to the folder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Options for the disk images ([`VmOptions::open`]).
    #[must_use]
    pub fn open(mut self, open: OpenOptions) -> Self {
        self.open = open;
        self
    }

    /// The snapshot (name or uid) whose state to open; `None`: the current one.
    #[must_use]
    pub fn snapshot(mut self, snapshot: Option<String>) -> Self {
        self.snapshot = snapshot;
        self
    }

    /// Open the newest complete state when the wanted one is incomplete.
    #[must_use]
    pub fn fallback(mut self, on: bool) -> Self {
        self.fallback = on;
        self
    }

    /// Allow files outside the configuration's folder.
    #[must_use]
    pub fn allow_outside(mut self, on: bool) -> Self {
        self.allow_outside = on;
        self
    }
}

/// One disk of a state and the files it needs.
#[derive(Debug, Clone)]
pub struct StateDisk {
    /// The slot.
    pub slot: String,
    /// The top file of the disk's chain in this state.
    pub top: PathBuf,
    /// Every file reading it needs (descriptors, extents, parents), when known.
    pub files: Vec<PathBuf>,
    /// Why it cannot be read, when it cannot.
    pub problem: Option<String>,
    /// Whether the problem is a missing file.
    pub missing: bool,
}

/// A state of the VM (current, or a snapshot) and what it needs.
#[derive(Debug, Clone)]
pub struct StateFiles {
    /// `current` or the snapshot's name.
    pub name: String,
    /// The snapshot's uid (`None` for the current state).
    pub uid: Option<String>,
    /// Its disks.
    pub disks: Vec<StateDisk>,
}

impl StateFiles {
    /// Whether every file of every disk is there and readable.
    pub fn complete(&self) -> bool {
        self.disks.iter().all(|d| d.problem.is_none())
    }
}

/// A VM state opened as a disk set.
#[derive(Debug)]
pub struct OpenedVm {
    /// The disks of the state, in slot order of the configuration.
    pub set: DiskSet,
    /// The state that was opened.
    pub state: StateFiles,
    /// What was tolerated (a fallback to another state).
    pub warnings: Vec<String>,
}

impl Vm {
    /// Resolves a recorded path against the folder (see the module docs).
    pub fn resolve(&self, recorded: &str, allow_outside: bool) -> Result<PathBuf> {
        let unix = recorded.trim().replace('\\', "/");
        if unix.is_empty() {
            return Err(
                vm_error(ErrorKind::Corrupt, "empty file name".into()).in_file(&self.config)
            );
        }
        if is_absolute_anywhere(recorded.trim()) {
            let p = Path::new(&unix);
            if allow_outside && p.is_absolute() && !unix.contains(':') && p.is_file() {
                return Ok(p.to_path_buf());
            }
            let name = unix
                .rsplit('/')
                .next()
                .filter(|n| !n.is_empty() && *n != "..");
            return match name {
                Some(n) => Ok(self.folder.join(n)),
                None => Err(vm_error(
                    ErrorKind::Corrupt,
                    format!("file name {recorded:?} names no file"),
                )
                .in_file(&self.config)),
            };
        }
        let p = self.folder.join(&unix);
        if !allow_outside && !self.confined().allows(&p) {
            return Err(vm_error(
                ErrorKind::OutsideFolder,
                format!(
                    "file name {recorded:?} leads outside the VM folder {} (not opened; allow it with --allow-outside)",
                    self.folder.display()
                ),
            )
            .in_file(&self.config));
        }
        Ok(p)
    }

    fn confined(&self) -> OpenOptions {
        OpenOptions::new().confine_to(Some(self.folder.clone()))
    }

    /// The options the VM's disks are opened with: the caller's, confined
    /// to the folder unless `allow_outside`, with the media registry's
    /// parents (`.vbox`) tried first.
    pub fn open_options(&self, opts: &VmOptions) -> OpenOptions {
        let mut o = opts.open.clone();
        if !opts.allow_outside {
            o.confine_to = Some(self.folder.clone());
        }
        if !self.parents.is_empty() {
            let mut map: HashMap<PathBuf, PathBuf> = HashMap::new();
            for (child, parent) in &self.parents {
                if let (Ok(c), Ok(p)) = (
                    self.resolve(child, opts.allow_outside),
                    self.resolve(parent, opts.allow_outside),
                ) {
                    map.insert(canonical(&c), p);
                }
            }
            o.parent_resolver = Some(Arc::new(move |r: &ParentRequest<'_>| {
                map.get(&canonical(r.child)).cloned()
            }));
        }
        o
    }

    /// The snapshot named or numbered `wanted` (display name or uid).
    pub fn find_snapshot(&self, wanted: &str) -> Result<&Snapshot> {
        let w = wanted.trim().trim_start_matches('{').trim_end_matches('}');
        let by_uid = self
            .snapshots
            .iter()
            .find(|s| s.uid.eq_ignore_ascii_case(w));
        let by_name: Vec<&Snapshot> = self.snapshots.iter().filter(|s| s.name == wanted).collect();
        match (by_uid, by_name.as_slice()) {
            (Some(s), _) => Ok(s),
            (None, [s]) => Ok(*s),
            (None, []) => {
                let names: Vec<String> = self
                    .snapshots
                    .iter()
                    .map(|s| format!("{} (uid {})", s.name, s.uid))
                    .collect();
                let what = if self.kind == VmKind::HyperV {
                    "Hyper-V checkpoints are named in the .vmcx files, which this version does not parse (`diskimage vm` lists the chains)".to_owned()
                } else {
                    format!(
                        "no snapshot named {wanted:?}; snapshots: {}",
                        if names.is_empty() {
                            "none".to_owned()
                        } else {
                            names.join(", ")
                        }
                    )
                };
                Err(vm_error(ErrorKind::Unsupported, what).in_file(&self.config))
            }
            (None, _) => Err(vm_error(
                ErrorKind::Unsupported,
                format!("several snapshots are named {wanted:?}: give its uid"),
            )
            .in_file(&self.config)),
        }
    }

    /// (slot, recorded file) of each disk in the state of `snapshot` (the
    /// current state for `None`).
    pub fn state_disks(&self, snapshot: Option<&Snapshot>) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .disks
            .iter()
            .map(|d| (d.slot.clone(), d.file.clone()))
            .collect();
        if let Some(s) = snapshot {
            for d in &s.disks {
                match out.iter_mut().find(|(slot, _)| *slot == d.slot) {
                    Some(e) => e.1 = d.file.clone(),
                    None => out.push((d.slot.clone(), d.file.clone())),
                }
            }
        }
        out
    }

    /// The files of the state of `snapshot` (the current state for
    /// `None`), each disk checked without reading data. A path leading
    /// outside the folder is an error; missing files are recorded.
    pub fn state(&self, snapshot: Option<&Snapshot>, opts: &VmOptions) -> Result<StateFiles> {
        let options = self.open_options(opts);
        let mut disks = Vec::new();
        for (slot, file) in self.state_disks(snapshot) {
            let top = self.resolve(&file, opts.allow_outside)?;
            let mut d = StateDisk {
                slot,
                top: top.clone(),
                files: Vec::new(),
                problem: None,
                missing: false,
            };
            match diskimage_formats::dependencies(&top, &options) {
                Ok(files) => d.files = files,
                Err(e) if e.kind() == ErrorKind::OutsideFolder => return Err(e.into()),
                Err(e) => {
                    d.missing = e.kind() == ErrorKind::MissingFile;
                    d.problem = Some(e.to_string());
                }
            }
            disks.push(d);
        }
        Ok(StateFiles {
            name: snapshot.map_or_else(|| "current".to_owned(), |s| s.name.clone()),
            uid: snapshot.map(|s| s.uid.clone()),
            disks,
        })
    }

    /// Every state: the current one, then each snapshot in tree order.
    pub fn states(&self, opts: &VmOptions) -> Result<Vec<StateFiles>> {
        let mut out = vec![self.state(None, opts)?];
        for s in &self.snapshots {
            out.push(self.state(Some(s), opts)?);
        }
        Ok(out)
    }

    /// Snapshots to fall back to from `from` (the current state for
    /// `None`): `from`'s ancestors nearest first, then the others, newest first.
    fn fallback_order(&self, from: Option<&Snapshot>) -> Vec<&Snapshot> {
        let by_uid: HashMap<&str, &Snapshot> =
            self.snapshots.iter().map(|s| (s.uid.as_str(), s)).collect();
        let mut out: Vec<&Snapshot> = Vec::new();
        let mut cur = match from {
            Some(s) => s.parent.as_deref().and_then(|p| by_uid.get(p).copied()),
            None => self
                .current_snapshot
                .as_deref()
                .and_then(|c| by_uid.get(c).copied()),
        };
        while let Some(c) = cur {
            if out.iter().any(|o| o.uid == c.uid) {
                break;
            }
            out.push(c);
            cur = c.parent.as_deref().and_then(|p| by_uid.get(p).copied());
        }
        let mut rest: Vec<&Snapshot> = self
            .snapshots
            .iter()
            .filter(|s| !out.iter().any(|o| o.uid == s.uid) && from.is_none_or(|f| f.uid != s.uid))
            .collect();
        rest.sort_by(|a, b| b.created.cmp(&a.created));
        out.extend(rest);
        out
    }

    /// Opens the disks of the wanted state (see [`VmOptions`]) as a set.
    ///
    /// An encrypted VM is an [`ErrorKind::Unsupported`] error. A state with
    /// missing files is an [`ErrorKind::MissingFile`] error naming them and
    /// the states still complete; with `fallback`, the newest complete state
    /// (the current snapshot, then its ancestors, then the others by time)
    /// is opened instead, with a warning.
    pub fn open(&self, opts: &VmOptions) -> Result<OpenedVm> {
        if !self.facts.encryption_keys.is_empty() {
            return Err(vm_error(
                ErrorKind::Unsupported,
                format!(
                    "the VM is encrypted ({}): reading its disks is unsupported",
                    self.facts.encryption_keys.join(", ")
                ),
            )
            .in_file(&self.config));
        }
        let wanted = opts
            .snapshot
            .as_deref()
            .map(|s| self.find_snapshot(s))
            .transpose()?;
        let state = self.state(wanted, opts)?;
        if state.disks.is_empty() {
            return Err(vm_error(
                ErrorKind::Unsupported,
                "the configuration names no present hard disk".into(),
            )
            .in_file(&self.config));
        }
        let mut warnings = Vec::new();
        let state = if state.complete() {
            state
        } else {
            let mut complete = Vec::new();
            for s in self.fallback_order(wanted) {
                let st = self.state(Some(s), opts)?;
                if st.complete() {
                    complete.push(st);
                }
            }
            let problems: Vec<String> = state
                .disks
                .iter()
                .filter_map(|d| d.problem.clone())
                .collect();
            let names: Vec<String> = complete
                .iter()
                .map(|s| format!("{} (uid {})", s.name, s.uid.as_deref().unwrap_or("-")))
                .collect();
            let all_missing = state.disks.iter().all(|d| d.problem.is_none() || d.missing);
            match (opts.fallback, complete.into_iter().next()) {
                (true, Some(st)) => {
                    warnings.push(format!(
                        "the {} state cannot be read ({}); opened the newest complete state instead: {}",
                        state.name,
                        problems.join("; "),
                        st.name
                    ));
                    st
                }
                _ => {
                    let what = format!(
                        "files of the {} state ({}); complete states: {}{}",
                        state.name,
                        problems.join("; "),
                        if names.is_empty() {
                            "none".to_owned()
                        } else {
                            names.join(", ")
                        },
                        if names.is_empty() || opts.fallback {
                            ""
                        } else {
                            " (--fallback opens the first)"
                        }
                    );
                    let kind = if all_missing {
                        ErrorKind::MissingFile
                    } else {
                        ErrorKind::Unsupported
                    };
                    let tried = state
                        .disks
                        .iter()
                        .filter(|d| d.problem.is_some())
                        .map(|d| d.top.clone())
                        .collect();
                    return Err(
                        Error::new(kind, Scheme::Vm, Detail::Missing { what, tried })
                            .in_file(&self.config),
                    );
                }
            }
        };
        let options = self.open_options(opts);
        let mut images: Vec<DiskImage> = Vec::new();
        for (i, d) in state.disks.iter().enumerate() {
            let image = diskimage_formats::open(&d.top, &options)
                .map_err(|e| Error::from_device(Scheme::Vm, e).on_disk(i))?;
            images.push(image);
        }
        let set = DiskSet::from_images(images, &options)?;
        Ok(OpenedVm {
            set,
            state,
            warnings,
        })
    }

    /// Every file of the VM to copy off a datastore: configurations, the
    /// disk files of every state, change-tracking (`-ctk.vmdk`) files,
    /// snapshot state files, Hyper-V configurations; and the problems of
    /// states whose files are not all there.
    pub fn dependencies(&self, opts: &VmOptions) -> Result<(Vec<VmFile>, Vec<String>)> {
        let mut out = self.files.clone();
        let mut problems = Vec::new();
        let push = |out: &mut Vec<VmFile>, path: PathBuf, role| {
            let c = canonical(&path);
            if !out.iter().any(|f| canonical(&f.path) == c) {
                out.push(VmFile { path, role });
            }
        };
        for st in self.states(opts)? {
            for d in &st.disks {
                if let Some(p) = &d.problem {
                    problems.push(format!("{}: {p}", st.name));
                }
                for f in &d.files {
                    push(&mut out, f.clone(), "disk");
                    let name = f.file_name().map(|n| n.to_string_lossy().into_owned());
                    if let Some(stem) = name.as_deref().and_then(|n| n.strip_suffix(".vmdk")) {
                        let ctk = f.with_file_name(format!("{stem}-ctk.vmdk"));
                        if ctk.is_file() {
                            push(&mut out, ctk, "change tracking (CBT)");
                        }
                    }
                }
            }
        }
        for s in &self.snapshots {
            if let Some(f) = s.state_file.as_deref().filter(|f| !f.is_empty()) {
                if let Ok(p) = self.resolve(f, opts.allow_outside) {
                    if p.is_file() {
                        push(&mut out, p, "snapshot state");
                    }
                }
            }
        }
        problems.dedup();
        Ok((out, problems))
    }
}
