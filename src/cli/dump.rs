//! `diskimage dump`: the virtual disk as raw bytes, to a file (sparse) or stdout.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use clap::Args;
use diskimage::buffer::AlignedBuf;
use diskimage::BlockDevice;

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc::sync_channel;
use std::sync::{Mutex, PoisonError};

use diskimage::formats::FileRange;

use super::extents::{for_each_extent, for_each_piece, Piece, READ_CHUNK};
use super::{progress, CliError, OpenArgs};

/// Arguments of `dump`.
#[derive(Debug, Args)]
pub struct DumpArgs {
    /// The image.
    image: PathBuf,
    /// Output file; `-` or nothing writes to standard output. A file gets
    /// holes wherever the image's map says zeros and where blocks read
    /// through the reader are all zeros; ranges stored verbatim in an image
    /// file are copied by the kernel as they are stored.
    #[arg(short, long)]
    output: Option<PathBuf>,
    #[command(flatten)]
    open: OpenArgs,
}

/// Blocks of this size that are all zeros are left as holes in a file.
const HOLE_GRAIN: usize = 64 * 1024;

/// Whether every byte is zero; a branch-free fold the compiler vectorises
/// (an early-exit `any` runs byte by byte).
fn is_zero(block: &[u8]) -> bool {
    block.iter().fold(0u8, |acc, &b| acc | b) == 0
}

/// Runs `dump`.
pub fn run(args: &DumpArgs) -> Result<(), CliError> {
    let image = args.open.open(&args.image)?;
    let bar = progress::bytes(image.size(), "dump");
    let result = match args.output.as_deref() {
        None => stream(&image, stdout_file()?, Path::new("<stdout>"), &bar),
        Some(p) if p == Path::new("-") => {
            stream(&image, stdout_file()?, Path::new("<stdout>"), &bar)
        }
        Some(p) => {
            refuse_input_as_output(image.info(), p)?;
            let regular = std::fs::metadata(p).map_or(true, |m| m.is_file());
            if regular {
                to_file(&image, p, &bar)
            } else {
                // A device or FIFO: no holes to punch, no length to set.
                let out = std::fs::OpenOptions::new()
                    .write(true)
                    .open(p)
                    .map_err(|e| CliError::output(p, e))?;
                stream(&image, out, p, &bar)
            }
        }
    };
    bar.finish_and_clear();
    result
}

/// Never write onto a file the image is read from.
fn refuse_input_as_output(info: &diskimage::ImageInfo, out: &Path) -> Result<(), CliError> {
    let Ok(out) = std::fs::canonicalize(out) else {
        return Ok(()); // does not exist yet
    };
    for f in info.chain().flat_map(|i| i.files.iter()) {
        if std::fs::canonicalize(f).is_ok_and(|f| f == out) {
            return Err(CliError::Usage(format!(
                "refusing to write to {}: it is an input file of the image",
                out.display()
            )));
        }
    }
    Ok(())
}

/// Standard output as an unbuffered file (a duplicate of descriptor 1):
/// big writes need no buffer, and the kernel copies of [`stream`] go to
/// the same descriptor in order.
fn stdout_file() -> Result<File, CliError> {
    use std::os::fd::AsFd;
    std::io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .map(File::from)
        .map_err(|e| CliError::output(Path::new("<stdout>"), e))
}

/// Bytes of zeros written per `write` for runs the map calls zeros.
const ZEROS: usize = 1 << 20;

/// Writes every byte in order (zeros included) to a stream: a pipe, a
/// character device, a socket or a file given as standard output. Runs
/// stored verbatim in an image file go by `sendfile` (the kernel moves
/// page-cache pages into a pipe, or drops them for `/dev/null`: no copy
/// through this process); everything else is read into reused,
/// page-aligned buffers on a reader thread and written from them.
fn stream(
    image: &dyn BlockDevice,
    mut out: File,
    name: &Path,
    bar: &indicatif::ProgressBar,
) -> Result<(), CliError> {
    let zeros = vec![0u8; ZEROS];
    let err = |e| CliError::output(name, e);
    // Cleared when the output refuses `sendfile` (a terminal, an O_APPEND
    // file): later stored runs are read and written instead.
    let mut kernel_copy = true;
    let mut buf = AlignedBuf::new();
    for_each_piece(image, true, |piece| {
        match piece {
            Piece::Data(bytes) => {
                out.write_all(bytes).map_err(err)?;
                bar.inc(bytes.len() as u64);
            }
            Piece::Zeros(mut len) => {
                while len > 0 {
                    let n = usize::try_from(len).unwrap_or(ZEROS).min(ZEROS);
                    out.write_all(zeros.get(..n).unwrap_or_default())
                        .map_err(err)?;
                    len -= n as u64;
                    bar.inc(n as u64);
                }
            }
            Piece::Stored { offset, len } => {
                let end = offset + len;
                let mut pos = offset;
                while pos < end {
                    if kernel_copy {
                        if let Some(range) = image.verbatim_range(pos, end - pos) {
                            match send(range, &out) {
                                Ok(0) => {}
                                Ok(n) => {
                                    pos += n;
                                    bar.inc(n);
                                    continue;
                                }
                                // Nothing of this range went out: read it instead.
                                Err(SendError::Refused) => kernel_copy = false,
                                Err(SendError::Output(e)) => return Err(err(e)),
                            }
                        }
                    }
                    let n = usize::try_from(end - pos)
                        .unwrap_or(READ_CHUNK)
                        .min(READ_CHUNK);
                    let chunk = buf.get(n);
                    image.read_at(chunk, pos)?;
                    out.write_all(chunk).map_err(err)?;
                    pos += n as u64;
                    bar.inc(n as u64);
                }
            }
        }
        Ok(())
    })?;
    out.flush().map_err(err)
}

/// Why [`send`] stopped before copying anything.
enum SendError {
    /// The output does not take `sendfile` (a terminal, an O_APPEND file,
    /// an old kernel): read and write instead.
    Refused,
    /// The output failed (a closed pipe, a full disk).
    Output(std::io::Error),
}

/// Copies `range` to the current position of `out` with `sendfile`;
/// returns how many bytes went out (0 when the input file ended early: the
/// caller's read then reports the truncated file). A failure after some
/// bytes went out returns the count; the next call reports it.
fn send(range: FileRange<'_>, out: &File) -> Result<u64, SendError> {
    let mut from = range.offset;
    let mut done = 0;
    while done < range.len {
        let want = usize::try_from(range.len - done)
            .unwrap_or(1 << 30)
            .min(1 << 30);
        match rustix::fs::sendfile(out, range.file, Some(&mut from), want) {
            Ok(0) => break,
            Ok(n) => done += n as u64,
            Err(rustix::io::Errno::INTR) => {}
            Err(_) if done > 0 => break,
            Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS) => {
                return Err(SendError::Refused)
            }
            Err(e) => return Err(SendError::Output(e.into())),
        }
    }
    Ok(done)
}

/// Bytes per job of the parallel copy to a file: big enough that the
/// per-job overhead vanishes, small enough to spread a disk over threads.
const COPY_CHUNK: u64 = 8 << 20;
/// Bytes a copy thread reads, scans for zeros and writes at a time: small
/// enough that the three passes over them stay in the core's cache (with
/// 4 MiB the read, scan and write each went to memory, and `dump -o` of a
/// raw disk took 1.4x the CPU of `cp --sparse=always`).
const COPY_READ: usize = 256 << 10;
/// At most this many threads copy at once.
const MAX_COPY_THREADS: usize = 4;

/// Writes the disk to a regular file: the length is set once (every range
/// the map calls zeros stays a hole), then data extents are copied in
/// chunks by several threads. A chunk stored verbatim in an image file
/// ([`BlockDevice::file_range`]) is copied by the kernel
/// (`copy_file_range`: one copy, no buffer, reflinked where the file system
/// can; `sendfile` where the image and the output lie on different file
/// systems); anything else is read with `read_at` into a reused,
/// page-aligned buffer, and its all-zero blocks are left as holes.
fn to_file(
    image: &dyn BlockDevice,
    path: &Path,
    bar: &indicatif::ProgressBar,
) -> Result<(), CliError> {
    let err = |e| CliError::output(path, e);
    let file = File::create(path).map_err(err)?;
    file.set_len(image.size()).map_err(err)?;
    // A disk whose data lies verbatim in image files is copied by one
    // thread: by the kernel chunk by chunk, or (a raw image, kept sparse)
    // read, scanned for zeros and written. A second thread only spins on
    // the output's inode lock: two threads took 1.5-1.7x the CPU of one
    // for the same wall time on tmpfs. Inflating compressed grains and
    // reading through parents are what several threads share.
    let threads = if diskimage_formats::stored_verbatim(image) {
        1
    } else {
        std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(MAX_COPY_THREADS)
    };
    let copier = Copier {
        image,
        out: &file,
        path,
        bar,
        kernel_copy: AtomicU8::new(COPY_FILE_RANGE),
    };
    let (tx, rx) = sync_channel::<(u64, u64)>(threads * 2);
    let rx = Mutex::new(rx);
    // The failure at the lowest offset: chunks leave the queue in disk order
    // and only chunks past a known failure are skipped, so this is the
    // first bad chunk on every run, whichever thread hit its error first.
    let failed: Mutex<Option<(u64, CliError)>> = Mutex::new(None);
    let walked = std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut buf = AlignedBuf::new();
                let mut own_out = None;
                loop {
                    let job = rx.lock().map(|r| r.recv());
                    let Ok(Ok((offset, len))) = job else { break };
                    if lock(&failed).as_ref().is_some_and(|(at, _)| *at < offset) {
                        continue; // drain the queue so that the sender never blocks
                    }
                    if let Err(e) = copier.copy(offset, len, &mut buf, &mut own_out) {
                        let mut first = lock(&failed);
                        if first.as_ref().is_none_or(|(at, _)| offset < *at) {
                            *first = Some((offset, e));
                        }
                    }
                }
            });
        }
        let walked = for_each_extent(image, |e| {
            if e.kind.reads_as_zero() {
                bar.inc(e.len);
                return Ok(());
            }
            let mut offset = e.offset;
            while offset < e.end() {
                let len = COPY_CHUNK.min(e.end() - offset);
                tx.send((offset, len))
                    .map_err(|_| CliError::Usage("copy threads stopped".into()))?;
                offset += len;
            }
            Ok(())
        });
        drop(tx);
        walked
    });
    if let Some((_, e)) = failed.into_inner().unwrap_or_else(PoisonError::into_inner) {
        return Err(e);
    }
    walked?;
    file.sync_all().map_err(err)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the copy threads of [`to_file`] share.
struct Copier<'a> {
    image: &'a dyn BlockDevice,
    out: &'a File,
    path: &'a Path,
    bar: &'a indicatif::ProgressBar,
    /// How stored ranges are copied: [`COPY_FILE_RANGE`] first; [`SENDFILE`]
    /// once that fails (the image and the output on different file
    /// systems, an old kernel); [`READ`] once that fails too: every later
    /// chunk is read instead.
    kernel_copy: AtomicU8,
}

/// [`Copier::kernel_copy`]: `copy_file_range` (one copy in the kernel,
/// a reflink where the file system can).
const COPY_FILE_RANGE: u8 = 0;
/// [`Copier::kernel_copy`]: `sendfile` through each thread's own handle of
/// the output (one copy in the kernel; works across file systems).
const SENDFILE: u8 = 1;
/// [`Copier::kernel_copy`]: no kernel copy.
const READ: u8 = 2;

impl Copier<'_> {
    /// Copies `len` bytes of the disk from `offset` to the same offset of
    /// the output. `buf` is the thread's read buffer, `own_out` its own
    /// handle of the output for `sendfile` (opened on first use).
    fn copy(
        &self,
        offset: u64,
        len: u64,
        buf: &mut AlignedBuf,
        own_out: &mut Option<File>,
    ) -> Result<(), CliError> {
        let end = offset + len;
        let mut pos = offset;
        while pos < end {
            if self.kernel_copy.load(Ordering::Relaxed) != READ {
                if let Some(range) = self.image.file_range(pos, end - pos) {
                    let n = self.kernel_copy(range, pos, own_out);
                    if n > 0 {
                        pos += n;
                        self.bar.inc(n);
                        continue;
                    }
                }
            }
            // Not stored verbatim (or the kernel declined): read up to the
            // next verbatim range, at most a buffer's worth.
            let n = usize::try_from(end - pos)
                .unwrap_or(COPY_READ)
                .min(COPY_READ);
            let chunk = buf.get(n);
            self.image.read_at(chunk, pos)?;
            self.write_sparse(chunk, pos)?;
            pos += n as u64;
            self.bar.inc(n as u64);
        }
        Ok(())
    }

    /// Copies `range` to byte `at` of the output in the kernel; returns how
    /// many bytes it copied (0 when it could not: the caller reads instead,
    /// so a truncated or unreadable input still gets the reader's typed error).
    fn kernel_copy(&self, range: FileRange<'_>, at: u64, own_out: &mut Option<File>) -> u64 {
        let mut from = range.offset;
        let mut to = at;
        let mut done = 0;
        if self.kernel_copy.load(Ordering::Relaxed) == COPY_FILE_RANGE {
            while done < range.len {
                let want = usize::try_from(range.len - done)
                    .unwrap_or(1 << 30)
                    .min(1 << 30);
                match rustix::fs::copy_file_range(
                    range.file,
                    Some(&mut from),
                    self.out,
                    Some(&mut to),
                    want,
                ) {
                    Ok(0) => return done,
                    Ok(n) => done += n as u64,
                    Err(rustix::io::Errno::INTR) => {}
                    Err(_) if done > 0 => return done,
                    Err(_) => {
                        self.kernel_copy.store(SENDFILE, Ordering::Relaxed);
                        break;
                    }
                }
            }
            if done > 0 {
                return done;
            }
        }
        if self.kernel_copy.load(Ordering::Relaxed) != SENDFILE {
            return 0;
        }
        // `sendfile` writes at the output handle's position: each thread
        // seeks a handle of its own (a new open of the same file, since a
        // duplicated descriptor would share one position between threads).
        if own_out.is_none() {
            use std::os::fd::AsRawFd;
            let proc_path = format!("/proc/self/fd/{}", self.out.as_raw_fd());
            *own_out = std::fs::OpenOptions::new().write(true).open(proc_path).ok();
        }
        let sent = own_out.as_mut().and_then(|out| {
            use std::io::{Seek, SeekFrom};
            out.seek(SeekFrom::Start(at)).ok()?;
            let mut done = 0;
            while done < range.len {
                let want = usize::try_from(range.len - done)
                    .unwrap_or(1 << 30)
                    .min(1 << 30);
                match rustix::fs::sendfile(&*out, range.file, Some(&mut from), want) {
                    Ok(0) => break,
                    Ok(n) => done += n as u64,
                    Err(rustix::io::Errno::INTR) => {}
                    Err(_) if done > 0 => break,
                    Err(_) => return None,
                }
            }
            Some(done)
        });
        sent.unwrap_or_else(|| {
            self.kernel_copy.store(READ, Ordering::Relaxed);
            0
        })
    }

    /// Writes runs of non-zero blocks of `bytes` (disk offset `offset`) in
    /// one call each; all-zero blocks stay holes.
    fn write_sparse(&self, bytes: &[u8], offset: u64) -> Result<(), CliError> {
        let write = |s: usize, e: usize| {
            self.out
                .write_all_at(&bytes[s..e], offset + s as u64)
                .map_err(|e| CliError::output(self.path, e))
        };
        let mut run: Option<(usize, usize)> = None;
        for (i, block) in bytes.chunks(HOLE_GRAIN).enumerate() {
            let start = i * HOLE_GRAIN;
            if !is_zero(block) {
                run = Some(run.map_or((start, start + block.len()), |(s, _)| {
                    (s, start + block.len())
                }));
            } else if let Some((s, e)) = run.take() {
                write(s, e)?;
            }
        }
        if let Some((s, e)) = run {
            write(s, e)?;
        }
        Ok(())
    }
}
