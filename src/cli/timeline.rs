//! `diskimage timeline`: a TSK 3.x bodyfile of a file system, for `mactime`.
//!
//! One line per entry: `MD5|name|inode|mode_as_string|UID|GID|size|atime|mtime|ctime|crtime`,
//! MD5 `0`, times in whole seconds since 1970 (`0` when unknown), symlinks
//! named `path -> target`, the name's `|` escaped as TSK does not (so it is
//! replaced by `_`).

use std::io::Write;

use clap::Args;
use diskimage::fs::{FileType, Metadata, Timestamp};

use diskimage::walk::{Entry, WalkError};

use super::ls::walk;
use super::select::FsArgs;
use super::CliError;

/// Arguments of `timeline`.
#[derive(Debug, Args)]
pub struct TimelineArgs {
    #[command(flatten)]
    fs: FsArgs,
}

/// The TSK mode string: name type, `/`, meta type and `rwx` bits.
pub fn mode_string(m: &Metadata) -> String {
    let t = match m.file_type {
        FileType::File => 'r',
        FileType::Directory => 'd',
        FileType::Symlink => 'l',
        FileType::Special => '-',
    };
    let perm = m.mode.unwrap_or(0o777);
    let mut s = format!("{t}/{t}");
    for shift in [6, 3, 0] {
        let bits = (perm >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

fn secs(t: Option<Timestamp>) -> i64 {
    t.map_or(0, |t| t.secs)
}

/// The bodyfile line of one entry.
pub fn body_line(e: &Entry) -> String {
    let m = &e.meta;
    let mut name = e.path.replace('|', "_");
    if let Some(t) = &e.target {
        name = format!("{name} -> {}", t.replace('|', "_"));
    }
    format!(
        "0|{name}|{}|{}|{}|{}|{}|{}|{}|{}|{}",
        m.inode.unwrap_or(0),
        mode_string(m),
        m.uid.unwrap_or(0),
        m.gid.unwrap_or(0),
        m.size,
        secs(m.accessed),
        secs(m.modified),
        secs(m.changed),
        secs(m.created),
    )
}

/// Runs `timeline`.
pub fn run(args: &TimelineArgs) -> Result<(), CliError> {
    let (fs, path) = args.fs.open_fs(false)?;
    let seen = fs.warnings().len();
    let mut out = std::io::stdout().lock();
    let mut failed = 0usize;
    let mut on_err = |e: WalkError| {
        failed += 1;
        eprintln!("diskimage: {e}");
    };
    walk(
        fs.as_ref(),
        &path,
        true,
        &mut |e| writeln!(out, "{}", body_line(&e)).map_err(|e| CliError::output("stdout", e)),
        &mut on_err,
    )?;
    super::select::print_fs_warnings_after(fs.as_ref(), seen);
    if failed > 0 {
        return Err(CliError::Usage(format!(
            "{failed} entries could not be read"
        )));
    }
    Ok(())
}
