//! VirtualBox snapshots of a powered-off machine, on its `.vbox` and media.
//!
//! What VirtualBox does, and so what is done here:
//! - **Take.** A `<Snapshot uuid= name= timeStamp=>` element (with its
//!   `<Description>`, a copy of the machine's `<Hardware>` and
//!   `<StorageControllers>` with the attachments as they were) goes under
//!   the current snapshot's `<Snapshots>` (or under `<Machine>` for the
//!   first one). Every attached hard disk whose base medium is `Normal`
//!   gets a new differencing medium `Snapshots/{uuid}.vmdk` (or `.vhd`: the
//!   parent's format) registered as a child of its parent in
//!   `<MediaRegistry>`; the machine's attachments move to the new media
//!   and `Machine@currentSnapshot` names the snapshot. `Immutable`,
//!   `Writethrough`, `Shareable`, `Readonly` and `MultiAttach` media are
//!   not part of snapshots and are left alone.
//! - **Restore.** New differencing media over the snapshot's media become
//!   the current state, with the snapshot's hardware; the differencing
//!   media of the old current state that nothing else uses (no snapshot
//!   records them, no medium descends from them) are discarded, as
//!   VirtualBox discards the current state it restores over.
//! - **Delete.** The snapshot leaves the tree (its child snapshot moves up);
//!   each medium it records is merged with its one differencing child (the
//!   child's data written into it, the child's descendants relinked to it:
//!   a VMDK's descriptor keys, a VHD's dynamic header and parent locators;
//!   the child removed), so every other state reads the same bytes. The
//!   merge changes what the deleted snapshot itself reads; an interruption
//!   before the `.vbox` is renamed leaves the old configuration, whose
//!   other states read as before. A
//!   differencing medium with no child that no other state uses (its
//!   state was restored over) is deleted, as VirtualBox deletes it.
//!   A medium with several children, or a snapshot with several child
//!   snapshots, is refused, as VirtualBox refuses them.
//!
//! VirtualBox's UUIDs are carried by the media: a VMDK child's descriptor
//! gets `ddb.uuid.image`, `ddb.uuid.parent`, `ddb.uuid.modification` and
//! `ddb.uuid.parentmodification`; a VHD child's medium UUID is the unique
//! ID of its footer and its header names the parent's (VirtualBox copies
//! the 16 bytes into its UUID structure, whose text form reads the first
//! three fields little-endian).
//!
//! Refused: a VM that is saved (`Machine@stateFile`, a `.sav` in the
//! snapshot folder that no snapshot records) or in use (a process holding
//! the `.vbox`, a medium or `Logs/VBox.log` open; a `.vbox-tmp` left by a
//! settings save), VDI media (VDI children are not yet written), media
//! registered outside the `.vbox`, and a VM with an incomplete state unless
//! [`SnapshotOptions::fallback`] (the states acted on must be complete
//! anyway). The new `.vbox` is staged beside the old one and synced (the
//! shared `files::Staged`), the old one copied to `NAME.vbox-prev` (as
//! VirtualBox keeps it) and the new one renamed into place. Nothing
//! outside the VM's folder is written.
//!
//! The `.vbox` is edited as a tree: elements, attributes in their order,
//! text and comments are kept; the document is written back indented by
//! two spaces as VirtualBox writes it. It is parsed with the same limits as
//! the reader ([`crate::vm::vbox`]): no document type declarations, no
//! entities beyond XML's five, bounded depth and element count.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use diskimage_formats::write::{self as fw, CreateOptions};
use diskimage_formats::{Format, Guid, OpenOptions};

use super::files::{canonical, refuse_incomplete, Staged, Steps};
use super::{SnapshotOptions, SnapshotReport};
use crate::error::{Detail, Error, ErrorKind, Result, Scheme};
use crate::vm::vmx::read_config;
use crate::vm::xml::bad;
use crate::vm::xml::{self, parse, serialize, unreachable_el, El, Node};
use crate::vm::{Vm, VmOptions};

/// Most `/proc` entries looked at for processes holding the VM's files.
const MAX_PROC_ENTRIES: usize = 100_000;

// ------------------------------------------------------- machine model

/// A uuid without braces, lower case.
fn norm(u: &str) -> String {
    u.trim()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .to_ascii_lowercase()
}

fn braced(u: &str) -> String {
    format!("{{{u}}}")
}

/// A new random (version 4) UUID, lower case without braces.
fn new_uuid() -> Result<String> {
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|e| Error::host_io(Scheme::Vm, "/dev/urandom", e))?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    Ok(Guid::from_be_bytes(b).to_string().to_ascii_lowercase())
}

fn now_stamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    diskimage_formats::time::format_unix_utc(i64::try_from(secs).unwrap_or(0))
}

/// A medium of the machine's registry.
#[derive(Debug, Clone)]
struct Medium {
    location: String,
    format: String,
    parent: Option<String>,
    /// The base medium's `type` (`Normal` when absent).
    kind: String,
    children: Vec<String>,
}

impl Medium {
    /// Whether snapshots capture it (its base is `Normal`).
    fn snapshotted(&self) -> bool {
        self.kind.eq_ignore_ascii_case("Normal")
    }
}

fn collect_media(
    el: &El,
    parent: Option<&str>,
    kind: Option<&str>,
    out: &mut HashMap<String, Medium>,
) {
    for d in el.els().filter(|e| e.is("HardDisk")) {
        let Some(uuid) = d.attr("uuid").map(norm) else {
            continue;
        };
        let kind = kind.map_or_else(
            || d.attr("type").unwrap_or("Normal").to_owned(),
            str::to_owned,
        );
        if let Some(p) = parent.and_then(|p| out.get_mut(p)) {
            p.children.push(uuid.clone());
        }
        out.insert(
            uuid.clone(),
            Medium {
                location: d.attr("location").unwrap_or_default().to_owned(),
                format: d.attr("format").unwrap_or_default().to_owned(),
                parent: parent.map(str::to_owned),
                kind: kind.clone(),
                children: Vec::new(),
            },
        );
        collect_media(d, Some(&uuid), Some(&kind), out);
    }
}

/// The `HardDisk` element of `uuid` under `el`, at any depth.
fn disk_mut<'a>(el: &'a mut El, uuid: &str) -> Option<&'a mut El> {
    for d in el.els_mut().filter(|e| e.is("HardDisk")) {
        if d.attr("uuid").map(norm).as_deref() == Some(uuid) {
            return Some(d);
        }
        if let Some(found) = disk_mut(d, uuid) {
            return Some(found);
        }
    }
    None
}

/// Removes the `HardDisk` element of `uuid` under `el`, at any depth.
fn remove_disk(el: &mut El, uuid: &str) -> Option<El> {
    let at = el.kids.iter().position(|n| {
        matches!(n, Node::El(e) if e.is("HardDisk") && e.attr("uuid").map(norm).as_deref() == Some(uuid))
    });
    if let Some(i) = at {
        if let Node::El(e) = el.kids.remove(i) {
            return Some(e);
        }
    }
    el.els_mut()
        .filter(|e| e.is("HardDisk"))
        .find_map(|d| remove_disk(d, uuid))
}

/// The storage controllers of a machine or snapshot element: its own
/// `StorageControllers`, else its `Hardware`'s.
fn storage_mut(holder: &mut El) -> Option<&mut El> {
    if holder.index_of("StorageControllers").is_some() {
        return holder.child_mut("StorageControllers");
    }
    holder
        .child_mut("Hardware")
        .and_then(|h| h.child_mut("StorageControllers"))
}

fn storage(holder: &El) -> Option<&El> {
    holder.child("StorageControllers").or_else(|| {
        holder
            .child("Hardware")
            .and_then(|h| h.child("StorageControllers"))
    })
}

/// The hard-disk media attached in a machine or snapshot element.
fn attached(holder: &El) -> Vec<String> {
    let mut out = Vec::new();
    for c in storage(holder).into_iter().flat_map(|s| s.els()) {
        for a in c.els().filter(|a| a.is("AttachedDevice")) {
            if !a
                .attr("type")
                .is_some_and(|t| t.eq_ignore_ascii_case("HardDisk"))
            {
                continue;
            }
            if let Some(u) = a.child("Image").and_then(|i| i.attr("uuid")) {
                out.push(norm(u));
            }
        }
    }
    out
}

/// Points the hard-disk attachments of a holder at new media.
fn reattach(holder: &mut El, map: &HashMap<String, String>) {
    let Some(s) = storage_mut(holder) else {
        return;
    };
    for c in s.els_mut() {
        for a in c.els_mut().filter(|a| a.is("AttachedDevice")) {
            if !a
                .attr("type")
                .is_some_and(|t| t.eq_ignore_ascii_case("HardDisk"))
            {
                continue;
            }
            if let Some(img) = a.child_mut("Image") {
                if let Some(new) = img.attr("uuid").map(norm).and_then(|u| map.get(&u)) {
                    img.set_attr("uuid", &braced(new));
                }
            }
        }
    }
}

/// Where a snapshot element lies: indices from the machine down.
type SnapPath = Vec<usize>;

#[derive(Debug, Clone)]
struct SnapAt {
    uuid: String,
    name: String,
    path: SnapPath,
}

fn collect_snapshots(el: &El, path: &SnapPath, out: &mut Vec<SnapAt>) {
    for (i, n) in el.kids.iter().enumerate() {
        let Node::El(s) = n else { continue };
        if !s.is("Snapshot") {
            continue;
        }
        let mut p = path.clone();
        p.push(i);
        let uuid = s.attr("uuid").map(norm).unwrap_or_default();
        out.push(SnapAt {
            uuid: uuid.clone(),
            name: s.attr("name").unwrap_or(&uuid).to_owned(),
            path: p.clone(),
        });
        if let Some(j) = s.index_of("Snapshots") {
            if let Some(Node::El(kids)) = s.kids.get(j) {
                let mut q = p.clone();
                q.push(j);
                collect_snapshots(kids, &q, out);
            }
        }
    }
}

fn at_path<'a>(el: &'a El, path: &[usize]) -> Option<&'a El> {
    let mut cur = el;
    for &i in path {
        match cur.kids.get(i) {
            Some(Node::El(e)) => cur = e,
            _ => return None,
        }
    }
    Some(cur)
}

fn at_path_mut<'a>(el: &'a mut El, path: &[usize]) -> Option<&'a mut El> {
    let mut cur = el;
    for &i in path {
        match cur.kids.get_mut(i) {
            Some(Node::El(e)) => cur = e,
            _ => return None,
        }
    }
    Some(cur)
}

/// A `.vbox` being changed: its tree, the VM read from it, its folder.
struct Machine {
    config: PathBuf,
    folder: PathBuf,
    doc: Vec<Node>,
    vm: Vm,
}

fn vm_err(kind: ErrorKind, what: String) -> Error {
    Error::new(kind, Scheme::Vm, Detail::Invalid(what))
}

impl Machine {
    fn load(vm: &Vm) -> Result<Machine> {
        let config = vm.config.as_path();
        let doc = parse(&read_config(config)?).map_err(|e| e.in_file(config))?;
        let m = Machine {
            config: config.to_path_buf(),
            folder: vm.folder.clone(),
            doc,
            vm: vm.clone(),
        };
        if m.root().and_then(|r| r.child("Machine")).is_none() {
            return Err(bad("no VirtualBox/Machine element", 0).in_file(config));
        }
        Ok(m)
    }

    fn root(&self) -> Option<&El> {
        xml::root(&self.doc, "VirtualBox")
    }

    fn machine(&self) -> &El {
        match self.root().and_then(|r| r.child("Machine")) {
            Some(m) => m,
            None => unreachable_el(),
        }
    }

    fn machine_mut(&mut self) -> &mut El {
        match xml::root_mut(&mut self.doc, "VirtualBox").and_then(|r| r.child_mut("Machine")) {
            Some(m) => m,
            None => unreachable_el(),
        }
    }

    fn media(&self) -> HashMap<String, Medium> {
        let mut out = HashMap::new();
        if let Some(hd) = self
            .machine()
            .child("MediaRegistry")
            .and_then(|r| r.child("HardDisks"))
        {
            collect_media(hd, None, None, &mut out);
        }
        out
    }

    fn snapshots(&self) -> Vec<SnapAt> {
        let mut out = Vec::new();
        collect_snapshots(self.machine(), &Vec::new(), &mut out);
        out
    }

    fn find(&self, which: &str) -> Result<SnapAt> {
        let w = norm(which);
        let all = self.snapshots();
        if let Some(s) = all.iter().find(|s| s.uuid == w) {
            return Ok(s.clone());
        }
        let named: Vec<&SnapAt> = all.iter().filter(|s| s.name == which).collect();
        match named.as_slice() {
            [one] => Ok((*one).clone()),
            [] => {
                let names: Vec<String> = all
                    .iter()
                    .map(|s| format!("{} (uid {})", s.name, s.uuid))
                    .collect();
                Err(vm_err(
                    ErrorKind::NotFound,
                    format!(
                        "no snapshot named {which:?}; snapshots: {}",
                        if names.is_empty() {
                            "none".to_owned()
                        } else {
                            names.join(", ")
                        }
                    ),
                )
                .in_file(&self.config))
            }
            many => Err(vm_err(
                ErrorKind::Ambiguous,
                format!(
                    "{} snapshots are named {which:?}; name one by uid: {}",
                    many.len(),
                    many.iter()
                        .map(|s| s.uuid.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
            .in_file(&self.config)),
        }
    }

    /// The snapshot folder (`Machine@snapshotFolder`, default `Snapshots`),
    /// relative to the VM's folder, refused when it leads out of it.
    fn snapshot_folder(&self) -> Result<(String, PathBuf)> {
        let rel = self
            .machine()
            .attr("snapshotFolder")
            .unwrap_or("Snapshots")
            .replace('\\', "/");
        let p = Path::new(&rel);
        let inside = !rel.is_empty()
            && p.components()
                .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
        if !inside {
            return Err(vm_err(
                ErrorKind::OutsideFolder,
                format!(
                    "snapshot folder {rel:?} is not inside the VM folder {}; nothing is written outside it",
                    self.folder.display()
                ),
            )
            .in_file(&self.config));
        }
        Ok((rel.trim_end_matches('/').to_owned(), self.folder.join(&rel)))
    }

    /// A medium's file, refused outside the VM folder.
    fn medium_path(&self, m: &Medium) -> Result<PathBuf> {
        self.vm.resolve(&m.location, false)
    }

    /// The location to record for a file inside the folder (relative).
    fn location_of(&self, file: &Path) -> String {
        file.strip_prefix(&self.folder)
            .unwrap_or(file)
            .to_string_lossy()
            .replace('\\', "/")
    }

    /// Refuses a VM that is saved, in use, or being written.
    fn refuse_running(&self) -> Result<()> {
        let refuse = |what: String| {
            Err(vm_err(
                ErrorKind::Unsupported,
                format!("the VM is not powered off: {what}; snapshots are only written for a VM that is off"),
            )
            .in_file(&self.config))
        };
        let m = self.machine();
        if let Some(sav) = m.attr("stateFile") {
            return refuse(format!("it is saved (state file {sav})"));
        }
        let name = self
            .config
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = self.folder.join(format!("{name}-tmp"));
        if tmp.exists() {
            return refuse(format!(
                "{} exists (a settings save in progress or interrupted)",
                tmp.display()
            ));
        }
        // Saved states that no snapshot records: a saved machine.
        let recorded: HashSet<String> = self
            .vm
            .snapshots
            .iter()
            .filter_map(|s| s.state_file.as_deref())
            .filter_map(|f| {
                Path::new(&f.replace('\\', "/"))
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
            })
            .collect();
        if let Ok((_, dir)) = self.snapshot_folder() {
            if let Ok(entries) = std::fs::read_dir(&dir) {
                for e in entries.flatten().take(MAX_PROC_ENTRIES) {
                    let n = e.file_name().to_string_lossy().into_owned();
                    if n.to_ascii_lowercase().ends_with(".sav") && !recorded.contains(&n) {
                        return refuse(format!("saved state {} found", e.path().display()));
                    }
                }
            }
        }
        // A process holding the configuration, a medium or the log open.
        let mut watched: HashSet<PathBuf> = HashSet::new();
        watched.insert(canonical(&self.config));
        watched.insert(canonical(&self.folder.join("Logs").join("VBox.log")));
        for med in self.media().values() {
            if let Ok(p) = self.medium_path(med) {
                watched.insert(canonical(&p));
            }
        }
        if let Some((pid, file)) = held_open(&watched) {
            return refuse(format!("process {pid} has {} open", file.display()));
        }
        Ok(())
    }

    /// Writes the tree back: the new text staged beside the `.vbox`
    /// (written whole and synced; step `stage`), the old file copied to
    /// `NAME-prev` as VirtualBox keeps it (step `prev`), `before_rename`
    /// run, then the new one renamed into place (step `vbox`). Returns the
    /// files changed.
    fn save(
        &self,
        steps: &Steps<'_>,
        before_rename: &mut dyn FnMut() -> Result<()>,
    ) -> Result<Vec<PathBuf>> {
        let text = serialize(&self.doc);
        // What is written must read back through the reader.
        crate::vm::vbox::Vbox::parse(text.as_bytes()).map_err(|e| e.in_file(&self.config))?;
        let name = self
            .config
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let prev = self.folder.join(format!("{name}-prev"));
        steps.before("stage")?;
        let staged = Staged::write(&self.config, text.as_bytes())?;
        let io = |e| Error::host_io(Scheme::Vm, &prev, e);
        steps.before("prev")?;
        std::fs::copy(&self.config, &prev).map_err(io)?;
        std::fs::File::open(&prev)
            .and_then(|f| f.sync_all())
            .map_err(io)?;
        before_rename()?;
        steps.before("vbox")?;
        staged.install()?;
        Ok(vec![self.config.clone(), prev])
    }
}

/// A process (pid) holding one of `files` open, from `/proc/*/fd`.
fn held_open(files: &HashSet<PathBuf>) -> Option<(u32, PathBuf)> {
    let me = std::process::id();
    let procs = std::fs::read_dir("/proc").ok()?;
    let mut seen = 0usize;
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            seen += 1;
            if seen > MAX_PROC_ENTRIES {
                return None;
            }
            if let Ok(target) = std::fs::read_link(fd.path()) {
                if files.contains(&target) {
                    return Some((pid, target));
                }
            }
        }
    }
    None
}

/// `target` relative to the folder `from`, with `/` separators.
fn relative(from: &Path, target: &Path) -> String {
    let from = canonical(from);
    let target = canonical(target);
    let a: Vec<_> = from.components().collect();
    let b: Vec<_> = target.components().collect();
    let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut parts: Vec<String> = a.iter().skip(common).map(|_| "..".to_owned()).collect();
    parts.extend(
        b.iter()
            .skip(common)
            .map(|c| c.as_os_str().to_string_lossy().into_owned()),
    );
    parts.join("/")
}

fn dir_of(p: &Path) -> PathBuf {
    p.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf()
}

/// The properties a reader reports for one image (its own file only).
fn properties(path: &Path) -> Result<Vec<(String, String)>> {
    let img = diskimage_formats::open(path, &OpenOptions::new().no_parents(true))?;
    Ok(img.info().properties.clone())
}

fn prop(props: &[(String, String)], key: &str) -> Option<String> {
    props.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
}

const NIL_UUID: &str = "00000000-0000-0000-0000-000000000000";

/// The medium UUID VirtualBox reads from a VHD: the footer's unique ID
/// (its 16 bytes as VirtualBox's UUID structure).
fn vhd_unique_id(path: &Path) -> Result<String> {
    use std::io::{Seek, SeekFrom};
    let io = |e| Error::host_io(Scheme::Vm, path, e);
    let mut f = std::fs::File::open(path).map_err(io)?;
    let len = f.metadata().map_err(io)?.len();
    if len < 512 {
        return Err(bad("too short for a VHD footer", 0).in_file(path));
    }
    let mut footer = [0u8; 512];
    f.seek(SeekFrom::Start(len - 512)).map_err(io)?;
    f.read_exact(&mut footer).map_err(io)?;
    if footer.get(..8) != Some(b"conectix") {
        return Err(bad("no VHD footer (conectix) at the end", len - 512).in_file(path));
    }
    Ok(Guid::read_le(&footer, 68).to_string().to_ascii_lowercase())
}

/// A differencing medium made over a parent.
struct NewChild {
    uuid: String,
    location: String,
    path: PathBuf,
}

/// Makes a differencing medium over `parent` (uuid `parent_uuid`) in the
/// snapshot folder, labelled with VirtualBox's UUIDs.
fn make_child(mach: &Machine, parent_uuid: &str, parent: &Medium) -> Result<NewChild> {
    let parent_path = mach.medium_path(parent)?;
    let (_, dir) = mach.snapshot_folder()?;
    std::fs::create_dir_all(&dir).map_err(|e| Error::host_io(Scheme::Vm, &dir, e))?;
    match parent.format.to_ascii_uppercase().as_str() {
        "VMDK" => {
            let uuid = new_uuid()?;
            let path = dir.join(format!("{{{uuid}}}.vmdk"));
            fw::create_child(&path, &parent_path, &CreateOptions::new(Format::Vmdk, 0))?;
            let labelled = (|| -> Result<()> {
                let pprops = properties(&parent_path)?;
                let pmod = prop(&pprops, "ddb.uuid.modification").unwrap_or_else(|| NIL_UUID.into());
                let hint = relative(&dir, &parent_path);
                let modification = new_uuid()?;
                fw::set_vmdk_descriptor_keys(
                    &path,
                    &[
                        ("parentFileNameHint", hint.as_str()),
                        ("ddb.uuid.image", uuid.as_str()),
                        ("ddb.uuid.parent", parent_uuid),
                        ("ddb.uuid.modification", modification.as_str()),
                        ("ddb.uuid.parentmodification", pmod.as_str()),
                    ],
                )?;
                Ok(())
            })();
            if let Err(e) = labelled {
                let _ = std::fs::remove_file(&path);
                return Err(e);
            }
            Ok(NewChild {
                location: mach.location_of(&path),
                uuid,
                path,
            })
        }
        "VHD" => {
            let tmp = dir.join(format!(".new-{}.vhd", new_uuid()?));
            fw::create_child(&tmp, &parent_path, &CreateOptions::new(Format::Vhd, 0))?;
            let named = (|| -> Result<NewChild> {
                let uuid = vhd_unique_id(&tmp)?;
                let path = dir.join(format!("{{{uuid}}}.vhd"));
                if path.exists() {
                    return Err(vm_err(
                        ErrorKind::Corrupt,
                        format!("{} exists already", path.display()),
                    ));
                }
                std::fs::rename(&tmp, &path).map_err(|e| Error::host_io(Scheme::Vm, &path, e))?;
                Ok(NewChild {
                    location: mach.location_of(&path),
                    uuid,
                    path,
                })
            })();
            if named.is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
            named
        }
        "VDI" => Err(Error::unsupported(
            Scheme::Vm,
            format!(
                "medium {{{parent_uuid}}} ({}) is VDI: VDI differencing images are not yet written",
                parent.location
            ),
        )
        .in_file(&mach.config)),
        other => Err(Error::unsupported(
            Scheme::Vm,
            format!(
                "medium {{{parent_uuid}}} ({}) is {other}: differencing media are written for VMDK and VHD only",
                parent.location
            ),
        )
        .in_file(&mach.config)),
    }
}

/// Checks that every medium of `uuids` can get a child (before any is made).
fn check_media(mach: &Machine, media: &HashMap<String, Medium>, uuids: &[String]) -> Result<()> {
    for u in uuids {
        let Some(m) = media.get(u) else {
            return Err(Error::unsupported(
                Scheme::Vm,
                format!("medium {{{u}}} is not in the VM's media registry (a global registry is not written)"),
            )
            .in_file(&mach.config));
        };
        if !m.snapshotted() {
            continue;
        }
        mach.medium_path(m)?;
        match m.format.to_ascii_uppercase().as_str() {
            "VMDK" | "VHD" => {}
            "VDI" => {
                return Err(Error::unsupported(
                    Scheme::Vm,
                    format!("medium {{{u}}} ({}) is VDI: VDI differencing images are not yet written", m.location),
                )
                .in_file(&mach.config))
            }
            other => {
                return Err(Error::unsupported(
                    Scheme::Vm,
                    format!("medium {{{u}}} ({}) is {other:?}: differencing media are written for VMDK and VHD only", m.location),
                )
                .in_file(&mach.config))
            }
        }
    }
    Ok(())
}

/// Makes children over the snapshotted media of `uuids`; on failure the
/// ones made are removed. Returns parent uuid -> child.
fn make_children(
    mach: &Machine,
    media: &HashMap<String, Medium>,
    uuids: &[String],
) -> Result<Vec<(String, NewChild)>> {
    let mut made: Vec<(String, NewChild)> = Vec::new();
    for u in uuids {
        let Some(m) = media.get(u) else { continue };
        if !m.snapshotted() || made.iter().any(|(p, _)| p == u) {
            continue;
        }
        match make_child(mach, u, m) {
            Ok(c) => made.push((u.clone(), c)),
            Err(e) => {
                remove_children(&made);
                return Err(e);
            }
        }
    }
    Ok(made)
}

fn remove_children(made: &[(String, NewChild)]) {
    for (_, c) in made {
        let _ = std::fs::remove_file(&c.path);
    }
}

/// Registers each new child under its parent in the media registry.
fn register(machine: &mut El, made: &[(String, NewChild)], media: &HashMap<String, Medium>) {
    let Some(hd) = machine
        .child_mut("MediaRegistry")
        .and_then(|r| r.child_mut("HardDisks"))
    else {
        return;
    };
    for (parent, c) in made {
        if let Some(p) = disk_mut(hd, parent) {
            let mut d = El::new("HardDisk");
            d.set_attr("uuid", &braced(&c.uuid));
            d.set_attr("location", &c.location);
            d.set_attr(
                "format",
                media.get(parent).map_or("VMDK", |m| m.format.as_str()),
            );
            p.kids.push(Node::El(d));
        }
    }
}

fn stamp_machine(machine: &mut El, current: Option<&str>) {
    match current {
        Some(c) => machine.set_attr("currentSnapshot", &braced(c)),
        None => machine.remove_attr("currentSnapshot"),
    }
    if machine.attr("currentStateModified").is_some() {
        machine.set_attr("currentStateModified", "false");
    }
    machine.set_attr("lastStateChange", &now_stamp());
}

// ------------------------------------------------------------ operations

/// Takes a snapshot `name` of the powered-off machine `vbox`.
pub(super) fn create(vm: &Vm, name: &str, opts: &SnapshotOptions) -> Result<SnapshotReport> {
    let mut mach = Machine::load(vm)?;
    mach.refuse_running()?;
    refuse_incomplete(&mach.vm, &[None], opts.fallback)?;
    let media = mach.media();
    let current = attached(mach.machine());
    check_media(&mach, &media, &current)?;
    let steps = Steps::new(opts.fail_before.as_deref());
    let snap_uuid = new_uuid()?;
    steps.before("media")?;
    let made = make_children(&mach, &media, &current)?;
    let map: HashMap<String, String> = made
        .iter()
        .map(|(p, c)| (p.clone(), c.uuid.clone()))
        .collect();
    let current_snap = mach.machine().attr("currentSnapshot").map(norm);
    let parent_path = current_snap
        .as_deref()
        .and_then(|c| mach.snapshots().into_iter().find(|s| s.uuid == c))
        .map(|s| s.path);
    {
        let machine = mach.machine_mut();
        let mut snap = El::new("Snapshot");
        snap.set_attr("uuid", &braced(&snap_uuid));
        snap.set_attr("name", name);
        snap.set_attr("timeStamp", &now_stamp());
        if let Some(d) = opts.description.as_deref().filter(|d| !d.is_empty()) {
            let mut el = El::new("Description");
            el.kids.push(Node::Text(d.to_owned()));
            snap.kids.push(Node::El(el));
        }
        for part in ["Hardware", "StorageControllers"] {
            if let Some(e) = machine.child(part) {
                snap.kids.push(Node::El(e.clone()));
            }
        }
        if snap.child("Hardware").is_none() {
            snap.kids.push(Node::El(El::new("Hardware")));
        }
        match parent_path.and_then(|p| at_path_mut(machine, &p)) {
            Some(parent) => parent.child_or_new("Snapshots").kids.push(Node::El(snap)),
            None => {
                let at = machine.index_of("Hardware").unwrap_or(machine.kids.len());
                machine.kids.insert(at, Node::El(snap));
            }
        }
        register(machine, &made, &media);
        reattach(machine, &map);
        stamp_machine(machine, Some(&snap_uuid));
    }
    match mach.save(&steps, &mut || Ok(())) {
        Ok(changed) => Ok(SnapshotReport {
            snapshot: name.to_owned(),
            uid: snap_uuid,
            created: made.into_iter().map(|(_, c)| c.path).collect(),
            changed,
            removed: Vec::new(),
        }),
        Err(e) => {
            remove_children(&made);
            Err(e)
        }
    }
}

/// Restores the snapshot `which`: new differencing media over its media
/// become the current state, with its hardware.
pub(super) fn revert(vm: &Vm, which: &str, opts: &SnapshotOptions) -> Result<SnapshotReport> {
    let mut mach = Machine::load(vm)?;
    let target = mach.find(which)?;
    mach.refuse_running()?;
    let Some(snap) = at_path(mach.machine(), &target.path).cloned() else {
        return Err(bad("snapshot element moved", 0).in_file(&vm.config));
    };
    if let Some(sav) = snap.attr("stateFile") {
        return Err(Error::unsupported(
            Scheme::Vm,
            format!(
                "snapshot {:?} holds a saved machine state ({sav}): restoring a running state is not supported",
                target.name
            ),
        )
        .in_file(&vm.config));
    }
    refuse_incomplete(&mach.vm, &[Some(&target.uuid)], opts.fallback)?;
    let media = mach.media();
    let wanted = attached(&snap);
    check_media(&mach, &media, &wanted)?;
    // The old current state's own differencing media: discarded when
    // nothing else uses them.
    let old_current = attached(mach.machine());
    let mut in_snapshots: HashSet<String> = HashSet::new();
    for s in mach.snapshots() {
        if let Some(e) = at_path(mach.machine(), &s.path) {
            in_snapshots.extend(attached(e));
        }
    }
    let steps = Steps::new(opts.fail_before.as_deref());
    steps.before("media")?;
    let made = make_children(&mach, &media, &wanted)?;
    let map: HashMap<String, String> = made
        .iter()
        .map(|(p, c)| (p.clone(), c.uuid.clone()))
        .collect();
    let mut discard: Vec<(String, PathBuf, PathBuf)> = Vec::new();
    for u in &old_current {
        let Some(m) = media.get(u) else { continue };
        let Some(pm) = m.parent.as_ref().and_then(|p| media.get(p)) else {
            continue;
        };
        if !m.snapshotted()
            || !m.children.is_empty()
            || in_snapshots.contains(u)
            || discard.iter().any(|(d, _, _)| d == u)
        {
            continue;
        }
        if let (Ok(p), Ok(pp)) = (mach.medium_path(m), mach.medium_path(pm)) {
            discard.push((u.clone(), p, pp));
        }
    }
    {
        let machine = mach.machine_mut();
        let mut hw = snap
            .child("Hardware")
            .cloned()
            .unwrap_or_else(|| El::new("Hardware"));
        let sc = snap.child("StorageControllers").cloned();
        // Keep the current state's storage place: in Hardware or beside it.
        if sc.is_some() {
            if let Some(i) = hw.index_of("StorageControllers") {
                hw.kids.remove(i);
            }
        }
        match machine.index_of("Hardware") {
            Some(i) => {
                if let Some(n) = machine.kids.get_mut(i) {
                    *n = Node::El(hw);
                }
            }
            None => machine.kids.push(Node::El(hw)),
        }
        if let Some(sc) = sc {
            match machine.index_of("StorageControllers") {
                Some(i) => {
                    if let Some(n) = machine.kids.get_mut(i) {
                        *n = Node::El(sc);
                    }
                }
                None => {
                    let at = machine
                        .index_of("Hardware")
                        .map_or(machine.kids.len(), |i| i + 1);
                    machine.kids.insert(at, Node::El(sc));
                }
            }
        }
        register(machine, &made, &media);
        reattach(machine, &map);
        if let Some(hd) = machine
            .child_mut("MediaRegistry")
            .and_then(|r| r.child_mut("HardDisks"))
        {
            for (u, _, _) in &discard {
                remove_disk(hd, u);
            }
        }
        stamp_machine(machine, Some(&target.uuid));
    }
    let changed = match mach.save(&steps, &mut || Ok(())) {
        Ok(c) => c,
        Err(e) => {
            remove_children(&made);
            return Err(e);
        }
    };
    let open = mach.vm.open_options(&VmOptions::default());
    steps.before("remove")?;
    let mut removed = Vec::new();
    for (_, path, parent) in &discard {
        for f in own_files(path, parent, &open) {
            if std::fs::remove_file(&f).is_ok() {
                removed.push(f);
            }
        }
    }
    Ok(SnapshotReport {
        snapshot: target.name,
        uid: target.uuid,
        created: made.into_iter().map(|(_, c)| c.path).collect(),
        changed,
        removed,
    })
}

/// One merge of a delete: the snapshot's medium and its one child.
struct Merge {
    medium: String,
    path: PathBuf,
    format: String,
    child: String,
    child_path: PathBuf,
    grandchildren: Vec<(String, PathBuf)>,
}

/// The files of the differencing image `path` itself: its chain's files
/// less those of its parent's chain (`path` alone when they cannot be
/// listed).
fn own_files(path: &Path, parent: &Path, open: &OpenOptions) -> Vec<PathBuf> {
    let deps = |p: &Path| diskimage_formats::dependencies(p, open).unwrap_or_default();
    let keep: HashSet<PathBuf> = deps(parent).iter().map(|f| canonical(f)).collect();
    let mut files: Vec<PathBuf> = deps(path)
        .into_iter()
        .filter(|f| !keep.contains(&canonical(f)))
        .collect();
    if files.is_empty() {
        files.push(path.to_path_buf());
    }
    files
}

/// Relinks the children of each merged child to the medium it was merged
/// into, adding the files written to `changed`.
fn relink_children(merges: &[Merge], changed: &mut Vec<PathBuf>) -> Result<()> {
    for g in merges {
        if g.format == "VMDK" {
            let props = properties(&g.path)?;
            let cid = prop(&props, "cid")
                .ok_or_else(|| bad("the merged VMDK has no CID", 0).in_file(&g.path))?;
            let pmod = prop(&props, "ddb.uuid.modification").unwrap_or_else(|| NIL_UUID.into());
            for (_, gp) in &g.grandchildren {
                let hint = relative(&dir_of(gp), &g.path);
                fw::set_vmdk_descriptor_keys(
                    gp,
                    &[
                        ("parentCID", cid.as_str()),
                        ("parentFileNameHint", hint.as_str()),
                        ("ddb.uuid.parent", g.medium.as_str()),
                        ("ddb.uuid.parentmodification", pmod.as_str()),
                    ],
                )?;
                changed.push(gp.clone());
            }
        } else {
            // A VHD child names its parent by the parent's unique ID, which
            // is the merged medium's UUID: the header and locators are
            // rewritten to name it.
            for (_, gp) in &g.grandchildren {
                fw::relink(gp, &g.path)?;
                changed.push(gp.clone());
            }
        }
    }
    Ok(())
}

/// Deletes the snapshot `which`, merging each of its media with its one
/// differencing child so that every other state reads the same bytes.
pub(super) fn delete(vm: &Vm, which: &str, opts: &SnapshotOptions) -> Result<SnapshotReport> {
    let mut mach = Machine::load(vm)?;
    let target = mach.find(which)?;
    mach.refuse_running()?;
    let Some(snap) = at_path(mach.machine(), &target.path).cloned() else {
        return Err(bad("snapshot element moved", 0).in_file(&vm.config));
    };
    let child_snaps: Vec<El> = snap
        .child("Snapshots")
        .map(|s| s.els().filter(|e| e.is("Snapshot")).cloned().collect())
        .unwrap_or_default();
    if child_snaps.len() > 1 {
        return Err(Error::unsupported(
            Scheme::Vm,
            format!(
                "snapshot {:?} has {} child snapshots: its media cannot be merged into one (VirtualBox refuses it too)",
                target.name,
                child_snaps.len()
            ),
        )
        .in_file(&vm.config));
    }
    // Without fallback every state must be complete; with it, the
    // current state and the snapshot merged.
    refuse_incomplete(&mach.vm, &[None, Some(target.uuid.as_str())], opts.fallback)?;
    let media = mach.media();
    let mut merges: Vec<Merge> = Vec::new();
    // Media attached by the current state or another snapshot.
    let mut in_use: HashSet<String> = attached(mach.machine()).into_iter().collect();
    for s in mach.snapshots().iter().filter(|s| s.uuid != target.uuid) {
        if let Some(e) = at_path(mach.machine(), &s.path) {
            in_use.extend(attached(e));
        }
    }
    // Differencing media of the snapshot with no child that nothing else
    // uses (their state was restored over): deleted, as VirtualBox does.
    let mut discard: Vec<(String, PathBuf, PathBuf)> = Vec::new();
    for u in attached(&snap) {
        let Some(m) = media.get(&u) else {
            return Err(Error::unsupported(
                Scheme::Vm,
                format!("medium {{{u}}} is not in the VM's media registry (a global registry is not written)"),
            )
            .in_file(&vm.config));
        };
        if !m.snapshotted() || merges.iter().any(|g| g.medium == u) {
            continue;
        }
        let child = match m.children.as_slice() {
            [] => {
                let parent = m.parent.as_ref().and_then(|p| media.get(p));
                if let Some(pm) = parent.filter(|_| !in_use.contains(&u) && !discard.iter().any(|d| d.0 == u)) {
                    discard.push((u.clone(), mach.medium_path(m)?, mach.medium_path(pm)?));
                }
                continue;
            }
            [c] => c.clone(),
            many => {
                return Err(Error::unsupported(
                    Scheme::Vm,
                    format!(
                        "medium {{{u}}} ({}) has {} differencing children (states branch from it): it cannot be merged, as VirtualBox refuses it too",
                        m.location,
                        many.len()
                    ),
                )
                .in_file(&vm.config))
            }
        };
        let Some(cm) = media.get(&child) else {
            continue;
        };
        let format = m.format.to_ascii_uppercase();
        if !matches!(format.as_str(), "VMDK" | "VHD") || !cm.format.eq_ignore_ascii_case(&format) {
            return Err(Error::unsupported(
                Scheme::Vm,
                format!(
                    "medium {{{u}}} ({}, {}) with child {} ({}): merging is written for VMDK and VHD chains only{}",
                    m.location,
                    m.format,
                    cm.location,
                    cm.format,
                    if format == "VDI" { " (VDI: not yet written)" } else { "" }
                ),
            )
            .in_file(&vm.config));
        }
        let mut grandchildren = Vec::new();
        for g in &cm.children {
            if let Some(gm) = media.get(g) {
                grandchildren.push((g.clone(), mach.medium_path(gm)?));
            }
        }
        merges.push(Merge {
            medium: u.clone(),
            path: mach.medium_path(m)?,
            format,
            child,
            child_path: mach.medium_path(cm)?,
            grandchildren,
        });
    }
    // Merge each child into the snapshot's medium (the child stays until
    // the configuration no longer names it); its children are relinked
    // just before the new configuration is renamed into place (the file
    // names one parent, each configuration another: that window is kept
    // to the rename).
    let open = mach.vm.open_options(&VmOptions::default());
    let steps = Steps::new(opts.fail_before.as_deref());
    let mut changed: Vec<PathBuf> = Vec::new();
    for g in &merges {
        steps.before("merge")?;
        fw::commit::commit(&g.child_path, &open, false, &mut |_, _| {})?;
        changed.push(g.path.clone());
    }
    let parent_uuid = target
        .path
        .len()
        .checked_sub(2)
        .and_then(|n| target.path.get(..n))
        .and_then(|p| at_path(mach.machine(), p))
        .filter(|e| e.is("Snapshot"))
        .and_then(|e| e.attr("uuid"))
        .map(norm);
    {
        let machine = mach.machine_mut();
        // The registry: each child's children move to the merged medium.
        if let Some(hd) = machine
            .child_mut("MediaRegistry")
            .and_then(|r| r.child_mut("HardDisks"))
        {
            for g in &merges {
                if let Some(c) = remove_disk(hd, &g.child) {
                    if let Some(m) = disk_mut(hd, &g.medium) {
                        m.kids
                            .extend(c.kids.into_iter().filter(|n| matches!(n, Node::El(_))));
                    }
                }
            }
            for (u, _, _) in &discard {
                remove_disk(hd, u);
            }
        }
        // The snapshot leaves the tree; its child snapshot takes its place.
        let (container_path, index) = match target.path.split_last() {
            Some((i, p)) => (p.to_vec(), *i),
            None => return Err(bad("snapshot element moved", 0).in_file(&vm.config)),
        };
        if let Some(container) = at_path_mut(machine, &container_path) {
            if index < container.kids.len() {
                container.kids.remove(index);
                for (k, c) in child_snaps.into_iter().enumerate() {
                    container.kids.insert(index + k, Node::El(c));
                }
            }
            // An emptied `Snapshots` element goes too.
            if container.is("Snapshots") && container.els().next().is_none() {
                if let Some((j, owner)) = container_path.split_last() {
                    if let Some(o) = at_path_mut(machine, owner) {
                        if *j < o.kids.len() {
                            o.kids.remove(*j);
                        }
                    }
                }
            }
        }
        // Attachments naming a merged child now name the medium.
        let map: HashMap<String, String> = merges
            .iter()
            .map(|g| (g.child.clone(), g.medium.clone()))
            .collect();
        fn walk(el: &mut El, map: &HashMap<String, String>) {
            reattach(el, map);
            for e in el.els_mut() {
                if e.is("Snapshot") || e.is("Snapshots") {
                    walk(e, map);
                }
            }
        }
        walk(machine, &map);
        let current = machine.attr("currentSnapshot").map(norm);
        if current.as_deref() == Some(target.uuid.as_str()) {
            stamp_machine(machine, parent_uuid.as_deref());
        } else {
            let c = current.clone();
            stamp_machine(machine, c.as_deref());
        }
    }
    let mut relinked = Vec::new();
    changed.extend(mach.save(&steps, &mut || {
        steps.before("relink")?;
        relink_children(&merges, &mut relinked)
    })?);
    changed.extend(relinked);
    steps.before("remove")?;
    let mut removed = Vec::new();
    for g in &merges {
        let files = own_files(&g.child_path, &g.path, &open);
        for f in files {
            if std::fs::remove_file(&f).is_ok() {
                removed.push(f);
            }
        }
    }
    for (_, path, parent) in &discard {
        for f in own_files(path, parent, &open) {
            if std::fs::remove_file(&f).is_ok() {
                removed.push(f);
            }
        }
    }
    if let Some(sav) = snap.attr("stateFile") {
        if let Ok(p) = mach.vm.resolve(sav, false) {
            if std::fs::remove_file(&p).is_ok() {
                removed.push(p);
            }
        }
    }
    Ok(SnapshotReport {
        snapshot: target.name,
        uid: target.uuid,
        created: Vec::new(),
        changed,
        removed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_climb_out_of_the_snapshot_folder() {
        let t = std::env::temp_dir().join(format!("snapvbox-rel-{}", std::process::id()));
        std::fs::create_dir_all(t.join("Snapshots")).unwrap();
        std::fs::write(t.join("a.vmdk"), b"x").unwrap();
        assert_eq!(
            relative(&t.join("Snapshots"), &t.join("a.vmdk")),
            "../a.vmdk"
        );
        assert_eq!(relative(&t, &t.join("a.vmdk")), "a.vmdk");
        std::fs::remove_dir_all(&t).unwrap();
    }
}
