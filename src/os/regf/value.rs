//! Values (`vk` cells) and their data: resident in the offset field, in
//! one cell, or big data (`db`) split over segments.

use diskimage_formats::bytes::{has_at, le_u16, le_u32, le_u64};
use diskimage_formats::Detail;

use super::{latin1, utf16, Hive};
use crate::error::Result;

/// `vk` flag: the name is stored as Latin-1.
const VALUE_COMP_NAME: u16 = 0x0001;
/// Offset of the name in a `vk` cell.
const VK_NAME: usize = 20;
/// Data-size bit saying the data sits in the offset field itself.
const RESIDENT: u32 = 0x8000_0000;
/// Most bytes one big-data segment holds.
pub(crate) const DB_SEGMENT: usize = 16344;

/// The registry's value types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueType {
    /// `REG_NONE` (0).
    None,
    /// `REG_SZ` (1): a UTF-16LE string.
    Sz,
    /// `REG_EXPAND_SZ` (2): a UTF-16LE string with `%VARIABLES%`.
    ExpandSz,
    /// `REG_BINARY` (3).
    Binary,
    /// `REG_DWORD` (4): little-endian u32.
    Dword,
    /// `REG_DWORD_BIG_ENDIAN` (5).
    DwordBigEndian,
    /// `REG_LINK` (6).
    Link,
    /// `REG_MULTI_SZ` (7): NUL-separated UTF-16LE strings.
    MultiSz,
    /// `REG_QWORD` (11): little-endian u64.
    Qword,
    /// Any other type number.
    Other(u32),
}

impl ValueType {
    fn from_u32(t: u32) -> Self {
        match t {
            0 => ValueType::None,
            1 => ValueType::Sz,
            2 => ValueType::ExpandSz,
            3 => ValueType::Binary,
            4 => ValueType::Dword,
            5 => ValueType::DwordBigEndian,
            6 => ValueType::Link,
            7 => ValueType::MultiSz,
            11 => ValueType::Qword,
            t => ValueType::Other(t),
        }
    }
}

/// A value's data, decoded by its type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueData {
    /// `REG_SZ`, up to the first NUL.
    Sz(String),
    /// `REG_EXPAND_SZ`, unexpanded.
    ExpandSz(String),
    /// `REG_MULTI_SZ`, the strings in order.
    MultiSz(Vec<String>),
    /// `REG_DWORD` (and `REG_DWORD_BIG_ENDIAN`).
    Dword(u32),
    /// `REG_QWORD`.
    Qword(u64),
    /// `REG_BINARY`, and any type not decoded: the raw bytes.
    Binary(Vec<u8>),
}

/// One value of a key.
#[derive(Debug, Clone, Copy)]
pub struct Value<'h> {
    hive: &'h Hive,
    offset: u32,
    cell: &'h [u8],
}

impl<'h> Value<'h> {
    pub(crate) fn at(hive: &'h Hive, offset: u32) -> Result<Self> {
        let cell = hive.cell(offset)?;
        let abs = Hive::abs(offset) + 4;
        if !has_at(cell, 0, b"vk") {
            return Err(hive.error(
                abs,
                Detail::BadSignature {
                    what: "value cell",
                    expected: "vk".into(),
                    found: super::hex(cell.get(..2).unwrap_or(cell)),
                },
            ));
        }
        let name_len = usize::from(le_u16(cell, 2).unwrap_or(u16::MAX));
        if VK_NAME + name_len > cell.len() {
            return Err(hive.error(
                abs,
                Detail::Truncated {
                    what: "value cell with its name".into(),
                    needed: (VK_NAME + name_len) as u64,
                    available: cell.len() as u64,
                },
            ));
        }
        Ok(Value { hive, offset, cell })
    }

    /// The value's name (`""` for the key's default value).
    pub fn name(&self) -> String {
        let len = usize::from(le_u16(self.cell, 2).unwrap_or(0));
        let raw = self.cell.get(VK_NAME..VK_NAME + len).unwrap_or(&[]);
        if le_u16(self.cell, 16).unwrap_or(0) & VALUE_COMP_NAME != 0 {
            latin1(raw)
        } else {
            utf16(raw)
        }
    }

    /// The stored type.
    pub fn value_type(&self) -> ValueType {
        ValueType::from_u32(le_u32(self.cell, 12).unwrap_or(0))
    }

    /// The raw data bytes.
    pub fn raw(&self) -> Result<Vec<u8>> {
        let hive = self.hive;
        let abs = Hive::abs(self.offset) + 4;
        let size_field = le_u32(self.cell, 4).unwrap_or(0);
        let data_off = le_u32(self.cell, 8).unwrap_or(0);
        if size_field & RESIDENT != 0 {
            let len = (size_field & !RESIDENT) as usize;
            if len > 4 {
                return Err(hive.error(
                    abs + 4,
                    Detail::BadValue {
                        field: "resident value data size",
                        value: len as u64,
                        expected: "at most 4".into(),
                    },
                ));
            }
            return Ok(data_off.to_le_bytes().get(..len).unwrap_or(&[]).to_vec());
        }
        let len = size_field as usize;
        if len == 0 {
            return Ok(Vec::new());
        }
        if len > hive.len() {
            // No value holds more bytes than the whole hive: refuse before
            // anything is allocated for it.
            return Err(hive.error(
                abs + 4,
                Detail::BadValue {
                    field: "value data size",
                    value: len as u64,
                    expected: format!("at most the hive's {} bytes", hive.len()),
                },
            ));
        }
        let cell = hive.cell(data_off)?;
        if len > DB_SEGMENT && hive.minor_version() >= 4 && has_at(cell, 0, b"db") {
            return self.big_data(data_off, cell, len);
        }
        cell.get(..len).map(<[u8]>::to_vec).ok_or_else(|| {
            hive.error(
                Hive::abs(data_off) + 4,
                Detail::Truncated {
                    what: "value data cell".into(),
                    needed: len as u64,
                    available: cell.len() as u64,
                },
            )
        })
    }

    /// Data split over the segments of a `db` record.
    fn big_data(&self, db_off: u32, db: &[u8], len: usize) -> Result<Vec<u8>> {
        let hive = self.hive;
        let abs = Hive::abs(db_off) + 4;
        let segments = usize::from(le_u16(db, 2).unwrap_or(0));
        if segments.saturating_mul(DB_SEGMENT) < len {
            return Err(hive.error(
                abs,
                Detail::BadValue {
                    field: "big data segment count",
                    value: segments as u64,
                    expected: format!("enough segments for {len} bytes"),
                },
            ));
        }
        let list_off = le_u32(db, 4).unwrap_or(u32::MAX);
        let list = hive.cell(list_off)?;
        if segments * 4 > list.len() {
            return Err(hive.error(
                Hive::abs(list_off) + 4,
                Detail::Truncated {
                    what: "big data segment list".into(),
                    needed: (segments * 4) as u64,
                    available: list.len() as u64,
                },
            ));
        }
        let mut out = Vec::with_capacity(len);
        for i in 0..segments {
            if out.len() >= len {
                break;
            }
            let seg_off = le_u32(list, i * 4).unwrap_or(u32::MAX);
            let seg = hive.cell(seg_off)?;
            let want = (len - out.len()).min(DB_SEGMENT).min(seg.len());
            out.extend_from_slice(seg.get(..want).unwrap_or(&[]));
        }
        if out.len() < len {
            return Err(hive.error(
                abs,
                Detail::Truncated {
                    what: "big data".into(),
                    needed: len as u64,
                    available: out.len() as u64,
                },
            ));
        }
        Ok(out)
    }

    /// The data, decoded by type.
    pub fn data(&self) -> Result<ValueData> {
        let raw = self.raw()?;
        Ok(match self.value_type() {
            ValueType::Sz => ValueData::Sz(utf16(&raw)),
            ValueType::ExpandSz => ValueData::ExpandSz(utf16(&raw)),
            ValueType::MultiSz => ValueData::MultiSz(multi_sz(&raw)),
            ValueType::Dword if raw.len() >= 4 => ValueData::Dword(le_u32(&raw, 0).unwrap_or(0)),
            ValueType::DwordBigEndian if raw.len() >= 4 => {
                ValueData::Dword(diskimage_formats::bytes::be_u32(&raw, 0).unwrap_or(0))
            }
            ValueType::Qword if raw.len() >= 8 => ValueData::Qword(le_u64(&raw, 0).unwrap_or(0)),
            _ => ValueData::Binary(raw),
        })
    }

    /// The data as a string (`REG_SZ`, `REG_EXPAND_SZ`, the first string of
    /// a `REG_MULTI_SZ`, a number in decimal), `None` for binary data.
    pub fn string(&self) -> Result<Option<String>> {
        Ok(match self.data()? {
            ValueData::Sz(s) | ValueData::ExpandSz(s) => Some(s),
            ValueData::MultiSz(v) => v.into_iter().next(),
            ValueData::Dword(d) => Some(d.to_string()),
            ValueData::Qword(q) => Some(q.to_string()),
            ValueData::Binary(_) => None,
        })
    }

    /// The data as a number (`REG_DWORD`, `REG_QWORD`, or a decimal string).
    pub fn number(&self) -> Result<Option<u64>> {
        Ok(match self.data()? {
            ValueData::Dword(d) => Some(u64::from(d)),
            ValueData::Qword(q) => Some(q),
            ValueData::Sz(s) | ValueData::ExpandSz(s) => s.trim().parse().ok(),
            _ => None,
        })
    }
}

/// The strings of a `REG_MULTI_SZ`: NUL-separated, ending at an empty one.
fn multi_sz(raw: &[u8]) -> Vec<String> {
    let units: Vec<u16> = raw
        .chunks_exact(2)
        .filter_map(|c| <[u8; 2]>::try_from(c).ok())
        .map(u16::from_le_bytes)
        .collect();
    units
        .split(|&u| u == 0)
        .take_while(|s| !s.is_empty())
        .map(String::from_utf16_lossy)
        .collect()
}
