//! Extracting with several threads and reporting in walk order.
//!
//! A directory creates its subdirectories before they are queued; each
//! thread takes the queued directory first in the walk (one thread walks
//! depth first) and there is no coordinating thread. [`Merge`] puts the
//! results back in the order of the one-thread walk.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use diskimage_formats::BlockDevice;
use diskimage_fs::{open_fs_as_with, Error as FsError, FsOptions, Timestamp};

use super::extractor::Extractor;
use super::{ExtractOptions, Observer, Report};
use crate::error::Error;
use crate::walk::{ancestor_key, WalkError};

/// One directory to extract, a whole unit of work for one thread: its
/// entries are created in the file system's order (files written,
/// subdirectories created, not walked).
pub struct Unit {
    /// Its place in the walk: the indexes of the subdirectories leading to
    /// it from the first directory. Units compare in the order a
    /// one-thread depth-first walk meets them.
    pub key: Vec<u32>,
    pub fs_dir: String,
    pub host: PathBuf,
    /// The inodes of the directories leading to it, itself included
    /// ([`ancestor_key`]): a subdirectory among them is a loop.
    pub ancestors: Vec<u64>,
}

/// What extracting one [`Unit`] (or one file) did; merged in walk order.
#[derive(Default)]
pub struct Done {
    /// Renames, skipped entries and read failures, in order.
    pub log: Vec<Report>,
    pub renamed: usize,
    pub files: u64,
    /// Entries that could not be read (reported, the rest goes on).
    pub failed: usize,
    /// Host directories to stamp after everything is written.
    pub dir_times: Vec<(PathBuf, Option<Timestamp>)>,
    /// Its subdirectories, to walk: (file-system path, host path, inode).
    pub subdirs: Vec<(String, PathBuf, Option<u64>)>,
    /// The host error that stopped it (and stops the extraction).
    pub stop: Option<Error>,
}

impl Done {
    /// Reports an entry the file system cannot give; the walk goes on.
    pub fn fail(&mut self, path: &str, error: FsError) {
        self.failed += 1;
        self.log.push(Report::Failed(WalkError {
            path: path.to_string(),
            error: Box::new(error),
        }));
    }
}

/// Puts the [`Done`]s of units, which threads finish in any order, back
/// in walk order: each is reported once every unit before it in the walk
/// is, so reports, the counts and the error returned are the same
/// whatever the number of threads.
#[derive(Default)]
struct Merge {
    /// Finished units not reported yet.
    waiting: HashMap<Vec<u32>, Done>,
    /// The units to report next, the next one last.
    next: Vec<Vec<u32>>,
    /// The first unit in walk order known to have stopped: no unit after
    /// it is started (the one-thread walk never reaches them).
    stopped_at: Option<Vec<u32>>,
    /// Totals of the units reported.
    total: Done,
}

impl Merge {
    /// Takes the result of `unit`; returns its subdirectories as units to
    /// extract (none past a unit that stopped).
    fn finished(&mut self, unit: &Unit, done: Done) -> Vec<Unit> {
        if done.stop.is_some() && self.stopped_at.as_ref().is_none_or(|k| unit.key < *k) {
            self.stopped_at = Some(unit.key.clone());
        }
        let mut subs = Vec::new();
        for (i, (fs_dir, host, inode)) in done.subdirs.iter().enumerate() {
            let mut key = unit.key.clone();
            key.push(u32::try_from(i).unwrap_or(u32::MAX));
            if self.stopped_at.as_ref().is_some_and(|k| key > *k) {
                break;
            }
            subs.push(Unit {
                key,
                fs_dir: fs_dir.clone(),
                host: host.clone(),
                ancestors: [unit.ancestors.as_slice(), &[ancestor_key(*inode)]].concat(),
            });
        }
        self.waiting.insert(unit.key.clone(), done);
        subs
    }

    /// Reports, in walk order, the finished units every earlier unit of
    /// which is reported; stops at the first that stopped.
    fn report(&mut self, observer: &dyn Observer) {
        while self.total.stop.is_none() {
            let Some(done) = self.next.last().and_then(|k| self.waiting.remove(k)) else {
                return;
            };
            let key = self.next.pop().unwrap_or_default();
            for r in &done.log {
                observer.report(r);
            }
            self.total.renamed += done.renamed;
            self.total.files += done.files;
            self.total.failed += done.failed;
            self.total.dir_times.extend(done.dir_times);
            self.total.stop = done.stop;
            for i in (0..done.subdirs.len()).rev() {
                let mut sub = key.clone();
                sub.push(u32::try_from(i).unwrap_or(u32::MAX));
                self.next.push(sub);
            }
        }
    }
}

/// What the extracting threads share.
struct Shared {
    /// Units to extract, by their place in the walk: the first in the walk
    /// is taken first (one thread walks depth first).
    todo: BTreeMap<Vec<u32>, Unit>,
    /// Units being extracted.
    running: usize,
    merge: Merge,
    /// A thread panicked: the others stop.
    abandoned: bool,
}

/// Locks `state`, whether or not a thread panicked holding it.
fn lock(state: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Marks the walk abandoned if its thread unwinds, so no thread waits for
/// a unit that will never finish.
struct Abandon<'a>(&'a Mutex<Shared>, &'a Condvar);

impl Drop for Abandon<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            lock(self.0).abandoned = true;
            self.1.notify_all();
        }
    }
}

/// One thread's share of the walk: takes the first unit to extract,
/// extracts it, queues its subdirectories and reports what is ready,
/// until nothing is left, nothing can be queued any more, or the report
/// reached a unit that stopped.
fn work(x: &mut Extractor<'_>, state: &Mutex<Shared>, more: &Condvar, observer: &dyn Observer) {
    let _abandon = Abandon(state, more);
    let mut st = lock(state);
    loop {
        if st.abandoned || st.merge.total.stop.is_some() {
            break;
        }
        if let Some((_, unit)) = st.todo.pop_first() {
            st.running += 1;
            drop(st);
            let done = x.unit(&unit.fs_dir, &unit.host, &unit.ancestors);
            st = lock(state);
            st.running -= 1;
            for sub in st.merge.finished(&unit, done) {
                st.todo.insert(sub.key.clone(), sub);
            }
            if let Some(at) = st.merge.stopped_at.clone() {
                // Queued units after a stop are never reached.
                st.todo.split_off(&at);
            }
            st.merge.report(observer);
            more.notify_all();
        } else if st.running == 0 {
            break;
        } else {
            st = more.wait(st).unwrap_or_else(PoisonError::into_inner);
        }
    }
    more.notify_all();
}

/// Extracts the tree below the directory unit `root` with `threads`
/// threads: this one with `x`, the others each with its own file system
/// opened on `device` (a `FileSystem` is not `Send`; a thread whose open
/// fails, which the first open makes unlikely, takes no part). There is
/// no coordinating thread: each takes units from the shared queue and
/// reports in walk order.
pub fn walk(
    x: &mut Extractor<'_>,
    device: &Arc<dyn BlockDevice>,
    threads: usize,
    root: Unit,
    observer: &dyn Observer,
) -> Done {
    let first = root.key.clone();
    let state = Mutex::new(Shared {
        todo: BTreeMap::from([(first.clone(), root)]),
        running: 0,
        merge: Merge {
            next: vec![first],
            ..Merge::default()
        },
        abandoned: false,
    });
    let more = Condvar::new();
    let options = ExtractOptions {
        streams: x.streams,
        threads: None,
        kernel_copy: x.kernel_copy,
        fs_metadata: x.fs_metadata,
        strict: x.strict,
        fs_kind: None,
        fs_devices: x.fs_devices.clone(),
    };
    // Every thread opens the kind the first open found, not detecting again.
    let kind = x.fs.kind();
    let fs_options = FsOptions::default()
        .with_strict(x.strict)
        .with_devices(x.fs_devices.0.clone());
    std::thread::scope(|s| {
        for _ in 1..threads {
            s.spawn(|| {
                if let Ok(fs) = open_fs_as_with(Arc::clone(device), kind, &fs_options) {
                    let mut x = Extractor::new(fs.as_ref(), device.as_ref(), &options, observer);
                    work(&mut x, &state, &more, observer);
                }
            });
        }
        work(x, &state, &more, observer);
    });
    state
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner)
        .merge
        .total
}
