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
//! entry, not from a lookup of its path; file data goes through one
//! reused buffer, and the modification time is set on the handle written.
//! One thread does it all: writer threads were measured slower on a
//! loaded 2-core machine (README, performance).

use std::fs;
use std::io::Write;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use clap::Args;
use diskimage::fs::file_system::join;
use diskimage::fs::{FileReader, FileSystem, FileType, PathEntry, Timestamp, Visited};

use super::ls::MAX_DEPTH;
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

/// Size of the one buffer file data is copied through.
const COPY_BUFFER: usize = 1 << 20;

struct Extractor<'a> {
    fs: &'a dyn FileSystem,
    streams: bool,
    /// Host directories to stamp after their contents, deepest last.
    dir_times: Vec<(PathBuf, Option<Timestamp>)>,
    renamed: usize,
    files: u64,
    /// Entries that could not be read (reported, the rest goes on).
    failed: usize,
    /// The one read buffer, reused for every file.
    buf: Vec<u8>,
    bar: indicatif::ProgressBar,
}

impl Extractor<'_> {
    /// Reports an entry the file system cannot give; the walk goes on.
    fn fail(&mut self, path: &str, e: &dyn std::fmt::Display) {
        self.failed += 1;
        eprintln!("diskimage: {path}: {e}");
    }

    /// Creates `what` for `name` in the host directory `dir`, under a
    /// safe name, renamed `~N` while the name is taken (never through an
    /// existing file or link); the rename is reported. Returns the host
    /// path and, for a file, the file opened for writing.
    fn create(
        &mut self,
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
            self.renamed += 1;
            eprintln!("renamed: {fs_path} -> {}", host.display());
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
        if let Some(when) = host_time(mtime) {
            // As before: a time the host refuses is not an error.
            let _ = out.set_modified(when);
        }
        Ok(())
    }

    /// Extracts one entry of the host directory `dir`; a directory's
    /// (file-system path, host path) is returned, for the caller to walk.
    fn entry(
        &mut self,
        dir: &Path,
        fs_path: &str,
        v: &dyn Visited,
    ) -> Result<Option<(String, PathBuf)>, CliError> {
        let meta = v.metadata()?;
        let name = v.name();
        match meta.file_type {
            FileType::Directory => {
                let (host, _) = self.create(dir, fs_path, name, &Make::Dir)?;
                self.dir_times.push((host.clone(), meta.modified));
                return Ok(Some((fs_path.to_string(), host)));
            }
            FileType::File => {
                let reader = v.open("")?;
                let (host, file) = self.create(dir, fs_path, name, &Make::File)?;
                if let Some(file) = file {
                    self.copy(reader, file, fs_path, &host, meta.modified)?;
                }
                if self.streams {
                    for s in v.streams().unwrap_or_default() {
                        let sp = format!("{fs_path}:{s}");
                        let reader = v.open(&s)?;
                        let (host, file) =
                            self.create(dir, &sp, &format!("{name}:{s}"), &Make::File)?;
                        if let Some(file) = file {
                            self.copy(reader, file, &sp, &host, None)?;
                        }
                    }
                }
                self.files += 1;
                self.bar.inc(1);
            }
            FileType::Symlink => {
                let target = v.read_link()?;
                self.create(dir, fs_path, name, &Make::Symlink(&target))?;
            }
            FileType::Special => {
                eprintln!("skipped special file: {fs_path}");
            }
        }
        Ok(None)
    }

    /// Extracts the tree below the file-system directory `fs_dir` into the
    /// host directory `host`: each directory is read once, its entries
    /// opened from their directory entries, then its subdirectories.
    fn tree(&mut self, fs_dir: &str, host: &Path, depth: usize) -> Result<(), CliError> {
        if depth > MAX_DEPTH {
            let e = format!("nesting deeper than {MAX_DEPTH} directories (a directory loop?)");
            self.fail(fs_dir, &e);
            return Ok(());
        }
        let fs = self.fs;
        let mut subdirs = Vec::new();
        let mut stop = None;
        let visited = fs.visit_dir(fs_dir, &mut |v| {
            let v = match v {
                Ok(v) => v,
                Err((name, e)) => {
                    self.fail(&join(fs_dir, &name), &e);
                    return ControlFlow::Continue(());
                }
            };
            let path = join(fs_dir, v.name());
            match self.entry(host, &path, v) {
                Ok(sub) => subdirs.extend(sub),
                // A file the file system cannot give: reported, the rest goes on.
                Err(CliError::Fs(e)) => self.fail(&path, &e),
                Err(other) => {
                    stop = Some(other);
                    return ControlFlow::Break(());
                }
            }
            ControlFlow::Continue(())
        });
        if let Some(e) = stop {
            return Err(e);
        }
        if let Err(e) = visited {
            self.fail(fs_dir, &e);
        }
        for (fs_path, host) in subdirs {
            self.tree(&fs_path, &host, depth + 1)?;
        }
        Ok(())
    }
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
    let (fs, path) = args.fs.open_fs(false)?;
    fs::create_dir_all(&args.output).map_err(|e| CliError::output(&args.output, e))?;
    let root = args.output.clone();
    let meta = fs.metadata(&path)?;
    let mut x = Extractor {
        fs: fs.as_ref(),
        streams: args.streams,
        dir_times: Vec::new(),
        renamed: 0,
        files: 0,
        failed: 0,
        buf: vec![0u8; COPY_BUFFER],
        bar: progress::count(0, "extract"),
    };
    if meta.file_type == FileType::Directory {
        x.tree(&path, &root, 0)?;
    } else {
        let entry = PathEntry::new(fs.as_ref(), &path);
        x.entry(&root, &path, &entry)?;
    }
    for (dir, t) in x.dir_times.iter().rev() {
        set_dir_mtime(dir, *t);
    }
    x.bar.finish_and_clear();
    eprintln!("extracted {} files, renamed {}", x.files, x.renamed);
    if x.failed > 0 {
        return Err(CliError::Usage(format!(
            "{} entries could not be read",
            x.failed
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
