//! The one ordered probe that decides an input's format by its content,
//! and [`open`], the entry point of the crate.
//!
//! Order (first match wins; the file name's extension is only a hint):
//! 1. `OpenOptions::format`, when the caller forces a reader;
//! 2. magic numbers at offset 0: `KDMV`, `COWD` and seSparse (VMDK extents),
//!    `vhdxfile` (VHDX), `QFI\xfb` (QCOW2), the VDI signature, `EVF` (EWF);
//! 3. VMDK descriptor text (`# Disk DescriptorFile`, or `createType=` near the start);
//! 4. a VHD footer (`conectix`) in the last 512 (or 511) bytes, or its copy at 0;
//! 5. an optical-disc recognition sequence at sector 16 (0x8000), or an
//!    `.iso` name, in which case the ISO rules say what is wrong;
//! 6. a numbered split-raw part name (`disk.001`);
//! 7. raw, when the start holds a partition table or file system
//!    (`55 AA` boot signature, `EFI PART`, ext, XFS, Btrfs, LVM, LUKS, swap)
//!    or the name ends in a raw extension (`.img`, `.raw`, `.dd`, ...).
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
use crate::{iso, qcow2, raw, vhd, vhdx, vmdk};

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
    /// Nothing matched; the name hints at this format.
    Hint(Format),
    /// Nothing matched and the name gives no hint.
    Unknown,
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
}

impl ProbeBytes {
    /// Reads what the probe needs from `file`.
    pub fn read(file: &ImageFile) -> Result<Self> {
        let len = file.len();
        Ok(ProbeBytes {
            head: file.read_up_to(0, HEAD_LEN)?,
            sector16: file.read_up_to(iso::VRS_START_SECTOR * iso::SECTOR, 8)?,
            tail: file.read_up_to(len.saturating_sub(512), 512)?,
        })
    }
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

/// Whether the start of a disk holds a partition table or a file system.
pub fn looks_like_disk(head: &[u8]) -> bool {
    at(head, 510, &[0x55, 0xAA])
        || at(head, 512, b"EFI PART")
        || at(head, 1080, &[0x53, 0xEF])
        || at(head, 0, b"XFSB")
        || at(head, 0, b"LUKS\xba\xbe")
        || at(head, 4086, b"SWAPSPACE2")
        || (0..4).any(|s| at(head, s * 512, b"LABELONE"))
}

/// Decides the format from the probe bytes and the file name.
pub fn detect(bytes: &ProbeBytes, len: u64, path: &Path) -> Probed {
    let head = &bytes.head;
    let magic: [(&[u8], usize, Format); 7] = [
        (b"KDMV", 0, Format::Vmdk),
        (b"COWD", 0, Format::Vmdk),
        (&[0xbe, 0xba, 0xfe, 0xca, 0, 0, 0, 0], 0, Format::Vmdk),
        (b"vhdxfile", 0, Format::Vhdx),
        (b"QFI\xfb", 0, Format::Qcow2),
        (&[0x7f, 0x10, 0xda, 0xbe], 0x40, Format::Vdi),
        (b"conectix", 0, Format::Vhd),
    ];
    let tail = &bytes.tail;
    let footer_512 = tail.len() == 512 && at(tail, 0, b"conectix");
    let footer_511 = tail.len() == 512 && at(tail, 1, b"conectix");
    if footer_512 || footer_511 {
        return Probed::Format(Format::Vhd);
    }
    if let Some((_, _, f)) = magic.iter().find(|(m, o, _)| at(head, *o, m)) {
        return Probed::Format(*f);
    }
    if looks_like_descriptor(head) {
        return Probed::Format(Format::Vmdk);
    }
    if iso::looks_like_iso(&bytes.sector16) {
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
        Format::Iso => iso::open(file),
        Format::Vhd => vhd::open(ctx, file),
        Format::Vhdx => vhdx::open(ctx, file),
        Format::Vmdk => vmdk::open(ctx, file),
        Format::Qcow2 => qcow2::open(ctx, file),
        Format::Vdi => Err(Error::unsupported(
            format,
            format!("{format} images are recognised but not read by this version"),
        )),
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
            sector16: Vec::new(),
            tail: d[1536..].to_vec(),
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
