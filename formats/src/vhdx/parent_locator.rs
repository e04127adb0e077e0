//! The parent locator of a differencing VHDX ([MS-VHDX] 2.6.2.6) and the
//! checks made on the parent it leads to.
//!
//! The locator is a list of UTF-16LE key/value pairs: `parent_linkage`
//! (the parent's DataWriteGuid when the child was made), `parent_linkage2`,
//! `relative_path`, `volume_path` and `absolute_win32_path`.

use crate::error::{Detail, Error, Format, Result};

use super::fields::{le_u16, le_u32, Guid};

/// The locator type of VHDX parents.
pub(crate) const VHDX_LOCATOR_TYPE: Guid = Guid::from_fields(
    0xB04A_EFB7,
    0xD19E,
    0x4A81,
    [0xB7, 0x89, 0x25, 0xB8, 0xE9, 0x44, 0x59, 0x13],
);
/// Size of the locator header (type GUID, reserved, count).
const HEADER_SIZE: usize = 20;
/// Size of one key/value entry.
const ENTRY_SIZE: usize = 12;
/// Keys whose values are paths to the parent, in the order they are tried.
pub(crate) const PATH_KEYS: [&str; 3] = ["relative_path", "volume_path", "absolute_win32_path"];

/// A parsed parent locator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParentLocator {
    /// `LocatorType`.
    pub(crate) locator_type: Guid,
    /// The key/value pairs in file order.
    pub(crate) entries: Vec<(String, String)>,
    /// Where each value is in the file (offset, bytes), as `entries`.
    pub(crate) value_spans: Vec<(u64, u64)>,
}

impl ParentLocator {
    /// The value of `key`, if present.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Where the value of `key` is in the file (offset, bytes).
    pub(crate) fn value_span(&self, key: &str) -> Option<(u64, u64)> {
        let i = self.entries.iter().position(|(k, _)| k == key)?;
        self.value_spans.get(i).copied()
    }

    /// The parent paths to try, most specific first.
    pub(crate) fn hints(&self) -> Vec<String> {
        PATH_KEYS
            .iter()
            .filter_map(|k| self.get(k))
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// Whether the parent's DataWriteGuid, as text, is one the child's
    /// `parent_linkage` or `parent_linkage2` names (braces and case ignored).
    pub(crate) fn links_to(&self, data_write_guid: &str) -> bool {
        let want = data_write_guid.trim_matches(|c| c == '{' || c == '}');
        ["parent_linkage", "parent_linkage2"]
            .iter()
            .filter_map(|k| self.get(k))
            .any(|v| {
                v.trim()
                    .trim_matches(|c| c == '{' || c == '}')
                    .eq_ignore_ascii_case(want)
            })
    }
}

use crate::bytes::utf16le as utf16;

/// Parses a locator item read at file offset `at`.
pub(crate) fn parse(item: &[u8], at: u64) -> Result<ParentLocator> {
    let corrupt = |what: String| Err(Error::corrupt(Format::Vhdx, Detail::Invalid(what)).at(at));
    if item.len() < HEADER_SIZE {
        return Err(Error::corrupt(
            Format::Vhdx,
            Detail::Truncated {
                what: "parent locator".into(),
                needed: HEADER_SIZE as u64,
                available: item.len() as u64,
            },
        )
        .at(at));
    }
    let locator_type = Guid::read_le(item, 0);
    if locator_type != VHDX_LOCATOR_TYPE {
        return Err(Error::unsupported(
            Format::Vhdx,
            format!("parent locator type {{{locator_type}}} (only the VHDX locator type is read)"),
        )
        .at(at));
    }
    let count = usize::from(le_u16(item, 18));
    if HEADER_SIZE + count * ENTRY_SIZE > item.len() {
        return corrupt(format!(
            "parent locator has {count} entries, more than its {} bytes hold",
            item.len()
        ));
    }
    let mut entries = Vec::with_capacity(count);
    let mut value_spans = Vec::with_capacity(count);
    for i in 0..count {
        let e = HEADER_SIZE + i * ENTRY_SIZE;
        let key_offset = le_u32(item, e) as usize;
        let value_offset = le_u32(item, e + 4) as usize;
        let key_length = usize::from(le_u16(item, e + 8));
        let value_length = usize::from(le_u16(item, e + 10));
        let key = key_offset
            .checked_add(key_length)
            .and_then(|end| item.get(key_offset..end));
        let value = value_offset
            .checked_add(value_length)
            .and_then(|end| item.get(value_offset..end));
        let (Some(key), Some(value)) = (key, value) else {
            return corrupt(format!(
                "parent locator entry {i} points outside the {} bytes of the locator",
                item.len()
            ));
        };
        if key.is_empty() {
            return corrupt(format!("parent locator entry {i} has an empty key"));
        }
        let key = utf16(key);
        if entries.iter().any(|(k, _): &(String, String)| *k == key) {
            return corrupt(format!("parent locator key {key} appears twice"));
        }
        entries.push((key, utf16(value)));
        value_spans.push((at + value_offset as u64, value_length as u64));
    }
    Ok(ParentLocator {
        locator_type,
        entries,
        value_spans,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn golden() -> Vec<u8> {
        let pairs = [
            ("parent_linkage", "{22222222-2222-2222-2222-222222222222}"),
            ("relative_path", ".\\base.vhdx"),
            ("absolute_win32_path", "C:\\vm\\base.vhdx"),
        ];
        let mut b = vec![0u8; HEADER_SIZE + ENTRY_SIZE * pairs.len()];
        b[..16].copy_from_slice(&VHDX_LOCATOR_TYPE.0);
        b[18..20].copy_from_slice(&(pairs.len() as u16).to_le_bytes());
        for (i, (k, v)) in pairs.iter().enumerate() {
            let enc = |s: &str| {
                s.encode_utf16()
                    .flat_map(u16::to_le_bytes)
                    .collect::<Vec<u8>>()
            };
            let (k, v) = (enc(k), enc(v));
            let e = HEADER_SIZE + i * ENTRY_SIZE;
            let ko = b.len();
            b.extend_from_slice(&k);
            let vo = b.len();
            b.extend_from_slice(&v);
            b[e..e + 4].copy_from_slice(&(ko as u32).to_le_bytes());
            b[e + 4..e + 8].copy_from_slice(&(vo as u32).to_le_bytes());
            b[e + 8..e + 10].copy_from_slice(&(k.len() as u16).to_le_bytes());
            b[e + 10..e + 12].copy_from_slice(&(v.len() as u16).to_le_bytes());
        }
        b
    }

    #[test]
    fn golden_locator_parses_and_links() {
        let l = parse(&golden(), 0).unwrap();
        assert_eq!(l.get("relative_path"), Some(".\\base.vhdx"));
        assert_eq!(l.hints(), vec![".\\base.vhdx", "C:\\vm\\base.vhdx"]);
        assert!(l.links_to(&Guid([0x22; 16]).to_string()));
        assert!(!l.links_to(&Guid([0x23; 16]).to_string()));
    }

    #[test]
    fn one_field_mutations_give_the_exact_error() {
        let cases: [(usize, u8, ErrorKind, &str); 4] = [
            (0, 0, ErrorKind::Unsupported, "locator type"),
            (19, 9, ErrorKind::Corrupt, "entries"),
            (HEADER_SIZE + 3, 1, ErrorKind::Corrupt, "outside"),
            (HEADER_SIZE + 8, 0, ErrorKind::Corrupt, "empty key"),
        ];
        for (byte, value, kind, text) in cases {
            let mut b = golden();
            b[byte] = value;
            let e = parse(&b, 0x100).unwrap_err();
            assert_eq!(e.kind(), kind, "byte {byte}: {e}");
            assert!(e.to_string().contains(text), "{e}");
            assert_eq!(e.offset(), Some(0x100));
        }
    }
}
