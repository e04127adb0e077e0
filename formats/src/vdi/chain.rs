//! Finding the parent of a differencing VDI by its UUID.
//!
//! A VDI child records no parent file name, only the parent's
//! `uuidCreate` (`uuidLinkage`) and its `uuidModify` at the time the child
//! was made (`uuidParentModify`). VirtualBox finds the parent through its
//! media registry; here the caller's [`ParentResolver`](crate::ParentResolver)
//! is asked first (the `.vbox` reader installs one from the registry), then
//! the `.vdi` files of the child's folder are read (the header only) for
//! one whose UUID is the linkage. At most [`MAX_CANDIDATES`] files are
//! looked at.

use std::path::{Path, PathBuf};

use crate::context::OpenContext;
use crate::error::{Error, ErrorKind, Format, Result};
use crate::image::{DiskImage, WarningKind, Warnings};

use super::header::Header;

/// The most files of the child's folder read while looking for a parent.
pub const MAX_CANDIDATES: usize = 4096;

/// Opens the parent of the differencing image at `child` with header `h`.
pub fn open_parent(
    ctx: &OpenContext<'_>,
    child: &Path,
    h: &Header,
    w: &mut Warnings,
) -> Result<DiskImage> {
    let hints = match ctx.resolve_parent(Format::Vdi, child, &[]) {
        // The caller's resolver named a file: open it through the usual path.
        Ok(p) => vec![p.to_string_lossy().into_owned()],
        Err(e) if e.kind() == ErrorKind::MissingFile => {
            let (found, tried) = find_by_uuid(ctx, child, h);
            match found {
                Some(p) => vec![p
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()],
                None => {
                    return Err(Error::missing(
                        Format::Vdi,
                        format!(
                            "parent of {} (a VDI whose UUID is {{{}}})",
                            child.display(),
                            h.parent_uuid
                        ),
                        tried,
                    )
                    .in_file(child))
                }
            }
        }
        Err(e) => return Err(e),
    };
    let parent = ctx.open_parent(Format::Vdi, child, &hints)?;
    check_linkage(&parent, child, h, w)?;
    Ok(parent)
}

/// The `.vdi` file of `child`'s folder whose UUID is `h.parent_uuid`, and
/// every file looked at.
fn find_by_uuid(
    ctx: &OpenContext<'_>,
    child: &Path,
    h: &Header,
) -> (Option<PathBuf>, Vec<PathBuf>) {
    let dir = child.parent().unwrap_or(Path::new(""));
    let mut tried = Vec::new();
    for p in ctx.files_in(dir, MAX_CANDIDATES) {
        let is_vdi = p
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("vdi"));
        if !is_vdi
            || p == child
            || (ctx.options().confine_to.is_some() && !ctx.options().allows(&p))
        {
            continue;
        }
        let uuid = ctx
            .open_file(&p)
            .and_then(|f| Header::read(&f))
            .map(|ph| ph.uuid);
        tried.push(p.clone());
        if uuid.is_ok_and(|u| u == h.parent_uuid) {
            return (Some(p), tried);
        }
    }
    (None, tried)
}

/// Checks that `parent` is the image the child names: a VDI parent that
/// does not carry the linkage UUID is another disk (a warning; strict mode
/// refuses it), and a
/// modification UUID other than the child's `uuidParentModify` is a
/// warning (the parent was written after the child was made).
fn check_linkage(parent: &DiskImage, child: &Path, h: &Header, w: &mut Warnings) -> Result<()> {
    let info = parent.info();
    if info.format != Format::Vdi {
        return Ok(());
    }
    let prop = |k: &str| {
        info.properties
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    let uuid_at = Header::uuid_offset(h.major);
    if let Some(uuid) = prop("uuid") {
        if !h.parent_uuid.matches_text(uuid) {
            w.tolerate(
                WarningKind::ParentMismatch,
                Error::corrupt(
                    Format::Vdi,
                    crate::error::Detail::BadSignature {
                        what: "parent UUID (uuidLinkage)",
                        expected: h.parent_uuid.to_string(),
                        found: format!("{uuid} in {}", info.path.display()),
                    },
                )
                .at(uuid_at + 32)
                .in_file(child),
            )?;
        }
    }
    if h.major >= 1 && !h.parent_modify_uuid.is_nil() {
        if let Some(m) = prop("modification_uuid") {
            if !h.parent_modify_uuid.matches_text(m) {
                w.note(
                    WarningKind::ParentMismatch,
                    child,
                    Some(uuid_at + 48),
                    format!(
                        "the parent {} was modified after this differencing image was made \
                         (its modification UUID is {m}, this image expects {})",
                        info.path.display(),
                        h.parent_modify_uuid
                    ),
                );
            }
        }
    }
    Ok(())
}
