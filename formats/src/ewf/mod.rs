//! Expert Witness Compression Format version 1: EnCase `.E01` (and SMART
//! `.s01`) evidence files, split into segment files `.E01`, `.E02`, ...
//! `.E99`, `.EAA`, ... (libewf's "Expert Witness Compression Format
//! (EWF)" specification).
//!
//! Opening walks the section chain of every segment file (`section`):
//! `header2`/`header` (case metadata, `header`), `volume`/`disk` (media
//! geometry, `volume`), `sectors` (chunk data), `table` with its copy
//! `table2` (chunk offsets, `table`), `data`, `hash`/`digest` (the MD5
//! and SHA-1 stored at acquisition), and `next`/`done`. Segments follow
//! one another while a file ends in `next`; a missing one is a
//! [`MissingFile`](crate::ErrorKind::MissingFile) error naming it.
//!
//! Reads decode whole chunks (`chunk`): zlib streams checked by their
//! Adler-32, or stored bytes checked by the Adler-32 after them. A chunk
//! that fails its check is an error on every read that touches it, in
//! strict mode or not: wrong bytes are never returned. Reads spanning
//! several chunks decode them in parallel on rayon's pool. No
//! `file_range` is given, not even for stored chunks: every byte passes
//! its chunk's checksum on the way out.
//!
//! Tolerated with a warning (refused in strict mode): a damaged section
//! descriptor checksum, a damaged `table` whose `table2` copy is sound,
//! a damaged volume checksum, a damaged hash section (its digests are
//! then not shown), fewer chunks listed than the volume declares (reads
//! of the unlisted ones fail).
//!
//! Refused with an [`Unsupported`](crate::ErrorKind::Unsupported) error:
//! EWF version 2 (`.Ex01`), logical evidence (`.L01`), and segment sets
//! opened from a later segment than the first.
//!
//! Limits: chunks of at most `volume::MAX_CHUNK_SIZE` (16 MiB); a chunk
//! count no larger than the segment files could list (4 bytes of table
//! per chunk), its index (12 bytes per chunk) charged to the open's
//! memory budget before it is built; `section::MAX_SECTIONS` (2^20) sections
//! per file; every `next` offset moving forward inside its file.

pub(crate) mod checksum;
pub(crate) mod chunk;
pub(crate) mod header;
pub(crate) mod section;
pub(crate) mod table;
pub(crate) mod volume;

use std::sync::Arc;

use rayon::iter::{IntoParallelIterator, ParallelIterator};

use crate::block_device::{check_range, push_extent, BlockDevice, Extent, ExtentKind};
use crate::context::OpenContext;
use crate::error::{Detail, Error, Format, Result};
use crate::image::{DiskImage, ImageInfo, WarningKind, Warnings};
use crate::image_file::ImageFile;

use chunk::ChunkCache;
use section::Section;
use table::ChunkIndex;
use volume::{Digests, Volume};

/// Most segment files of one set (`.E01`-`.E99`, then `.EAA`-`.ZZZ`).
pub const MAX_SEGMENTS: u32 = 99 + 22 * 676;
/// Reads touching at least this many chunks decode them in parallel.
const PARALLEL_MIN_CHUNKS: usize = 4;
/// Most bytes of `header`, `volume` and hash sections read into memory.
const MAX_SMALL_SECTION: u64 = 1 << 20;

/// An opened EWF segment set: the [`BlockDevice`] of its media.
#[derive(Debug)]
pub struct EwfImage {
    segments: Vec<ImageFile>,
    index: ChunkIndex,
    chunk_size: u64,
    size: u64,
    sector_size: u32,
    cache: ChunkCache,
}

impl EwfImage {
    /// Bytes of media in chunk `n` (the last chunk may be short).
    fn chunk_len(&self, n: u64) -> u64 {
        (self.size - n * self.chunk_size).min(self.chunk_size)
    }

    /// Decodes chunk `n` into `out` (its whole length).
    fn decode(&self, n: u64, out: &mut [u8]) -> Result<()> {
        let loc = self.index.get(n).ok_or_else(|| {
            Error::corrupt(
                Format::Ewf,
                Detail::Invalid(format!(
                    "chunk {n} (media offset {:#x}) is in no table: the segment files list \
                     only {} chunks",
                    n * self.chunk_size,
                    self.index.len()
                )),
            )
        })?;
        let file = self.segments.get(loc.segment).ok_or_else(|| {
            Error::corrupt(
                Format::Ewf,
                Detail::Invalid(format!("chunk {n} names segment {}", loc.segment + 1)),
            )
        })?;
        let spc = self.chunk_size / u64::from(self.sector_size);
        let first = n * spc;
        let last = (first + out.len() as u64 / u64::from(self.sector_size)).saturating_sub(1);
        chunk::decode(file, n, (first, last), loc, out)
    }

    /// Fills `dst` with the bytes of chunk `n` from `skip` into it.
    fn read_chunk(&self, n: u64, skip: u64, dst: &mut [u8]) -> Result<()> {
        let len = self.chunk_len(n);
        if skip == 0 && dst.len() as u64 == len {
            return self.decode(n, dst);
        }
        let bytes = match self.cache.get(n) {
            Some(b) => b,
            None => {
                let mut buf = vec![0u8; usize::try_from(len).unwrap_or(0)];
                self.decode(n, &mut buf)?;
                let b: Arc<[u8]> = buf.into();
                self.cache.put(n, Arc::clone(&b));
                b
            }
        };
        let src = usize::try_from(skip)
            .ok()
            .and_then(|s| bytes.get(s..s.saturating_add(dst.len())));
        match src {
            Some(src) => {
                dst.copy_from_slice(src);
                Ok(())
            }
            None => Err(Error::corrupt(
                Format::Ewf,
                Detail::Invalid(format!("read outside decoded chunk {n}")),
            )),
        }
    }
}

impl BlockDevice for EwfImage {
    fn size(&self) -> u64 {
        self.size
    }

    fn sector_size(&self) -> u32 {
        self.sector_size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(Format::Ewf, offset, buf.len() as u64, self.size)?;
        let cs = self.chunk_size;
        let mut jobs: Vec<(u64, u64, &mut [u8])> = Vec::new();
        let mut rest = buf;
        let mut pos = offset;
        while !rest.is_empty() {
            let n = pos / cs;
            let skip = pos % cs;
            let take = usize::try_from((self.chunk_len(n) - skip).min(rest.len() as u64))
                .unwrap_or(rest.len());
            let (head, tail) = rest.split_at_mut(take);
            jobs.push((n, skip, head));
            rest = tail;
            pos += take as u64;
        }
        if jobs.len() < PARALLEL_MIN_CHUNKS || rayon::current_num_threads() < 2 {
            for (n, skip, dst) in jobs {
                self.read_chunk(n, skip, dst)?;
            }
            return Ok(());
        }
        // Every chunk is tried and the first failure in media order is
        // returned, so a damaged image gives the same error on every run.
        let results: Vec<Result<()>> = jobs
            .into_par_iter()
            .map(|(n, skip, dst)| self.read_chunk(n, skip, dst))
            .collect();
        results.into_iter().collect()
    }

    fn map(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        check_range(Format::Ewf, offset, len, self.size)?;
        let mut out = Vec::new();
        let end = offset + len;
        let mut pos = offset;
        while pos < end {
            let n = pos / self.chunk_size;
            let stop = ((n + 1) * self.chunk_size).min(end);
            let kind = match self.index.get(n) {
                Some(loc) if loc.compressed => ExtentKind::Compressed,
                _ => ExtentKind::Data,
            };
            push_extent(
                &mut out,
                Extent {
                    offset: pos,
                    len: stop - pos,
                    kind,
                },
            );
            pos = stop;
        }
        Ok(out)
    }
}

/// What the sections of a set say, gathered while walking them.
#[derive(Default)]
struct Found {
    volume: Option<(Volume, std::path::PathBuf, u64)>,
    header: Option<(String, String)>,
    digests: Digests,
}

/// Reads the small sections of one segment: headers, volume, hashes.
fn read_small_sections(
    file: &ImageFile,
    chain: &[Section],
    found: &mut Found,
    w: &mut Warnings,
) -> Result<()> {
    let path = file.path();
    for s in chain {
        match s.kind.as_str() {
            "header2" | "header" => {
                // header2 (UTF-16, complete) wins over header.
                if found.header.as_ref().is_some_and(|(k, _)| k == "header2") {
                    continue;
                }
                let data = section::read_data(file, s, MAX_SMALL_SECTION)?;
                match header::decode(&s.kind, &data, s.data_offset()) {
                    Ok(text) => found.header = Some((s.kind.clone(), text)),
                    Err(e) => w.tolerate(WarningKind::Other, e.in_file(path))?,
                }
            }
            "volume" | "disk" | "data" if found.volume.is_none() => {
                let data = section::read_data(file, s, MAX_SMALL_SECTION)?;
                let v = Volume::parse(&data, s.data_offset()).map_err(|e| e.in_file(path))?;
                let (stored, computed) = Volume::checksum(&data);
                if stored != computed {
                    w.tolerate(
                        WarningKind::Checksum,
                        Error::corrupt(
                            Format::Ewf,
                            Detail::Checksum {
                                what: "volume section Adler-32",
                                stored: u64::from(stored),
                                computed: u64::from(computed),
                            },
                        )
                        .at(s.data_offset())
                        .in_file(path),
                    )?;
                }
                found.volume = Some((v, path.to_path_buf(), s.data_offset()));
            }
            "hash" | "digest" => {
                let data = section::read_data(file, s, MAX_SMALL_SECTION)?;
                let mut d = Digests::default();
                let (stored, computed) = volume::read_digests(&s.kind, &data, &mut d);
                if stored != computed {
                    w.tolerate(
                        WarningKind::Checksum,
                        Error::corrupt(
                            Format::Ewf,
                            Detail::Checksum {
                                what: if s.kind == "hash" {
                                    "hash section Adler-32"
                                } else {
                                    "digest section Adler-32"
                                },
                                stored: u64::from(stored),
                                computed: u64::from(computed),
                            },
                        )
                        .at(s.data_offset())
                        .in_file(path),
                    )?;
                    continue;
                }
                found.digests.md5 = d.md5.or(found.digests.md5.take());
                found.digests.sha1 = d.sha1.or(found.digests.sha1.take());
            }
            _ => {}
        }
    }
    Ok(())
}

/// Adds the chunk tables of segment `seg` to `index`.
fn read_tables(
    seg: usize,
    file: &ImageFile,
    chain: &[Section],
    index: &mut ChunkIndex,
    chunks: usize,
    w: &mut Warnings,
) -> Result<()> {
    let mut sectors = None;
    // A damaged `table` waiting for its `table2`.
    let mut damaged: Option<Error> = None;
    for s in chain {
        let left = chunks.saturating_sub(index.len()) as u64;
        match s.kind.as_str() {
            "sectors" => {
                sectors = Some((s.data_offset(), s.data_offset() + s.data_len()));
            }
            "table" => {
                if let Some(e) = damaged.take() {
                    return Err(e);
                }
                match table::read_entries(file, s, sectors, left) {
                    Ok(e) => index.extend(seg, &e, chunks),
                    Err(e) => damaged = Some(e),
                }
            }
            "table2" => {
                if let Some(e) = damaged.take() {
                    // The copy must be sound; its own error otherwise.
                    let entries = table::read_entries(file, s, sectors, left)?;
                    w.tolerate(WarningKind::RedundantCopyUsed, e)?;
                    index.extend(seg, &entries, chunks);
                }
            }
            _ => {}
        }
    }
    match damaged {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Opens an EWF segment set from its first file (see the module documentation).
pub(crate) fn open(ctx: &OpenContext<'_>, first: ImageFile) -> Result<DiskImage> {
    let path = first.path().to_path_buf();
    let mut w = Warnings::new(ctx.options());
    let head = first.read_up_to(0, section::FILE_HEADER_LEN as usize)?;
    let number = crate::bytes::le_u16(&head, 9).unwrap_or(0);
    if number > 1 && crate::bytes::has_at(&head, 0, &section::SIGNATURE) {
        return Err(Error::unsupported(
            Format::Ewf,
            format!("this is segment {number} of an EWF set: open the set's first file (.E01)"),
        )
        .at(9)
        .in_file(&path));
    }
    section::read_file_header(&first, 1)?;

    // Every segment's chain, following `next` to the last one (`done`).
    let mut segments = vec![first];
    let mut chains = Vec::new();
    while let Some(file) = segments.last() {
        let chain = section::read_chain(file, &mut w)?;
        let ends_in_next = chain.last().is_some_and(|s| s.kind == "next");
        chains.push(chain);
        if !ends_in_next {
            break;
        }
        let n = segments.len() as u32 + 1;
        let next = match table::segment_path(&path, n) {
            Some(p) if n <= MAX_SEGMENTS => p,
            _ => {
                return Err(Error::limit(
                    Format::Ewf,
                    "segment files",
                    u64::from(n),
                    u64::from(MAX_SEGMENTS),
                )
                .in_file(&path))
            }
        };
        if !ctx.is_file(&next) {
            return Err(Error::missing(
                Format::Ewf,
                format!("segment file {n} of the set (the one before ends in 'next')"),
                vec![next],
            ));
        }
        let file = ctx.open_file(&next).map_err(|e| e.in_format(Format::Ewf))?;
        section::read_file_header(&file, n)?;
        segments.push(file);
    }

    let mut found = Found::default();
    for (file, chain) in segments.iter().zip(&chains) {
        read_small_sections(file, chain, &mut found, &mut w)?;
    }
    let Some((vol, vol_path, vol_at)) = found.volume.clone() else {
        return Err(Error::corrupt(
            Format::Ewf,
            Detail::Invalid("no volume, disk or data section in any segment file".into()),
        )
        .in_file(&path));
    };

    // Each chunk needs 4 bytes of table: a count the files cannot hold is corrupt.
    let total: u64 = segments.iter().map(ImageFile::len).sum();
    if u64::from(vol.chunks) > total / 4 {
        return Err(Error::bad_value(
            Format::Ewf,
            "number of chunks",
            u64::from(vol.chunks),
            format!(
                "at most {} (4 bytes of table per chunk in {total} bytes of segment files)",
                total / 4
            ),
        )
        .at(vol_at + 4)
        .in_file(&vol_path));
    }
    let chunks = vol.chunks as usize;
    let mut index = ChunkIndex::new(ctx, vol.chunks)?;
    for (seg, (file, chain)) in segments.iter().zip(&chains).enumerate() {
        read_tables(seg, file, chain, &mut index, chunks, &mut w)?;
    }
    let size = vol.media_size();
    let needed = size.div_ceil(vol.chunk_size());
    if (index.len() as u64) < needed {
        w.tolerate(
            WarningKind::Other,
            Error::corrupt(
                Format::Ewf,
                Detail::Invalid(format!(
                    "the tables list {} chunks, the media needs {needed}: reads past chunk {} \
                     fail",
                    index.len(),
                    index.len()
                )),
            )
            .in_file(&path),
        )?;
    }

    let mut info = ImageInfo::new(&path, Format::Ewf, size, vol.bytes_per_sector);
    let layout = if vol.media_type.is_some() {
        "EnCase"
    } else {
        "SMART"
    };
    let header = match found.header.as_ref().map(|(k, _)| k.as_str()) {
        Some("header2") => "header2",
        Some(_) => "header",
        None => "no header",
    };
    info.subformat = Some(format!("{layout} ({header})"));
    properties(&mut info, &vol, &found, segments.len());
    if segments.len() > 1 {
        info.files = segments.iter().map(|f| f.path().to_path_buf()).collect();
    }
    info.warnings = w.into_vec();
    let image = EwfImage {
        cache: ChunkCache::new(Arc::clone(ctx.budget())),
        segments,
        index,
        chunk_size: vol.chunk_size(),
        size,
        sector_size: vol.bytes_per_sector,
    };
    Ok(DiskImage::new(Arc::new(image), info))
}

/// The `info` properties of a set (documented in the README).
fn properties(info: &mut ImageInfo, vol: &Volume, found: &Found, segments: usize) {
    if let Some((_, text)) = &found.header {
        for (id, value) in header::main_values(text) {
            let Some(name) = header::property_name(&id) else {
                continue;
            };
            if value.is_empty() {
                continue;
            }
            let value = match id.as_str() {
                "m" | "u" => header::date(&value),
                _ => value,
            };
            info.property(name, value);
        }
    }
    if let Some(md5) = &found.digests.md5 {
        info.property("md5", md5);
    }
    if let Some(sha1) = &found.digests.sha1 {
        info.property("sha1", sha1);
    }
    info.property("sectors", vol.sectors);
    info.property("bytes_per_sector", vol.bytes_per_sector);
    info.property("sectors_per_chunk", vol.sectors_per_chunk);
    info.property("chunk_size", vol.chunk_size());
    info.property("chunks", vol.chunks);
    if let Some(level) = vol.compression_level {
        let name = match level {
            0 => "none".to_owned(),
            1 => "fast".to_owned(),
            2 => "best".to_owned(),
            n => n.to_string(),
        };
        info.property("compression_level", name);
    }
    if let Some(t) = vol.media_type {
        let name = match t {
            0 => "removable".to_owned(),
            1 => "fixed".to_owned(),
            3 => "optical".to_owned(),
            0x0e => "memory".to_owned(),
            n => format!("{n:#x}"),
        };
        info.property("media_type", name);
    }
    if let Some(flags) = vol.media_flags {
        info.property("physical", flags & 2 != 0);
    }
    if let Some(g) = vol.error_granularity {
        info.property("error_granularity", g);
    }
    if let Some(id) = vol.set_identifier.filter(|g| !g.is_nil()) {
        info.property("set_identifier", id);
    }
    info.property("segments", segments);
}
