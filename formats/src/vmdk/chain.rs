//! Delta chains: the parent a descriptor names with `parentFileNameHint`
//! (found by [`OpenContext::open_parent`]: the caller's resolver, then the
//! hint relative to the child, absolute, then the child's folder + the
//! hint's file name), the CID/parentCID check (reported, not refused), and
//! [`dependencies`]: every file an image needs, without reading data.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::context::{OpenContext, MAX_CHAIN_DEPTH};
use crate::error::{Detail, Error, Format, Result};
use crate::image::{DiskImage, WarningKind, Warnings};
use crate::options::OpenOptions;

use super::descriptor::{Descriptor, ExtentType, MAX_DESCRIPTOR_BYTES, NO_PARENT_CID};
use super::extent::resolve_extent;
use super::sparse_header::{SparseHeader, SECTOR, SPARSE_MAGIC};

fn hint(desc: &Descriptor) -> Option<String> {
    desc.parent_file_name_hint
        .as_deref()
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(str::to_owned)
}

/// Opens the parent `desc` names, unless the caller asked for `no_parents`.
pub(crate) fn open_parent(
    ctx: &OpenContext<'_>,
    path: &Path,
    desc: &Descriptor,
    w: &mut Warnings,
) -> Result<Option<DiskImage>> {
    let Some(hint) = hint(desc) else {
        if desc.parent_cid.is_some_and(|c| c != NO_PARENT_CID) {
            w.note(
                WarningKind::ParentMismatch,
                path,
                None,
                "parentCID names a parent but there is no parentFileNameHint; opened alone",
            );
        }
        return Ok(None);
    };
    if ctx.options().no_parents {
        return Ok(None);
    }
    let parent = ctx.open_parent(Format::Vmdk, path, &[hint])?;
    let parent_cid = parent
        .info()
        .properties
        .iter()
        .find(|(k, _)| k == "cid")
        .and_then(|(_, v)| u32::from_str_radix(v, 16).ok());
    if let (Some(want), Some(have)) = (desc.parent_cid, parent_cid) {
        if want != have {
            w.note(
                WarningKind::ParentMismatch,
                path,
                None,
                format!(
                    "parentCID is {want:08x} but the parent {} has CID {have:08x} (it changed \
                     after this delta was made)",
                    parent.info().path.display()
                ),
            );
        }
    }
    Ok(Some(parent))
}

/// The descriptor of the VMDK at `path`, if it has one (separate or embedded).
fn read_descriptor(ctx: &OpenContext<'_>, path: &Path) -> Result<(Option<Descriptor>, bool)> {
    let file = ctx.open_file(path)?;
    let head = file.read_up_to(0, 512)?;
    if head.get(..4) == Some(&SPARSE_MAGIC.to_le_bytes()[..]) {
        let h = SparseHeader::parse(&head).map_err(|e| e.at(0).in_file(path))?;
        if h.descriptor_offset == 0 || h.descriptor_size == 0 {
            return Ok((None, true));
        }
        let len = h
            .descriptor_size
            .saturating_mul(SECTOR)
            .min(MAX_DESCRIPTOR_BYTES);
        let text = file.read_vec(h.descriptor_offset.saturating_mul(SECTOR), len)?;
        return Ok((
            Some(Descriptor::parse(&text).map_err(|e| e.in_file(path))?),
            true,
        ));
    }
    let binary = head.first() == Some(&0)
        || head.get(..4) == Some(b"COWD")
        || head.starts_with(&[0xbe, 0xba, 0xfe, 0xca]);
    if binary {
        return Ok((None, true));
    }
    if file.len() > MAX_DESCRIPTOR_BYTES {
        return Err(Error::limit(
            Format::Vmdk,
            "descriptor file bytes",
            file.len(),
            MAX_DESCRIPTOR_BYTES,
        )
        .in_file(path));
    }
    let text = file.read_vec(0, file.len())?;
    Ok((
        Some(Descriptor::parse(&text).map_err(|e| e.in_file(path))?),
        false,
    ))
}

/// Every file the VMDK at `path` needs — descriptors, extent files and the
/// whole parent chain — in chain order, without reading any data: what a
/// user must copy off a datastore. A missing extent or parent is an
/// [`ErrorKind::MissingFile`](crate::ErrorKind::MissingFile) error listing
/// the paths tried.
pub fn dependencies(path: &Path, options: &OpenOptions) -> Result<Vec<PathBuf>> {
    dependencies_in(&OpenContext::new(options), path)
}

/// [`dependencies`] in a given context (in-memory files for tests).
pub(crate) fn dependencies_in(ctx: &OpenContext<'_>, path: &Path) -> Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = Vec::new();
    // The same paths, for lookups: a split disk lists a thousand extents.
    let mut seen: HashSet<PathBuf> = HashSet::new();
    let mut cur = path.to_path_buf();
    for _ in 0..=MAX_CHAIN_DEPTH {
        if !seen.insert(cur.clone()) {
            return Err(Error::corrupt(
                Format::Vmdk,
                Detail::Invalid(format!("parent chain loops back to {}", cur.display())),
            )
            .in_file(path));
        }
        out.push(cur.clone());
        let (desc, embedded) = read_descriptor(ctx, &cur)?;
        let Some(desc) = desc else {
            return Ok(out);
        };
        if !embedded {
            for line in &desc.extents {
                if matches!(
                    line.kind,
                    ExtentType::Zero | ExtentType::VmfsRdm | ExtentType::VmfsRaw
                ) {
                    continue;
                }
                let p = resolve_extent(ctx, &cur, line)?;
                if seen.insert(p.clone()) {
                    out.push(p);
                }
            }
        }
        match hint(&desc) {
            Some(h) => cur = ctx.resolve_parent(Format::Vmdk, &cur, &[h])?,
            None => return Ok(out),
        }
    }
    Err(Error::limit(
        Format::Vmdk,
        "parent chain depth",
        u64::from(MAX_CHAIN_DEPTH) + 1,
        u64::from(MAX_CHAIN_DEPTH),
    )
    .in_file(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::MemoryFiles;
    use crate::ErrorKind;
    use std::sync::Arc;

    fn desc(create: &str, extent: &str, parent: Option<&str>) -> Arc<[u8]> {
        let mut t = format!("# Disk DescriptorFile\nversion=1\nCID=1\ncreateType=\"{create}\"\n");
        if let Some(p) = parent {
            t.push_str(&format!("parentCID=2\nparentFileNameHint=\"{p}\"\n"));
        }
        t.push_str(extent);
        t.push('\n');
        Arc::from(t.into_bytes())
    }

    #[test]
    fn lists_extents_and_parents_and_finds_cycles() {
        let mut f = MemoryFiles::new();
        f.insert(
            "d/base.vmdk".into(),
            desc("monolithicFlat", "RW 1 FLAT \"base-flat.vmdk\" 0", None),
        );
        f.insert("d/base-flat.vmdk".into(), Arc::from(vec![0u8; 512]));
        f.insert(
            "d/snap.vmdk".into(),
            desc(
                "monolithicFlat",
                "RW 1 FLAT \"snap-flat.vmdk\"",
                Some("C:\\vms\\base.vmdk"),
            ),
        );
        f.insert("d/snap-flat.vmdk".into(), Arc::from(vec![0u8; 512]));
        let opts = OpenOptions::default();
        let ctx = OpenContext::in_memory(&opts, &f);
        let deps = dependencies_in(&ctx, Path::new("d/snap.vmdk")).unwrap();
        let names: Vec<_> = deps
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "d/snap.vmdk",
                "d/snap-flat.vmdk",
                "d/base.vmdk",
                "d/base-flat.vmdk"
            ]
        );

        f.insert("d/a.vmdk".into(), desc("x", "RW 1 ZERO", Some("b.vmdk")));
        f.insert("d/b.vmdk".into(), desc("x", "RW 1 ZERO", Some("a.vmdk")));
        let ctx = OpenContext::in_memory(&opts, &f);
        let e = dependencies_in(&ctx, Path::new("d/a.vmdk")).unwrap_err();
        assert!(e.to_string().contains("loops"), "{e}");
        f.remove(Path::new("d/base-flat.vmdk"));
        let ctx = OpenContext::in_memory(&opts, &f);
        let e = dependencies_in(&ctx, Path::new("d/snap.vmdk")).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::MissingFile);
    }
}
