//! Snapshots of a powered-off VMware VM (`.vmx` + `.vmsd`), on files alone.
//!
//! What VMware Workstation leaves behind, reproduced:
//!
//! - **create**: every non-independent disk's current top becomes the
//!   snapshot's (read-only) file and a sparse delta is made on it, named as
//!   VMware names deltas (`disk-000003.vmdk`, counting past every
//!   `disk-NNNNNN` name already in the folder); the `.vmsd` gains
//!   `snapshotN.uid`, `.filename` (the `.vmsn`), `.parent` (the current
//!   snapshot), `.displayName`, `.description`, `.createTimeHigh`/`Low`
//!   (microseconds since 1970, the low half signed), `.numDisks`,
//!   `.diskM.fileName` and `.diskM.node`, and `snapshot.lastUID`,
//!   `snapshot.current`, `snapshot.numSnapshots` move on; the `.vmx` points
//!   each disk at its delta; `<vm>-Snapshot<uid>.vmsn` holds the `.vmx` the
//!   snapshot was taken with (see [`super::vmsn`]).
//! - **revert**: the `.vmx` is restored from the snapshot's `.vmsn`, each of
//!   the snapshot's disks gets a new delta on top of the file the snapshot
//!   recorded, and `snapshot.current` names it; the files of the state left
//!   are kept.
//! - **delete**: the snapshot leaves the tree (its children take its
//!   parent); for each of its disks whose file has exactly one delta on it
//!   and no other state names it, that delta is merged into the file
//!   (write-side commit) and takes its place, so every other state reads
//!   the same bytes; a file with several deltas on it is kept as it is.
//!   Its `.vmsn` is removed.
//!
//! Order: new files first (deltas through the write side's staging, the
//! `.vmsn` written then renamed), then the `.vmsd`, then the `.vmx`, each
//! written beside the old one and renamed over it; files no longer needed
//! are removed last. An interruption leaves the old or the new
//! configuration, each of which opens, with every state read as before but
//! one: a delete interrupted after its merge leaves the snapshot being
//! deleted in the tree, its file already holding the merged delta (the
//! delete is to be run again).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use diskimage_formats::write::{create_child, CreateOptions};
use diskimage_formats::{Format, OpenOptions};

use super::files::{inside_folder, refuse_incomplete, Staged, Steps};
use super::{vmsn, SnapshotOptions, SnapshotReport};
use crate::error::{Detail, Error, ErrorKind, Result, Scheme};
use crate::vm::vmx::{read_config, Vmx};
use crate::vm::{Snapshot, Vm};

/// Most deltas of one base name (`-000001` to `-999999`).
const MAX_DELTA_NUMBER: u32 = 999_999;

fn vm_err(kind: ErrorKind, vm: &Vm, what: String) -> Error {
    Error::new(kind, Scheme::Vm, Detail::Invalid(what)).in_file(&vm.config)
}

fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A value as VMware writes it inside quotes: `"` as `|22`, `|` as `|7C`,
/// control characters as `|XX`.
fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '"' | '|' => out.push_str(&format!("|{:02X}", c as u32)),
            c if (c as u32) < 0x20 || c == '\u{7f}' => out.push_str(&format!("|{:02X}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// A value read from `key = "value"` text (quotes off, `|XX` decoded), as
/// [`crate::vm::vmx::Dict`] reads it.
fn unquote_value(v: &str) -> String {
    let d = crate::vm::vmx::Dict::parse(format!("k = {v}").as_bytes());
    d.ok()
        .and_then(|d| d.get("k").map(str::to_owned))
        .unwrap_or_default()
}

/// `.vmx` text with the `fileName` of each given slot replaced (every line
/// of that key, any letter case); every other line is kept as it was.
fn set_file_names(text: &[u8], changes: &[(String, String)]) -> Vec<u8> {
    let text = String::from_utf8_lossy(text);
    let mut out = String::with_capacity(text.len() + 64);
    let mut seen = vec![false; changes.len()];
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches(['\n', '\r']);
        let eol = line.get(body.len()..).unwrap_or_default();
        let key = body.split_once('=').map(|(k, _)| k.trim());
        let hit = key.and_then(|k| {
            changes
                .iter()
                .position(|(slot, _)| k.eq_ignore_ascii_case(&format!("{slot}.fileName")))
        });
        match (hit, key) {
            (Some(i), Some(k)) => {
                if let (Some(s), Some((_, v))) = (seen.get_mut(i), changes.get(i)) {
                    *s = true;
                    out.push_str(&format!("{k} = \"{}\"{eol}", escape(v)));
                }
            }
            _ => out.push_str(line),
        }
    }
    for ((slot, v), s) in changes.iter().zip(seen) {
        if !s {
            if !out.is_empty() && !out.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(&format!("{slot}.fileName = \"{}\"\n", escape(v)));
        }
    }
    out.into_bytes()
}

/// One snapshot's entries of a `.vmsd` (`uid`, `disk0.fileName` ...), in
/// the order they were written.
#[derive(Debug, Clone, Default)]
struct Entry {
    fields: Vec<(String, String)>,
}

impl Entry {
    fn get(&self, field: &str) -> Option<&str> {
        self.fields
            .iter()
            .rev()
            .find(|(k, _)| k.eq_ignore_ascii_case(field))
            .map(|(_, v)| v.as_str())
    }

    fn set(&mut self, field: &str, value: &str) {
        match self
            .fields
            .iter_mut()
            .find(|(k, _)| k.eq_ignore_ascii_case(field))
        {
            Some(e) => e.1 = value.to_owned(),
            None => self.fields.push((field.to_owned(), value.to_owned())),
        }
    }

    fn remove(&mut self, field: &str) {
        self.fields.retain(|(k, _)| !k.eq_ignore_ascii_case(field));
    }
}

/// A `.vmsd` as text to rewrite: the global entries before the snapshots,
/// the snapshots (renumbered from 0 when written, as VMware numbers them),
/// and the global entries after them, each key spelled as it was.
#[derive(Debug, Clone, Default)]
struct VmsdDoc {
    head: Vec<(String, String)>,
    snaps: Vec<Entry>,
    tail: Vec<(String, String)>,
}

/// `snapshot12.disk0.fileName` -> (12, `disk0.fileName`).
fn split_index(key: &str) -> Option<(u32, &str)> {
    let rest = key
        .get(..8)?
        .eq_ignore_ascii_case("snapshot")
        .then(|| key.get(8..))??;
    let (n, field) = rest.split_once('.')?;
    if n.is_empty() || n.len() > 6 || !n.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    Some((n.parse().ok()?, field))
}

impl VmsdDoc {
    fn parse(text: &[u8]) -> VmsdDoc {
        let text = String::from_utf8_lossy(text);
        let mut doc = VmsdDoc::default();
        let mut snaps: BTreeMap<u32, Entry> = BTreeMap::new();
        for line in text.split('\n') {
            let line = line.trim_end_matches('\r').trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            let (k, v) = (k.trim(), unquote_value(v.trim()));
            if k.is_empty() {
                continue;
            }
            if let Some((n, field)) = split_index(k) {
                snaps.entry(n).or_default().set(field, &v);
            } else {
                let list = if snaps.is_empty() {
                    &mut doc.head
                } else {
                    &mut doc.tail
                };
                set_global(list, k, &v);
            }
        }
        doc.snaps = snaps.into_values().collect();
        doc
    }

    fn global(&self, key: &str) -> Option<&str> {
        self.head
            .iter()
            .chain(self.tail.iter())
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }

    /// Sets a global entry where it is, or adds it: `snapshot.numSnapshots`
    /// after the snapshots, others before them.
    fn set(&mut self, key: &str, value: &str) {
        let in_tail = self.tail.iter().any(|(k, _)| k.eq_ignore_ascii_case(key));
        let in_head = self.head.iter().any(|(k, _)| k.eq_ignore_ascii_case(key));
        if in_tail {
            set_global(&mut self.tail, key, value);
        } else if in_head || !key.eq_ignore_ascii_case("snapshot.numSnapshots") {
            set_global(&mut self.head, key, value);
        } else {
            set_global(&mut self.tail, key, value);
        }
    }

    fn remove(&mut self, key: &str) {
        self.head.retain(|(k, _)| !k.eq_ignore_ascii_case(key));
        self.tail.retain(|(k, _)| !k.eq_ignore_ascii_case(key));
    }

    fn by_uid(&mut self, uid: &str) -> Option<&mut Entry> {
        self.snaps.iter_mut().find(|e| e.get("uid") == Some(uid))
    }

    fn text(&self) -> Vec<u8> {
        let mut out = String::new();
        let mut line = |k: &str, v: &str| out.push_str(&format!("{k} = \"{}\"\n", escape(v)));
        for (k, v) in &self.head {
            line(k, v);
        }
        for (i, e) in self.snaps.iter().enumerate() {
            for (f, v) in &e.fields {
                line(&format!("snapshot{i}.{f}"), v);
            }
        }
        for (k, v) in &self.tail {
            line(k, v);
        }
        out.into_bytes()
    }
}

fn set_global(list: &mut Vec<(String, String)>, key: &str, value: &str) {
    match list.iter_mut().find(|(k, _)| k.eq_ignore_ascii_case(key)) {
        Some(e) => e.1 = value.to_owned(),
        None => list.push((key.to_owned(), value.to_owned())),
    }
}

/// The `.vmsd` beside the `.vmx`.
fn vmsd_path(vm: &Vm) -> PathBuf {
    vm.config.with_extension("vmsd")
}

fn read_doc(vm: &Vm) -> Result<(VmsdDoc, bool)> {
    let p = vmsd_path(vm);
    if p.is_file() {
        Ok((VmsdDoc::parse(&read_config(&p)?), true))
    } else {
        let mut doc = VmsdDoc::default();
        doc.head.push((".encoding".into(), "UTF-8".into()));
        Ok((doc, false))
    }
}

/// The name of the next delta of `top` (`sys-000002.vmdk` -> `sys-000003.vmdk`):
/// one past every `<base>-NNNNNN` name in the folder and in `taken`.
fn next_delta_name(vm: &Vm, top: &Path, taken: &[String]) -> Result<String> {
    let name = file_name(top);
    let stem = name
        .strip_suffix(".vmdk")
        .or_else(|| name.strip_suffix(".VMDK"))
        .unwrap_or(&name);
    let base = match stem.rsplit_once('-') {
        Some((b, n)) if n.len() == 6 && n.bytes().all(|c| c.is_ascii_digit()) => b,
        _ => stem,
    };
    let number = |n: &str| -> Option<u32> {
        let rest = n
            .get(..base.len())?
            .eq_ignore_ascii_case(base)
            .then(|| n.get(base.len()..))??;
        let digits = rest.strip_prefix('-')?.get(..6)?;
        digits
            .bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| digits.parse().ok())?
    };
    let mut max = 0u32;
    let entries =
        std::fs::read_dir(&vm.folder).map_err(|e| Error::host_io(Scheme::Vm, &vm.folder, e))?;
    for e in entries.take(100_000).flatten() {
        if let Some(n) = number(&e.file_name().to_string_lossy()) {
            max = max.max(n);
        }
    }
    for t in taken {
        if let Some(n) = number(t) {
            max = max.max(n);
        }
    }
    if max >= MAX_DELTA_NUMBER {
        return Err(vm_err(
            ErrorKind::LimitExceeded,
            vm,
            format!("{base}: no delta number left past -{max:06}"),
        ));
    }
    Ok(format!("{base}-{:06}.vmdk", max + 1))
}

/// Microseconds since 1970 as `.vmsd` `createTimeHigh`/`createTimeLow`
/// (the low half written as a signed 32-bit number).
fn create_time(micros: u64) -> (String, String) {
    let high = micros >> 32;
    let low = (micros & 0xffff_ffff) as u32 as i32;
    (high.to_string(), low.to_string())
}

fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Deltas made so far, removed again if the change does not complete.
struct MadeFiles(Vec<PathBuf>);

impl MadeFiles {
    fn keep(mut self) -> Vec<PathBuf> {
        std::mem::take(&mut self.0)
    }
}

impl Drop for MadeFiles {
    fn drop(&mut self) {
        for f in &self.0 {
            let _ = std::fs::remove_file(f);
        }
    }
}

/// Makes a sparse delta `child` on `parent` (which is only read).
fn make_delta(vm: &Vm, child: &Path, parent: &Path) -> Result<()> {
    inside_folder(vm, child)?;
    create_child(child, parent, &CreateOptions::new(Format::Vmdk, 0))
        .map_err(|e| Error::from_device(Scheme::Vm, e))
}

/// Installs the new `.vmsd` and then the new `.vmx` (written and synced
/// first, each renamed over the old one).
fn install_configs(vm: &Vm, doc: &VmsdDoc, vmx: &[u8], steps: &Steps<'_>) -> Result<()> {
    let vmsd = vmsd_path(vm);
    inside_folder(vm, &vmsd)?;
    inside_folder(vm, &vm.config)?;
    let new_vmsd = Staged::write(&vmsd, &doc.text())?;
    let new_vmx = Staged::write(&vm.config, vmx)?;
    steps.before("vmsd")?;
    new_vmsd.install()?;
    steps.before("vmx")?;
    new_vmx.install()
}

/// See [`super::create`].
pub(super) fn create(vm: &Vm, name: &str, opts: &SnapshotOptions) -> Result<SnapshotReport> {
    refuse_incomplete(vm, &[None], opts.fallback)?;
    let steps = Steps::new(opts.fail_before.as_deref());
    let vmx_text = read_config(&vm.config)?;
    let (mut doc, had_vmsd) = read_doc(vm)?;
    let max_uid = vm
        .snapshots
        .iter()
        .filter_map(|s| s.uid.trim().parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    let last = doc
        .global("snapshot.lastUID")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let uid = last.max(max_uid) + 1;
    let stem = vm
        .config
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "vm".into());
    let vmsn_name = format!("{stem}-Snapshot{uid}.vmsn");
    let vmsn_path = vm.folder.join(&vmsn_name);
    if vmsn_path.exists() {
        return Err(vm_err(
            ErrorKind::Unsupported,
            vm,
            format!("{} exists already: it is not replaced", vmsn_path.display()),
        ));
    }
    // The disks the snapshot captures and their new deltas.
    let mut plan: Vec<(String, String, PathBuf, String)> = Vec::new(); // slot, recorded, top, delta
    let mut taken: Vec<String> = Vec::new();
    for d in vm.disks.iter().filter(|d| !d.independent()) {
        let top = vm.resolve(&d.file, false)?;
        let delta = next_delta_name(vm, &top, &taken)?;
        taken.push(delta.clone());
        plan.push((d.slot.clone(), d.file.clone(), top, delta));
    }
    if plan.is_empty() {
        return Err(vm_err(
            ErrorKind::Unsupported,
            vm,
            "the VM has no disk a snapshot captures (only independent disks, or none)".into(),
        ));
    }
    let mut made = MadeFiles(Vec::new());
    steps.before("deltas")?;
    for (_, _, top, delta) in &plan {
        let child = vm.folder.join(delta);
        make_delta(vm, &child, top)?;
        made.0.push(child);
    }
    steps.before("vmsn")?;
    inside_folder(vm, &vmsn_path)?;
    let vmsn = Staged::write(&vmsn_path, &vmsn::build(&vmx_text))?;
    vmsn.install()?;
    made.0.push(vmsn_path.clone());
    // The .vmsd entry, in the order VMware writes its keys.
    let mut e = Entry::default();
    e.set("uid", &uid.to_string());
    e.set("filename", &vmsn_name);
    if let Some(parent) = vm
        .current_snapshot
        .as_deref()
        .filter(|c| vm.snapshots.iter().any(|s| s.uid == *c))
    {
        e.set("parent", parent);
    }
    e.set("displayName", name);
    if let Some(d) = &opts.description {
        e.set("description", d);
    }
    let (high, low) = create_time(now_micros());
    e.set("createTimeHigh", &high);
    e.set("createTimeLow", &low);
    e.set("numDisks", &plan.len().to_string());
    for (i, (slot, recorded, _, _)) in plan.iter().enumerate() {
        e.set(&format!("disk{i}.fileName"), recorded);
        e.set(&format!("disk{i}.node"), slot);
    }
    doc.snaps.push(e);
    doc.set("snapshot.lastUID", &uid.to_string());
    doc.set("snapshot.current", &uid.to_string());
    doc.set("snapshot.numSnapshots", &doc.snaps.len().to_string());
    let changes: Vec<(String, String)> = plan
        .iter()
        .map(|(slot, _, _, delta)| (slot.clone(), delta.clone()))
        .collect();
    let new_vmx = set_file_names(&vmx_text, &changes);
    install_configs(vm, &doc, &new_vmx, &steps)?;
    let mut created = made.keep();
    let vmsd = vmsd_path(vm);
    let mut changed = vec![vm.config.clone()];
    if had_vmsd {
        changed.insert(0, vmsd);
    } else {
        created.push(vmsd);
    }
    Ok(SnapshotReport {
        snapshot: name.to_owned(),
        uid: uid.to_string(),
        created,
        changed,
        removed: Vec::new(),
    })
}

/// See [`super::revert`].
pub(super) fn revert(vm: &Vm, which: &str, opts: &SnapshotOptions) -> Result<SnapshotReport> {
    let target = vm.find_snapshot(which)?.clone();
    refuse_incomplete(vm, &[Some(&target.uid)], opts.fallback)?;
    let steps = Steps::new(opts.fail_before.as_deref());
    let state_file = target
        .state_file
        .as_deref()
        .filter(|f| !f.trim().is_empty())
        .map(|f| vm.resolve(f, false))
        .transpose()?;
    let config = match state_file.as_deref().filter(|p| p.is_file()) {
        Some(p) => vmsn::read_config(p)?,
        None if opts.fallback => read_config(&vm.config)?,
        None => {
            return Err(vm_err(
                ErrorKind::MissingFile,
                vm,
                format!(
                    "snapshot {:?} (uid {}) has no state file ({}) holding its configuration; --fallback reverts its disks under the current configuration",
                    target.name,
                    target.uid,
                    state_file.as_ref().map_or_else(|| "none recorded".to_owned(), |p| p.display().to_string())
                ),
            ))
        }
    };
    // The restored configuration must parse as a .vmx.
    Vmx::parse(&config).map_err(|e| e.in_file(&vm.config))?;
    let mut changes = Vec::new();
    let mut created = Vec::new();
    let mut taken = Vec::new();
    let mut plan = Vec::new();
    for d in &target.disks {
        let file = vm.resolve(&d.file, false)?;
        let delta = next_delta_name(vm, &file, &taken)?;
        taken.push(delta.clone());
        plan.push((d.slot.clone(), file, delta));
    }
    let mut made = MadeFiles(Vec::new());
    steps.before("deltas")?;
    for (slot, file, delta) in &plan {
        let child = vm.folder.join(delta);
        make_delta(vm, &child, file)?;
        made.0.push(child);
        changes.push((slot.clone(), delta.clone()));
    }
    let (mut doc, _) = read_doc(vm)?;
    doc.set("snapshot.current", &target.uid);
    let new_vmx = set_file_names(&config, &changes);
    install_configs(vm, &doc, &new_vmx, &steps)?;
    created.extend(made.keep());
    Ok(SnapshotReport {
        snapshot: target.name.clone(),
        uid: target.uid.clone(),
        created,
        changed: vec![vmsd_path(vm), vm.config.clone()],
        removed: Vec::new(),
    })
}

/// The VMDKs of the folder with `parent` as their direct parent.
fn children_of(vm: &Vm, parent: &Path) -> Result<Vec<PathBuf>> {
    let want = canonical(parent);
    let options = OpenOptions::new().confine_to(Some(vm.folder.clone()));
    let mut out = Vec::new();
    let entries =
        std::fs::read_dir(&vm.folder).map_err(|e| Error::host_io(Scheme::Vm, &vm.folder, e))?;
    let mut names: Vec<PathBuf> = entries
        .take(100_000)
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = file_name(p).to_ascii_lowercase();
            n.ends_with(".vmdk") && !n.ends_with("-ctk.vmdk") && p.is_file()
        })
        .collect();
    names.sort();
    for p in names {
        let Ok(own) = diskimage_formats::open(&p, &options.clone().no_parents(true)) else {
            continue;
        };
        let own_files = own.info().files.len();
        if own.info().files.first().map(|f| canonical(f)) != Some(canonical(&p)) {
            continue;
        }
        drop(own);
        let Ok(all) = diskimage_formats::dependencies(&p, &options) else {
            continue;
        };
        if all.get(own_files).map(|f| canonical(f)) == Some(want.clone()) {
            out.push(p);
        }
    }
    Ok(out)
}

/// The files of the VMDK `image` itself (descriptor and extents, without
/// parents) and its change-tracking file, if any.
fn own_files(image: &Path, folder: &Path) -> Result<Vec<PathBuf>> {
    let options = OpenOptions::new()
        .confine_to(Some(folder.to_path_buf()))
        .no_parents(true);
    let img =
        diskimage_formats::open(image, &options).map_err(|e| Error::from_device(Scheme::Vm, e))?;
    let mut files = img.info().files.clone();
    let name = file_name(image);
    if let Some(stem) = name.strip_suffix(".vmdk") {
        let ctk = image.with_file_name(format!("{stem}-ctk.vmdk"));
        if ctk.is_file() {
            files.push(ctk);
        }
    }
    Ok(files)
}

/// See [`super::delete`].
pub(super) fn delete(vm: &Vm, which: &str, opts: &SnapshotOptions) -> Result<SnapshotReport> {
    let target: Snapshot = vm.find_snapshot(which)?.clone();
    refuse_incomplete(vm, &[None, Some(&target.uid)], opts.fallback)?;
    let steps = Steps::new(opts.fail_before.as_deref());
    let vmx_text = read_config(&vm.config)?;
    let (mut doc, _) = read_doc(vm)?;
    // Which files other states name (the current state, other snapshots).
    let mut named_elsewhere: Vec<PathBuf> = Vec::new();
    for d in &vm.disks {
        if let Ok(p) = vm.resolve(&d.file, false) {
            named_elsewhere.push(canonical(&p));
        }
    }
    for s in vm.snapshots.iter().filter(|s| s.uid != target.uid) {
        for d in &s.disks {
            if let Ok(p) = vm.resolve(&d.file, false) {
                named_elsewhere.push(canonical(&p));
            }
        }
    }
    // Per disk: merge the one delta on the snapshot's file into it.
    let mut merges: Vec<(PathBuf, PathBuf, Vec<PathBuf>)> = Vec::new(); // file, its delta, the delta's children
    for d in &target.disks {
        let file = vm.resolve(&d.file, false)?;
        if named_elsewhere.contains(&canonical(&file)) {
            continue;
        }
        let children = children_of(vm, &file)?;
        let [child] = children.as_slice() else {
            continue;
        };
        inside_folder(vm, &file)?;
        let grandchildren = children_of(vm, child)?;
        for g in &grandchildren {
            inside_folder(vm, g)?;
        }
        merges.push((file, child.clone(), grandchildren));
    }
    let options = OpenOptions::new().confine_to(Some(vm.folder.clone()));
    let mut changed = Vec::new();
    let mut removed = Vec::new();
    for (file, child, grandchildren) in &merges {
        steps.before("merge")?;
        diskimage_formats::write::commit::commit(child, &options, false, &mut |_, _| {})
            .map_err(|e| Error::from_device(Scheme::Vm, e))?;
        changed.push(file.clone());
        steps.before("relink")?;
        for g in grandchildren {
            diskimage_formats::write::relink(g, file)
                .map_err(|e| Error::from_device(Scheme::Vm, e))?;
            changed.push(g.clone());
        }
    }
    // The tree without the snapshot: its children take its parent.
    doc.snaps
        .retain(|e| e.get("uid") != Some(target.uid.as_str()));
    for s in vm
        .snapshots
        .iter()
        .filter(|s| s.parent.as_deref() == Some(target.uid.as_str()))
    {
        if let Some(e) = doc.by_uid(&s.uid) {
            match &target.parent {
                Some(p) => e.set("parent", p),
                None => e.remove("parent"),
            }
        }
    }
    if vm.current_snapshot.as_deref() == Some(target.uid.as_str()) {
        match &target.parent {
            Some(p) => doc.set("snapshot.current", p),
            None => doc.remove("snapshot.current"),
        }
    }
    doc.set("snapshot.numSnapshots", &doc.snaps.len().to_string());
    // Every name of a merged delta now names the file it was merged into.
    let merged_into = |recorded: &str| -> Option<String> {
        let p = canonical(&vm.resolve(recorded, false).ok()?);
        merges
            .iter()
            .find(|(_, child, _)| canonical(child) == p)
            .map(|(file, _, _)| file_name(file))
    };
    for e in &mut doc.snaps {
        let names: Vec<(String, String)> = e
            .fields
            .iter()
            .filter(|(k, _)| {
                let k = k.to_ascii_lowercase();
                k.starts_with("disk") && k.ends_with(".filename")
            })
            .filter_map(|(k, v)| Some((k.clone(), merged_into(v)?)))
            .collect();
        for (k, v) in names {
            e.set(&k, &v);
        }
    }
    let changes: Vec<(String, String)> = vm
        .disks
        .iter()
        .filter_map(|d| Some((d.slot.clone(), merged_into(&d.file)?)))
        .collect();
    let new_vmx = if changes.is_empty() {
        vmx_text
    } else {
        set_file_names(&vmx_text, &changes)
    };
    install_configs(vm, &doc, &new_vmx, &steps)?;
    changed.push(vmsd_path(vm));
    changed.push(vm.config.clone());
    // Files no longer needed: the merged deltas, the snapshot's .vmsn.
    steps.before("remove")?;
    for (_, child, _) in &merges {
        for f in own_files(child, &vm.folder)? {
            std::fs::remove_file(&f).map_err(|e| Error::host_io(Scheme::Vm, &f, e))?;
            removed.push(f);
        }
    }
    if let Some(f) = target
        .state_file
        .as_deref()
        .filter(|f| !f.trim().is_empty())
    {
        let p = vm.resolve(f, false)?;
        if p.is_file() {
            inside_folder(vm, &p)?;
            std::fs::remove_file(&p).map_err(|e| Error::host_io(Scheme::Vm, &p, e))?;
            removed.push(p);
        }
    }
    Ok(SnapshotReport {
        snapshot: target.name.clone(),
        uid: target.uid.clone(),
        created: Vec::new(),
        changed,
        removed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped_as_vmware_writes_them() {
        assert_eq!(escape("a \"b\" | c\nd"), "a |22b|22 |7C c|0Ad");
        assert_eq!(
            unquote_value(&format!("\"{}\"", escape("a \"b\" | c\nd"))),
            "a \"b\" | c\nd"
        );
    }

    #[test]
    fn vmx_file_names_replaced_line_by_line() {
        let text = b"a = \"1\"\r\nscsi0:0.fileName = \"x.vmdk\"\r\nSCSI0:0.FILENAME = \"y.vmdk\"\r\nb = \"2\"\r\n";
        let out = set_file_names(text, &[("scsi0:0".into(), "z-000001.vmdk".into())]);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "a = \"1\"\r\nscsi0:0.fileName = \"z-000001.vmdk\"\r\nSCSI0:0.FILENAME = \"z-000001.vmdk\"\r\nb = \"2\"\r\n"
        );
    }

    #[test]
    fn vmsd_round_trip_and_renumbering() {
        let text = b".encoding = \"UTF-8\"\nsnapshot.lastUID = \"3\"\nsnapshot.current = \"3\"\n\
            snapshot0.uid = \"1\"\nsnapshot0.displayName = \"a\"\nsnapshot2.uid = \"3\"\nsnapshot2.parent = \"1\"\n\
            snapshot.numSnapshots = \"2\"\n";
        let mut doc = VmsdDoc::parse(text);
        assert_eq!(doc.snaps.len(), 2);
        assert_eq!(doc.global("snapshot.lastuid"), Some("3"));
        doc.snaps.remove(0);
        doc.set("snapshot.numSnapshots", "1");
        doc.set("snapshot.current", "3");
        assert_eq!(
            String::from_utf8(doc.text()).unwrap(),
            ".encoding = \"UTF-8\"\nsnapshot.lastUID = \"3\"\nsnapshot.current = \"3\"\n\
             snapshot0.uid = \"3\"\nsnapshot0.parent = \"1\"\nsnapshot.numSnapshots = \"1\"\n"
        );
    }

    #[test]
    fn create_time_halves() {
        // 1700001743 s: the low half is >= 2^31 and written negative.
        assert_eq!(
            create_time(1_700_001_743_000_000),
            ("395812".to_owned(), "-2147331648".to_owned())
        );
    }
}
