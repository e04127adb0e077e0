//! `diskimage extract`: copy a tree out of a file system into a host
//! directory, safely.
//!
//! Nothing is ever written outside the target directory: every name is
//! one path component made safe by [`safe_name`] (no `/`, `\`, NUL or
//! control characters, never `.`/`..`/empty, at most [`MAX_NAME_BYTES`]
//! bytes), files are created with `create_new` (never through an existing
//! file or link; a taken name gets `~N`), and symlinks are created as
//! links and never followed. Every rename is reported on stderr.
//!
//! The tree is walked with [`FileSystem::visit_dir`]: each directory is
//! read once and every entry's metadata and data come from its directory
//! entry, not from a lookup of its path; a file stored verbatim in an
//! image file ([`Visited::stored_runs`], [`BlockDevice::verbatim_range`])
//! is copied by the kernel (`sendfile`), any other goes through one reused
//! buffer per thread; the modification time is set on the handle written.
//!
//! Threads take whole directories (a [`Unit`]: every entry of one
//! directory read, created and written by one thread, each thread with
//! its own file system opened on the shared device), never single files:
//! handing each file to a writer thread was measured slower than the
//! write itself (README, performance). A directory creates its
//! subdirectories before they are queued; each thread takes the queued
//! directory first in the walk (one thread walks depth first, as before)
//! and there is no coordinating thread. Results are reported in the order
//! of the one-thread depth-first walk ([`Merge`]), so renames (`~N` is
//! given within one directory, by one thread), messages, counts and the
//! error returned do not depend on the number of threads; what differs
//! is only that, after an output error, directories later in the walk
//! may have been written already. Directory times are set last, once
//! everything is written. A directory of many files is one thread's work.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Seek, Write};
use std::num::NonZeroUsize;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use clap::Args;
use diskimage::formats::FileRange;
use diskimage::fs::file_system::join;
use diskimage::fs::{
    open_fs, FileReader, FileSystem, FileType, PathEntry, StoredRun, Timestamp, Visited,
};
use diskimage::BlockDevice;

use super::ls;
use super::select::FsArgs;
use super::{progress, CliError};

/// Longest host name written, in bytes (ext4, NTFS and most hosts allow 255).
pub const MAX_NAME_BYTES: usize = 200;

/// Arguments of `extract`.
#[derive(Debug, Args)]
pub struct ExtractArgs {
    /// The target directory (created if missing).
    #[arg(short, long, value_name = "DIR")]
    output: PathBuf,
    /// Also write NTFS alternate data streams, as `name:stream` files.
    #[arg(long)]
    streams: bool,
    /// Threads that extract at once, each a whole directory at a time
    /// (default: the cores available, at most 4). The output and the
    /// report are the same whatever the number.
    #[arg(long, value_name = "N")]
    threads: Option<NonZeroUsize>,
    /// Read every file through the file system's reader, never copying
    /// one stored verbatim in an image file by the kernel (`sendfile`).
    #[arg(long)]
    no_kernel_copy: bool,
    #[command(flatten)]
    fs: FsArgs,
}

/// `name` made safe as one host path component; `None` when unchanged.
pub fn safe_name(name: &str) -> Option<String> {
    let mut s: String = name
        .chars()
        .map(|c| {
            if c == '/'
                || c == '\\'
                || c.is_control()
                || (0x10_FF00..=0x10_FFFF).contains(&u32::from(c))
            {
                '_'
            } else {
                c
            }
        })
        .collect();
    if s.is_empty() || s == "." || s == ".." {
        s = format!("_{s}");
    }
    if s.len() > MAX_NAME_BYTES {
        let mut cut = MAX_NAME_BYTES - 12;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        s = format!("{}~{:08x}", s.get(..cut).unwrap_or_default(), hash as u32);
    }
    (s != name).then_some(s)
}

/// The host time of `t`, if it can be one (times before 1970 are left alone).
fn host_time(t: Option<Timestamp>) -> Option<std::time::SystemTime> {
    let t = t?;
    let secs = u64::try_from(t.secs).ok()?;
    Some(std::time::UNIX_EPOCH + std::time::Duration::new(secs, t.nanos))
}

/// Sets the modification time of a file just written, on its handle (a
/// time the host refuses is not an error).
fn stamp(out: &fs::File, t: Option<Timestamp>) {
    if let Some(when) = host_time(t) {
        let _ = out.set_modified(when);
    }
}

/// Sets a host directory's modification time.
fn set_dir_mtime(path: &Path, t: Option<Timestamp>) {
    let Some(when) = host_time(t) else { return };
    if let Ok(f) = fs::File::open(path) {
        let _ = f.set_modified(when);
    }
}

/// What to create on the host.
enum Make<'t> {
    Dir,
    File,
    Symlink(&'t str),
}

/// Size of the buffer file data is copied through (one per thread).
const COPY_BUFFER: usize = 1 << 20;

/// At most this many threads extract at once.
const MAX_THREADS: usize = 4;

/// One directory to extract, a whole unit of work for one thread: its
/// entries are created in the file system's order (files written,
/// subdirectories created, not walked).
struct Unit {
    /// Its place in the walk: the indexes of the subdirectories leading to
    /// it from the first directory. Units compare in the order a
    /// one-thread depth-first walk meets them.
    key: Vec<u32>,
    fs_dir: String,
    host: PathBuf,
    /// The inodes of the directories leading to it, itself included
    /// ([`ls::ancestor_key`]): a subdirectory among them is a loop.
    ancestors: Vec<u64>,
}

/// What extracting one [`Unit`] (or one file) did; merged in walk order.
#[derive(Default)]
struct Done {
    /// Lines for stderr (renames, skipped entries, read errors), in order.
    log: Vec<String>,
    renamed: usize,
    files: u64,
    /// Entries that could not be read (reported, the rest goes on).
    failed: usize,
    /// Host directories to stamp after everything is written.
    dir_times: Vec<(PathBuf, Option<Timestamp>)>,
    /// Its subdirectories, to walk: (file-system path, host path, inode).
    subdirs: Vec<(String, PathBuf, Option<u64>)>,
    /// The output error that stopped it (and stops the extraction).
    stop: Option<CliError>,
}

impl Done {
    /// Reports an entry the file system cannot give; the walk goes on.
    fn fail(&mut self, path: &str, e: &dyn std::fmt::Display) {
        self.failed += 1;
        self.log.push(format!("diskimage: {path}: {e}"));
    }
}

/// One thread's extractor: its own file system handle and buffer.
struct Extractor<'a> {
    fs: &'a dyn FileSystem,
    /// The volume `fs` is on, for the image-file ranges of stored runs.
    device: &'a dyn BlockDevice,
    /// Whether files stored verbatim are copied by the kernel (cleared
    /// when it refuses once).
    kernel_copy: bool,
    streams: bool,
    /// The one read buffer, reused for every file.
    buf: Vec<u8>,
    bar: &'a indicatif::ProgressBar,
}

impl<'a> Extractor<'a> {
    /// An extractor of `fs` (on `device`) with its own buffer.
    fn new(
        fs: &'a dyn FileSystem,
        device: &'a dyn BlockDevice,
        kernel_copy: bool,
        streams: bool,
        bar: &'a indicatif::ProgressBar,
    ) -> Self {
        Extractor {
            fs,
            device,
            kernel_copy,
            streams,
            buf: vec![0u8; COPY_BUFFER],
            bar,
        }
    }

    /// Creates `what` for `name` in the host directory `dir`, under a
    /// safe name, renamed `~N` while the name is taken (never through an
    /// existing file or link); the rename is reported. Returns the host
    /// path and, for a file, the file opened for writing.
    fn create(
        done: &mut Done,
        dir: &Path,
        fs_path: &str,
        name: &str,
        what: &Make<'_>,
    ) -> Result<(PathBuf, Option<fs::File>), CliError> {
        let safe = safe_name(name);
        let base = safe.as_deref().unwrap_or(name);
        let mut host = dir.join(base);
        let mut n = 1u64;
        let file = loop {
            let made = match what {
                Make::Dir => fs::create_dir(&host).map(|()| None),
                Make::File => fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&host)
                    .map(Some),
                Make::Symlink(target) => make_symlink(target, &host).map(|()| None),
            };
            match made {
                Ok(file) => break file,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    host = dir.join(format!("{base}~{n}"));
                    n += 1;
                }
                Err(e) => return Err(CliError::output(&host, e)),
            }
        };
        if safe.is_some() || n > 1 {
            done.renamed += 1;
            done.log
                .push(format!("renamed: {fs_path} -> {}", host.display()));
        }
        Ok((host, file))
    }

    /// Copies `reader` (the data of `fs_path`) into the new file `out` and
    /// stamps its modification time on the same handle.
    fn copy(
        &mut self,
        mut reader: Box<dyn FileReader + '_>,
        mut out: fs::File,
        fs_path: &str,
        host: &Path,
        mtime: Option<Timestamp>,
    ) -> Result<(), CliError> {
        loop {
            let n = fill(reader.as_mut(), &mut self.buf).map_err(|e| {
                // Whatever the reader failed with, it is the file system's.
                CliError::Fs(diskimage::fs::Error::from_io(
                    diskimage::fs::FsName::Detect,
                    fs_path,
                    e,
                ))
            })?;
            out.write_all(self.buf.get(..n).unwrap_or_default())
                .map_err(|e| CliError::output(host, e))?;
            if n < self.buf.len() {
                break;
            }
        }
        stamp(&out, mtime);
        Ok(())
    }

    /// Has the kernel copy `ranges` (the data of `fs_path`, `v`) into the
    /// new file `out` (`sendfile`: one copy, no buffer), then stamps its
    /// modification time. If the kernel cannot, the file is written again
    /// through the reader (whose typed error, if any, is the one reported)
    /// and kernel copies stop for this thread.
    fn send(
        &mut self,
        v: &dyn Visited,
        ranges: &[FileRange<'_>],
        mut out: fs::File,
        fs_path: &str,
        host: &Path,
        mtime: Option<Timestamp>,
    ) -> Result<(), CliError> {
        if !send_all(&out, ranges) {
            self.kernel_copy = false;
            out.set_len(0)
                .and_then(|()| out.rewind())
                .map_err(|e| CliError::output(host, e))?;
            let reader = v.open("")?;
            return self.copy(reader, out, fs_path, host, mtime);
        }
        stamp(&out, mtime);
        Ok(())
    }

    /// Extracts one entry into the host directory `dir`; a directory is
    /// created and added to `done.subdirs`, for the caller to walk.
    fn entry(
        &mut self,
        done: &mut Done,
        dir: &Path,
        fs_path: &str,
        v: &dyn Visited,
        ancestors: &[u64],
    ) -> Result<(), CliError> {
        let meta = v.metadata()?;
        let name = v.name();
        match meta.file_type {
            FileType::Directory => {
                let (host, _) = Self::create(done, dir, fs_path, name, &Make::Dir)?;
                done.dir_times.push((host.clone(), meta.modified));
                // A loop is created as an empty directory and reported.
                match ls::loop_error(self.fs, fs_path, meta.inode, ancestors) {
                    Some(e) => done.fail(fs_path, &e),
                    None => done.subdirs.push((fs_path.to_string(), host, meta.inode)),
                }
            }
            FileType::File => {
                // Stored verbatim in image files: copied by the kernel.
                let ranges = self
                    .kernel_copy
                    .then(|| v.stored_runs())
                    .flatten()
                    .and_then(|runs| file_ranges(self.device, &runs));
                let reader = match ranges {
                    Some(_) => None,
                    None => Some(v.open("")?),
                };
                let (host, file) = Self::create(done, dir, fs_path, name, &Make::File)?;
                if let Some(file) = file {
                    match (reader, ranges) {
                        (Some(reader), _) => {
                            self.copy(reader, file, fs_path, &host, meta.modified)?;
                        }
                        (None, ranges) => {
                            let ranges = ranges.unwrap_or_default();
                            self.send(v, &ranges, file, fs_path, &host, meta.modified)?;
                        }
                    }
                }
                if self.streams {
                    for s in v.streams().unwrap_or_default() {
                        let sp = format!("{fs_path}:{s}");
                        let reader = v.open(&s)?;
                        let (host, file) =
                            Self::create(done, dir, &sp, &format!("{name}:{s}"), &Make::File)?;
                        if let Some(file) = file {
                            self.copy(reader, file, &sp, &host, None)?;
                        }
                    }
                }
                done.files += 1;
                self.bar.inc(1);
            }
            FileType::Symlink => {
                let target = v.read_link()?;
                Self::create(done, dir, fs_path, name, &Make::Symlink(&target))?;
            }
            FileType::Special => {
                done.log.push(format!("skipped special file: {fs_path}"));
            }
        }
        Ok(())
    }

    /// Extracts the entries of the file-system directory `fs_dir` into the
    /// host directory `host` (the directory is read once, its entries
    /// opened from their directory entries); its subdirectories are
    /// created and listed in the result, not walked.
    fn unit(&mut self, fs_dir: &str, host: &Path, ancestors: &[u64]) -> Done {
        let mut done = Done::default();
        if let Some(e) = ls::depth_error(self.fs, fs_dir, ancestors) {
            done.fail(fs_dir, &e);
            return done;
        }
        let fs = self.fs;
        let visited = fs.visit_dir(fs_dir, &mut |v| {
            let v = match v {
                Ok(v) => v,
                Err((name, e)) => {
                    done.fail(&join(fs_dir, &name), &e);
                    return ControlFlow::Continue(());
                }
            };
            let path = join(fs_dir, v.name());
            match self.entry(&mut done, host, &path, v, ancestors) {
                Ok(()) => {}
                // A file the file system cannot give: reported, the rest goes on.
                Err(CliError::Fs(e)) => done.fail(&path, &e),
                Err(other) => {
                    done.stop = Some(other);
                    return ControlFlow::Break(());
                }
            }
            ControlFlow::Continue(())
        });
        if done.stop.is_some() {
            // As the walk always did: nothing below a stopped directory.
            done.subdirs.clear();
        } else if let Err(e) = visited {
            done.fail(fs_dir, &e);
        }
        done
    }
}

/// Puts the [`Done`]s of units, which threads finish in any order, back
/// in walk order: each is reported once every unit before it in the walk
/// is, so stderr, the counts and the error returned are the same whatever
/// the number of threads.
#[derive(Default)]
struct Merge {
    /// Finished units not reported yet.
    waiting: std::collections::HashMap<Vec<u32>, Done>,
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
                ancestors: [unit.ancestors.as_slice(), &[ls::ancestor_key(*inode)]].concat(),
            });
        }
        self.waiting.insert(unit.key.clone(), done);
        subs
    }

    /// Reports, in walk order, the finished units every earlier unit of
    /// which is reported; stops at the first that stopped.
    fn report(&mut self) {
        while self.total.stop.is_none() {
            let Some(done) = self.next.last().and_then(|k| self.waiting.remove(k)) else {
                return;
            };
            let key = self.next.pop().unwrap_or_default();
            for line in &done.log {
                eprintln!("{line}");
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
    /// is taken first (one thread walks depth first, as it always did).
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
fn work(x: &mut Extractor<'_>, state: &Mutex<Shared>, more: &Condvar) {
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
            st.merge.report();
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
fn walk(x: &mut Extractor<'_>, device: &Arc<dyn BlockDevice>, threads: usize, root: Unit) -> Done {
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
    let (streams, bar, kernel_copy) = (x.streams, x.bar, x.kernel_copy);
    std::thread::scope(|s| {
        for _ in 1..threads {
            s.spawn(|| {
                if let Ok(fs) = open_fs(Arc::clone(device)) {
                    let mut x =
                        Extractor::new(fs.as_ref(), device.as_ref(), kernel_copy, streams, bar);
                    work(&mut x, &state, &more);
                }
            });
        }
        work(x, &state, &more);
    });
    state
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner)
        .merge
        .total
}

/// Most image-file ranges one file is copied through by the kernel (more
/// pieces: read through the file system's reader instead).
const MAX_RANGES: usize = 4096;

/// The image-file byte ranges that hold `runs` (volume offsets) verbatim,
/// in order; `None` unless every byte is so held.
fn file_ranges<'d>(device: &'d dyn BlockDevice, runs: &[StoredRun]) -> Option<Vec<FileRange<'d>>> {
    let mut out = Vec::new();
    for r in runs {
        let mut done = 0u64;
        while done < r.len {
            let range = device.verbatim_range(r.at.checked_add(done)?, r.len - done)?;
            let len = range.len.min(r.len - done);
            if len == 0 || out.len() >= MAX_RANGES {
                return None;
            }
            done += len;
            out.push(FileRange { len, ..range });
        }
    }
    Some(out)
}

/// Appends `ranges` to `out` with `sendfile` (the input offset given, so
/// threads sharing an image file do not disturb each other); false if
/// the kernel refused or a range ended early.
fn send_all(out: &fs::File, ranges: &[FileRange<'_>]) -> bool {
    for r in ranges {
        let mut from = r.offset;
        let mut left = r.len;
        while left > 0 {
            let want = usize::try_from(left).unwrap_or(1 << 30).min(1 << 30);
            match rustix::fs::sendfile(out, r.file, Some(&mut from), want) {
                Ok(0) => return false,
                Ok(n) => left = left.saturating_sub(n as u64),
                Err(rustix::io::Errno::INTR) => {}
                Err(_) => return false,
            }
        }
    }
    true
}

/// Reads from `reader` until `buf` is full or the data ends; the count.
fn fill(reader: &mut dyn FileReader, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut done = 0;
    while let Some(rest) = buf.get_mut(done..).filter(|r| !r.is_empty()) {
        match reader.read(rest) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

#[cfg(unix)]
fn make_symlink(target: &str, host: &Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(target, host)
}

#[cfg(not(unix))]
fn make_symlink(target: &str, host: &Path) -> std::io::Result<()> {
    let mut f = fs::File::create_new(host)?;
    f.write_all(target.as_bytes())
}

/// Runs `extract`.
pub fn run(args: &ExtractArgs) -> Result<(), CliError> {
    let (device, path) = args.fs.open_device(false)?;
    let fs = open_fs(Arc::clone(&device))?;
    super::select::print_fs_warnings(fs.as_ref());
    fs::create_dir_all(&args.output).map_err(|e| CliError::output(&args.output, e))?;
    let root = args.output.clone();
    let meta = fs.metadata(&path)?;
    let bar = progress::count(0, "extract");
    let threads = args.threads.map_or_else(
        || {
            std::thread::available_parallelism()
                .map_or(1, NonZeroUsize::get)
                .min(MAX_THREADS)
        },
        NonZeroUsize::get,
    );
    let mut x = Extractor::new(
        fs.as_ref(),
        device.as_ref(),
        !args.no_kernel_copy,
        args.streams,
        &bar,
    );
    let done = if meta.file_type == FileType::Directory {
        let unit = Unit {
            key: Vec::new(),
            ancestors: ls::root_ancestors(fs.as_ref(), &path),
            fs_dir: path,
            host: root,
        };
        walk(&mut x, &device, threads, unit)
    } else {
        let entry = PathEntry::new(fs.as_ref(), &path);
        let mut done = Done::default();
        x.entry(&mut done, &root, &path, &entry, &[])?;
        for line in &done.log {
            eprintln!("{line}");
        }
        done
    };
    if let Some(e) = done.stop {
        return Err(e);
    }
    for (dir, t) in done.dir_times.iter().rev() {
        set_dir_mtime(dir, *t);
    }
    bar.finish_and_clear();
    eprintln!("extracted {} files, renamed {}", done.files, done.renamed);
    if done.failed > 0 {
        return Err(CliError::Usage(format!(
            "{} entries could not be read",
            done.failed
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_are_renamed() {
        assert_eq!(safe_name("..").as_deref(), Some("_.."));
        assert_eq!(
            safe_name("../../etc/passwd").as_deref(),
            Some(".._.._etc_passwd")
        );
        assert_eq!(safe_name("a\\b").as_deref(), Some("a_b"));
        assert_eq!(safe_name("a\0b").as_deref(), Some("a_b"));
        assert_eq!(safe_name("").as_deref(), Some("_"));
        assert_eq!(safe_name("fine.txt"), None);
        let long = "é".repeat(200);
        let s = safe_name(&long).unwrap();
        assert!(s.len() <= MAX_NAME_BYTES);
    }
}
