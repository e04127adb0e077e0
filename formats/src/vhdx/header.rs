//! The file type identifier and the two headers ([MS-VHDX] 2.2.1, 2.2.2).
//!
//! The header section is the first 1 MiB of the file: the identifier at 0,
//! header 1 at 64 KiB, header 2 at 128 KiB (each 4 KiB, CRC-32C protected),
//! then the two region tables. Of the two headers, the valid one with the
//! higher sequence number is current.

use binrw::BinRead;

use crate::error::{hex_preview, Detail, Error, Format, Result};
use crate::image::{WarningKind, Warnings};
use crate::image_file::ImageFile;
use crate::layout::{self, Layout};

use super::fields::Guid;
use crate::crc32c;

/// One kibibyte.
pub(crate) const KIB: u64 = 1024;
/// One mebibyte: the unit of VHDX file offsets (log, regions, BAT entries).
pub(crate) const MIB: u64 = 1024 * KIB;

/// The file type identifier's signature at offset 0.
pub(crate) const FILE_TYPE_SIGNATURE: &[u8; 8] = b"vhdxfile";
/// Offset of the creator string (UTF-16LE) in the identifier.
const CREATOR_OFFSET: u64 = 8;
/// Length of the creator field in bytes (256 UTF-16 code units).
const CREATOR_LEN: u64 = 512;
/// Offset of header 1.
pub(crate) const HEADER_1_OFFSET: u64 = 64 * KIB;
/// Offset of header 2.
pub(crate) const HEADER_2_OFFSET: u64 = 128 * KIB;
/// Size of one header, covered by its checksum.
pub(crate) const HEADER_SIZE: u64 = 4 * KIB;
/// The header signature `head`.
const HEADER_SIGNATURE: &[u8; 4] = b"head";
/// Offset of the checksum field in a header.
const CHECKSUM_OFFSET: usize = 4;
/// The only header version this reader knows.
const VERSION: u16 = 1;
/// The only log version this reader knows.
const LOG_VERSION: u16 = 0;
/// Bytes of the identifier the reader uses: the signature and the creator.
const FILE_TYPE_IDENTIFIER_LEN: usize = (CREATOR_OFFSET + CREATOR_LEN) as usize;

/// The file type identifier ([MS-VHDX] 2.2.1) up to its creator; the
/// rest of its 64 KiB is reserved.
#[derive(BinRead, Debug)]
#[br(little)]
struct FileTypeIdentifier {
    /// After the `Signature` ([`FILE_TYPE_SIGNATURE`], checked on the
    /// bytes as read: a probe miss is told from a short file by it).
    /// UTF-16LE, NUL-terminated when shorter than 256 code units.
    #[br(pad_before = CREATOR_OFFSET)]
    creator: [u16; 256],
}

impl Layout for FileTypeIdentifier {
    const SIZE: usize = FILE_TYPE_IDENTIFIER_LEN;
    const NAME: &'static str = "file type identifier";
}

/// A header as it lies on disk ([MS-VHDX] 2.2.2), 4 KiB with its reserved tail.
#[derive(BinRead, Debug)]
#[br(little)]
struct RawHeader {
    signature: [u8; 4],
    checksum: u32,
    sequence_number: u64,
    #[br(map = Guid)]
    file_write_guid: Guid,
    #[br(map = Guid)]
    data_write_guid: Guid,
    #[br(map = Guid)]
    log_guid: Guid,
    log_version: u16,
    version: u16,
    log_length: u32,
    /// Followed by 4,016 reserved bytes.
    #[br(pad_after = 4016)]
    log_offset: u64,
}

impl Layout for RawHeader {
    const SIZE: usize = HEADER_SIZE as usize;
    const NAME: &'static str = "header";
}

/// A parsed header ([MS-VHDX] 2.2.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Header {
    /// Which copy (1 or 2) this is.
    pub(crate) copy: u8,
    /// `SequenceNumber`: the higher valid one is current.
    pub(crate) sequence_number: u64,
    /// `FileWriteGuid`: changes on every open for writing.
    pub(crate) file_write_guid: Guid,
    /// `DataWriteGuid`: changes when user-visible data changes; children record it.
    pub(crate) data_write_guid: Guid,
    /// `LogGuid`: non-nil when the log holds entries to replay.
    pub(crate) log_guid: Guid,
    /// `LogVersion` (0).
    pub(crate) log_version: u16,
    /// `Version` (1).
    pub(crate) version: u16,
    /// `LogLength` in bytes, a multiple of 1 MiB.
    pub(crate) log_length: u32,
    /// `LogOffset` in bytes, a multiple of 1 MiB.
    pub(crate) log_offset: u64,
}

/// Reads the file type identifier; returns the creator string.
pub(crate) fn read_file_type(file: &ImageFile) -> Result<String> {
    let mut head = file.read_up_to(0, FILE_TYPE_IDENTIFIER_LEN)?;
    if head.get(..8) != Some(FILE_TYPE_SIGNATURE.as_slice()) {
        return Err(Error::not_this_format(
            Format::Vhdx,
            Detail::BadSignature {
                what: "file type identifier",
                expected: "vhdxfile".into(),
                found: hex_preview(head.get(..8).unwrap_or_default()),
            },
        )
        .at(0));
    }
    // A file cut inside the creator reads as if padded with zeros (the
    // header reads that follow fail on it).
    head.resize(FILE_TYPE_IDENTIFIER_LEN, 0);
    let id: FileTypeIdentifier =
        layout::read(&head).map_err(|d| Error::corrupt(Format::Vhdx, d).at(0))?;
    let len = id.creator.iter().position(|&u| u == 0);
    let units = id.creator.get(..len.unwrap_or(id.creator.len()));
    Ok(String::from_utf16_lossy(units.unwrap_or_default()))
}

/// Parses one 4 KiB header at file offset `at`.
pub(crate) fn parse_header(buf: &[u8], at: u64, copy: u8) -> Result<Header> {
    if buf.len() as u64 != HEADER_SIZE {
        return Err(Error::corrupt(
            Format::Vhdx,
            Detail::Truncated {
                what: format!("header {copy}"),
                needed: HEADER_SIZE,
                available: buf.len() as u64,
            },
        )
        .at(at));
    }
    let raw: RawHeader = layout::read(buf).map_err(|d| Error::corrupt(Format::Vhdx, d).at(at))?;
    if raw.signature != *HEADER_SIGNATURE {
        return Err(Error::corrupt(
            Format::Vhdx,
            Detail::BadSignature {
                what: "header signature",
                expected: "head".into(),
                found: hex_preview(&raw.signature),
            },
        )
        .at(at));
    }
    let stored = raw.checksum;
    let computed = crc32c::checksum_with_hole(buf, CHECKSUM_OFFSET);
    if stored != computed {
        return Err(Error::corrupt(
            Format::Vhdx,
            Detail::Checksum {
                what: "header",
                stored: stored.into(),
                computed: computed.into(),
            },
        )
        .at(at));
    }
    let h = Header {
        copy,
        sequence_number: raw.sequence_number,
        file_write_guid: raw.file_write_guid,
        data_write_guid: raw.data_write_guid,
        log_guid: raw.log_guid,
        log_version: raw.log_version,
        version: raw.version,
        log_length: raw.log_length,
        log_offset: raw.log_offset,
    };
    let bad = |field: &'static str, value: u64, expected: &str| {
        Err(Error::bad_value(Format::Vhdx, field, value, expected).at(at))
    };
    if h.version != VERSION {
        return Err(Error::unsupported(
            Format::Vhdx,
            format!("header version {} (only version 1 is read)", h.version),
        )
        .at(at));
    }
    if h.log_version != LOG_VERSION {
        return Err(Error::unsupported(
            Format::Vhdx,
            format!("log version {} (only version 0 is read)", h.log_version),
        )
        .at(at));
    }
    if u64::from(h.log_length) % MIB != 0 {
        return bad(
            "LogLength",
            h.log_length.into(),
            "a multiple of 1 MiB (1048576)",
        );
    }
    if h.log_length != 0 && (h.log_offset % MIB != 0 || h.log_offset < MIB) {
        return bad(
            "LogOffset",
            h.log_offset,
            "a multiple of 1 MiB, at least 1 MiB",
        );
    }
    Ok(h)
}

/// Reads both headers and returns the current one: the valid header with
/// the higher sequence number. A damaged copy is a tolerated warning (the
/// other copy is used); two damaged copies are an error naming header 1's fault.
pub(crate) fn read_current(file: &ImageFile, warnings: &mut Warnings) -> Result<Header> {
    let read = |at: u64, copy: u8| -> Result<Header> {
        let buf = file
            .read_vec(at, HEADER_SIZE)
            .map_err(|e| e.in_format(Format::Vhdx))?;
        parse_header(&buf, at, copy)
    };
    let one = read(HEADER_1_OFFSET, 1);
    let two = read(HEADER_2_OFFSET, 2);
    match (one, two) {
        (Ok(a), Ok(b)) => Ok(if b.sequence_number > a.sequence_number {
            b
        } else {
            a
        }),
        (Ok(a), Err(e)) | (Err(e), Ok(a)) => {
            if e.kind() == crate::ErrorKind::Unsupported {
                return Err(e);
            }
            warnings.tolerate(
                WarningKind::RedundantCopyUsed,
                Error::corrupt(
                    Format::Vhdx,
                    Detail::Invalid(format!(
                        "header {} is damaged ({}); header {} is used",
                        3 - a.copy,
                        e.detail(),
                        a.copy
                    )),
                )
                .at(e.offset().unwrap_or(0))
                .in_file(file.path()),
            )?;
            Ok(a)
        }
        (Err(e), Err(_)) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::OpenOptions;
    use crate::ErrorKind;

    /// A valid header with sequence number `seq`.
    pub(crate) fn golden(seq: u64) -> Vec<u8> {
        let mut b = vec![0u8; HEADER_SIZE as usize];
        b[..4].copy_from_slice(b"head");
        b[8..16].copy_from_slice(&seq.to_le_bytes());
        b[16..32].copy_from_slice(&[0x11; 16]);
        b[32..48].copy_from_slice(&[0x22; 16]);
        b[66..68].copy_from_slice(&1u16.to_le_bytes());
        b[68..72].copy_from_slice(&(MIB as u32).to_le_bytes());
        b[72..80].copy_from_slice(&MIB.to_le_bytes());
        seal(&mut b);
        b
    }

    fn seal(b: &mut [u8]) {
        let c = crc32c::checksum_with_hole(b, 4);
        b[4..8].copy_from_slice(&c.to_le_bytes());
    }

    #[test]
    fn declarations_read_their_lengths() {
        assert_eq!(
            layout::declared_len::<FileTypeIdentifier>(),
            Some(CREATOR_OFFSET + CREATOR_LEN)
        );
        assert_eq!(layout::declared_len::<RawHeader>(), Some(HEADER_SIZE));
    }

    #[test]
    fn golden_header_parses() {
        let h = parse_header(&golden(7), HEADER_1_OFFSET, 1).unwrap();
        assert_eq!(h.sequence_number, 7);
        assert_eq!(h.data_write_guid, Guid([0x22; 16]));
        assert_eq!(h.log_offset, MIB);
    }

    #[test]
    fn one_field_mutations_give_the_exact_error() {
        let cases: [(usize, u8, bool, ErrorKind); 5] = [
            (0, b'x', true, ErrorKind::Corrupt),   // signature
            (9, 1, false, ErrorKind::Corrupt),     // checksum no longer matches
            (66, 2, true, ErrorKind::Unsupported), // version 2
            (64, 1, true, ErrorKind::Unsupported), // log version 1
            (70, 0x11, true, ErrorKind::Corrupt),  // log length not a MiB multiple
        ];
        for (offset, value, reseal, kind) in cases {
            let mut b = golden(1);
            b[offset] = value;
            if reseal {
                seal(&mut b);
            }
            let e = parse_header(&b, HEADER_1_OFFSET, 1).unwrap_err();
            assert_eq!(e.kind(), kind, "byte {offset}: {e}");
            assert_eq!(e.offset(), Some(HEADER_1_OFFSET));
        }
    }

    fn file_with(h1: &[u8], h2: &[u8]) -> ImageFile {
        let mut f = vec![0u8; (HEADER_2_OFFSET + HEADER_SIZE) as usize];
        f[..8].copy_from_slice(b"vhdxfile");
        f[8..10].copy_from_slice(&[b'q', 0]);
        f[HEADER_1_OFFSET as usize..][..4096].copy_from_slice(h1);
        f[HEADER_2_OFFSET as usize..][..4096].copy_from_slice(h2);
        ImageFile::from_bytes("h.vhdx", f)
    }

    #[test]
    fn higher_sequence_wins_and_damaged_copy_is_a_warning() {
        let opts = OpenOptions::default();
        let mut w = Warnings::new(&opts);
        let f = file_with(&golden(3), &golden(4));
        assert_eq!(read_file_type(&f).unwrap(), "q");
        assert_eq!(read_current(&f, &mut w).unwrap().copy, 2);
        let mut bad = golden(9);
        bad[100] = 1;
        let f = file_with(&golden(3), &bad);
        assert_eq!(read_current(&f, &mut w).unwrap().copy, 1);
        assert_eq!(w.into_vec()[0].kind, WarningKind::RedundantCopyUsed);
        let strict = OpenOptions {
            strict: true,
            ..OpenOptions::default()
        };
        let mut w = Warnings::new(&strict);
        assert!(read_current(&f, &mut w).is_err());
        let mut w = Warnings::new(&opts);
        let e = read_current(&file_with(&bad, &bad), &mut w).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt);
    }
}
