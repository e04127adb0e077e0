//! Writing a streamOptimized VMDK ("Virtual Disk Format 5.0", section
//! "Stream-Optimized Compressed Sparse Extents") in one pass: header with
//! `gdOffset = GD_AT_END`, embedded descriptor, then for each grain table's
//! span its deflated grains (grain markers) followed by the table (a
//! grain table marker), then the grain directory, the footer and the
//! end-of-stream marker, the layout VMware's OVF export writes.
//!
//! The grains of one table's span (512 grains, 32 MiB at the default
//! grain) are read and deflated in parallel, then written in order, so
//! memory stays near twice that span whatever the disk's size. Grains
//! that are holes in the source or all zeros are not written; grains that
//! do not compress (a sample says so) go into the zlib stream as stored
//! blocks.

use rayon::prelude::*;

use crate::block_device::BlockDevice;
use crate::error::{Error, Format, Result};
use crate::write::file::WFile;

use super::sparse_header::{COMPRESSION_DEFLATE, FLAG_COMPRESSED, FLAG_MARKERS, GD_AT_END, SECTOR};
use super::writer::{
    header_bytes, stream_descriptor, stream_descriptor_area, HeaderFields, GTES_PER_GT,
    STREAM_DESCRIPTOR_SECTORS,
};

/// A deflated grain and its number, or `None` for an all-zero grain.
type Packed = Option<(u64, Vec<u8>)>;

/// Marker type of a grain table.
const MARKER_GT: u32 = 1;
/// Marker type of the grain directory.
const MARKER_GD: u32 = 2;
/// Marker type of the footer.
const MARKER_FOOTER: u32 = 3;

/// A metadata marker sector: `numSectors`, `size` 0, `type`.
fn marker(sectors: u64, kind: u32) -> Vec<u8> {
    let mut m = Vec::with_capacity(512);
    m.extend_from_slice(&sectors.to_le_bytes());
    m.extend_from_slice(&0u32.to_le_bytes());
    m.extend_from_slice(&kind.to_le_bytes());
    m.resize(512, 0);
    m
}

fn pad_to_sector(buf: &mut Vec<u8>) {
    let len = (buf.len() as u64).div_ceil(SECTOR) * SECTOR;
    buf.resize(len as usize, 0);
}

/// Bytes of each sample [`incompressible`] deflates.
const SAMPLE: usize = 4096;
/// Samples taken across a grain.
const SAMPLES: usize = 4;

/// Whether `data` looks like it will not shrink: [`SAMPLES`] windows of
/// [`SAMPLE`] bytes spread over it, deflated at the fastest level, come
/// to 98% or more of their size (random or already compressed data).
fn incompressible(data: &[u8]) -> std::io::Result<bool> {
    use std::io::Write;
    let step = (data.len() / SAMPLES).max(SAMPLE);
    let mut taken = 0usize;
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
    for i in 0..SAMPLES {
        let from = i * step;
        let Some(window) = data.get(from..(from + SAMPLE).min(data.len())) else {
            break;
        };
        e.write_all(window)?;
        taken += window.len();
    }
    let packed = e.finish()?.len();
    Ok(packed * 100 >= taken * 98)
}

/// Deflates one grain into a zlib stream, the way VMware and qemu-img
/// store them (default level). A grain that will not shrink is stored in
/// the stream's uncompressed blocks instead: a zlib stream every reader
/// inflates as any other, smaller than the default level's output for
/// such data, and made at copying speed.
fn deflate(data: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Write;
    let level = if incompressible(data)? {
        flate2::Compression::none()
    } else {
        flate2::Compression::default()
    };
    let mut e = flate2::write::ZlibEncoder::new(Vec::with_capacity(data.len() / 2), level);
    e.write_all(data)?;
    e.finish()
}

/// Writes `source` into the new, empty `file` (named `name` in its
/// descriptor) as a streamOptimized VMDK with grains of `grain_sectors`;
/// `progress(done, total)` after each grain table's span.
pub(crate) fn write(
    file: &WFile,
    source: &dyn BlockDevice,
    name: &str,
    grain_sectors: u64,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<()> {
    let size = source.size();
    let capacity = size / SECTOR;
    let grain = grain_sectors * SECTOR;
    let overhead = (1 + STREAM_DESCRIPTOR_SECTORS).div_ceil(grain_sectors) * grain_sectors;
    let fields = HeaderFields {
        version: 3,
        flags: 1 | FLAG_COMPRESSED | FLAG_MARKERS,
        capacity,
        grain: grain_sectors,
        descriptor_offset: 1,
        descriptor_sectors: STREAM_DESCRIPTOR_SECTORS,
        rgd: 0,
        gd: GD_AT_END,
        overhead,
        compress: COMPRESSION_DEFLATE,
    };
    file.write_all_at(&header_bytes(&fields), 0)?;
    let text = stream_descriptor(name, capacity);
    file.write_all_at(&stream_descriptor_area(&text, file.path())?, SECTOR)?;
    let mut pos = overhead * SECTOR;
    let span = grain * GTES_PER_GT;
    let num_gts = size.div_ceil(span);
    let mut gd = vec![0u32; usize::try_from(num_gts).unwrap_or(usize::MAX)];
    let sector_of = |pos: u64| -> Result<u32> {
        u32::try_from(pos / SECTOR).map_err(|_| {
            Error::limit(
                Format::Vmdk,
                "stream sectors",
                pos / SECTOR,
                u64::from(u32::MAX),
            )
            .in_file(file.path())
        })
    };
    for (t, slot) in gd.iter_mut().enumerate() {
        let start = t as u64 * span;
        let len = span.min(size - start);
        // Grains touching anything but a hole.
        let map = source.map(start, len)?;
        let mut wanted: Vec<u64> = Vec::new();
        for e in map.iter().filter(|e| !e.kind.reads_as_zero()) {
            let first = e.offset / grain;
            let last = (e.end() - 1) / grain;
            for g in first..=last {
                if wanted.last() != Some(&g) {
                    wanted.push(g);
                }
            }
        }
        let packed: Vec<Result<Packed>> = wanted
            .par_iter()
            .map(|&g| {
                let at = g * grain;
                let n = grain.min(size - at) as usize;
                let mut buf = vec![0u8; grain as usize];
                source.read_at(buf.get_mut(..n).unwrap_or_default(), at)?;
                if buf.iter().all(|&b| b == 0) {
                    return Ok(None);
                }
                let z =
                    deflate(&buf).map_err(|e| Error::io(Format::Vmdk, e).in_file(file.path()))?;
                Ok(Some((g, z)))
            })
            .collect();
        let mut out = Vec::new();
        let mut table = vec![0u32; GTES_PER_GT as usize];
        for p in packed {
            let Some((g, z)) = p? else { continue };
            let here = pos + out.len() as u64;
            if let Some(e) = table.get_mut((g % GTES_PER_GT) as usize) {
                *e = sector_of(here)?;
            }
            out.extend_from_slice(&(g * grain_sectors).to_le_bytes());
            out.extend_from_slice(&(z.len() as u32).to_le_bytes());
            out.extend_from_slice(&z);
            pad_to_sector(&mut out);
        }
        if !out.is_empty() {
            let table_bytes = GTES_PER_GT * 4;
            out.extend_from_slice(&marker(table_bytes / SECTOR, MARKER_GT));
            *slot = sector_of(pos + out.len() as u64)?;
            out.extend(table.iter().flat_map(|e| e.to_le_bytes()));
            file.write_all_at(&out, pos)?;
            pos += out.len() as u64;
        }
        progress(start + len, size);
    }
    let mut tail = Vec::new();
    let gd_bytes = (gd.len() as u64 * 4).div_ceil(SECTOR) * SECTOR;
    tail.extend_from_slice(&marker(gd_bytes / SECTOR, MARKER_GD));
    let gd_sector = (pos + tail.len() as u64) / SECTOR;
    tail.extend(gd.iter().flat_map(|e| e.to_le_bytes()));
    pad_to_sector(&mut tail);
    tail.extend_from_slice(&marker(1, MARKER_FOOTER));
    tail.extend_from_slice(&header_bytes(&HeaderFields {
        gd: gd_sector,
        ..fields
    }));
    tail.extend_from_slice(&[0u8; 512]);
    file.write_all_at(&tail, pos)?;
    file.set_len(pos + tail.len() as u64)?;
    progress(size, size);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn inflate(z: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::ZlibDecoder::new(z)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn random_grains_are_stored_and_text_grains_deflated() {
        // xorshift bytes: no repeats for deflate to find.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let random: Vec<u8> = (0..65536)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let text: Vec<u8> = b"the quick brown fox jumps over the lazy dog\n"
            .iter()
            .copied()
            .cycle()
            .take(65536)
            .collect();
        assert!(incompressible(&random).unwrap());
        assert!(!incompressible(&text).unwrap());
        let zr = deflate(&random).unwrap();
        let zt = deflate(&text).unwrap();
        assert_eq!(inflate(&zr), random);
        assert_eq!(inflate(&zt), text);
        // Stored: a few bytes of block headers over the data; deflated:
        // far smaller.
        assert!(zr.len() < random.len() + 64, "{}", zr.len());
        assert!(zt.len() < text.len() / 20, "{}", zt.len());
        // A grain random only in its first quarter still deflates.
        let mut mixed = text.clone();
        mixed[..16384].copy_from_slice(&random[..16384]);
        assert!(!incompressible(&mixed).unwrap());
    }
}
