//! Keys (`nk` cells) and their subkey lists (`lf`, `lh`, `li`, `ri`).

use diskimage_formats::bytes::{has_at, le_u16, le_u32};
use diskimage_formats::Detail;

use super::value::Value;
use super::{latin1, name_eq, utf16, Hive, MAX_LIST_DEPTH};
use crate::error::Result;

/// `nk` flag: the name is stored as Latin-1, not UTF-16LE.
const KEY_COMP_NAME: u16 = 0x0020;
/// Offset of the name in an `nk` cell.
const NK_NAME: usize = 76;
/// The "no cell" offset.
const NONE: u32 = 0xFFFF_FFFF;

/// One key of a hive.
#[derive(Debug, Clone, Copy)]
pub struct Key<'h> {
    hive: &'h Hive,
    offset: u32,
    cell: &'h [u8],
}

impl<'h> Key<'h> {
    /// The key whose `nk` cell is at hive-bins offset `offset`.
    pub(crate) fn at(hive: &'h Hive, offset: u32) -> Result<Self> {
        let cell = hive.cell(offset)?;
        let abs = Hive::abs(offset) + 4;
        if !has_at(cell, 0, b"nk") {
            return Err(hive.error(
                abs,
                Detail::BadSignature {
                    what: "key cell",
                    expected: "nk".into(),
                    found: super::hex(cell.get(..2).unwrap_or(cell)),
                },
            ));
        }
        let name_len = usize::from(le_u16(cell, 72).unwrap_or(u16::MAX));
        if NK_NAME + name_len > cell.len() {
            return Err(hive.error(
                abs,
                Detail::Truncated {
                    what: "key cell with its name".into(),
                    needed: (NK_NAME + name_len) as u64,
                    available: cell.len() as u64,
                },
            ));
        }
        Ok(Key { hive, offset, cell })
    }

    fn u32_at(&self, off: usize) -> u32 {
        le_u32(self.cell, off).unwrap_or(NONE)
    }

    /// The key's hive-bins offset (its identity within the hive).
    pub fn offset(&self) -> u32 {
        self.offset
    }

    /// The key's name.
    pub fn name(&self) -> String {
        let len = usize::from(le_u16(self.cell, 72).unwrap_or(0));
        let raw = self.cell.get(NK_NAME..NK_NAME + len).unwrap_or(&[]);
        if le_u16(self.cell, 2).unwrap_or(0) & KEY_COMP_NAME != 0 {
            latin1(raw)
        } else {
            utf16(raw)
        }
    }

    /// The last write time, in NT ticks (100 ns since 1601).
    pub fn last_written(&self) -> u64 {
        diskimage_formats::bytes::le_u64(self.cell, 4).unwrap_or(0)
    }

    /// Every subkey, in list order. A damaged hive may list a key among
    /// its own descendants: a walk of the whole tree should skip keys whose
    /// [`Key::offset`] it has already seen.
    pub fn subkeys(&self) -> Result<Vec<Key<'h>>> {
        let count = self.u32_at(20);
        let list = self.u32_at(28);
        let mut offsets = Vec::new();
        if count == 0 || list == NONE {
            return Ok(Vec::new());
        }
        let mut seen = std::collections::HashSet::new();
        self.collect_list(list, 0, &mut seen, &mut offsets)?;
        offsets.iter().map(|&o| Key::at(self.hive, o)).collect()
    }

    /// Offsets of the keys of the list at `list`; `ri` lists recurse
    /// at most [`MAX_LIST_DEPTH`] deep, and a list reached twice is an
    /// error (so the work is bounded by the hive's size).
    fn collect_list(
        &self,
        list: u32,
        depth: u32,
        seen: &mut std::collections::HashSet<u32>,
        out: &mut Vec<u32>,
    ) -> Result<()> {
        let hive = self.hive;
        let abs = Hive::abs(list) + 4;
        if !seen.insert(list) {
            return Err(hive.error(
                abs,
                Detail::Invalid("subkey index list reached twice (a loop)".into()),
            ));
        }
        if depth > MAX_LIST_DEPTH {
            return Err(hive.error(
                abs,
                Detail::Limit {
                    what: "subkey index nesting",
                    value: u64::from(depth),
                    limit: u64::from(MAX_LIST_DEPTH),
                },
            ));
        }
        let cell = hive.cell(list)?;
        let count = usize::from(le_u16(cell, 2).unwrap_or(0));
        let sig = cell.get(..2).unwrap_or(&[]);
        let width = match sig {
            b"lf" | b"lh" => 8,
            b"li" | b"ri" => 4,
            _ => {
                return Err(hive.error(
                    abs,
                    Detail::BadSignature {
                        what: "subkey list",
                        expected: "lf, lh, li or ri".into(),
                        found: super::hex(sig),
                    },
                ))
            }
        };
        if 4 + count * width > cell.len() {
            return Err(hive.error(
                abs,
                Detail::Truncated {
                    what: format!("subkey list of {count} entries"),
                    needed: (4 + count * width) as u64,
                    available: cell.len() as u64,
                },
            ));
        }
        for i in 0..count {
            let off = le_u32(cell, 4 + i * width).unwrap_or(NONE);
            if sig == b"ri" {
                self.collect_list(off, depth + 1, seen, out)?;
            } else {
                out.push(off);
            }
        }
        Ok(())
    }

    /// The subkey called `name` (ignoring case), if any.
    pub fn subkey(&self, name: &str) -> Result<Option<Key<'h>>> {
        for k in self.subkeys()? {
            if name_eq(&k.name(), name) {
                return Ok(Some(k));
            }
        }
        Ok(None)
    }

    /// Every value of the key, in list order.
    pub fn values(&self) -> Result<Vec<Value<'h>>> {
        let count = self.u32_at(36) as usize;
        let list = self.u32_at(40);
        if count == 0 || list == NONE {
            return Ok(Vec::new());
        }
        let cell = self.hive.cell(list)?;
        if count.saturating_mul(4) > cell.len() {
            return Err(self.hive.error(
                Hive::abs(list) + 4,
                Detail::Truncated {
                    what: format!("value list of {count} entries"),
                    needed: count.saturating_mul(4) as u64,
                    available: cell.len() as u64,
                },
            ));
        }
        (0..count)
            .map(|i| Value::at(self.hive, le_u32(cell, i * 4).unwrap_or(NONE)))
            .collect()
    }

    /// The value called `name` (ignoring case; `""` is the default value).
    pub fn value(&self, name: &str) -> Result<Option<Value<'h>>> {
        for v in self.values()? {
            if name_eq(&v.name(), name) {
                return Ok(Some(v));
            }
        }
        Ok(None)
    }
}
