//! The three compressions of Btrfs extents (`compression` of a file
//! extent item): zlib (`flate2`, a zlib stream), LZO (our own decoder:
//! [`super::lzo`]) and zstd (`diskimage_formats::zstd`, over `ruzstd`).
//! Each decodes into at most the extent's `ram_bytes` (bounded by
//! [`MAX_EXTENT`]); more is an error, never a larger allocation.

use std::io::Read;

/// The largest decompressed extent accepted: the kernel writes at most
/// 128 KiB per compressed extent; inline ones are smaller still.
pub(crate) const MAX_EXTENT: u64 = 1 << 20;

/// Decompresses `src` of compression `c` into exactly `len` bytes (a
/// shorter output is padded with zeros, as the kernel leaves the rest of
/// the page zeroed); `Err` says why it cannot be.
pub(crate) fn decompress(c: u8, src: &[u8], len: u64, sector: u32) -> Result<Vec<u8>, String> {
    if len > MAX_EXTENT {
        return Err(format!(
            "decompressed size {len} exceeds the {MAX_EXTENT}-byte limit"
        ));
    }
    let len = usize::try_from(len).map_err(|_| "size overflow".to_string())?;
    let mut out = match c {
        1 => {
            let mut out = Vec::with_capacity(len);
            flate2::read::ZlibDecoder::new(src)
                .take(len as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| format!("zlib: {e}"))?;
            if out.len() > len {
                return Err(format!("zlib data decompresses to more than {len} bytes"));
            }
            out
        }
        2 => super::lzo::decompress_btrfs(src, sector as usize, len)
            .map_err(|e| format!("lzo: {e}"))?,
        3 => {
            let mut out = vec![0u8; len];
            let n = diskimage_formats::zstd::decompress(src, &mut out)
                .map_err(|e| format!("zstd: {e}"))?;
            out.truncate(n);
            out
        }
        other => return Err(format!("unknown compression type {other}")),
    };
    out.resize(len, 0);
    Ok(out)
}
