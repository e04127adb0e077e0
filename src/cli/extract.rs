//! `diskimage extract`: copy a tree out of a file system into a host
//! directory, safely.
//!
//! Nothing is ever written outside the target directory: every name is
//! one path component made safe by [`safe_name`] (no `/`, `\`, NUL or
//! control characters, never `.`/`..`/empty, at most [`MAX_NAME_BYTES`]
//! bytes), files are created with `create_new` (never through an existing
//! file or link), and symlinks are created as links and never followed.
//! Every rename is reported on stderr.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use clap::Args;
use diskimage::fs::{FileSystem, FileType, Timestamp};

use super::ls::{walk, Entry};
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

/// Sets a host file's modification time (symlinks are left alone).
fn set_mtime(path: &Path, t: Option<Timestamp>) {
    let Some(t) = t else { return };
    let Ok(secs) = u64::try_from(t.secs) else {
        return;
    };
    let when = std::time::UNIX_EPOCH + std::time::Duration::new(secs, t.nanos);
    if let Ok(f) = fs::File::open(path) {
        let _ = f.set_modified(when);
    }
}

struct Extractor<'a> {
    fs: &'a dyn FileSystem,
    root: PathBuf,
    streams: bool,
    /// fs directory path → host directory path.
    dirs: std::collections::HashMap<String, PathBuf>,
    /// Host directories to stamp after their contents, deepest last.
    dir_times: Vec<(PathBuf, Option<Timestamp>)>,
    renamed: usize,
    files: u64,
    bar: indicatif::ProgressBar,
}

impl Extractor<'_> {
    /// A fresh host path for `name` in `dir`, renamed if unsafe or taken.
    fn place(&mut self, dir: &Path, fs_path: &str, name: &str) -> PathBuf {
        let safe = safe_name(name);
        let base = safe.clone().unwrap_or_else(|| name.to_string());
        let mut host = dir.join(&base);
        let mut n = 1;
        while host.symlink_metadata().is_ok() {
            host = dir.join(format!("{base}~{n}"));
            n += 1;
        }
        if safe.is_some() || n > 1 {
            self.renamed += 1;
            eprintln!("renamed: {fs_path} -> {}", host.display());
        }
        host
    }

    fn copy(&mut self, fs_path: &str, host: &Path) -> Result<(), CliError> {
        let mut reader = self.fs.open(fs_path)?;
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(host)
            .map_err(|e| CliError::output(host, e))?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                // Whatever the reader failed with, it is the file system's.
                Err(e) => {
                    return Err(CliError::Fs(diskimage::fs::Error::from_io(
                        diskimage::fs::FsName::Detect,
                        fs_path,
                        e,
                    )))
                }
            };
            out.write_all(buf.get(..n).unwrap_or_default())
                .map_err(|e| CliError::output(host, e))?;
        }
        out.flush().map_err(|e| CliError::output(host, e))
    }

    fn entry(&mut self, e: Entry) -> Result<(), CliError> {
        let (parent, name) = match e.path.rsplit_once('/') {
            Some((p, n)) => (if p.is_empty() { "/" } else { p }, n),
            None => ("/", e.path.as_str()),
        };
        let dir = self
            .dirs
            .get(parent)
            .cloned()
            .unwrap_or_else(|| self.root.clone());
        let host = self.place(&dir, &e.path, name);
        match e.meta.file_type {
            FileType::Directory => {
                fs::create_dir(&host).map_err(|err| CliError::output(&host, err))?;
                self.dir_times.push((host.clone(), e.meta.modified));
                self.dirs.insert(e.path.clone(), host);
            }
            FileType::File => {
                self.copy(&e.path, &host)?;
                set_mtime(&host, e.meta.modified);
                if self.streams {
                    for s in &e.streams {
                        let sp =
                            self.place(&dir, &format!("{}:{s}", e.path), &format!("{name}:{s}"));
                        self.copy(&format!("{}:{s}", e.path), &sp)?;
                    }
                }
                self.files += 1;
                self.bar.inc(1);
            }
            FileType::Symlink => {
                let target = e.target.unwrap_or_default();
                make_symlink(&target, &host)?;
            }
            FileType::Special => {
                eprintln!("skipped special file: {}", e.path);
            }
        }
        Ok(())
    }
}

#[cfg(unix)]
fn make_symlink(target: &str, host: &Path) -> Result<(), CliError> {
    std::os::unix::fs::symlink(target, host).map_err(|e| CliError::output(host, e))
}

#[cfg(not(unix))]
fn make_symlink(target: &str, host: &Path) -> Result<(), CliError> {
    let mut f = fs::File::create_new(host).map_err(|e| CliError::output(host, e))?;
    f.write_all(target.as_bytes())
        .map_err(|e| CliError::output(host, e))
}

/// Runs `extract`.
pub fn run(args: &ExtractArgs) -> Result<(), CliError> {
    let (fs, path) = args.fs.open_fs(false)?;
    fs::create_dir_all(&args.output).map_err(|e| CliError::output(&args.output, e))?;
    let root = args.output.clone();
    let meta = fs.metadata(&path)?;
    let mut x = Extractor {
        fs: fs.as_ref(),
        root: root.clone(),
        streams: args.streams,
        dirs: std::collections::HashMap::new(),
        dir_times: Vec::new(),
        renamed: 0,
        files: 0,
        bar: progress::count(0, "extract"),
    };
    let mut failed = 0usize;
    if meta.file_type == FileType::Directory {
        x.dirs.insert(path.clone(), root.clone());
        let mut on_err = |p: String, e: diskimage::fs::Error| {
            failed += 1;
            eprintln!("diskimage: {p}: {e}");
        };
        let mut entry_failed = 0usize;
        walk(
            fs.as_ref(),
            &path,
            true,
            0,
            &mut |e| {
                let p = e.path.clone();
                match x.entry(e) {
                    // A file the file system cannot give: reported, the rest goes on.
                    Err(CliError::Fs(err)) => {
                        entry_failed += 1;
                        eprintln!("diskimage: {p}: {err}");
                        Ok(())
                    }
                    other => other,
                }
            },
            &mut on_err,
        )?;
        failed += entry_failed;
    } else {
        let target = fs.read_link(&path).ok();
        let streams = fs.streams(&path).unwrap_or_default();
        let parent = path.rsplit_once('/').map_or("/", |(p, _)| p).to_string();
        x.dirs.insert(parent, root.clone());
        x.entry(Entry {
            path: path.clone(),
            meta,
            target,
            streams,
        })?;
    }
    for (dir, t) in x.dir_times.iter().rev() {
        set_mtime(dir, *t);
    }
    x.bar.finish_and_clear();
    eprintln!("extracted {} files, renamed {}", x.files, x.renamed);
    if failed > 0 {
        return Err(CliError::Usage(format!(
            "{failed} entries could not be read"
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
