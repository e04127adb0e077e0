//! Convert (VixDiskLib_Clone, `qemu-img convert`): any readable device
//! into a new image of any writable format.
//!
//! The new image is made in a staging folder beside the destination,
//! filled, flushed, and only then moved into place (extent files first,
//! the file a user opens last), so an interrupted convert never leaves a
//! file that looks finished. Ranges the source maps as holes or zeros are
//! not read, and all-zero blocks that are read are not written: holes
//! stay holes.

use std::path::{Path, PathBuf};

use crate::block_device::BlockDevice;
use crate::error::{Detail, Error, ErrorKind, Format, Result};
use crate::options::OpenOptions;

use super::file::Staging;
use super::{create, open_writable, CreateOptions, Subformat};

/// Bytes read from the source at once.
const CHUNK: u64 = 1 << 20;
/// Bytes of the source's map asked for at once (bounds the map's memory).
const MAP_WINDOW: u64 = 1 << 30;
/// The unit checked for all-zero content before a write.
const ZERO_BLOCK: usize = 64 << 10;

/// Writes `source` into a new image at `dst` as `options` say (the size
/// is the source's; `options.size` is ignored); `progress(done, total)`
/// is called as bytes of the source are done.
pub fn convert(
    source: &dyn BlockDevice,
    dst: &Path,
    options: &CreateOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<()> {
    let mut options = options.clone();
    options.size = source.size();
    if options.parent.is_some() {
        return Err(Error::unsupported(
            options.format,
            "convert writes a whole disk; it does not make a child",
        )
        .in_file(dst));
    }
    if options.format == Format::Vmdk && options.subformat == Some(Subformat::StreamOptimized) {
        return crate::vmdk::writer::convert_stream(source, dst, &options, progress);
    }
    let name = super::raw::file_name(dst)?;
    let staging = Staging::new(dst, options.format)?;
    let staged = staging_path(&staging, &name);
    // The staging folder is fresh: create there without force.
    create(&staged, &options.clone().force(false))?;
    let names = staged_names(&staging, &name, options.format)?;
    staging.check_free(&names, options.force, options.format)?;
    {
        let out = open_writable(&staged, &OpenOptions::new().format(Some(options.format)))?;
        copy(source, out.as_ref(), progress)?;
        out.flush()?;
    }
    let mut staging = staging;
    for n in names {
        staging.file(&n);
    }
    staging.commit(options.format)
}

fn staging_path(staging: &Staging, name: &str) -> PathBuf {
    staging.staged(name)
}

/// The files `create` left in the staging folder, the main file last.
fn staged_names(staging: &Staging, main: &str, format: Format) -> Result<Vec<String>> {
    let dir = staging.dir();
    let mut names = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| Error::io(format, e).in_file(dir))? {
        let e = e.map_err(|e| Error::io(format, e).in_file(dir))?;
        let n = e.file_name().to_string_lossy().into_owned();
        if n != main {
            names.push(n);
        }
    }
    names.sort();
    names.push(main.to_owned());
    Ok(names)
}

/// Copies every byte of `source` that is not a hole or all zeros into
/// `out`, a fresh image whose unwritten ranges read as zeros.
pub(crate) fn copy(
    source: &dyn BlockDevice,
    out: &dyn super::WritableDevice,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<()> {
    let size = source.size();
    if out.size() != size {
        return Err(Error::new(
            ErrorKind::Corrupt,
            Format::Probe,
            Detail::Invalid(format!(
                "the destination holds {} bytes, the source {size}",
                out.size()
            )),
        ));
    }
    // Page-aligned: the kernel copies into it at full speed (see
    // `crate::buffer`).
    let mut buf = crate::buffer::AlignedBuf::with_len(CHUNK as usize);
    let mut window = 0u64;
    while window < size {
        let wlen = MAP_WINDOW.min(size - window);
        for e in source.map(window, wlen)? {
            if e.kind.reads_as_zero() {
                progress(e.end(), size);
                continue;
            }
            let mut at = e.offset;
            while at < e.end() {
                let n = CHUNK.min(e.end() - at) as usize;
                let chunk = buf.get(n);
                source.read_at(chunk, at)?;
                write_nonzero(out, chunk, at)?;
                at += n as u64;
                progress(at, size);
            }
        }
        window += wlen;
    }
    progress(size, size);
    Ok(())
}

/// Writes the runs of `buf` (at `offset`) that are not all-zero blocks.
fn write_nonzero(out: &dyn super::WritableDevice, buf: &[u8], offset: u64) -> Result<()> {
    let mut run: Option<usize> = None;
    let mut i = 0usize;
    while i < buf.len() {
        // Blocks aligned to the virtual disk, so grains are skipped whole.
        let to_boundary = ZERO_BLOCK - ((offset as usize + i) % ZERO_BLOCK);
        let n = to_boundary.min(buf.len() - i);
        let zero = buf
            .get(i..i + n)
            .unwrap_or_default()
            .iter()
            .all(|&b| b == 0);
        match (zero, run) {
            (false, None) => run = Some(i),
            (true, Some(s)) => {
                out.write_at(buf.get(s..i).unwrap_or_default(), offset + s as u64)?;
                run = None;
            }
            _ => {}
        }
        i += n;
    }
    if let Some(s) = run {
        out.write_at(buf.get(s..).unwrap_or_default(), offset + s as u64)?;
    }
    Ok(())
}

/// Refuses a destination that is one of `sources` (an image's own files,
/// from [`crate::dependencies`]): converting onto a source would destroy it.
pub fn refuse_source_as_destination(dst: &Path, sources: &[PathBuf]) -> Result<()> {
    let Ok(d) = dst.canonicalize() else {
        return Ok(());
    };
    for s in sources {
        if s.canonicalize().is_ok_and(|s| s == d) {
            return Err(Error::new(
                ErrorKind::Unsupported,
                Format::Probe,
                Detail::Invalid("the destination is one of the source's files".into()),
            )
            .in_file(dst));
        }
    }
    Ok(())
}
