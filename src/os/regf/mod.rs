//! A read-only reader of Windows registry hives (the `regf` format), our
//! own: base block, hive bins, cells, keys (`nk`), subkey lists (`lf`,
//! `lh`, `li`, `ri`) and values (`vk`, resident, in one cell, or big data
//! in `db` segments).
//!
//! The hive is held in memory; every cell offset is checked against the
//! hive bins, every count against the cell that holds it, and walks that
//! could loop (index-of-index lists) are bounded, so a damaged or hostile
//! hive gives a typed [`crate::error::Error`] with the hive's name
//! and the byte offset, never a panic.
//!
//! Tolerated and reported ([`Hive::warnings`]): a base-block checksum that
//! does not match, and a *dirty* hive (primary and secondary sequence
//! numbers differ). Transaction logs (`.LOG1`/`.LOG2`) are **not**
//! replayed: a dirty hive is read as it stands on disk, which may miss the
//! last changes Windows made.

mod key;
mod value;

pub use key::Key;
pub use value::{Value, ValueData, ValueType};

use diskimage_formats::bytes::{has_at, le_u32};
use diskimage_formats::Detail;

use crate::error::{Error, Result, Scheme};

/// Size of the base block; hive bins start right after it.
pub const BASE_BLOCK_SIZE: usize = 4096;
/// Largest hive read (real SYSTEM and SOFTWARE hives are well below).
pub const MAX_HIVE_SIZE: u64 = 512 << 20;
/// Deepest index-of-index (`ri`) nesting followed (the format has one level).
pub const MAX_LIST_DEPTH: u32 = 4;

/// An opened hive.
#[derive(Debug, Clone)]
pub struct Hive {
    name: String,
    data: Vec<u8>,
    /// End of the hive bins area (absolute offset in `data`).
    bins_end: usize,
    root: u32,
    minor: u32,
    primary_seq: u32,
    secondary_seq: u32,
    warnings: Vec<String>,
}

impl Hive {
    /// Parses a hive held in `data`; `name` labels errors (a path, usually).
    pub fn new(name: impl Into<String>, data: Vec<u8>) -> Result<Self> {
        let name = name.into();
        let err = |e: Error| e.in_file(name.clone());
        if data.len() as u64 > MAX_HIVE_SIZE {
            return Err(err(Error::limit(
                Scheme::Regf,
                "hive size",
                data.len() as u64,
                MAX_HIVE_SIZE,
            )));
        }
        if !has_at(&data, 0, b"regf") {
            return Err(err(Error::corrupt(
                Scheme::Regf,
                Detail::BadSignature {
                    what: "base block",
                    expected: "regf".into(),
                    found: hex(data.get(..4).unwrap_or(&data)),
                },
            )
            .at(0)));
        }
        if data.len() < BASE_BLOCK_SIZE {
            return Err(err(Error::corrupt(
                Scheme::Regf,
                Detail::Truncated {
                    what: "base block".into(),
                    needed: BASE_BLOCK_SIZE as u64,
                    available: data.len() as u64,
                },
            )
            .at(0)));
        }
        let field = |off: usize| le_u32(&data, off).unwrap_or(0);
        let primary_seq = field(4);
        let secondary_seq = field(8);
        let major = field(20);
        let minor = field(24);
        let root = field(36);
        let bins_size = field(40) as usize;
        if major != 1 {
            return Err(err(Error::unsupported(
                Scheme::Regf,
                format!("hive format major version {major} (only 1 is known)"),
            )
            .at(20)));
        }
        let mut warnings = Vec::new();
        let stored = field(508);
        let computed = checksum(&data);
        if stored != computed {
            warnings.push(format!(
                "{name}: base block checksum: stored {stored:#x}, computed {computed:#x} (read anyway)"
            ));
        }
        if primary_seq != secondary_seq {
            warnings.push(format!(
                "{name}: dirty hive (sequence numbers {primary_seq} and {secondary_seq} differ): \
                 read as is, transaction logs are not replayed"
            ));
        }
        let available = data.len() - BASE_BLOCK_SIZE;
        let bins_end = if bins_size > available {
            warnings.push(format!(
                "{name}: hive bins size {bins_size:#x} is more than the {available:#x} bytes there; \
                 reading what is there"
            ));
            data.len()
        } else {
            BASE_BLOCK_SIZE + bins_size
        };
        if !has_at(&data, BASE_BLOCK_SIZE, b"hbin") {
            return Err(err(Error::corrupt(
                Scheme::Regf,
                Detail::BadSignature {
                    what: "first hive bin",
                    expected: "hbin".into(),
                    found: hex(data
                        .get(BASE_BLOCK_SIZE..BASE_BLOCK_SIZE + 4)
                        .unwrap_or(&[])),
                },
            )
            .at(BASE_BLOCK_SIZE as u64)));
        }
        let hive = Hive {
            name,
            data,
            bins_end,
            root,
            minor,
            primary_seq,
            secondary_seq,
            warnings,
        };
        hive.root_key()?;
        Ok(hive)
    }

    /// The name errors are labelled with.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The hive's size in bytes.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether the hive holds no bytes (never, once opened).
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Whether the hive was not cleanly written (sequence numbers differ).
    pub fn dirty(&self) -> bool {
        self.primary_seq != self.secondary_seq
    }

    /// Problems tolerated while opening (checksum, dirty hive).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The hive format's minor version (3, 4, 5 or 6).
    pub fn minor_version(&self) -> u32 {
        self.minor
    }

    /// The root key.
    pub fn root_key(&self) -> Result<Key<'_>> {
        Key::at(self, self.root)
    }

    /// The key at `path` (`\`- or `/`-separated, from the root, names
    /// compared ignoring case), or `None` when some part is absent.
    pub fn key(&self, path: &str) -> Result<Option<Key<'_>>> {
        let mut key = self.root_key()?;
        for part in path.split(['\\', '/']).filter(|p| !p.is_empty()) {
            match key.subkey(part)? {
                Some(k) => key = k,
                None => return Ok(None),
            }
        }
        Ok(Some(key))
    }

    /// The value `name` of the key at `path`, when both exist.
    pub fn value(&self, path: &str, name: &str) -> Result<Option<Value<'_>>> {
        match self.key(path)? {
            Some(k) => k.value(name),
            None => Ok(None),
        }
    }

    /// An error of this hive at absolute byte offset `offset`.
    pub(crate) fn error(&self, offset: usize, detail: Detail) -> Error {
        Error::corrupt(Scheme::Regf, detail)
            .at(offset as u64)
            .in_file(self.name.clone())
    }

    /// The data of the cell at hive-bins offset `off` (the size field
    /// excluded), checked against the hive bins.
    pub(crate) fn cell(&self, off: u32) -> Result<&[u8]> {
        let abs = BASE_BLOCK_SIZE.saturating_add(off as usize);
        let Some(size) = le_u32(&self.data, abs).filter(|_| abs + 4 <= self.bins_end) else {
            return Err(self.error(
                abs,
                Detail::OutOfRange {
                    what: "hive bins",
                    offset: abs as u64,
                    len: 4,
                    size: self.bins_end as u64,
                },
            ));
        };
        let len = (size as i32).unsigned_abs() as usize;
        if len < 8 {
            return Err(self.error(
                abs,
                Detail::BadValue {
                    field: "cell size",
                    value: len as u64,
                    expected: "at least 8".into(),
                },
            ));
        }
        let end = abs.saturating_add(len);
        if end > self.bins_end {
            return Err(self.error(
                abs,
                Detail::OutOfRange {
                    what: "hive bins",
                    offset: abs as u64,
                    len: len as u64,
                    size: self.bins_end as u64,
                },
            ));
        }
        self.data
            .get(abs + 4..end)
            .ok_or_else(|| self.error(abs, Detail::Invalid("cell outside the hive".into())))
    }

    /// The absolute offset of the cell at hive-bins offset `off`.
    pub(crate) fn abs(off: u32) -> usize {
        BASE_BLOCK_SIZE.saturating_add(off as usize)
    }
}

/// The base-block checksum: XOR of its first 127 dwords, 0 and -1 avoided.
pub fn checksum(base: &[u8]) -> u32 {
    let mut x = 0u32;
    for i in 0..127 {
        x ^= le_u32(base, i * 4).unwrap_or(0);
    }
    match x {
        0xFFFF_FFFF => 0xFFFF_FFFE,
        0 => 1,
        x => x,
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Decodes UTF-16LE bytes (an odd trailing byte dropped), stopping at the
/// first NUL; unpaired surrogates become U+FFFD.
pub fn utf16(b: &[u8]) -> String {
    diskimage_formats::bytes::utf16le_to_nul(b)
}

/// A name stored as Latin-1 (the "compressed" name flag).
pub(crate) fn latin1(b: &[u8]) -> String {
    b.iter().map(|&c| char::from(c)).collect()
}

/// Whether two registry names are equal ignoring case.
pub(crate) fn name_eq(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b) || a.to_lowercase() == b.to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Appends one allocated cell holding `data` (size rounded to 8) and
    /// returns its hive-bins offset.
    fn cell(bins: &mut Vec<u8>, data: &[u8]) -> u32 {
        let off = bins.len() as u32;
        let size = (4 + data.len()).div_ceil(8) * 8;
        bins.extend_from_slice(&(-(size as i32)).to_le_bytes());
        bins.extend_from_slice(data);
        bins.resize(off as usize + size, 0);
        off
    }

    /// A hive by the format's description (not by hivex, which never
    /// writes `db` records): a root key with a 20000-byte value in two
    /// big-data segments and a 2-byte resident value.
    fn big_data_hive() -> (Vec<u8>, Vec<u8>) {
        let payload: Vec<u8> = (0..20000u32).map(|i| (i % 253) as u8).collect();
        let mut bins = vec![0u8; 0x20];
        bins[..4].copy_from_slice(b"hbin");
        let mut nk = vec![0u8; 76];
        nk[..2].copy_from_slice(b"nk");
        nk[2..4].copy_from_slice(&0x2cu16.to_le_bytes());
        nk[28..32].copy_from_slice(&u32::MAX.to_le_bytes());
        nk[36..40].copy_from_slice(&2u32.to_le_bytes());
        nk[72..74].copy_from_slice(&4u16.to_le_bytes());
        nk.extend_from_slice(b"ROOT");
        let root = cell(&mut bins, &nk);
        let seg1 = cell(&mut bins, &payload[..DB_SEGMENT_FOR_TESTS]);
        let seg2 = cell(&mut bins, &payload[DB_SEGMENT_FOR_TESTS..]);
        let mut list = seg1.to_le_bytes().to_vec();
        list.extend_from_slice(&seg2.to_le_bytes());
        let seg_list = cell(&mut bins, &list);
        let mut db = b"db".to_vec();
        db.extend_from_slice(&2u16.to_le_bytes());
        db.extend_from_slice(&seg_list.to_le_bytes());
        let db = cell(&mut bins, &db);
        let vk = |name: &[u8], size: u32, data: u32| {
            let mut v = vec![0u8; 20];
            v[..2].copy_from_slice(b"vk");
            v[2..4].copy_from_slice(&(name.len() as u16).to_le_bytes());
            v[4..8].copy_from_slice(&size.to_le_bytes());
            v[8..12].copy_from_slice(&data.to_le_bytes());
            v[12..16].copy_from_slice(&3u32.to_le_bytes());
            v[16..18].copy_from_slice(&1u16.to_le_bytes());
            v.extend_from_slice(name);
            v
        };
        let big = cell(&mut bins, &vk(b"Big", 20000, db));
        let res = cell(
            &mut bins,
            &vk(b"Res", 0x8000_0002, u32::from_le_bytes(*b"AB\0\0")),
        );
        let mut values = big.to_le_bytes().to_vec();
        values.extend_from_slice(&res.to_le_bytes());
        let values = cell(&mut bins, &values);
        let nk_abs = root as usize + 4;
        bins[nk_abs + 40..nk_abs + 44].copy_from_slice(&values.to_le_bytes());
        let size = bins.len().div_ceil(4096) * 4096;
        let free = (size - bins.len()) as i32;
        if free > 0 {
            bins.extend_from_slice(&free.to_le_bytes());
            bins.resize(size, 0);
        }
        bins[8..12].copy_from_slice(&(size as u32).to_le_bytes());
        let mut base = vec![0u8; BASE_BLOCK_SIZE];
        base[..4].copy_from_slice(b"regf");
        base[4..8].copy_from_slice(&1u32.to_le_bytes());
        base[8..12].copy_from_slice(&1u32.to_le_bytes());
        base[20..24].copy_from_slice(&1u32.to_le_bytes());
        base[24..28].copy_from_slice(&5u32.to_le_bytes());
        base[36..40].copy_from_slice(&root.to_le_bytes());
        base[40..44].copy_from_slice(&(size as u32).to_le_bytes());
        let sum = checksum(&base);
        base[508..512].copy_from_slice(&sum.to_le_bytes());
        base.extend_from_slice(&bins);
        (base, payload)
    }

    const DB_SEGMENT_FOR_TESTS: usize = value::DB_SEGMENT;

    #[test]
    fn big_data_in_db_segments_and_resident_data() {
        let (hive, payload) = big_data_hive();
        let h = Hive::new("synthetic", hive).unwrap();
        assert!(h.warnings().is_empty(), "{:?}", h.warnings());
        let root = h.root_key().unwrap();
        assert_eq!(root.name(), "ROOT");
        assert_eq!(root.value("big").unwrap().unwrap().raw().unwrap(), payload);
        assert_eq!(root.value("RES").unwrap().unwrap().raw().unwrap(), b"AB");
    }

    #[test]
    fn a_short_segment_list_or_oversized_resident_data_is_an_error() {
        let (mut hive, _) = big_data_hive();
        // The db record claims one segment only: not enough for 20000 bytes.
        let db = hive.windows(4).position(|w| w == b"db\x02\x00").unwrap();
        hive[db + 2] = 1;
        let h = Hive::new("synthetic", hive).unwrap();
        let e = h.value("", "Big").unwrap().unwrap().raw().unwrap_err();
        assert_eq!(e.kind(), crate::error::ErrorKind::Corrupt);
        assert!(e.to_string().contains("in synthetic at"), "{e}");
        assert!(e.to_string().contains("segment count"), "{e}");
        // Resident data longer than the 4 bytes of the offset field.
        let (mut hive, _) = big_data_hive();
        let vk = hive.windows(3).position(|w| w == b"Res").unwrap() - 20;
        hive[vk + 4..vk + 8].copy_from_slice(&0x8000_0005u32.to_le_bytes());
        let h = Hive::new("synthetic", hive).unwrap();
        let e = h.value("", "Res").unwrap().unwrap().raw().unwrap_err();
        assert!(e.to_string().contains("resident value data size"), "{e}");
    }
}
