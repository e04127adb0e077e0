//! What every writer reads about the parent of a new child (delta,
//! differencing disk): the parent opened read-only and checked to be of
//! the child's format, and the paths a child records to find it again.

use std::path::{Path, PathBuf};

use crate::error::{Detail, Error, ErrorKind, Format, Result};
use crate::image::{DiskImage, WarningKind};
use crate::options::OpenOptions;

/// A parent of a child about to be created, opened read-only.
#[derive(Debug)]
pub(crate) struct Parent {
    /// The parent image, its own parents opened underneath.
    pub image: DiskImage,
    /// The parent's canonical path.
    pub absolute: PathBuf,
    /// The parent as named, its folder made canonical (links in the
    /// file name itself not followed).
    pub named: PathBuf,
    /// The canonical folder the child will be created in.
    pub child_dir: PathBuf,
}

impl Parent {
    /// Opens `parent` for a child at `child` in `format` (the only format
    /// a parent of such a child may have; another one is an
    /// [`Unsupported`](crate::ErrorKind::Unsupported) error naming the
    /// child, and so is a `child` that is one of the chain's files).
    pub fn open(parent: &Path, child: &Path, format: Format) -> Result<Self> {
        let image = crate::probe::open(parent, &OpenOptions::new())?;
        if image.format() != format {
            return Err(Error::unsupported(
                format,
                format!(
                    "a {format} child needs a {format} parent; {} is {}",
                    parent.display(),
                    image.format()
                ),
            )
            .in_file(child));
        }
        let files: Vec<PathBuf> = image
            .info()
            .chain()
            .flat_map(|i| i.files.iter().cloned())
            .collect();
        // Replacing a file of the chain (even with force) would destroy
        // the parent the child is made of.
        super::convert::refuse_source_as_destination(child, &files)?;
        let absolute = canonical(parent, format)?;
        let (named, child_dir) = located(parent, child, format)?;
        Ok(Parent {
            image,
            absolute,
            named,
            child_dir,
        })
    }

    /// Whether the parent, as named, is in the child's folder.
    pub fn in_child_folder(&self) -> bool {
        self.named.parent() == Some(self.child_dir.as_path())
    }

    /// The file name of the parent's canonical path.
    pub fn file_name(&self) -> String {
        self.absolute
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// The parent relative to the child's folder, with Windows separators
    /// (`.\p.vhd`, `..\base\p.vhd`), as VHD and VHDX locators hold it.
    pub fn windows_relative(&self) -> String {
        windows_relative(&self.child_dir, &self.absolute)
    }

    /// The parent's absolute path as text.
    pub fn absolute_text(&self) -> String {
        self.absolute.to_string_lossy().into_owned()
    }
}

/// `parent` as named with its folder made canonical (links in the file
/// name itself not followed), and the canonical folder of `child`.
pub(crate) fn located(parent: &Path, child: &Path, format: Format) -> Result<(PathBuf, PathBuf)> {
    let name = parent.file_name().ok_or_else(|| {
        Error::unsupported(format, "the parent's path names no file").in_file(parent)
    })?;
    let named = canonical(folder_of(parent), format)?.join(name);
    Ok((named, canonical(folder_of(child), format)?))
}

/// The parent of the differencing disk `path` that is about to be
/// written, opened read-only with its own parents. Refused when the
/// child's record of its parent does not match the parent found (the
/// parent changed after the child was made: writing would mix the two),
/// or when no parent is found.
pub(crate) fn open_for_writing(
    path: &Path,
    options: &OpenOptions,
    format: Format,
) -> Result<DiskImage> {
    let child = crate::probe::open(path, options)?;
    let Some(p) = child.info().parent.as_ref() else {
        return Err(Error::unsupported(
            format,
            "writing a differencing disk opened without its parent",
        )
        .in_file(path));
    };
    if let Some(w) = child
        .info()
        .warnings
        .iter()
        .find(|w| w.kind == WarningKind::ParentMismatch)
    {
        return Err(parent_changed(format, path, &w.message));
    }
    crate::probe::open(&p.path, options)
}

/// The error for a child whose parent changed after it was made.
pub(crate) fn parent_changed(format: Format, child: &Path, why: &str) -> Error {
    Error::new(
        ErrorKind::Corrupt,
        format,
        Detail::Invalid(format!(
            "the parent changed after this child was made ({why}); writing into the child would mix the two"
        )),
    )
    .in_file(child)
}

/// The folder `path` is in (`.` for a bare name).
fn folder_of(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// `path` made absolute with every link resolved, errors naming it.
fn canonical(path: &Path, format: Format) -> Result<PathBuf> {
    std::fs::canonicalize(path).map_err(|e| Error::io(format, e).in_file(path))
}

/// `target` relative to the folder `from`, with Windows separators.
pub(crate) fn windows_relative(from: &Path, target: &Path) -> String {
    let a: Vec<_> = from.components().collect();
    let b: Vec<_> = target.components().collect();
    let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut parts: Vec<String> = Vec::new();
    if common == a.len() {
        parts.push(".".into());
    }
    parts.extend(a.iter().skip(common).map(|_| "..".to_owned()));
    parts.extend(
        b.iter()
            .skip(common)
            .map(|c| c.as_os_str().to_string_lossy().into_owned()),
    );
    parts.join("\\")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_are_windows_style() {
        assert_eq!(
            windows_relative(Path::new("/a/b"), Path::new("/a/b/p.vhd")),
            ".\\p.vhd"
        );
        assert_eq!(
            windows_relative(Path::new("/a/c"), Path::new("/a/b/p.vhd")),
            "..\\b\\p.vhd"
        );
    }
}
