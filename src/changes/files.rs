//! The files added, removed and changed between two states, volume by
//! volume: both trees walked in the same order and merged.

use std::cmp::Ordering;
use std::io::Read;
use std::path::Path;

use diskimage_fs::{FileSystem, FileType, Timestamp};
#[cfg(feature = "digests")]
use sha2::{Digest, Sha256};

use super::block::{disks_of, DiskChanges};
use super::{complete_state, find_state, ChangeOptions};
use crate::diskset::{DiskSet, Volume};
use crate::error::Result;
use crate::vm::{OpenedVm, Vm};
use crate::walk::{Entry, Walk};

/// How an entry differs between the two states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Change {
    /// Only in the `to` state.
    Added,
    /// Only in the `from` state.
    Removed,
    /// In both, with [`FileChange::what`] differing.
    Changed,
}

impl Change {
    /// A stable, lower-case name for JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Added => "added",
            Change::Removed => "removed",
            Change::Changed => "changed",
        }
    }
}

/// One side of an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileFacts {
    /// The type.
    pub file_type: FileType,
    /// Size in bytes (of a symlink: of its target).
    pub size: u64,
    /// Last data modification.
    pub modified: Option<Timestamp>,
    /// The sha256 of the data, lower-case hex, where it was computed: a
    /// regular file of the same size on both sides whose contents were
    /// compared, with the feature `digests` (on with `cli`, the default).
    pub sha256: Option<String>,
    /// The link target of a symlink.
    pub target: Option<String>,
}

/// An entry added, removed or changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileChange {
    /// Added, removed or changed.
    pub change: Change,
    /// The path inside the file system, from `/`.
    pub path: String,
    /// The entry in the `from` state (`None` when added).
    pub from: Option<FileFacts>,
    /// The entry in the `to` state (`None` when removed).
    pub to: Option<FileFacts>,
    /// What differs, for a changed entry: `type`, `size`, `content` (same
    /// size, other sha256), `mtime`, `target` (a symlink).
    pub what: Vec<&'static str>,
}

impl FileChange {
    /// The entry as it is in the `to` state, or as it was when removed.
    pub fn facts(&self) -> Option<&FileFacts> {
        self.to.as_ref().or(self.from.as_ref())
    }
}

/// The changes on one volume.
#[derive(Debug, Clone)]
pub struct VolumeChanges {
    /// The slot of the disk holding the volume (`None`: an LVM2 volume).
    pub slot: Option<String>,
    /// Byte offset on that disk.
    pub offset: Option<u64>,
    /// The partition GUID or LV UUID the volumes were matched by.
    pub guid: Option<String>,
    /// The volume's number in the `from` state's set (`diskimage volumes`).
    pub from_volume: Option<usize>,
    /// The volume's number in the `to` state's set.
    pub to_volume: Option<usize>,
    /// The file system (`ext4`, `fat16`, ...) in the `to` state, else the `from` one.
    pub fs: Option<String>,
    /// Whether the trees were walked (not when no byte of the volume
    /// changed, or one side cannot be mounted).
    pub walked: bool,
    /// What is worth knowing (not walked, only in one state, another file system).
    pub note: Option<String>,
    /// Entries added, removed and changed, in walk order.
    pub changes: Vec<FileChange>,
    /// Paths a walk could not read, and volumes that could not be mounted.
    pub problems: Vec<String>,
}

/// The files added, removed and changed on each volume of the VM at `vm`
/// between the states `from` and `to` (`None`: the current state).
///
/// Volumes holding a file system the readers handle are compared (see the
/// [module docs](super) for how they are matched). An entry is added or
/// removed when its path is in one tree only (every entry below an added
/// directory too). An entry in both is changed when its type differs; a
/// regular file when its size differs, when its data differs though its
/// size is the same (the two versions read and compared byte by byte,
/// [`ChangeOptions::compare_content`]; with the feature `digests` the
/// sha256 of both is reported too), or when its mtime differs; a symlink when its
/// target differs. Directories are only added or removed (their size and
/// mtime follow their entries). NTFS's own metadata files are left out.
pub fn changed_files(
    vm: &Path,
    from: &str,
    to: Option<&str>,
    opts: &ChangeOptions,
) -> Result<Vec<VolumeChanges>> {
    files_of(&Vm::load(vm)?, from, to.unwrap_or("current"), opts)
}

/// [`changed_files`] on a VM already loaded.
pub fn files_of(vm: &Vm, from: &str, to: &str, opts: &ChangeOptions) -> Result<Vec<VolumeChanges>> {
    let (a, b) = (find_state(vm, from)?, find_state(vm, to)?);
    let disks = disks_of(
        vm,
        &complete_state(vm, a, opts)?,
        &complete_state(vm, b, opts)?,
        opts,
    )?;
    let sa = vm.open(&opts.vm_options(a))?;
    let sb = vm.open(&opts.vm_options(b))?;
    let (ka, kb) = (keyed(&sa), keyed(&sb));
    let mut out = Vec::new();
    for (key, va) in &ka {
        let vb = kb.iter().find(|(k, _)| k == key).map(|(_, v)| *v);
        out.push(volume(
            key,
            Some((&sa.set, *va)),
            vb.map(|v| (&sb.set, v)),
            &disks,
            opts,
        ));
    }
    for (key, vb) in &kb {
        if !ka.iter().any(|(k, _)| k == key) {
            out.push(volume(key, None, Some((&sb.set, *vb)), &disks, opts));
        }
    }
    Ok(out)
}

/// How a volume is matched across states.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Key {
    slot: Option<String>,
    offset: Option<u64>,
    guid: Option<String>,
}

/// The readable volumes of a state, each with its key: the slot and the
/// partition GUID / LV UUID when there is one, else the slot and offset.
fn keyed(opened: &OpenedVm) -> Vec<(Key, &Volume)> {
    opened
        .set
        .volumes()
        .iter()
        .filter(|v| v.mountable)
        .map(|v| {
            let slot = v
                .disk
                .and_then(|d| opened.state.disks.get(d))
                .map(|d| d.slot.clone());
            let key = match &v.guid {
                Some(g) => Key {
                    slot: slot.clone(),
                    offset: None,
                    guid: Some(g.to_ascii_lowercase()),
                },
                None => Key {
                    slot: slot.clone(),
                    offset: v.offset,
                    guid: None,
                },
            };
            (key, v)
        })
        .collect()
}

fn volume(
    key: &Key,
    a: Option<(&DiskSet, &Volume)>,
    b: Option<(&DiskSet, &Volume)>,
    disks: &[DiskChanges],
    opts: &ChangeOptions,
) -> VolumeChanges {
    let any = b.or(a).map(|(_, v)| v);
    let mut out = VolumeChanges {
        slot: key.slot.clone(),
        offset: any.and_then(|v| v.offset),
        guid: key.guid.clone(),
        from_volume: a.map(|(_, v)| v.index),
        to_volume: b.map(|(_, v)| v.index),
        fs: any
            .and_then(|v| v.fs.as_ref())
            .map(|f| f.kind.as_str().to_owned()),
        walked: false,
        note: None,
        changes: Vec::new(),
        problems: Vec::new(),
    };
    if let (Some((_, va)), Some((_, vb))) = (a, b) {
        let unchanged = |v: &Volume| match (&key.slot, v.offset) {
            (Some(slot), Some(offset)) => disks
                .iter()
                .find(|d| &d.slot == slot)
                .is_some_and(|d| !d.touches(offset, v.size)),
            _ => false,
        };
        if unchanged(va) && unchanged(vb) && va.size == vb.size {
            out.note = Some("no byte of the volume changed: not walked".into());
            return out;
        }
        let kind = |v: &Volume| v.fs.as_ref().map(|f| (f.kind, f.uuid.clone()));
        if kind(va) != kind(vb) {
            out.note = Some("the file system differs between the states (type or UUID)".into());
        }
    } else {
        out.note = Some(format!(
            "the volume is only in the {} state",
            if a.is_some() { "from" } else { "to" }
        ));
    }
    let mount = |side: Option<(&DiskSet, &Volume)>, problems: &mut Vec<String>| {
        side.and_then(|(set, v)| match set.mount(v) {
            Ok(fs) => Some(fs),
            Err(e) => {
                problems.push(format!("volume {}: {e}", v.index));
                None
            }
        })
    };
    let fa = mount(a, &mut out.problems);
    let fb = mount(b, &mut out.problems);
    if (a.is_some() && fa.is_none()) || (b.is_some() && fb.is_none()) {
        return out;
    }
    out.walked = true;
    diff_trees(fa.as_deref(), fb.as_deref(), opts, &mut out);
    out
}

/// One side's walk, its failures kept as problems.
struct Side<'f> {
    fs: Option<&'f dyn FileSystem>,
    walk: Option<Walk<'f>>,
    label: &'static str,
}

impl<'f> Side<'f> {
    fn new(
        fs: Option<&'f dyn FileSystem>,
        label: &'static str,
        problems: &mut Vec<String>,
    ) -> Self {
        let walk = fs.and_then(|fs| match Walk::new(fs, "/") {
            Ok(w) => Some(w.skip_fs_metadata()),
            Err(e) => {
                problems.push(format!("{label} state: /: {e}"));
                None
            }
        });
        Side { fs, walk, label }
    }

    fn next(&mut self, problems: &mut Vec<String>) -> Option<Entry> {
        let walk = self.walk.as_mut()?;
        for item in walk.by_ref() {
            match item {
                Ok(e) => return Some(e),
                Err(e) => problems.push(format!("{} state: {e}", self.label)),
            }
        }
        None
    }
}

/// Walk order: depth first, siblings by name, which is the order of the
/// paths' components compared one by one.
fn walk_order(a: &str, b: &str) -> Ordering {
    a.split('/').cmp(b.split('/'))
}

fn facts(e: &Entry) -> FileFacts {
    FileFacts {
        file_type: e.meta.file_type,
        size: e.meta.size,
        modified: e.meta.modified,
        sha256: None,
        target: e.target.clone(),
    }
}

fn diff_trees(
    a: Option<&dyn FileSystem>,
    b: Option<&dyn FileSystem>,
    opts: &ChangeOptions,
    out: &mut VolumeChanges,
) {
    let problems = &mut out.problems;
    let mut sa = Side::new(a, "from", problems);
    let mut sb = Side::new(b, "to", problems);
    let mut x = sa.next(problems);
    let mut y = sb.next(problems);
    loop {
        let order = match (&x, &y) {
            (None, None) => break,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(ea), Some(eb)) => walk_order(&ea.path, &eb.path),
        };
        match order {
            Ordering::Less => {
                if let Some(e) = x.take() {
                    out.changes.push(FileChange {
                        change: Change::Removed,
                        path: e.path.clone(),
                        from: Some(facts(&e)),
                        to: None,
                        what: Vec::new(),
                    });
                }
                x = sa.next(problems);
            }
            Ordering::Greater => {
                if let Some(e) = y.take() {
                    out.changes.push(FileChange {
                        change: Change::Added,
                        path: e.path.clone(),
                        from: None,
                        to: Some(facts(&e)),
                        what: Vec::new(),
                    });
                }
                y = sb.next(problems);
            }
            Ordering::Equal => {
                if let (Some(ea), Some(eb)) = (x.take(), y.take()) {
                    if let Some(c) = compare(&ea, &eb, &sa, &sb, opts, problems) {
                        out.changes.push(c);
                    }
                }
                x = sa.next(problems);
                y = sb.next(problems);
            }
        }
    }
}

/// The change between two versions of one path, if any.
fn compare(
    ea: &Entry,
    eb: &Entry,
    sa: &Side<'_>,
    sb: &Side<'_>,
    opts: &ChangeOptions,
    problems: &mut Vec<String>,
) -> Option<FileChange> {
    let (mut fa, mut fb) = (facts(ea), facts(eb));
    let mut what = Vec::new();
    if fa.file_type != fb.file_type {
        what.push("type");
    } else {
        match fa.file_type {
            FileType::File => {
                if fa.size != fb.size {
                    what.push("size");
                } else if opts.compare_content {
                    match same_content(sa.fs, &ea.path, sb.fs, &eb.path) {
                        Ok((same, digests)) => {
                            if !same {
                                what.push("content");
                            }
                            if let Some((ha, hb)) = digests {
                                fa.sha256 = Some(ha);
                                fb.sha256 = Some(hb);
                            }
                        }
                        Err(e) => problems.push(e),
                    }
                }
                if fa.modified != fb.modified {
                    what.push("mtime");
                }
            }
            FileType::Symlink if fa.target != fb.target => what.push("target"),
            _ => {}
        }
    }
    (!what.is_empty()).then(|| FileChange {
        change: Change::Changed,
        path: eb.path.clone(),
        from: Some(fa),
        to: Some(fb),
        what,
    })
}

/// The sha256 of each side, when the feature `digests` is on.
#[cfg(feature = "digests")]
struct Digests(Sha256, Sha256);

#[cfg(feature = "digests")]
impl Digests {
    fn new() -> Self {
        Digests(Sha256::new(), Sha256::new())
    }

    fn update(&mut self, a: &[u8], b: &[u8]) {
        self.0.update(a);
        self.1.update(b);
    }

    /// Whether reading may stop at the first difference (not while hashing).
    const STOP_EARLY: bool = false;

    fn finish(self) -> Option<(String, String)> {
        let hex = |h: Sha256| h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        Some((hex(self.0), hex(self.1)))
    }
}

/// Without the feature `digests`: no digest, reading stops at the first
/// difference.
#[cfg(not(feature = "digests"))]
struct Digests;

#[cfg(not(feature = "digests"))]
impl Digests {
    fn new() -> Self {
        Digests
    }

    fn update(&mut self, _: &[u8], _: &[u8]) {}

    const STOP_EARLY: bool = true;

    fn finish(self) -> Option<(String, String)> {
        None
    }
}

/// Reads into `buf` until it is full or the data ends; the bytes read.
fn fill<R: Read + ?Sized>(r: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        let Some(rest) = buf.get_mut(n..) else { break };
        match r.read(rest) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// A file opened for reading, failures named by side and path.
fn open_side<'f>(
    fs: Option<&'f dyn FileSystem>,
    path: &str,
    label: &str,
) -> std::result::Result<Box<dyn diskimage_fs::FileReader + 'f>, String> {
    fs.ok_or_else(|| format!("{label} state: {path}: no file system"))?
        .open(path)
        .map_err(|e| format!("{label} state: {path}: {e}"))
}

/// Whether two versions of a file hold the same bytes (read side by side,
/// a chunk at a time), and their sha256 with the feature `digests`.
fn same_content(
    fa: Option<&dyn FileSystem>,
    pa: &str,
    fb: Option<&dyn FileSystem>,
    pb: &str,
) -> std::result::Result<(bool, Option<(String, String)>), String> {
    let (mut ra, mut rb) = (open_side(fa, pa, "from")?, open_side(fb, pb, "to")?);
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut digests = Digests::new();
    let mut same = true;
    loop {
        let na = fill(&mut *ra, &mut ba).map_err(|e| format!("from state: {pa}: {e}"))?;
        let nb = fill(&mut *rb, &mut bb).map_err(|e| format!("to state: {pb}: {e}"))?;
        let (da, db) = (
            ba.get(..na).unwrap_or_default(),
            bb.get(..nb).unwrap_or_default(),
        );
        digests.update(da, db);
        if da != db {
            same = false;
            if Digests::STOP_EARLY {
                break;
            }
        }
        if na == 0 && nb == 0 {
            break;
        }
    }
    Ok((same, digests.finish()))
}

#[cfg(test)]
mod tests {
    use super::walk_order;
    use std::cmp::Ordering;

    #[test]
    fn walk_order_puts_a_directory_before_its_entries_and_its_next_sibling() {
        assert_eq!(walk_order("/a", "/a/x"), Ordering::Less);
        assert_eq!(walk_order("/a/x", "/a0"), Ordering::Less);
        assert_eq!(walk_order("/a/z/y", "/a0"), Ordering::Less);
        assert_eq!(walk_order("/b", "/a/x"), Ordering::Greater);
        assert_eq!(walk_order("/a/x", "/a/x"), Ordering::Equal);
    }
}
