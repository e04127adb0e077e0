//! The byte runs of each disk that may differ between two states, from
//! the allocation maps of the deltas above the files both chains share.

use std::path::{Path, PathBuf};

use diskimage_formats::{BlockDevice, ExtentKind};

use super::{canonical, complete_state, find_state, slots, ChangeOptions};
use crate::error::{Error, Result, Scheme};
use crate::vm::{StateDisk, StateFiles, Vm};

/// The map is asked for this many bytes at a time, so that a huge sparse
/// disk never needs its whole map in memory.
const MAP_CHUNK: u64 = 1 << 30;

/// `length` bytes from byte `offset` of a virtual disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Run {
    /// Start, in bytes from the start of the disk.
    pub offset: u64,
    /// Length in bytes (never zero).
    pub length: u64,
}

impl Run {
    /// The first byte after the run.
    pub fn end(&self) -> u64 {
        self.offset.saturating_add(self.length)
    }
}

/// What may differ on one disk between two states.
#[derive(Debug, Clone)]
pub struct DiskChanges {
    /// The disk's slot (`scsi0:0`, a VirtualBox controller and port, a
    /// Hyper-V disk number).
    pub slot: String,
    /// The top file of the disk's chain in the `from` state (`None`: the
    /// disk is not in that state).
    pub from_top: Option<PathBuf>,
    /// The top file in the `to` state.
    pub to_top: Option<PathBuf>,
    /// The disk's size in the `from` state (0 when absent).
    pub from_size: u64,
    /// The disk's size in the `to` state (0 when absent).
    pub to_size: u64,
    /// The files both chains read, newest first (empty: none shared).
    pub shared: Vec<PathBuf>,
    /// The files of the `from` chain above the shared ones, top first.
    pub from_layers: Vec<PathBuf>,
    /// The files of the `to` chain above the shared ones, top first.
    pub to_layers: Vec<PathBuf>,
    /// Whether the whole disk is reported because nothing tells which
    /// bytes agree (see [`DiskChanges::note`]).
    pub whole_disk: bool,
    /// Why the whole disk is reported, or what else is worth knowing.
    pub note: Option<String>,
    /// The runs that may differ: sorted, merged (none touch), within
    /// `[0, max(from_size, to_size))`.
    pub runs: Vec<Run>,
}

impl DiskChanges {
    /// The bytes the runs cover.
    pub fn changed_bytes(&self) -> u64 {
        self.runs.iter().map(|r| r.length).sum()
    }

    /// Whether any byte of `[offset, offset + len)` lies in a run.
    pub fn touches(&self, offset: u64, len: u64) -> bool {
        let end = offset.saturating_add(len);
        self.runs.iter().any(|r| r.offset < end && offset < r.end())
    }
}

/// The runs of each disk of the VM at `vm` that may differ between the
/// states `from` and `to` (`None`: the current state); see the
/// [module docs](super).
pub fn changed_areas(
    vm: &Path,
    from: &str,
    to: Option<&str>,
    opts: &ChangeOptions,
) -> Result<Vec<DiskChanges>> {
    areas_of(&Vm::load(vm)?, from, to.unwrap_or("current"), opts)
}

/// [`changed_areas`] on a VM already loaded.
pub fn areas_of(vm: &Vm, from: &str, to: &str, opts: &ChangeOptions) -> Result<Vec<DiskChanges>> {
    let (a, b) = (find_state(vm, from)?, find_state(vm, to)?);
    let from = complete_state(vm, a, opts)?;
    let to = complete_state(vm, b, opts)?;
    disks_of(vm, &from, &to, opts)
}

pub(super) fn disks_of(
    vm: &Vm,
    from: &StateFiles,
    to: &StateFiles,
    opts: &ChangeOptions,
) -> Result<Vec<DiskChanges>> {
    let options = vm.open_options(&opts.vm_options(None));
    let mut out = Vec::new();
    for (i, slot) in slots(from, to).into_iter().enumerate() {
        let find = |s: &StateFiles| s.disks.iter().find(|d| d.slot == slot).cloned();
        let open = |d: &Option<StateDisk>| -> Result<Option<Chain>> {
            d.as_ref()
                .map(|d| Chain::open(&d.top, &options).map_err(|e| e.on_disk(i)))
                .transpose()
        };
        let (da, db) = (find(from), find(to));
        let (ca, cb) = (open(&da)?, open(&db)?);
        out.push(compare(slot, ca, cb, &options).map_err(|e| e.on_disk(i))?);
    }
    Ok(out)
}

/// One state's chain of a disk: the opened top and each file, top first.
struct Chain {
    top: PathBuf,
    size: u64,
    /// (path as opened, canonical path) of each image of the chain.
    layers: Vec<(PathBuf, PathBuf)>,
}

impl Chain {
    fn open(top: &Path, options: &diskimage_formats::OpenOptions) -> Result<Chain> {
        let image =
            diskimage_formats::open(top, options).map_err(|e| Error::from_device(Scheme::Vm, e))?;
        let layers = image
            .info()
            .chain()
            .map(|i| (i.path.clone(), canonical(&i.path)))
            .collect();
        Ok(Chain {
            top: top.to_path_buf(),
            size: image.size(),
            layers,
        })
    }
}

fn whole(slot: String, a: Option<Chain>, b: Option<Chain>, note: String) -> DiskChanges {
    let (from_size, to_size) = (
        a.as_ref().map_or(0, |c| c.size),
        b.as_ref().map_or(0, |c| c.size),
    );
    let size = from_size.max(to_size);
    let layers = |c: &Option<Chain>| {
        c.as_ref()
            .map(|c| c.layers.iter().map(|l| l.0.clone()).collect())
            .unwrap_or_default()
    };
    DiskChanges {
        slot,
        from_layers: layers(&a),
        to_layers: layers(&b),
        from_top: a.map(|c| c.top),
        to_top: b.map(|c| c.top),
        from_size,
        to_size,
        shared: Vec::new(),
        whole_disk: true,
        note: Some(note),
        runs: (size > 0)
            .then_some(Run {
                offset: 0,
                length: size,
            })
            .into_iter()
            .collect(),
    }
}

fn compare(
    slot: String,
    a: Option<Chain>,
    b: Option<Chain>,
    options: &diskimage_formats::OpenOptions,
) -> Result<DiskChanges> {
    let (ca, cb) = match (a, b) {
        (Some(a), Some(b)) => (a, b),
        (a, b) => {
            let which = if a.is_some() { "from" } else { "to" };
            return Ok(whole(
                slot,
                a,
                b,
                format!("the disk is only in the {which} state: the whole disk is reported"),
            ));
        }
    };
    let shared = ca
        .layers
        .iter()
        .rev()
        .zip(cb.layers.iter().rev())
        .take_while(|(x, y)| x.1 == y.1)
        .count();
    if shared == 0 {
        let bases = |c: &Chain| {
            c.layers
                .last()
                .map(|l| l.0.display().to_string())
                .unwrap_or_default()
        };
        let note = format!(
            "the two states do not share a file ({} and {} are different bases): the whole disk is reported",
            bases(&ca),
            bases(&cb)
        );
        return Ok(whole(slot, Some(ca), Some(cb), note));
    }
    let above = |c: &Chain| c.layers.len() - shared;
    let (na, nb) = (above(&ca), above(&cb));
    let size = ca.size.max(cb.size);
    let mut runs: Vec<Run> = Vec::new();
    let alone = options.clone().no_parents(true);
    for (path, _) in ca.layers.iter().take(na).chain(cb.layers.iter().take(nb)) {
        let layer =
            diskimage_formats::open(path, &alone).map_err(|e| Error::from_device(Scheme::Vm, e))?;
        let end = layer.size().min(size);
        let mut at = 0;
        while at < end {
            let len = MAP_CHUNK.min(end - at);
            let map = layer
                .map(at, len)
                .map_err(|e| Error::from_device(Scheme::Vm, e))?;
            for e in map {
                if !matches!(e.kind, ExtentKind::Unallocated | ExtentKind::Parent { .. }) {
                    push_run(
                        &mut runs,
                        Run {
                            offset: e.offset,
                            length: e.len.min(end.saturating_sub(e.offset)),
                        },
                    );
                }
            }
            at += len;
        }
    }
    let small = ca.size.min(cb.size);
    if small < size {
        runs.push(Run {
            offset: small,
            length: size - small,
        });
    }
    let note = (ca.size != cb.size).then(|| {
        format!(
            "the disk is {} bytes in the from state and {} in the to state: the bytes past the smaller are reported",
            ca.size, cb.size
        )
    });
    let layer_paths = |c: &Chain, n: usize| c.layers.iter().take(n).map(|l| l.0.clone()).collect();
    Ok(DiskChanges {
        slot,
        shared: ca.layers.iter().skip(na).map(|l| l.0.clone()).collect(),
        from_layers: layer_paths(&ca, na),
        to_layers: layer_paths(&cb, nb),
        from_top: Some(ca.top),
        to_top: Some(cb.top),
        from_size: ca.size,
        to_size: cb.size,
        whole_disk: false,
        note,
        runs: merge(runs),
    })
}

/// Appends a run, joined to the last one when it touches it.
fn push_run(runs: &mut Vec<Run>, run: Run) {
    match runs.last_mut() {
        Some(last) if last.end() == run.offset => last.length += run.length,
        _ if run.length == 0 => {}
        _ => runs.push(run),
    }
}

/// Sorts runs and merges those that overlap or touch; empty runs go.
pub(super) fn merge(mut runs: Vec<Run>) -> Vec<Run> {
    runs.retain(|r| r.length > 0);
    runs.sort_by_key(|r| r.offset);
    let mut out: Vec<Run> = Vec::with_capacity(runs.len());
    for r in runs {
        match out.last_mut() {
            Some(last) if r.offset <= last.end() => {
                let end = last.end().max(r.end());
                last.length = end - last.offset;
            }
            _ => out.push(r),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_sorts_joins_touching_and_overlapping_runs() {
        let r = |offset, length| Run { offset, length };
        assert_eq!(
            merge(vec![
                r(100, 10),
                r(0, 10),
                r(10, 5),
                r(50, 0),
                r(105, 20),
                r(200, 1)
            ]),
            vec![r(0, 15), r(100, 25), r(200, 1)]
        );
        assert_eq!(merge(vec![r(0, 100), r(10, 5)]), vec![r(0, 100)]);
        assert!(merge(Vec::new()).is_empty());
    }
}
