//! The writer threads of `extract`: the walking thread reads the file
//! system (whose handles are not `Send`) and creates every host file and
//! name itself, so renames and the "never through an existing file" rule
//! stay in one place; the writing of data, the modification time and the
//! closing of each file run on other threads, overlapping the reads.
//!
//! Each file goes to one writer (round robin), so its chunks are written
//! in order with plain writes. Queues are bounded ([`QUEUE_CHUNKS`] chunks
//! of at most the copy buffer each per writer), so memory stays bounded
//! whatever the tree holds. The first write error stops the extraction.

use std::fs;
use std::io::Write;
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::SystemTime;

use crate::cli::CliError;

/// Chunks queued per writer before the walking thread waits.
pub const QUEUE_CHUNKS: usize = 16;
/// Most writer threads.
pub const MAX_WRITERS: usize = 4;

/// A host file being written; closed, with its modification time set,
/// when the last chunk holding it is written (or the file is empty).
pub struct HostFile {
    file: fs::File,
    path: PathBuf,
    mtime: Option<SystemTime>,
}

impl HostFile {
    /// The new file `file` at `path`, to be stamped with `mtime`.
    pub fn new(file: fs::File, path: PathBuf, mtime: Option<SystemTime>) -> Arc<Self> {
        Arc::new(HostFile { file, path, mtime })
    }
}

impl Drop for HostFile {
    fn drop(&mut self) {
        if let Some(when) = self.mtime {
            // As before: a time the host refuses is not an error.
            let _ = self.file.set_modified(when);
        }
    }
}

/// One chunk of a file's data, at the file's current end.
struct Chunk {
    file: Arc<HostFile>,
    data: Vec<u8>,
}

/// The writer threads and their queues.
pub struct Writers {
    lanes: Vec<SyncSender<Chunk>>,
    threads: Vec<JoinHandle<()>>,
    error: Arc<Mutex<Option<CliError>>>,
    next: usize,
}

impl Writers {
    /// One writer per core beyond the walking thread's (at least one, at
    /// most [`MAX_WRITERS`]).
    pub fn new() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let n = cores.saturating_sub(1).clamp(1, MAX_WRITERS);
        let error = Arc::new(Mutex::new(None));
        let (mut lanes, mut threads) = (Vec::new(), Vec::new());
        for _ in 0..n {
            let (tx, rx) = sync_channel::<Chunk>(QUEUE_CHUNKS);
            let error = Arc::clone(&error);
            threads.push(std::thread::spawn(move || {
                for c in rx {
                    if let Err(e) = (&c.file.file).write_all(&c.data) {
                        let mut slot = error.lock().unwrap_or_else(|p| p.into_inner());
                        slot.get_or_insert_with(|| CliError::output(&c.file.path, e));
                    }
                }
            }));
            lanes.push(tx);
        }
        Writers {
            lanes,
            threads,
            error,
            next: 0,
        }
    }

    /// The writer the next file goes to.
    pub fn lane(&mut self) -> usize {
        self.next = (self.next + 1) % self.lanes.len().max(1);
        self.next
    }

    /// Queues `data` to be appended to `file` by writer `lane`; the first
    /// write error of any writer, if there was one.
    pub fn write(
        &mut self,
        lane: usize,
        file: &Arc<HostFile>,
        data: Vec<u8>,
    ) -> Result<(), CliError> {
        self.check()?;
        let chunk = Chunk {
            file: Arc::clone(file),
            data,
        };
        match self.lanes.get(lane) {
            Some(tx) if tx.send(chunk).is_ok() => Ok(()),
            // A writer that is gone has panicked: its error, or this one.
            _ => Err(self.take().unwrap_or_else(|| {
                CliError::output(&file.path, std::io::Error::other("writer thread stopped"))
            })),
        }
    }

    fn take(&self) -> Option<CliError> {
        self.error.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// The first write error so far, if any.
    pub fn check(&self) -> Result<(), CliError> {
        self.take().map_or(Ok(()), Err)
    }

    /// Waits for every queued chunk to be written; the first write error.
    pub fn finish(self) -> Result<(), CliError> {
        let Writers {
            lanes,
            threads,
            error,
            ..
        } = self;
        drop(lanes);
        for t in threads {
            let _ = t.join();
        }
        let first = error.lock().unwrap_or_else(|p| p.into_inner()).take();
        first.map_or(Ok(()), Err)
    }
}
