//! The one ordered probe that decides an input's format by its content,
//! and [`open`], the entry point of the crate.
//!
//! Order (first match wins; the file name's extension is only a hint):
//! 1. `OpenOptions::format`, when the caller forces a reader;
//! 2. magic numbers at offset 0: `KDMV`, `COWD` and seSparse (VMDK extents),
//!    `vhdxfile` (VHDX), `QFI\xfb` (QCOW2), the VDI signature, `EVF\x09\x0d\x0a\xff\x00`
//!    (EWF, `.E01`);
//! 3. formats recognised but not read, each named in an
//!    [`ErrorKind::Unsupported`] error (see [`NotRead`]): EWF logical
//!    evidence (`LVF`, `.L01`), Ex01 (`EVF2`), AFF and AFF4, Apple UDIF (`koly` trailer), Nero
//!    (`NER5`/`NERO` footer), QCOW version 1;
//! 4. VMDK descriptor text (`# Disk DescriptorFile`, or `createType=` near the start);
//! 5. a VHD footer (`conectix`) in the last 512 (or 511) bytes, or its copy at 0;
//! 6. an optical-disc recognition sequence at sector 16 (0x8000), or an
//!    `.iso` name, in which case the ISO rules say what is wrong; a UDF
//!    sequence recorded at 4,096-byte (or larger) steps is a disk holding
//!    UDF and opens as raw (see `iso::vrs_step`);
//! 7. a numbered split-raw part name (`disk.001`);
//! 8. raw, when the start holds a partition table or file system
//!    (`55 AA` boot signature, `EFI PART`, an Apple Partition Map, a BSD
//!    disklabel, a Sun or SGI label, ext, XFS, Btrfs, LVM, LUKS, swap)
//!    or the name ends in a raw extension (`.img`, `.raw`, `.dd`, ...).
//!
//! A CD image of raw 2,352-byte sectors (a MODE1/2352 or MODE2/2352 `.bin`)
//! with an ISO 9660 descriptor in the user data of sector 16 is read as
//! its user data (`cd_raw`), an ISO image of 2,048-byte sectors.
//!
//! Anything else is an error that says what was seen at which offsets.

use std::path::Path;
#[cfg(test)]
use std::path::PathBuf;

use crate::context::{MemoryFiles, OpenContext};
use crate::error::{hex_preview, Detail, Error, ErrorKind, Format, Result};
use crate::image::DiskImage;
use crate::image_file::ImageFile;
use crate::options::OpenOptions;
use crate::{cd_raw, ewf, iso, qcow2, raw, vdi, vhd, vhdx, vmdk};

/// How many bytes from the start the probe reads.
pub const HEAD_LEN: usize = 4096;
/// File-name extensions that say "raw image" when content does not.
pub const RAW_EXTENSIONS: [&str; 8] = ["img", "raw", "dd", "bin", "ima", "dsk", "vfd", "flp"];

impl<'a> OpenContext<'a> {
    /// A context for opening files from the file system, parents opened
    /// by this probe.
    pub fn new(options: &'a OpenOptions) -> Self {
        Self::with_opener(options, None, open_with)
    }

    /// A context whose files all come from `memory` (fuzzing, tests): no
    /// other file can be opened; parents are opened by this probe.
    pub fn in_memory(options: &'a OpenOptions, memory: &'a MemoryFiles) -> Self {
        Self::with_opener(options, Some(memory), open_with)
    }
}

/// Opens a disk image read-only, deciding its format by content.
///
/// ```no_run
/// use diskimage_formats::{open, BlockDevice, OpenOptions};
/// let image = open("disk.vmdk".as_ref(), &OpenOptions::default())?;
/// let mut sector = [0u8; 512];
/// image.read_at(&mut sector, 0)?;
/// # Ok::<(), diskimage_formats::Error>(())
/// ```
pub fn open(path: &Path, options: &OpenOptions) -> Result<DiskImage> {
    open_with(&OpenContext::new(options), path)
}

/// Opens an image whose files are all in memory (for fuzzing and tests):
/// `root` is the image to open, `files` every file it may name.
pub fn open_in_memory(
    root: &Path,
    files: &MemoryFiles,
    options: &OpenOptions,
) -> Result<DiskImage> {
    open_with(&OpenContext::in_memory(options, files), root)
}

/// Every file the image at `path` needs — its own files and its whole
/// parent chain — in chain order: what a user must copy to read it
/// elsewhere. VMDK answers from descriptors and headers alone (no data
/// read, see [`vmdk::dependencies`]); other formats are opened and their
/// [`ImageInfo`](crate::ImageInfo) chain is listed. A missing file is an
/// [`ErrorKind::MissingFile`] error listing the paths tried.
pub fn dependencies(path: &Path, options: &OpenOptions) -> Result<Vec<std::path::PathBuf>> {
    let ctx = OpenContext::new(options);
    let file = ctx.open_file(path)?;
    if !file.is_empty() && options.format.is_none_or(|f| f == Format::Vmdk) {
        let bytes = ProbeBytes::read(&file)?;
        if detect(&bytes, file.len(), path) == Probed::Format(Format::Vmdk) {
            return vmdk::dependencies(path, options);
        }
    }
    let image = open_with(&ctx, path)?;
    let mut files: Vec<std::path::PathBuf> = Vec::new();
    for f in image.info().chain().flat_map(|i| i.files.iter()) {
        if !files.contains(f) {
            files.push(f.clone());
        }
    }
    Ok(files)
}

/// What the probe decided for one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probed {
    /// A format recognised by its content.
    Format(Format),
    /// A format recognised by its signature that this version does not read.
    NotRead(NotRead),
    /// Nothing matched; the name hints at this format.
    Hint(Format),
    /// Nothing matched and the name gives no hint.
    Unknown,
}

/// Disk image formats the probe recognises by their signature but that
/// this version does not read: each is named in an
/// [`ErrorKind::Unsupported`] error rather than called unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NotRead {
    /// EnCase logical evidence (`LVF\x09\x0d\x0a\xff\x00`, `.L01`): files, not a disk.
    Ewf,
    /// EnCase 7 Ex01/Lx01 (`EVF2\x0d\x0a\x81\x00`, `LEF2...`).
    Ewf2,
    /// Advanced Forensic Format version 1 (`AFF10\r\n\0`).
    Aff,
    /// AFF4: a zip whose entries describe an AFF4 container.
    Aff4,
    /// Apple UDIF (`.dmg`): a `koly` trailer in the last 512 bytes.
    Udif,
    /// Nero Burning ROM (`.nrg`): a `NER5` or `NERO` footer at the end.
    Nrg,
    /// QEMU copy-on-write version 1 (`QFI\xfb`, version 1).
    Qcow1,
}

/// The format's name as its users know it ([`NotRead::name`]).
impl std::fmt::Display for NotRead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl NotRead {
    /// The format's name as its users know it.
    pub fn name(self) -> &'static str {
        match self {
            NotRead::Ewf => "EWF logical evidence (EnCase .L01)",
            NotRead::Ewf2 => "EWF2 (EnCase 7, .Ex01/.Lx01)",
            NotRead::Aff => "AFF (Advanced Forensic Format, .aff)",
            NotRead::Aff4 => "AFF4 (Advanced Forensic Format 4, .aff4)",
            NotRead::Udif => "Apple UDIF (.dmg)",
            NotRead::Nrg => "Nero (.nrg)",
            NotRead::Qcow1 => "QCOW version 1",
        }
    }

    /// The byte offset of the signature in a file of `len` bytes whose
    /// last bytes are `tail`.
    fn offset(self, tail: &[u8], len: u64) -> u64 {
        match self {
            NotRead::Udif => len.saturating_sub(512),
            NotRead::Nrg if tail.len() >= 12 && at(tail, tail.len() - 12, b"NER5") => {
                len.saturating_sub(12)
            }
            NotRead::Nrg => len.saturating_sub(8),
            _ => 0,
        }
    }

    /// Where the signature is and what it is, for the error message.
    fn signature(self) -> &'static str {
        match self {
            NotRead::Ewf => "'LVF' signature at 0x0",
            NotRead::Ewf2 => "'EVF2'/'LEF2' signature at 0x0",
            NotRead::Aff => "'AFF10' signature at 0x0",
            NotRead::Aff4 => "zip archive describing an AFF4 container",
            NotRead::Udif => "'koly' trailer in the last 512 bytes",
            NotRead::Nrg => "'NER5'/'NERO' footer at the end",
            NotRead::Qcow1 => "'QFI\\xfb' magic with version 1 at 0x0",
        }
    }
}

/// The bytes the probe looks at.
#[derive(Debug, Default)]
pub struct ProbeBytes {
    /// Up to [`HEAD_LEN`] bytes from offset 0.
    pub head: Vec<u8>,
    /// Up to 8 bytes at sector 16 of an optical disc (0x8000).
    pub sector16: Vec<u8>,
    /// The last 512 bytes (fewer for a smaller file).
    pub tail: Vec<u8>,
    /// Up to `iso::VRS_WINDOW` bytes from 0x8000 when `sector16` starts a
    /// recognition sequence (empty otherwise): enough to tell an optical
    /// disc from a disk holding UDF with larger blocks.
    pub vrs: Vec<u8>,
    /// The first `cd_raw::PROBE_LEN` bytes of raw CD sector 16 (at
    /// 16 × 2,352) when the file starts with a CD sync pattern.
    pub raw_cd_sector16: Vec<u8>,
}

impl ProbeBytes {
    /// Reads what the probe needs from `file`.
    pub fn read(file: &ImageFile) -> Result<Self> {
        let len = file.len();
        let head = file.read_up_to(0, HEAD_LEN)?;
        let sector16 = file.read_up_to(iso::VRS_OFFSET, 8)?;
        let vrs = if iso::looks_like_iso(&sector16) {
            file.read_up_to(iso::VRS_OFFSET, iso::VRS_WINDOW)?
        } else {
            Vec::new()
        };
        let raw_cd_sector16 = if at(&head, 0, &cd_raw::SYNC) {
            file.read_up_to(cd_raw::PROBE_AT, cd_raw::PROBE_LEN)?
        } else {
            Vec::new()
        };
        Ok(ProbeBytes {
            head,
            sector16,
            tail: file.read_up_to(len.saturating_sub(512), 512)?,
            vrs,
            raw_cd_sector16,
        })
    }

    /// Whether the file holds raw 2,352-byte CD sectors with an ISO 9660
    /// volume descriptor in the user data of sector 16 (MODE1/2352 or
    /// MODE2/2352), read through `cd_raw`.
    pub fn raw_cd(&self) -> bool {
        cd_raw::user_data_offset(&self.raw_cd_sector16).is_some()
    }
}

/// Finds a format this version recognises but does not read.
pub fn not_read(head: &[u8], tail: &[u8]) -> Option<NotRead> {
    const EWF: &[u8] = b"VF\x09\x0d\x0a\xff\x00";
    const EWF2: &[u8] = b"F2\x0d\x0a\x81\x00";
    if at(head, 0, b"L") && at(head, 1, EWF) {
        return Some(NotRead::Ewf);
    }
    if (at(head, 0, b"EV") || at(head, 0, b"LE")) && at(head, 2, EWF2) {
        return Some(NotRead::Ewf2);
    }
    if at(head, 0, b"AFF10\r\n\0") {
        return Some(NotRead::Aff);
    }
    if at(head, 0, b"QFI\xfb") && crate::bytes::be_u32(head, 4) == Some(1) {
        return Some(NotRead::Qcow1);
    }
    let contains = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    if at(head, 0, b"PK\x03\x04")
        && (contains(head, b"information.turtle")
            || contains(head, b"container.description")
            || contains(tail, b"aff4://"))
    {
        return Some(NotRead::Aff4);
    }
    if tail.len() == 512 && at(tail, 0, b"koly") {
        return Some(NotRead::Udif);
    }
    let n = tail.len();
    if (n >= 12 && at(tail, n - 12, b"NER5")) || (n >= 8 && at(tail, n - 8, b"NERO")) {
        return Some(NotRead::Nrg);
    }
    None
}

use crate::bytes::has_at as at;

/// Whether `head` is VMDK descriptor text.
pub fn looks_like_descriptor(head: &[u8]) -> bool {
    let text = head.get(..head.len().min(1024)).unwrap_or_default();
    if text.starts_with(b"# Disk DescriptorFile") {
        return true;
    }
    let printable = text.iter().all(|&b| {
        b == b'\n' || b == b'\r' || b == b'\t' || (0x20..0x7f).contains(&b) || b >= 0x80 || b == 0
    });
    let lower = String::from_utf8_lossy(text).to_ascii_lowercase();
    printable && !text.is_empty() && text.first() != Some(&0) && lower.contains("createtype")
}

/// Whether the start of a disk holds a partition table or a file system:
/// an MBR or GPT, an Apple Partition Map (`ER` driver descriptor map and a
/// `PM` entry), a BSD disklabel (at sector 1 or byte 64), a Sun or SGI
/// label, or ext, XFS, LUKS, swap, LVM2 signatures.
pub fn looks_like_disk(head: &[u8]) -> bool {
    const BSD: u32 = 0x8256_4557;
    at(head, 510, &[0x55, 0xAA])
        || at(head, 512, b"EFI PART")
        || (at(head, 0, b"ER") && at(head, 512, b"PM"))
        || [512, 64]
            .iter()
            .any(|&o| at(head, o, &BSD.to_le_bytes()) || at(head, o, &BSD.to_be_bytes()))
        || at(head, 508, &[0xDA, 0xBE])
        || at(head, 0, &[0x0B, 0xE5, 0xA9, 0x41])
        || at(head, 1080, &[0x53, 0xEF])
        || at(head, 0, b"XFSB")
        || at(head, 0, b"LUKS\xba\xbe")
        || at(head, 4086, b"SWAPSPACE2")
        || (0..4).any(|s| at(head, s * 512, b"LABELONE"))
}

/// Decides the format from the probe bytes and the file name.
pub fn detect(bytes: &ProbeBytes, len: u64, path: &Path) -> Probed {
    let head = &bytes.head;
    let magic: [(&[u8], usize, Format); 8] = [
        (b"KDMV", 0, Format::Vmdk),
        (b"COWD", 0, Format::Vmdk),
        (&[0xbe, 0xba, 0xfe, 0xca, 0, 0, 0, 0], 0, Format::Vmdk),
        (b"vhdxfile", 0, Format::Vhdx),
        (b"QFI\xfb", 0, Format::Qcow2),
        (&[0x7f, 0x10, 0xda, 0xbe], 0x40, Format::Vdi),
        (b"conectix", 0, Format::Vhd),
        (&ewf::section::SIGNATURE, 0, Format::Ewf),
    ];
    let tail = &bytes.tail;
    let footer_512 = tail.len() == 512 && at(tail, 0, b"conectix");
    let footer_511 = tail.len() == 512 && at(tail, 1, b"conectix");
    if footer_512 || footer_511 {
        return Probed::Format(Format::Vhd);
    }
    if let Some(f) = not_read(head, tail) {
        return Probed::NotRead(f);
    }
    if let Some((_, _, f)) = magic.iter().find(|(m, o, _)| at(head, *o, m)) {
        return Probed::Format(*f);
    }
    if looks_like_descriptor(head) {
        return Probed::Format(Format::Vmdk);
    }
    if bytes.raw_cd() {
        return Probed::Format(Format::Iso);
    }
    if iso::looks_like_iso(&bytes.sector16) {
        // UDF recorded with blocks over 2,048 bytes: a disk, read raw.
        if iso::vrs_step(&bytes.vrs).is_some_and(|step| step as u64 > iso::SECTOR) {
            return Probed::Format(Format::Raw);
        }
        return Probed::Format(Format::Iso);
    }
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    if len > 0 && looks_like_disk(head) {
        return Probed::Format(Format::Raw);
    }
    match ext.as_str() {
        "iso" => Probed::Hint(Format::Iso),
        "vmdk" => Probed::Hint(Format::Vmdk),
        "vhd" | "avhd" | "vud" => Probed::Hint(Format::Vhd),
        "vhdx" | "avhdx" => Probed::Hint(Format::Vhdx),
        "vdi" => Probed::Hint(Format::Vdi),
        e if RAW_EXTENSIONS.contains(&e) => Probed::Hint(Format::Raw),
        _ => Probed::Unknown,
    }
}

/// Opens `path` in the context of an open call (also used for parents).
pub fn open_with(ctx: &OpenContext<'_>, path: &Path) -> Result<DiskImage> {
    let file = ctx.open_file(path)?;
    if let Some(format) = ctx.options().format {
        return open_as(ctx, format, file);
    }
    if file.is_empty() {
        return Err(Error::new(
            ErrorKind::NotThisFormat,
            Format::Probe,
            Detail::Unrecognised {
                seen: "the file is empty (0 bytes)".into(),
            },
        )
        .at(0)
        .in_file(path));
    }
    let bytes = ProbeBytes::read(&file)?;
    match detect(&bytes, file.len(), path) {
        Probed::Format(Format::Raw) | Probed::Hint(Format::Raw) => {
            match raw::split_parts(ctx, path) {
                Some(parts) => raw::open(ctx, &parts),
                None => open_as(ctx, Format::Raw, file),
            }
        }
        Probed::Format(f) | Probed::Hint(f) => open_as(ctx, f, file),
        Probed::NotRead(f) => Err(Error::unsupported(
            Format::Probe,
            format!(
                "{} image ({}): recognised, but not read by this version",
                f.name(),
                f.signature()
            ),
        )
        .at(f.offset(&bytes.tail, file.len()))
        .in_file(path)),
        Probed::Unknown => match raw::split_parts(ctx, path) {
            Some(parts) => raw::open(ctx, &parts),
            None => Err(unrecognised(&bytes, file.len(), path)),
        },
    }
}

fn unrecognised(bytes: &ProbeBytes, len: u64, path: &Path) -> Error {
    let seen = format!(
        "{} bytes; at 0x0: {}; at 0x8000: {}; last 512 bytes hold no 'conectix' VHD footer \
         (force a reader with --format, e.g. --format raw)",
        len,
        hex_preview(&bytes.head),
        hex_preview(&bytes.sector16),
    );
    Error::new(
        ErrorKind::NotThisFormat,
        Format::Probe,
        Detail::Unrecognised { seen },
    )
    .at(0)
    .in_file(path)
}

/// Opens `file` with the reader for `format`.
fn open_as(ctx: &OpenContext<'_>, format: Format, file: ImageFile) -> Result<DiskImage> {
    let path = file.path().to_path_buf();
    if let Some(s) = ctx.options().snapshot.as_deref() {
        if ctx.depth() == 0 && format != Format::Qcow2 {
            return Err(Error::unsupported(
                format,
                format!("{format} images have no internal snapshots (asked for snapshot {s:?})"),
            )
            .in_file(&path));
        }
    }
    let result = match format {
        Format::Raw | Format::Probe => {
            drop(file);
            raw::open(ctx, std::slice::from_ref(&path))
        }
        Format::SplitRaw => {
            let parts = raw::split_parts(ctx, &path).unwrap_or_else(|| vec![path.clone()]);
            drop(file);
            raw::open(ctx, &parts)
        }
        Format::Iso => {
            let sector16 = file.read_up_to(cd_raw::PROBE_AT, cd_raw::PROBE_LEN)?;
            match cd_raw::user_data_offset(&sector16) {
                Some(data) => cd_raw::open(file, data, ctx.options()),
                None => iso::open(file),
            }
        }
        Format::Vhd => vhd::open(ctx, file),
        Format::Vhdx => vhdx::open(ctx, file),
        Format::Vmdk => vmdk::open(ctx, file),
        Format::Qcow2 => qcow2::open(ctx, file),
        Format::Ewf => ewf::open(ctx, file),
        Format::Vdi => vdi::open(ctx, file),
    };
    result.map_err(|e| e.in_format(format).in_file(&path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(head: &[u8], name: &str) -> Probed {
        let bytes = ProbeBytes {
            head: head.to_vec(),
            ..ProbeBytes::default()
        };
        detect(&bytes, head.len() as u64, Path::new(name))
    }

    #[test]
    fn magic_beats_extension() {
        assert_eq!(
            probe(b"KDMV\x01\0\0\0", "x.img"),
            Probed::Format(Format::Vmdk)
        );
        assert_eq!(probe(b"vhdxfile", "x.vmdk"), Probed::Format(Format::Vhdx));
        assert_eq!(
            probe(b"QFI\xfb\0\0\0\x03", "x.raw"),
            Probed::Format(Format::Qcow2)
        );
    }

    #[test]
    fn descriptor_text_is_vmdk() {
        assert_eq!(
            probe(b"# Disk DescriptorFile\nversion=1\n", "x"),
            Probed::Format(Format::Vmdk)
        );
        assert_eq!(
            probe(
                b"# made by a converter\ncreateType=\"streamOptimized\"\n",
                "x"
            ),
            Probed::Format(Format::Vmdk)
        );
    }

    #[test]
    fn vhd_footer_at_the_end() {
        let mut d = vec![0u8; 2048];
        d[1536..1544].copy_from_slice(b"conectix");
        let bytes = ProbeBytes {
            head: d[..HEAD_LEN.min(d.len())].to_vec(),
            tail: d[1536..].to_vec(),
            ..ProbeBytes::default()
        };
        assert_eq!(
            detect(&bytes, 2048, Path::new("a")),
            Probed::Format(Format::Vhd)
        );
    }

    #[test]
    fn boot_signature_is_raw_and_unknown_is_unknown() {
        let mut d = vec![0u8; 512];
        d[510] = 0x55;
        d[511] = 0xAA;
        assert_eq!(probe(&d, "x.unknown"), Probed::Format(Format::Raw));
        assert_eq!(probe(&[1, 2, 3], "x.unknown"), Probed::Unknown);
        assert_eq!(probe(&[1, 2, 3], "x.DD"), Probed::Hint(Format::Raw));
        assert_eq!(probe(&[1, 2, 3], "x.iso"), Probed::Hint(Format::Iso));
    }

    fn probe_tail(tail: &[u8]) -> Probed {
        let bytes = ProbeBytes {
            head: vec![0; 512],
            tail: tail.to_vec(),
            ..ProbeBytes::default()
        };
        detect(&bytes, 4096, Path::new("x"))
    }

    #[test]
    fn formats_not_read_are_named() {
        assert_eq!(
            probe(b"EVF\x09\x0d\x0a\xff\x00\x01", "x.E01"),
            Probed::Format(Format::Ewf)
        );
        assert_eq!(
            probe(b"LVF\x09\x0d\x0a\xff\x00\x01", "x.L01"),
            Probed::NotRead(NotRead::Ewf)
        );
        assert_eq!(
            probe(b"EVF2\x0d\x0a\x81\x00", "x.Ex01"),
            Probed::NotRead(NotRead::Ewf2)
        );
        assert_eq!(
            probe(b"QFI\xfb\0\0\0\x01", "x.qcow"),
            Probed::NotRead(NotRead::Qcow1)
        );
        assert_eq!(
            probe(b"QFI\xfb\0\0\0\x02", "x.qcow"),
            Probed::Format(Format::Qcow2)
        );
        assert_eq!(
            probe(b"PK\x03\x04....information.turtle", "x"),
            Probed::NotRead(NotRead::Aff4)
        );
        assert_eq!(probe(b"PK\x03\x04 other.txt", "x"), Probed::Unknown);
        let mut koly = vec![0u8; 512];
        koly[..4].copy_from_slice(b"koly");
        assert_eq!(probe_tail(&koly), Probed::NotRead(NotRead::Udif));
        let mut ner5 = vec![0u8; 512];
        ner5[500..504].copy_from_slice(b"NER5");
        assert_eq!(probe_tail(&ner5), Probed::NotRead(NotRead::Nrg));
        let mut nero = vec![0u8; 512];
        nero[504..508].copy_from_slice(b"NERO");
        assert_eq!(probe_tail(&nero), Probed::NotRead(NotRead::Nrg));

        let mut files = MemoryFiles::new();
        let mut ewf = b"LVF\x09\x0d\x0a\xff\x00".to_vec();
        ewf.resize(1024, 0);
        files.insert(PathBuf::from("e.L01"), std::sync::Arc::from(ewf));
        let e = open_in_memory(Path::new("e.L01"), &files, &OpenOptions::default()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported);
        assert!(e.to_string().contains("EWF logical"), "{e}");
        assert!(!e.to_string().contains("no known"), "{e}");
    }

    #[test]
    fn raw_cd_sectors_are_read_as_user_data() {
        let mut d = vec![0u8; 17 * 2352];
        d[..12].copy_from_slice(&cd_raw::SYNC);
        let s16 = 16 * 2352;
        d[s16..s16 + 12].copy_from_slice(&cd_raw::SYNC);
        d[s16 + 15] = 1;
        d[s16 + 16..s16 + 22].copy_from_slice(b"\x01CD001");
        let mut files = MemoryFiles::new();
        files.insert(PathBuf::from("track01"), std::sync::Arc::from(d));
        let opts = OpenOptions::default();
        let img = open_in_memory(Path::new("track01"), &files, &opts).unwrap();
        assert_eq!(img.format(), Format::Iso);
        assert_eq!((img.info().size, img.info().sector_size), (17 * 2048, 2048));
        assert_eq!(
            img.info().subformat.as_deref(),
            Some("ISO 9660 in raw MODE1/2352 sectors")
        );
    }

    #[test]
    fn udf_with_4k_blocks_is_a_raw_disk() {
        let mut d = vec![0u8; 0x20000];
        for (i, id) in [b"BEA01", b"NSR03", b"TEA01"].iter().enumerate() {
            let o = 0x8000 + i * 4096;
            d[o + 1..o + 6].copy_from_slice(*id);
        }
        let mut files = MemoryFiles::new();
        files.insert(PathBuf::from("u.iso"), std::sync::Arc::from(d));
        let img = open_in_memory(Path::new("u.iso"), &files, &OpenOptions::default()).unwrap();
        assert_eq!((img.format(), img.info().sector_size), (Format::Raw, 512));
    }

    #[test]
    fn unknown_bytes_give_an_error_with_what_was_seen() {
        let mut files = MemoryFiles::new();
        files.insert(
            PathBuf::from("x.bin2"),
            std::sync::Arc::from(vec![7u8; 100]),
        );
        files.insert(PathBuf::from("empty"), std::sync::Arc::from(Vec::new()));
        let opts = OpenOptions::default();
        let e = open_in_memory(Path::new("x.bin2"), &files, &opts).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotThisFormat);
        assert!(e.to_string().contains("at 0x0: 07 07"), "{e}");
        let e = open_in_memory(Path::new("empty"), &files, &opts).unwrap_err();
        assert!(e.to_string().contains("empty"), "{e}");
    }
}
