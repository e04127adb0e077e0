//! Checks before a mount: FUSE present, the mount point usable.

use std::path::Path;

use super::MountError;

pub(super) fn mount_failed(mountpoint: &Path, e: std::io::Error) -> MountError {
    match e.kind() {
        std::io::ErrorKind::PermissionDenied => MountError::FuseUnavailable(format!(
            "mounting at {} was refused ({e}): FUSE needs the right to mount \
             (root with CAP_SYS_ADMIN, or a setuid fusermount3 from the fuse3 package)",
            mountpoint.display()
        )),
        std::io::ErrorKind::NotFound => MountError::FuseUnavailable(format!(
            "no fusermount3 to mount with ({e}): install the fuse3 package"
        )),
        _ => MountError::Mount {
            path: mountpoint.to_path_buf(),
            source: e,
        },
    }
}

/// Checks that FUSE can be used and that `mountpoint` is an empty directory
/// that is not itself a mount point, with errors that say which.
pub fn preflight(mountpoint: &Path) -> Result<(), MountError> {
    check_fuse_device()?;
    check_mountpoint(mountpoint)
}

/// Whether `/dev/fuse` can be opened for reading and writing.
pub fn check_fuse_device() -> Result<(), MountError> {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(MountError::FuseUnavailable(
            "there is no /dev/fuse (the fuse kernel module is not loaded, or this \
             container was started without the device)"
                .into(),
        )),
        Err(e) => Err(MountError::FuseUnavailable(format!(
            "/dev/fuse cannot be opened: {e}"
        ))),
    }
}

fn check_mountpoint(mountpoint: &Path) -> Result<(), MountError> {
    let bad = |reason: String| MountError::Mountpoint {
        path: mountpoint.to_path_buf(),
        reason,
    };
    let meta = std::fs::metadata(mountpoint).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOTCONN) => bad(format!(
            "a dead FUSE mount is still there ({e}): run `fusermount3 -u {}`",
            mountpoint.display()
        )),
        _ => bad(e.to_string()),
    })?;
    if !meta.is_dir() {
        return Err(bad("not a directory".into()));
    }
    if is_mount_point(mountpoint, &meta) {
        return Err(bad(
            "already a mount point (busy): unmount it first or choose another directory".into(),
        ));
    }
    let mut entries = std::fs::read_dir(mountpoint).map_err(|e| bad(e.to_string()))?;
    if entries.next().is_some() {
        return Err(bad(
            "not empty: mounting would hide its files; choose an empty directory".into(),
        ));
    }
    Ok(())
}

fn is_mount_point(path: &Path, meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(canonical) = std::fs::canonicalize(path) else {
        return false;
    };
    if let Some(parent) = canonical.parent() {
        if let Ok(p) = std::fs::metadata(parent) {
            if p.dev() != meta.dev() {
                return true;
            }
        }
    }
    // Bind mounts keep the device: look the path up in mountinfo too
    // (field 5 is the mount point, with spaces written as \040).
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = canonical.to_string_lossy().replace(' ', "\\040");
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|m| m == want)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_mountpoint_is_named() {
        let e = check_mountpoint(Path::new("/nonexistent/diskimage-mp")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/diskimage-mp"), "{e}");
    }

    #[test]
    fn a_non_empty_mountpoint_is_refused() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("x"), b"x").unwrap();
        let e = check_mountpoint(d.path()).unwrap_err();
        assert!(e.to_string().contains("not empty"), "{e}");
        assert!(check_mountpoint(&d.path().join("x")).is_err());
    }
}
