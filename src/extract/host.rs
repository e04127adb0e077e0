//! What extraction does on the host: times, symlinks, kernel copies.

use std::fs;
use std::path::Path;

use diskimage_formats::{BlockDevice, FileRange};
use diskimage_fs::{FileReader, StoredRun, Timestamp};

/// The host time of `t`, if it can be one (times before 1970 are left alone).
fn host_time(t: Option<Timestamp>) -> Option<std::time::SystemTime> {
    let t = t?;
    let secs = u64::try_from(t.secs).ok()?;
    Some(std::time::UNIX_EPOCH + std::time::Duration::new(secs, t.nanos))
}

/// Sets the modification time of a file just written, on its handle (a
/// time the host refuses is not an error).
pub fn stamp(out: &fs::File, t: Option<Timestamp>) {
    if let Some(when) = host_time(t) {
        let _ = out.set_modified(when);
    }
}

/// Sets a host directory's modification time.
pub fn set_dir_mtime(path: &Path, t: Option<Timestamp>) {
    let Some(when) = host_time(t) else { return };
    if let Ok(f) = fs::File::open(path) {
        let _ = f.set_modified(when);
    }
}

/// Creates the symlink `host` pointing at `target` (never followed).
#[cfg(unix)]
pub fn make_symlink(target: &str, host: &Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(target, host)
}

/// Where the host has no plain symlinks: a file holding the target.
#[cfg(not(unix))]
pub fn make_symlink(target: &str, host: &Path) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = fs::File::create_new(host)?;
    f.write_all(target.as_bytes())
}

/// Most image-file ranges one file is copied through by the kernel (more
/// pieces: read through the file system's reader instead).
const MAX_RANGES: usize = 4096;

/// The image-file byte ranges that hold `runs` (volume offsets) verbatim,
/// in order; `None` unless every byte is so held.
pub fn file_ranges<'d>(
    device: &'d dyn BlockDevice,
    runs: &[StoredRun],
) -> Option<Vec<FileRange<'d>>> {
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
#[cfg(any(target_os = "linux", target_os = "android"))]
pub fn send_all(out: &fs::File, ranges: &[FileRange<'_>]) -> bool {
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

/// No `sendfile` on this host: the caller reads through the file system.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub fn send_all(_out: &fs::File, _ranges: &[FileRange<'_>]) -> bool {
    false
}

/// Reads from `reader` until `buf` is full or the data ends; the count.
pub fn fill(reader: &mut dyn FileReader, buf: &mut [u8]) -> std::io::Result<usize> {
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
