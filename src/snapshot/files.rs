//! What every kind of VM shares when its snapshots are changed on files
//! alone: the refusal of a VM that is running, locked or suspended, the
//! refusal of an incomplete chain, the rule that nothing outside the VM's
//! folder is written, and configuration files replaced atomically (written
//! beside the old one, synced, then renamed over it).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Detail, Error, ErrorKind, Result, Scheme};
use crate::vm::{Vm, VmOptions};

/// Most entries of the VM folder looked at (a VM folder holds tens).
const MAX_FOLDER_ENTRIES: usize = 100_000;

/// A file name ending that shows a VM is running, locked or suspended,
/// and what it means.
pub(crate) type Sign = (&'static str, &'static str);

/// VMware's signs of a VM that is not powered off: lock folders or files
/// (`*.lck`), the memory file of a running or suspended VM (`*.vmem`) and
/// the suspended state (`*.vmss`).
pub(crate) const VMWARE_SIGNS: [Sign; 3] = [
    (
        ".lck",
        "a lock (the VM is running, or was not shut down cleanly)",
    ),
    (".vmem", "a memory file (the VM is running or suspended)"),
    (".vmss", "a suspended state (the VM is suspended)"),
];

/// Refuses the VM when its folder holds a file or folder whose name ends
/// with one of `signs` (letter case ignored), naming every one found.
pub(crate) fn refuse_unless_powered_off(vm: &Vm, signs: &[Sign]) -> Result<()> {
    let entries =
        std::fs::read_dir(&vm.folder).map_err(|e| Error::host_io(Scheme::Vm, &vm.folder, e))?;
    let mut found = Vec::new();
    for e in entries.take(MAX_FOLDER_ENTRIES).flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let lower = name.to_ascii_lowercase();
        if let Some((_, what)) = signs.iter().find(|(end, _)| lower.ends_with(end)) {
            found.push(format!("{name}: {what}"));
        }
    }
    if found.is_empty() {
        return Ok(());
    }
    found.sort();
    Err(Error::unsupported(
        Scheme::Vm,
        format!(
            "the VM is not powered off; its snapshots are changed only when it is off ({})",
            found.join("; ")
        ),
    )
    .in_file(&vm.config))
}

/// Refuses the VM when a state whose files it needs is incomplete: every
/// state of the VM, or with `fallback` only the states named in `needed`
/// (`None`: the current state; `Some(uid)`: that snapshot).
pub(crate) fn refuse_incomplete(vm: &Vm, needed: &[Option<&str>], fallback: bool) -> Result<()> {
    let opts = VmOptions::new();
    let mut problems = Vec::new();
    let mut check = |snapshot: Option<&crate::vm::Snapshot>| -> Result<()> {
        let st = vm.state(snapshot, &opts)?;
        for d in st.disks.iter() {
            if let Some(p) = &d.problem {
                problems.push(format!("{} state, {}: {p}", st.name, d.slot));
            }
        }
        Ok(())
    };
    if fallback {
        for n in needed {
            match n {
                None => check(None)?,
                Some(uid) => check(Some(vm.find_snapshot(uid)?))?,
            }
        }
    } else {
        check(None)?;
        for s in &vm.snapshots {
            check(Some(s))?;
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    let hint = if fallback {
        ""
    } else {
        " (--fallback goes on when the states this change needs are complete)"
    };
    Err(Error::new(
        ErrorKind::MissingFile,
        Scheme::Vm,
        Detail::Invalid(format!(
            "the VM's chains are incomplete: {}{hint}",
            problems.join("; ")
        )),
    )
    .in_file(&vm.config))
}

/// `p` with every link resolved, or as given when it cannot be (a file
/// not made yet).
pub(crate) fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Refuses `path` unless it lies directly in the VM's folder: nothing
/// outside it is written.
pub(crate) fn inside_folder(vm: &Vm, path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if canonical(dir) == canonical(&vm.folder) {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::OutsideFolder,
        Scheme::Vm,
        Detail::Invalid(format!(
            "{} is outside the VM folder {}: it is not written",
            path.display(),
            vm.folder.display()
        )),
    )
    .in_file(&vm.config))
}

/// The name of a new file beside `path` that no one else uses.
fn temp_beside(path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(
        ".{name}.new-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ))
}

/// A new file written whole beside its destination and synced, renamed
/// into place by [`Staged::install`]; dropped without that, it is removed.
#[derive(Debug)]
pub(crate) struct Staged {
    temp: PathBuf,
    dest: PathBuf,
    installed: bool,
}

impl Staged {
    /// Writes `bytes` into a new file beside `dest` and syncs it.
    pub fn write(dest: &Path, bytes: &[u8]) -> Result<Staged> {
        let temp = temp_beside(dest);
        let staged = Staged {
            temp: temp.clone(),
            dest: dest.to_path_buf(),
            installed: false,
        };
        let io = |e| Error::host_io(Scheme::Vm, &temp, e);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(io)?;
        f.write_all(bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
        Ok(staged)
    }

    /// Renames the file over its destination (atomic on one file system).
    pub fn install(mut self) -> Result<()> {
        std::fs::rename(&self.temp, &self.dest)
            .map_err(|e| Error::host_io(Scheme::Vm, &self.dest, e))?;
        self.installed = true;
        sync_dir(&self.dest);
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.installed {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// Syncs the folder of `path` so a rename in it is durable (best effort:
/// not every host allows opening a folder).
pub(crate) fn sync_dir(path: &Path) {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
}

/// The steps of one change, each named, so that a test can make one fail
/// (see `SnapshotOptions::fail_before`) and show that what was done before
/// it leaves a VM that still opens.
#[derive(Debug)]
pub(crate) struct Steps<'a> {
    fail_before: Option<&'a str>,
}

impl<'a> Steps<'a> {
    /// Steps that fail before the one named `fail_before` (none: never).
    pub fn new(fail_before: Option<&'a str>) -> Self {
        Steps { fail_before }
    }

    /// Called before the step `name`: the injected failure, if it is this one.
    pub fn before(&self, name: &str) -> Result<()> {
        if self.fail_before == Some(name) {
            return Err(Error::new(
                ErrorKind::Io,
                Scheme::Vm,
                Detail::Invalid(format!("failure injected before the step {name:?}")),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staged_file_appears_only_when_installed() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("a.vmx");
        std::fs::write(&dest, b"old").unwrap();
        let s = Staged::write(&dest, b"new").unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"old");
        drop(s);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        Staged::write(&dest, b"new").unwrap().install().unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"new");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
