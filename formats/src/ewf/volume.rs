//! The media description of the `volume` (or `disk`, or its copy `data`)
//! section and the stored digests of the `hash` and `digest` sections
//! (specification sections 3.5, 3.12 and 3.13).
//!
//! EnCase's volume data is 1,052 bytes: media type, chunk count, sectors
//! per chunk, bytes per sector, a 64-bit sector count, media flags,
//! compression level, error granularity and the set identifier, with an
//! Adler-32 of the first 1,048 bytes at its end. The SMART (`.s01`)
//! layout is 94 bytes with a 32-bit sector count and its checksum at 90.

use crate::bytes::zeroed::{le_u32, le_u64};
use crate::error::{Detail, Error, Format, Result};
use crate::guid::Guid;

use super::checksum::adler32;

/// Bytes of the EnCase volume data.
pub const ENCASE_LEN: usize = 1052;
/// Bytes of the SMART volume data.
pub const SMART_LEN: usize = 94;
/// Largest chunk this reader accepts: 32,768 sectors of 512 bytes (the
/// most `ewfacquire -b` offers); a chunk is inflated into memory whole.
pub const MAX_CHUNK_SIZE: u64 = 16 << 20;

/// What the volume section says about the media.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// 0 removable, 1 fixed, 3 optical, 0x0e memory (`None` for SMART).
    pub media_type: Option<u8>,
    /// Chunks the media is stored in.
    pub chunks: u32,
    /// Sectors per chunk.
    pub sectors_per_chunk: u32,
    /// Bytes per sector.
    pub bytes_per_sector: u32,
    /// Sectors of media.
    pub sectors: u64,
    /// Media flags (bit 1: physical device).
    pub media_flags: Option<u8>,
    /// 0 none, 1 fast, 2 best (EnCase layout only).
    pub compression_level: Option<u8>,
    /// Sectors per error-granularity unit (EnCase layout only).
    pub error_granularity: Option<u32>,
    /// The set identifier shared by every segment (EnCase layout only).
    pub set_identifier: Option<Guid>,
}

impl Volume {
    /// Parses volume data found at `offset`; the checksum is verified by
    /// the caller through [`Volume::checksum`].
    pub fn parse(data: &[u8], offset: u64) -> Result<Volume> {
        let smart = data.len() < ENCASE_LEN;
        if data.len() < SMART_LEN {
            return Err(Error::corrupt(
                Format::Ewf,
                Detail::Truncated {
                    what: "volume section data".into(),
                    needed: SMART_LEN as u64,
                    available: data.len() as u64,
                },
            )
            .at(offset));
        }
        let v = Volume {
            media_type: (!smart).then(|| data.first().copied().unwrap_or(0)),
            chunks: le_u32(data, 4),
            sectors_per_chunk: le_u32(data, 8),
            bytes_per_sector: le_u32(data, 12),
            sectors: if smart {
                u64::from(le_u32(data, 16))
            } else {
                le_u64(data, 16)
            },
            media_flags: (!smart).then(|| data.get(36).copied().unwrap_or(0)),
            compression_level: (!smart).then(|| data.get(52).copied().unwrap_or(0)),
            error_granularity: (!smart).then(|| le_u32(data, 56)),
            set_identifier: (!smart).then(|| Guid::read_le(data, 64)),
        };
        let field = |name, value: u64, expected: &str, at: u64| {
            Err(Error::bad_value(Format::Ewf, name, value, expected).at(offset + at))
        };
        if v.bytes_per_sector == 0 || v.bytes_per_sector % 512 != 0 || v.bytes_per_sector > 4096 {
            return field(
                "bytes per sector",
                u64::from(v.bytes_per_sector),
                "512, 1024, 2048 or 4096",
                12,
            );
        }
        if v.sectors_per_chunk == 0 || v.chunk_size() > MAX_CHUNK_SIZE {
            return field(
                "sectors per chunk",
                u64::from(v.sectors_per_chunk),
                &format!("1 or more, chunks of at most {MAX_CHUNK_SIZE} bytes"),
                8,
            );
        }
        // Every sector lies in a chunk the table lists.
        let capacity = u64::from(v.chunks) * u64::from(v.sectors_per_chunk);
        if v.sectors > capacity {
            return field(
                "number of sectors",
                v.sectors,
                &format!(
                    "at most {capacity} ({} chunks of {} sectors)",
                    v.chunks, v.sectors_per_chunk
                ),
                16,
            );
        }
        Ok(v)
    }

    /// The stored and computed Adler-32 of volume data (stored after the
    /// checksummed bytes: at 1,048 for EnCase, at 90 for SMART).
    pub fn checksum(data: &[u8]) -> (u32, u32) {
        let at = if data.len() >= ENCASE_LEN {
            ENCASE_LEN - 4
        } else {
            SMART_LEN - 4
        };
        (
            le_u32(data, at),
            adler32(data.get(..at).unwrap_or_default()),
        )
    }

    /// Bytes per chunk.
    pub fn chunk_size(&self) -> u64 {
        u64::from(self.sectors_per_chunk) * u64::from(self.bytes_per_sector)
    }

    /// Bytes of media.
    pub fn media_size(&self) -> u64 {
        self.sectors * u64::from(self.bytes_per_sector)
    }
}

/// Digests stored at acquisition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Digests {
    /// MD5 of the media, lower-case hex.
    pub md5: Option<String>,
    /// SHA-1 of the media, lower-case hex.
    pub sha1: Option<String>,
}

fn hex(b: &[u8]) -> Option<String> {
    if b.iter().all(|&x| x == 0) {
        return None;
    }
    Some(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// Reads a `hash` (MD5, 16 unknown bytes, Adler-32) or `digest` (MD5,
/// SHA-1, 40 bytes of padding, Adler-32) section's data into `out`; the
/// stored and computed checksums are returned for the caller to judge.
pub fn read_digests(kind: &str, data: &[u8], out: &mut Digests) -> (u32, u32) {
    let (sum_at, sha1) = match kind {
        "digest" => (76, true),
        _ => (32, false),
    };
    if let Some(md5) = data.get(..16).and_then(hex) {
        out.md5 = Some(md5);
    }
    if sha1 {
        if let Some(s) = data.get(16..36).and_then(hex) {
            out.sha1 = Some(s);
        }
    }
    (
        le_u32(data, sum_at),
        adler32(data.get(..sum_at).unwrap_or(data)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encase(chunks: u32, spc: u32, bps: u32, sectors: u64) -> Vec<u8> {
        let mut d = vec![0u8; ENCASE_LEN];
        d[0] = 1;
        d[4..8].copy_from_slice(&chunks.to_le_bytes());
        d[8..12].copy_from_slice(&spc.to_le_bytes());
        d[12..16].copy_from_slice(&bps.to_le_bytes());
        d[16..24].copy_from_slice(&sectors.to_le_bytes());
        d[52] = 2;
        let c = adler32(&d[..1048]);
        d[1048..].copy_from_slice(&c.to_le_bytes());
        d
    }

    #[test]
    fn golden_volume_and_one_field_changes() {
        let d = encase(192, 64, 512, 12288);
        let v = Volume::parse(&d, 0).unwrap();
        assert_eq!((v.chunk_size(), v.media_size()), (32768, 6 << 20));
        assert_eq!(v.compression_level, Some(2));
        let (s, c) = Volume::checksum(&d);
        assert_eq!(s, c);

        let e = Volume::parse(&encase(192, 64, 3, 12288), 0x39a).unwrap_err();
        assert_eq!(e.offset(), Some(0x39a + 12));
        let e = Volume::parse(&encase(192, 1 << 20, 512, 12288), 0).unwrap_err();
        assert!(
            e.to_string().contains("sectors per chunk is 1048576"),
            "{e}"
        );
        // A 2^60-byte media in 192 chunks: more sectors than the chunks hold.
        let e = Volume::parse(&encase(192, 64, 512, 1 << 51), 0).unwrap_err();
        assert!(e.to_string().contains("number of sectors"), "{e}");
        let e = Volume::parse(&d[..50], 0).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Corrupt);
    }

    #[test]
    fn digests_skip_zero_hashes() {
        let mut d = vec![0u8; 80];
        d[..16].fill(0xab);
        let mut out = Digests::default();
        read_digests("digest", &d, &mut out);
        assert_eq!(out.md5.as_deref(), Some("abababababababababababababababab"));
        assert_eq!(out.sha1, None);
    }
}
