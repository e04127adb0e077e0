//! The segment file header and the chain of section descriptors of one
//! EWF segment file (libewf's "Expert Witness Compression Format"
//! specification, sections 2 and 3).
//!
//! A segment file starts with a 13-byte header (signature, segment
//! number) followed by sections. Each section starts with a 76-byte
//! descriptor: a NUL-padded type name, the absolute offset of the next
//! descriptor, the section's size (descriptor included) and an Adler-32
//! of the descriptor's first 72 bytes. The chain ends at a `next`
//! section (more segments follow) or a `done` section (the last segment),
//! each pointing at itself.

use crate::bytes::{has_at, zeroed::le_u16, zeroed::le_u32, zeroed::le_u64};
use crate::error::{hex_preview, Detail, Error, Format, Result};
use crate::image::{WarningKind, Warnings};
use crate::image_file::ImageFile;

use super::checksum::adler32;

/// The signature of an EWF version 1 segment file (`.E01`, `.s01`).
pub const SIGNATURE: [u8; 8] = *b"EVF\x09\x0d\x0a\xff\x00";
/// Bytes of the segment file header.
pub const FILE_HEADER_LEN: u64 = 13;
/// Bytes of a section descriptor.
pub const DESCRIPTOR_LEN: u64 = 76;
/// Most sections one segment file may hold (a file of 2 GiB holds a few
/// hundred tables; a chain longer than this is a damaged or crafted file).
pub const MAX_SECTIONS: usize = 1 << 20;

/// One section descriptor (specification section 3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// The type name (`header2`, `volume`, `sectors`, `table`, ...).
    pub kind: String,
    /// Where the descriptor is in the segment file.
    pub offset: u64,
    /// The offset of the next descriptor (equal to `offset` for `next` and `done`).
    pub next: u64,
    /// The size the descriptor records, itself included.
    pub size: u64,
}

impl Section {
    /// The first byte after the descriptor: where the section's data starts.
    pub fn data_offset(&self) -> u64 {
        self.offset + DESCRIPTOR_LEN
    }

    /// The bytes of section data: from the size field, or up to the next
    /// descriptor when that is nearer (the size field of a `sectors`
    /// section over 4 GiB is known to be wrong in some EnCase versions).
    pub fn data_len(&self) -> u64 {
        let by_size = self.size.saturating_sub(DESCRIPTOR_LEN);
        if self.next > self.offset {
            by_size.min(self.next - self.data_offset().min(self.next))
        } else {
            by_size
        }
    }

    /// Whether this section ends the chain of its segment file.
    pub fn is_last(&self) -> bool {
        self.kind == "next" || self.kind == "done"
    }
}

/// Reads the segment file header: the segment number, checked against
/// `expected` (1 for the first file of a set).
pub fn read_file_header(file: &ImageFile, expected: u32) -> Result<()> {
    let head = file.read_up_to(0, FILE_HEADER_LEN as usize)?;
    if !has_at(&head, 0, &SIGNATURE) {
        return Err(Error::not_this_format(
            Format::Ewf,
            Detail::BadSignature {
                what: "EWF segment file signature",
                expected: hex_preview(&SIGNATURE),
                found: hex_preview(&head),
            },
        )
        .at(0)
        .in_file(file.path()));
    }
    if (head.len() as u64) < FILE_HEADER_LEN {
        return Err(Error::corrupt(
            Format::Ewf,
            Detail::Truncated {
                what: "segment file header".into(),
                needed: FILE_HEADER_LEN,
                available: head.len() as u64,
            },
        )
        .at(0)
        .in_file(file.path()));
    }
    let number = u32::from(le_u16(&head, 9));
    if number != expected {
        return Err(Error::bad_value(
            Format::Ewf,
            "segment number",
            u64::from(number),
            format!("{expected} (files of a set are numbered in order from .E01)"),
        )
        .at(9)
        .in_file(file.path()));
    }
    Ok(())
}

/// Parses the descriptor at `offset`.
fn read_descriptor(file: &ImageFile, offset: u64, w: &mut Warnings) -> Result<Section> {
    let avail = file.len().saturating_sub(offset);
    if avail < DESCRIPTOR_LEN {
        return Err(Error::corrupt(
            Format::Ewf,
            Detail::Truncated {
                what: "section descriptor".into(),
                needed: DESCRIPTOR_LEN,
                available: avail,
            },
        )
        .at(offset)
        .in_file(file.path()));
    }
    let d = file.read_vec(offset, DESCRIPTOR_LEN)?;
    let type_bytes = d.get(..16).unwrap_or_default();
    let end = type_bytes.iter().position(|&b| b == 0).unwrap_or(16);
    let name = type_bytes.get(..end).unwrap_or_default();
    if name.is_empty() || !name.iter().all(|b| b.is_ascii_graphic()) {
        return Err(Error::corrupt(
            Format::Ewf,
            Detail::BadSignature {
                what: "section type",
                expected: "an ASCII name such as 'header' or 'table'".into(),
                found: hex_preview(type_bytes),
            },
        )
        .at(offset)
        .in_file(file.path()));
    }
    let stored = le_u32(&d, 72);
    let computed = adler32(d.get(..72).unwrap_or_default());
    if stored != computed {
        w.tolerate(
            WarningKind::Checksum,
            Error::corrupt(
                Format::Ewf,
                Detail::Checksum {
                    what: "section descriptor Adler-32",
                    stored: u64::from(stored),
                    computed: u64::from(computed),
                },
            )
            .at(offset)
            .in_file(file.path()),
        )?;
    }
    Ok(Section {
        kind: String::from_utf8_lossy(name).into_owned(),
        offset,
        next: le_u64(&d, 16),
        size: le_u64(&d, 24),
    })
}

/// Walks the section chain of one segment file from just after its header.
///
/// Every `next` offset must move forward and stay inside the file, so the
/// walk ends; a chain that stops without `next`/`done` (a cut file) ends
/// at the last whole descriptor and is reported by the caller when it
/// misses what it needs.
pub fn read_chain(file: &ImageFile, w: &mut Warnings) -> Result<Vec<Section>> {
    let mut out = Vec::new();
    let mut pos = FILE_HEADER_LEN;
    loop {
        let s = read_descriptor(file, pos, w)?;
        let last = s.is_last();
        let next = s.next;
        out.push(s);
        if last {
            return Ok(out);
        }
        if next <= pos {
            return Err(Error::bad_value(
                Format::Ewf,
                "next section offset",
                next,
                format!("past the section at {pos:#x} (a chain moves forward)"),
            )
            .at(pos + 16)
            .in_file(file.path()));
        }
        if next >= file.len() {
            return Err(Error::out_of_range(
                Format::Ewf,
                "segment file (next section)",
                next,
                DESCRIPTOR_LEN,
                file.len(),
            )
            .in_file(file.path()));
        }
        if out.len() >= MAX_SECTIONS {
            return Err(Error::limit(
                Format::Ewf,
                "sections in one segment file",
                out.len() as u64 + 1,
                MAX_SECTIONS as u64,
            )
            .at(next)
            .in_file(file.path()));
        }
        pos = next;
    }
}

/// Reads the whole data of `section`, at most `max` bytes (an error past it).
pub fn read_data(file: &ImageFile, section: &Section, max: u64) -> Result<Vec<u8>> {
    let len = section.data_len();
    if len > max {
        return Err(Error::limit(Format::Ewf, "section data size", len, max)
            .at(section.offset + 24)
            .in_file(file.path()));
    }
    file.read_vec(section.data_offset(), len)
        .map_err(|e| e.in_format(Format::Ewf))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::OpenOptions;

    fn descriptor(kind: &str, next: u64, size: u64) -> Vec<u8> {
        let mut d = vec![0u8; 76];
        d[..kind.len()].copy_from_slice(kind.as_bytes());
        d[16..24].copy_from_slice(&next.to_le_bytes());
        d[24..32].copy_from_slice(&size.to_le_bytes());
        let c = adler32(&d[..72]);
        d[72..76].copy_from_slice(&c.to_le_bytes());
        d
    }

    fn file(sections: &[Vec<u8>]) -> ImageFile {
        let mut data = SIGNATURE.to_vec();
        data.extend_from_slice(&[1, 1, 0, 0, 0]);
        for s in sections {
            data.extend_from_slice(s);
        }
        ImageFile::from_bytes("x.E01", data)
    }

    #[test]
    fn chain_ends_at_done() {
        let f = file(&[descriptor("volume", 89, 76), descriptor("done", 89, 0)]);
        let mut w = Warnings::new(&OpenOptions::default());
        let chain = read_chain(&f, &mut w).unwrap();
        assert_eq!(chain.len(), 2);
        assert_eq!(chain[0].kind, "volume");
        assert!(chain[1].is_last());
        read_file_header(&f, 1).unwrap();
        let e = read_file_header(&f, 2).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Corrupt);
    }

    #[test]
    fn a_backward_next_offset_is_an_error_not_a_loop() {
        let f = file(&[descriptor("volume", 13, 76)]);
        let mut w = Warnings::new(&OpenOptions::default());
        let e = read_chain(&f, &mut w).unwrap_err();
        assert_eq!(e.offset(), Some(13 + 16));
        assert!(e.to_string().contains("next section offset is 13"), "{e}");
    }

    #[test]
    fn a_bad_descriptor_checksum_warns_and_strict_refuses() {
        let mut d = descriptor("done", 13, 0);
        d[72] ^= 1;
        let f = file(&[d]);
        let mut w = Warnings::new(&OpenOptions::default());
        read_chain(&f, &mut w).unwrap();
        assert_eq!(w.into_vec().len(), 1);
        let strict = OpenOptions {
            strict: true,
            ..OpenOptions::default()
        };
        let mut w = Warnings::new(&strict);
        let e = read_chain(&f, &mut w).unwrap_err();
        assert!(e.to_string().contains("Adler-32"), "{e}");
    }

    #[test]
    fn a_next_offset_past_the_file_is_out_of_bounds() {
        let f = file(&[descriptor("volume", 1 << 40, 76)]);
        let mut w = Warnings::new(&OpenOptions::default());
        let e = read_chain(&f, &mut w).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::OutOfBounds);
    }
}
