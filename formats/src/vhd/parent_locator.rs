//! The parent locators of a differencing VHD ("Parent Locator Entry"):
//! where the parent's path is stored and how it is encoded, turned into the
//! hints [`OpenContext::open_parent`](crate::OpenContext::open_parent) tries.
//!
//! | code | encoding | path |
//! |---|---|---|
//! | `W2ru` | UTF-16 little-endian | relative to the child (Windows) |
//! | `W2ku` | UTF-16 little-endian | absolute (Windows) |
//! | `Wi2r`, `Wi2k` | deprecated: single-byte (ANSI) text, UTF-16 little-endian seen too | relative / absolute |
//! | `MacX` | UTF-8 file URL (`file://localhost/...`) | absolute (macOS) |
//! | `Mac ` | a Mac OS alias record | not decoded, shown only |

use crate::error::{Detail, Error, Format, Result};
use crate::image_file::ImageFile;

use super::dynamic_header::ParentLocatorEntry;
use super::footer::four_cc;

/// The longest platform data read for one locator: 64 KiB (Windows paths
/// are at most 32,767 UTF-16 units).
pub const MAX_LOCATOR_DATA: u32 = 64 << 10;

/// One decoded parent locator, as `info` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParentLocator {
    /// The platform code as text (`W2ru`, `MacX` ...).
    pub code: String,
    /// The path it names, when the encoding is known.
    pub path: Option<String>,
    /// Whether the path is relative to the child (`W2ru`, `Wi2r`).
    pub relative: bool,
    /// Where the platform data is in the file.
    pub offset: u64,
    /// How many bytes of platform data there are.
    pub length: u32,
}

/// Reads and decodes every locator entry of a dynamic header.
pub(crate) fn read_locators(
    file: &ImageFile,
    entries: &[ParentLocatorEntry],
) -> Result<Vec<ParentLocator>> {
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        let length = e.platform_data_length;
        if length > MAX_LOCATOR_DATA {
            return Err(Error::limit(
                Format::Vhd,
                "parent locator data length",
                u64::from(length),
                u64::from(MAX_LOCATOR_DATA),
            )
            .in_file(file.path()));
        }
        let data = file
            .read_vec(e.platform_data_offset, u64::from(length))
            .map_err(|err| {
                Error::corrupt(
                    Format::Vhd,
                    Detail::OutOfRange {
                        what: "parent locator data",
                        offset: e.platform_data_offset,
                        len: u64::from(length),
                        size: file.len(),
                    },
                )
                .at(err.offset().unwrap_or(e.platform_data_offset))
                .in_file(file.path())
            })?;
        let code = &e.platform_code;
        let path = match code {
            b"W2ru" | b"W2ku" => Some(utf16le(&data)),
            b"Wi2r" | b"Wi2k" => Some(deprecated_windows(&data)),
            b"MacX" => Some(file_url_path(&String::from_utf8_lossy(&data))),
            _ => None,
        }
        .filter(|p| !p.is_empty());
        out.push(ParentLocator {
            code: four_cc(*code),
            path,
            relative: matches!(code, b"W2ru" | b"Wi2r"),
            offset: e.platform_data_offset,
            length,
        });
    }
    Ok(out)
}

/// The hints for parent resolution: relative locators, then absolute ones,
/// then the parent's Unicode name from the dynamic header.
pub(crate) fn parent_hints(locators: &[ParentLocator], unicode_name: &str) -> Vec<String> {
    let mut hints: Vec<String> = Vec::new();
    let ordered = locators
        .iter()
        .filter(|l| l.relative)
        .chain(locators.iter().filter(|l| !l.relative));
    for path in ordered
        .filter_map(|l| l.path.clone())
        .chain(Some(unicode_name.to_owned()).filter(|n| !n.is_empty()))
    {
        if !hints.contains(&path) {
            hints.push(path);
        }
    }
    hints
}

use crate::bytes::utf16le_to_nul as utf16le;

/// Deprecated `Wi2r`/`Wi2k` data: UTF-16LE when every second byte is zero,
/// otherwise single-byte text (read as Latin-1).
fn deprecated_windows(data: &[u8]) -> String {
    let looks_utf16 = data.len() >= 2
        && data.get(1) == Some(&0)
        && data
            .chunks_exact(2)
            .all(|c| c.get(1) == Some(&0) || c == [0, 0]);
    if looks_utf16 {
        return utf16le(data);
    }
    data.iter()
        .take_while(|&&b| b != 0)
        .map(|&b| char::from(b))
        .collect()
}

/// The path of a `file://host/path` URL, percent-escapes decoded.
fn file_url_path(url: &str) -> String {
    let url = url.trim_end_matches('\0');
    let rest = match url.strip_prefix("file://") {
        Some(r) => r.find('/').map_or("", |i| r.get(i..).unwrap_or_default()),
        None => url,
    };
    let bytes = rest.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b, hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn entry(code: &[u8; 4], offset: u64, len: u32) -> ParentLocatorEntry {
        ParentLocatorEntry {
            platform_code: *code,
            platform_data_space: 512,
            platform_data_length: len,
            platform_data_offset: offset,
        }
    }

    #[test]
    fn every_platform_code_decodes() {
        let mut data = vec![0u8; 2048];
        let rel: Vec<u8> = ".\\p.vhd"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        data[..rel.len()].copy_from_slice(&rel);
        let abs: Vec<u8> = "C:\\d\\p.vhd"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        data[512..512 + abs.len()].copy_from_slice(&abs);
        let mac = b"file://localhost/Users/a/My%20Disk.vhd";
        data[1024..1024 + mac.len()].copy_from_slice(mac);
        data[1536..1545].copy_from_slice(b"..\\old.vh");
        let f = ImageFile::from_bytes("c.vhd", data);
        let locs = read_locators(
            &f,
            &[
                entry(b"W2ku", 512, abs.len() as u32),
                entry(b"W2ru", 0, rel.len() as u32),
                entry(b"MacX", 1024, mac.len() as u32),
                entry(b"Wi2r", 1536, 9),
                entry(b"Mac ", 1536, 9),
            ],
        )
        .unwrap();
        assert_eq!(locs[0].path.as_deref(), Some("C:\\d\\p.vhd"));
        assert_eq!(locs[2].path.as_deref(), Some("/Users/a/My Disk.vhd"));
        assert_eq!(locs[3].path.as_deref(), Some("..\\old.vh"));
        assert_eq!(locs[4].path, None);
        assert_eq!(
            parent_hints(&locs, "p.vhd"),
            vec![
                ".\\p.vhd",
                "..\\old.vh",
                "C:\\d\\p.vhd",
                "/Users/a/My Disk.vhd",
                "p.vhd"
            ]
        );
    }

    #[test]
    fn locator_past_the_end_or_too_long_is_an_error() {
        let f = ImageFile::from_bytes("c.vhd", vec![0u8; 1024]);
        let e = read_locators(&f, &[entry(b"W2ku", 1000, 100)]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt);
        let e = read_locators(&f, &[entry(b"W2ku", 0, 1 << 20)]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::LimitExceeded);
    }

    #[test]
    fn deprecated_utf16_is_recognised() {
        let d: Vec<u8> = "a.vhd".encode_utf16().flat_map(u16::to_le_bytes).collect();
        assert_eq!(deprecated_windows(&d), "a.vhd");
        assert_eq!(deprecated_windows(b"a.vhd\0\0"), "a.vhd");
    }
}
