//! The QCOW2 header (versions 2 and 3), its extensions, the backing file
//! name and the internal snapshot table.
//!
//! Every number is big-endian. Version 2 headers are 72 bytes; version 3
//! adds feature bits, the refcount order and the header length (at least
//! 104 bytes, then an optional compression type byte). Header extensions
//! follow the header (type, length, data padded to 8 bytes) up to an end
//! marker of type 0, all inside the first cluster.

use crate::error::{Detail, Error, Format, Result};
use crate::image_file::ImageFile;

/// The magic at offset 0: `QFI\xfb`.
pub const MAGIC: [u8; 4] = *b"QFI\xfb";
/// Bytes of a version 2 header.
pub const V2_HEADER_LEN: u32 = 72;
/// The smallest version 3 header.
pub const V3_HEADER_LEN: u32 = 104;
/// Smallest and largest cluster bits (512 bytes to 2 MiB, as qemu allows).
pub const CLUSTER_BITS: std::ops::RangeInclusive<u32> = 9..=21;
/// The longest backing file name the format allows.
pub const MAX_BACKING_NAME: u32 = 1023;
/// The largest L1 table this library reads: 32 MiB of entries, qemu's own limit.
pub const MAX_L1_ENTRIES: u64 = (32 << 20) / 8;
/// The most internal snapshots a table may list (qemu's limit).
pub const MAX_SNAPSHOTS: u32 = 65536;

/// Incompatible feature bit 0: the image was not closed cleanly (refcounts may be stale).
pub const INCOMPAT_DIRTY: u64 = 1;
/// Incompatible feature bit 1: qemu found the image corrupt.
pub const INCOMPAT_CORRUPT: u64 = 1 << 1;
/// Incompatible feature bit 2: guest data lives in an external data file.
pub const INCOMPAT_DATA_FILE: u64 = 1 << 2;
/// Incompatible feature bit 3: the compression type field is not zlib.
pub const INCOMPAT_COMPRESSION: u64 = 1 << 3;
/// Incompatible feature bit 4: extended L2 entries (32 subclusters per cluster).
pub const INCOMPAT_EXTENDED_L2: u64 = 1 << 4;
/// Every incompatible feature bit this reader understands.
pub const INCOMPAT_KNOWN: u64 = 0x1f;
/// Autoclear bit 1: the external data file is a raw image of the disk.
pub const AUTOCLEAR_DATA_FILE_RAW: u64 = 1 << 1;

/// Header extension: the backing file's format name.
pub const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
/// Header extension: feature name table.
pub const EXT_FEATURE_NAMES: u32 = 0x6803_f857;
/// Header extension: bitmaps.
pub const EXT_BITMAPS: u32 = 0x2385_2875;
/// Header extension: full disk encryption header pointer.
pub const EXT_ENCRYPTION: u32 = 0x0537_be77;
/// Header extension: the external data file's name.
pub const EXT_DATA_FILE: u32 = 0x4441_5441;

/// The fields of a QCOW2 header and what its extensions say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Header {
    /// 2 or 3.
    pub version: u32,
    /// Where the backing file name is (0: no backing file).
    pub backing_file_offset: u64,
    /// Length of the backing file name.
    pub backing_file_size: u32,
    /// log2 of the cluster size.
    pub cluster_bits: u32,
    /// Virtual disk size in bytes.
    pub size: u64,
    /// 0 none, 1 AES, 2 LUKS.
    pub crypt_method: u32,
    /// Entries of the active L1 table.
    pub l1_size: u32,
    /// Where the active L1 table is.
    pub l1_table_offset: u64,
    /// Where the refcount table is.
    pub refcount_table_offset: u64,
    /// Clusters of the refcount table.
    pub refcount_table_clusters: u32,
    /// Internal snapshots.
    pub nb_snapshots: u32,
    /// Where the snapshot table is.
    pub snapshots_offset: u64,
    /// Incompatible feature bits (0 in version 2).
    pub incompatible: u64,
    /// Compatible feature bits.
    pub compatible: u64,
    /// Autoclear feature bits.
    pub autoclear: u64,
    /// log2 of the refcount width in bits (4 in version 2).
    pub refcount_order: u32,
    /// Bytes of the header proper.
    pub header_length: u32,
    /// 0 zlib, 1 zstd.
    pub compression_type: u8,
    /// The backing format extension's value.
    pub backing_format: Option<String>,
    /// The external data file extension's value.
    pub data_file: Option<String>,
    /// Names of feature bits from the feature name table: (type, bit, name).
    pub feature_names: Vec<(u8, u8, String)>,
    /// Every extension type seen, in order, with its length.
    pub extensions: Vec<(u32, u32)>,
}

fn be32(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_be_bytes)
        .unwrap_or(0)
}

fn be64(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0)
}

impl Header {
    /// The cluster size in bytes.
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// Whether L2 entries are 128 bits with subcluster bitmaps.
    pub fn extended_l2(&self) -> bool {
        self.incompatible & INCOMPAT_EXTENDED_L2 != 0
    }

    /// Reads and checks the header of `file` and its extensions. QCOW
    /// version 1, encryption and unknown incompatible features are
    /// [`Unsupported`](crate::ErrorKind::Unsupported) errors.
    pub fn read(file: &ImageFile) -> Result<Self> {
        let path = file.path();
        let head = file.read_up_to(0, 4096)?;
        let bad = |field: &'static str, value: u64, expected: &str, at: u64| {
            Error::bad_value(Format::Qcow2, field, value, expected)
                .at(at)
                .in_file(path)
        };
        if head.get(..4) != Some(&MAGIC[..]) {
            return Err(Error::not_this_format(
                Format::Qcow2,
                Detail::BadSignature {
                    what: "QCOW magic",
                    expected: "51 46 49 fb".into(),
                    found: crate::error::hex_preview(&head),
                },
            )
            .at(0)
            .in_file(path));
        }
        let version = be32(&head, 4);
        match version {
            1 => {
                return Err(Error::unsupported(
                    Format::Qcow2,
                    "QCOW version 1 images are recognised but not read by this version",
                )
                .at(4)
                .in_file(path))
            }
            2 | 3 => {}
            v => return Err(bad("version", u64::from(v), "2 or 3", 4)),
        }
        let min = if version == 2 {
            V2_HEADER_LEN
        } else {
            V3_HEADER_LEN
        };
        if (head.len() as u64) < u64::from(min) {
            return Err(Error::corrupt(
                Format::Qcow2,
                Detail::Truncated {
                    what: format!("version {version} header"),
                    needed: u64::from(min),
                    available: head.len() as u64,
                },
            )
            .at(0)
            .in_file(path));
        }
        let mut h = Header {
            version,
            backing_file_offset: be64(&head, 8),
            backing_file_size: be32(&head, 16),
            cluster_bits: be32(&head, 20),
            size: be64(&head, 24),
            crypt_method: be32(&head, 32),
            l1_size: be32(&head, 36),
            l1_table_offset: be64(&head, 40),
            refcount_table_offset: be64(&head, 48),
            refcount_table_clusters: be32(&head, 56),
            nb_snapshots: be32(&head, 60),
            snapshots_offset: be64(&head, 64),
            refcount_order: 4,
            header_length: V2_HEADER_LEN,
            ..Header::default()
        };
        if !CLUSTER_BITS.contains(&h.cluster_bits) {
            return Err(bad(
                "cluster_bits",
                u64::from(h.cluster_bits),
                "9 to 21 (512 bytes to 2 MiB clusters)",
                20,
            ));
        }
        if version == 3 {
            h.incompatible = be64(&head, 72);
            h.compatible = be64(&head, 80);
            h.autoclear = be64(&head, 88);
            h.refcount_order = be32(&head, 96);
            h.header_length = be32(&head, 100);
            let hl = h.header_length;
            if hl < V3_HEADER_LEN || hl % 8 != 0 || u64::from(hl) > h.cluster_size() {
                return Err(bad(
                    "header_length",
                    u64::from(hl),
                    "a multiple of 8 from 104 to the cluster size",
                    100,
                ));
            }
            if hl > V3_HEADER_LEN {
                h.compression_type = head.get(104).copied().unwrap_or(0);
            }
        }
        if h.refcount_order > 6 {
            return Err(bad(
                "refcount_order",
                u64::from(h.refcount_order),
                "0 to 6",
                96,
            ));
        }
        h.read_extensions(&head, path)?;
        h.check_features(path)?;
        Ok(h)
    }

    fn read_extensions(&mut self, head: &[u8], path: &std::path::Path) -> Result<()> {
        // Extensions live in the first cluster (and in what was read of it).
        let end = (self.cluster_size() as usize).min(head.len());
        let mut at = self.header_length as usize;
        // A backing file name inside the extension area ends it.
        let stop = if self.backing_file_offset > at as u64 {
            (self.backing_file_offset as usize).min(end)
        } else {
            end
        };
        while at + 8 <= stop {
            let kind = be32(head, at);
            let len = be32(head, at + 4);
            if kind == 0 {
                break;
            }
            let data_at = at + 8;
            let Some(data) = data_at
                .checked_add(len as usize)
                .filter(|&e| e <= stop)
                .and_then(|e| head.get(data_at..e))
            else {
                return Err(Error::bad_value(
                    Format::Qcow2,
                    "header extension length",
                    u64::from(len),
                    format!("at most {} (the rest of the first cluster)", stop - data_at),
                )
                .at(at as u64 + 4)
                .in_file(path));
            };
            self.extensions.push((kind, len));
            let text = || String::from_utf8_lossy(data).into_owned();
            match kind {
                EXT_BACKING_FORMAT => self.backing_format = Some(text()),
                EXT_DATA_FILE => self.data_file = Some(text()),
                EXT_FEATURE_NAMES => {
                    for e in data.chunks_exact(48) {
                        let name = e.get(2..).unwrap_or_default();
                        let name = name.split(|&b| b == 0).next().unwrap_or_default();
                        self.feature_names.push((
                            e.first().copied().unwrap_or(0),
                            e.get(1).copied().unwrap_or(0),
                            String::from_utf8_lossy(name).into_owned(),
                        ));
                    }
                }
                // Dirty-bitmap metadata changes no byte of the disk, and an
                // encrypted image is refused by its crypt method.
                EXT_BITMAPS | EXT_ENCRYPTION => {}
                _ => {}
            }
            at = data_at + (len as usize).div_ceil(8) * 8;
        }
        Ok(())
    }

    fn check_features(&self, path: &std::path::Path) -> Result<()> {
        let unsupported = |what: String, at: u64| {
            Err(Error::unsupported(Format::Qcow2, what).at(at).in_file(path))
        };
        match self.crypt_method {
            0 => {}
            1 => return unsupported("AES-encrypted QCOW2 images are not read".into(), 32),
            2 => return unsupported("LUKS-encrypted QCOW2 images are not read".into(), 32),
            m => {
                return Err(Error::bad_value(
                    Format::Qcow2,
                    "crypt_method",
                    u64::from(m),
                    "0 (none), 1 (AES) or 2 (LUKS)",
                )
                .at(32)
                .in_file(path))
            }
        }
        let unknown = self.incompatible & !INCOMPAT_KNOWN;
        if unknown != 0 {
            let names: Vec<String> = (0..64)
                .filter(|b| unknown >> b & 1 != 0)
                .map(|b| {
                    let named = self
                        .feature_names
                        .iter()
                        .find(|(t, bit, _)| *t == 0 && u32::from(*bit) == b);
                    match named {
                        Some((_, _, n)) => format!("bit {b} ({n})"),
                        None => format!("bit {b}"),
                    }
                })
                .collect();
            return unsupported(
                format!(
                    "unknown incompatible feature {} (incompatible_features {:#x})",
                    names.join(", "),
                    self.incompatible
                ),
                72,
            );
        }
        match self.compression_type {
            0 | 1 => {}
            t => {
                return Err(Error::bad_value(
                    Format::Qcow2,
                    "compression_type",
                    u64::from(t),
                    "0 (zlib) or 1 (zstd)",
                )
                .at(104)
                .in_file(path))
            }
        }
        if self.incompatible & INCOMPAT_COMPRESSION != 0 && self.compression_type == 0 {
            return Err(Error::bad_value(
                Format::Qcow2,
                "compression_type",
                0,
                "non-zero when incompatible bit 3 (compression type) is set",
            )
            .at(104)
            .in_file(path));
        }
        if self.extended_l2() && self.cluster_bits < 14 {
            return Err(Error::bad_value(
                Format::Qcow2,
                "cluster_bits",
                u64::from(self.cluster_bits),
                "at least 14 (16 KiB) with extended L2 entries",
            )
            .at(20)
            .in_file(path));
        }
        if self.incompatible & INCOMPAT_DATA_FILE != 0 && self.data_file.is_none() {
            return Err(Error::corrupt(
                Format::Qcow2,
                Detail::Invalid(
                    "incompatible bit 2 (external data file) is set but no data file \
                     name extension names the file"
                        .into(),
                ),
            )
            .at(72)
            .in_file(path));
        }
        Ok(())
    }

    /// The backing file name, when there is one (at most
    /// `MAX_BACKING_NAME` (1,023) bytes, inside the file).
    pub fn backing_file(&self, file: &ImageFile) -> Result<Option<String>> {
        if self.backing_file_offset == 0 {
            return Ok(None);
        }
        if self.backing_file_size == 0 || self.backing_file_size > MAX_BACKING_NAME {
            return Err(Error::bad_value(
                Format::Qcow2,
                "backing_file_size",
                u64::from(self.backing_file_size),
                "1 to 1023",
            )
            .at(16)
            .in_file(file.path()));
        }
        let name = file
            .read_vec(self.backing_file_offset, u64::from(self.backing_file_size))
            .map_err(|e| e.in_format(Format::Qcow2))?;
        Ok(Some(String::from_utf8_lossy(&name).into_owned()))
    }
}

/// One internal snapshot, as `info` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The unique ID string.
    pub id: String,
    /// The name.
    pub name: String,
    /// The virtual disk size when the snapshot was taken (the header's
    /// size when the entry's extra data does not record it).
    pub disk_size: u64,
    /// Seconds since 1970 when it was taken.
    pub date_sec: u32,
    /// Where its L1 table is.
    pub l1_table_offset: u64,
    /// Entries of its L1 table.
    pub l1_size: u32,
}

/// Bytes of a snapshot table entry before its extra data.
const SNAPSHOT_FIXED: u64 = 40;

/// Reads the snapshot table the header names.
pub fn read_snapshots(file: &ImageFile, h: &Header) -> Result<Vec<Snapshot>> {
    if h.nb_snapshots == 0 {
        return Ok(Vec::new());
    }
    Error::ensure_at_most(
        Format::Qcow2,
        "nb_snapshots",
        u64::from(h.nb_snapshots),
        u64::from(MAX_SNAPSHOTS),
    )
    .map_err(|e| e.at(60).in_file(file.path()))?;
    let mut at = h.snapshots_offset;
    let mut out = Vec::new();
    for _ in 0..h.nb_snapshots {
        let fixed = file
            .read_vec(at, SNAPSHOT_FIXED)
            .map_err(|e| e.in_format(Format::Qcow2))?;
        let id_len = u64::from(be32(&fixed, 10) & 0xffff);
        let name_len = u64::from(be32(&fixed, 12) & 0xffff);
        let extra_len = u64::from(be32(&fixed, 36));
        let rest_len = extra_len + id_len + name_len;
        let rest = file
            .read_vec(at + SNAPSHOT_FIXED, rest_len)
            .map_err(|e| e.in_format(Format::Qcow2))?;
        let (extra, strings) = rest.split_at(extra_len as usize);
        let (id, name) = strings.split_at(id_len as usize);
        out.push(Snapshot {
            id: String::from_utf8_lossy(id).into_owned(),
            name: String::from_utf8_lossy(name).into_owned(),
            disk_size: if extra.len() >= 16 {
                be64(extra, 8)
            } else {
                h.size
            },
            date_sec: be32(&fixed, 16),
            l1_table_offset: be64(&fixed, 0),
            l1_size: be32(&fixed, 8),
        });
        at = (at + SNAPSHOT_FIXED + rest_len).div_ceil(8) * 8;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn v3() -> Vec<u8> {
        let mut h = vec![0u8; 512];
        h[..4].copy_from_slice(&MAGIC);
        h[4..8].copy_from_slice(&3u32.to_be_bytes());
        h[20..24].copy_from_slice(&16u32.to_be_bytes());
        h[24..32].copy_from_slice(&(1u64 << 20).to_be_bytes());
        h[36..40].copy_from_slice(&1u32.to_be_bytes());
        h[96..100].copy_from_slice(&4u32.to_be_bytes());
        h[100..104].copy_from_slice(&104u32.to_be_bytes());
        h
    }

    fn read(b: Vec<u8>) -> Result<Header> {
        Header::read(&ImageFile::from_bytes("t.qcow2", b))
    }

    #[test]
    fn parses_a_v3_header_and_its_extensions() {
        let mut b = v3();
        // Backing format "raw", then the end marker.
        b[104..108].copy_from_slice(&EXT_BACKING_FORMAT.to_be_bytes());
        b[108..112].copy_from_slice(&3u32.to_be_bytes());
        b[112..115].copy_from_slice(b"raw");
        let h = read(b).unwrap();
        assert_eq!(h.cluster_size(), 65536);
        assert_eq!(h.backing_format.as_deref(), Some("raw"));
    }

    #[test]
    fn refuses_version_1_encryption_unknown_features_and_compression_types() {
        let mut b = v3();
        b[4..8].copy_from_slice(&1u32.to_be_bytes());
        let e = read(b).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported);
        assert!(e.to_string().contains("version 1"), "{e}");
        let mut b = v3();
        b[35] = 2;
        let e = read(b).unwrap_err();
        assert!(e.to_string().contains("LUKS"), "{e}");
        let mut b = v3();
        b[79] = 0x20;
        let e = read(b).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported);
        assert!(e.to_string().contains("bit 5"), "{e}");
        let mut b = v3();
        b[103] = 112;
        b[79] = 0x08;
        b[104] = 1;
        assert_eq!(read(b.clone()).unwrap().compression_type, 1);
        b[104] = 2;
        let e = read(b).unwrap_err();
        assert_eq!((e.kind(), e.offset()), (ErrorKind::Corrupt, Some(104)));
    }

    #[test]
    fn bad_cluster_bits_and_extension_length() {
        let mut b = v3();
        b[23] = 22;
        let e = read(b).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt);
        assert_eq!(e.offset(), Some(20));
        let mut b = v3();
        b[104..108].copy_from_slice(&EXT_DATA_FILE.to_be_bytes());
        b[108..112].copy_from_slice(&u32::MAX.to_be_bytes());
        let e = read(b).unwrap_err();
        assert_eq!(e.offset(), Some(108));
    }
}
