//! Logical reads through the chunk map, tree blocks (checked: checksum,
//! address, fsid, level, key order) and searches over a B-tree.
//!
//! A search visits at most [`MAX_NODE_VISITS`] nodes, and a child's level
//! must be one below its parent's (so depth is at most 8 and a loop of
//! pointers ends); keys out of order are corrupt.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use diskimage_formats::bytes::{array, le_u32, le_u64};
use diskimage_formats::BlockDevice;

use super::chunk::ChunkMap;
use super::items::Key;
use super::superblock::Superblock;
use super::FS;
use crate::error::{Error, Result};

/// Most nodes one search visits.
pub(crate) const MAX_NODE_VISITS: usize = 100_000;
/// Most items one search returns.
pub(crate) const MAX_ITEMS: usize = 1 << 20;
/// Most item bytes one search returns.
pub(crate) const MAX_ITEM_BYTES: usize = 128 << 20;
/// Tree blocks kept in the cache.
const CACHE_NODES: usize = 2048;
const HEADER: usize = 0x65;

/// What one search has used.
#[derive(Default)]
struct Budget {
    visits: usize,
    bytes: usize,
}

/// A tree's root node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Root {
    pub bytenr: u64,
    pub level: u8,
}

/// The volume: its devices by id, superblock, chunk map and a cache of
/// tree blocks.
pub(crate) struct Volume {
    pub devices: BTreeMap<u64, Arc<dyn BlockDevice>>,
    /// The device UUID each device's superblock gives.
    pub dev_uuids: BTreeMap<u64, [u8; 16]>,
    /// The id of the device the volume was opened by.
    pub primary: u64,
    pub sb: Superblock,
    pub chunks: ChunkMap,
    pub strict: bool,
    cache: RefCell<HashMap<u64, Arc<Vec<u8>>>>,
    warnings: RefCell<Vec<String>>,
}

/// A parsed tree block.
struct Node {
    level: u8,
    data: Arc<Vec<u8>>,
    nritems: usize,
}

impl Node {
    fn key(&self, i: usize) -> Option<Key> {
        let at = HEADER + i * if self.level == 0 { 25 } else { 33 };
        Key::parse(&self.data, at)
    }
    /// Leaf item `i`: its data.
    fn item(&self, i: usize) -> Option<&[u8]> {
        let at = HEADER + i * 25;
        let off = le_u32(&self.data, at + 17)? as usize;
        let size = le_u32(&self.data, at + 21)? as usize;
        self.data.get(HEADER + off..HEADER + off.checked_add(size)?)
    }
    /// Internal pointer `i`: the child's address.
    fn child(&self, i: usize) -> Option<u64> {
        le_u64(&self.data, HEADER + i * 33 + 17)
    }
}

impl Volume {
    /// A volume over `devices` (by device id) with `sb` and the chunks
    /// known so far.
    pub fn new(
        devices: BTreeMap<u64, Arc<dyn BlockDevice>>,
        dev_uuids: BTreeMap<u64, [u8; 16]>,
        primary: u64,
        sb: Superblock,
        chunks: ChunkMap,
        strict: bool,
    ) -> Self {
        Volume {
            devices,
            dev_uuids,
            primary,
            sb,
            chunks,
            strict,
            cache: RefCell::new(HashMap::new()),
            warnings: RefCell::new(Vec::new()),
        }
    }

    /// Records a warning (strict mode: returns it as an error instead).
    pub fn warn(&self, e: Error) -> Result<()> {
        if self.strict {
            return Err(e);
        }
        let text = e.to_string();
        let mut w = self.warnings.borrow_mut();
        if w.len() < 1000 && !w.contains(&text) {
            w.push(text);
        }
        Ok(())
    }

    /// Stops reading device `devid` (blocks read from it are forgotten).
    pub fn drop_device(&mut self, devid: u64) {
        self.devices.remove(&devid);
        self.dev_uuids.remove(&devid);
        self.chunks.remove_device(devid);
        self.cache.borrow_mut().clear();
    }

    /// The warnings recorded so far.
    pub fn warnings(&self) -> Vec<String> {
        self.warnings.borrow().clone()
    }

    /// Reads `buf.len()` bytes at logical address `logical` (copy `copy`
    /// of mirrored chunks).
    pub fn read_logical(&self, buf: &mut [u8], logical: u64, copy: usize) -> Result<()> {
        let mut at = 0usize;
        for run in self.chunks.map(logical, buf.len() as u64, copy)? {
            let n = usize::try_from(run.len).unwrap_or(usize::MAX);
            let part = buf
                .get_mut(at..at.saturating_add(n))
                .ok_or_else(|| Error::corrupt(FS, None, "chunk map returned more than asked"))?;
            let device = self.devices.get(&run.devid).ok_or_else(|| {
                Error::corrupt(FS, None, format!("device {} is not open", run.devid))
            })?;
            device.read_at(part, run.offset)?;
            at += n;
        }
        Ok(())
    }

    /// The tree block at `bytenr`, checked; `level` is the level its
    /// parent says it has.
    fn node(&self, bytenr: u64, level: u8, owner_hint: &str) -> Result<Node> {
        let bad = |what: String| {
            Error::corrupt(
                FS,
                None,
                format!("{owner_hint}: tree block {bytenr:#x}: {what}"),
            )
        };
        let cached = self.cache.borrow().get(&bytenr).cloned();
        let (data, checked) = match cached {
            Some(d) => (d, true),
            None => (Arc::new(self.read_block(bytenr, owner_hint)?), false),
        };
        let got_level = data.get(0x64).copied().unwrap_or(0);
        if got_level != level {
            return Err(bad(format!("level {got_level}, its parent says {level}")));
        }
        let nritems = le_u32(&data, 0x60).unwrap_or(0) as usize;
        let node = Node {
            level,
            data,
            nritems,
        };
        if checked {
            return Ok(node);
        }
        let per = if level == 0 { 25 } else { 33 };
        if HEADER + nritems * per > node.data.len() {
            return Err(bad(format!("{nritems} items do not fit")));
        }
        let mut prev: Option<Key> = None;
        for i in 0..nritems {
            let k = node
                .key(i)
                .ok_or_else(|| bad("key past the block".into()))?;
            if prev.is_some_and(|p| p >= k) {
                return Err(bad(format!("keys out of order at item {i}")));
            }
            prev = Some(k);
        }
        // Only checked blocks are cached.
        let mut c = self.cache.borrow_mut();
        if c.len() >= CACHE_NODES {
            c.clear();
        }
        c.insert(bytenr, node.data.clone());
        Ok(node)
    }

    /// Reads and checks one tree block, trying each mirror for a good
    /// checksum; a bad one everywhere is a warning (strict: an error).
    fn read_block(&self, bytenr: u64, owner_hint: &str) -> Result<Vec<u8>> {
        let size = self.sb.nodesize as usize;
        let copies = self.chunks.copies(bytenr);
        let mut first: Option<Vec<u8>> = None;
        for copy in 0..copies {
            let mut b = vec![0u8; size];
            if let Err(e) = self.read_logical(&mut b, bytenr, copy) {
                if first.is_none() && copy + 1 == copies {
                    return Err(e);
                }
                continue;
            }
            let bad = |what: String| {
                Error::corrupt(
                    FS,
                    None,
                    format!("{owner_hint}: tree block {bytenr:#x}: {what}"),
                )
            };
            if le_u64(&b, 0x30) != Some(bytenr) {
                if copy + 1 == copies && first.is_none() {
                    return Err(bad(format!(
                        "header says it is block {:#x}",
                        le_u64(&b, 0x30).unwrap_or(0)
                    )));
                }
                continue;
            }
            if array::<16>(&b, 0x20) != Some(self.sb.meta_fsid) {
                if copy + 1 == copies && first.is_none() {
                    return Err(bad("belongs to another file system (fsid)".into()));
                }
                continue;
            }
            if self.sb.csum_type != 0 || super::superblock::crc_ok(&b) {
                return Ok(b);
            }
            if first.is_none() {
                first = Some(b);
            }
        }
        let b = first.ok_or_else(|| {
            Error::corrupt(
                FS,
                None,
                format!("{owner_hint}: tree block {bytenr:#x} unreadable"),
            )
        })?;
        self.warn(Error::corrupt(
            FS,
            None,
            format!("{owner_hint}: tree block {bytenr:#x}: checksum mismatch in every copy"),
        ))?;
        Ok(b)
    }

    /// Every item of the tree at `root` with a key in `min..=max`, in
    /// key order.
    pub fn items(&self, root: Root, min: Key, max: Key, what: &str) -> Result<Vec<(Key, Vec<u8>)>> {
        let mut out = Vec::new();
        let mut budget = Budget::default();
        self.collect(
            root.bytenr,
            root.level,
            min,
            max,
            None,
            what,
            &mut out,
            &mut budget,
        )?;
        Ok(out)
    }

    /// The item with the greatest key `<= key` whose objectid and type
    /// are those of `key`.
    pub fn last_le(&self, root: Root, key: Key, what: &str) -> Result<Option<(Key, Vec<u8>)>> {
        // Descend: at each internal node the last pointer whose key <= key.
        let mut bytenr = root.bytenr;
        let mut level = root.level;
        for _ in 0..=8 {
            let node = self.node(bytenr, level, what)?;
            if node.nritems == 0 {
                return Ok(None);
            }
            let mut pick = None;
            for i in 0..node.nritems {
                match node.key(i) {
                    Some(k) if k <= key => pick = Some((i, k)),
                    _ => break,
                }
            }
            let Some((i, k)) = pick else {
                return Ok(None);
            };
            if level == 0 {
                if k.objectid != key.objectid || k.ty != key.ty {
                    return Ok(None);
                }
                let data = node.item(i).ok_or_else(|| {
                    Error::corrupt(
                        FS,
                        None,
                        format!("{what}: item {i} of block {bytenr:#x} past the block"),
                    )
                })?;
                return Ok(Some((k, data.to_vec())));
            }
            bytenr = node.child(i).unwrap_or(0);
            level -= 1;
        }
        Err(Error::corrupt(
            FS,
            None,
            format!("{what}: tree deeper than 8 levels"),
        ))
    }

    /// The item with exactly `key`, if any.
    pub fn exact(&self, root: Root, key: Key, what: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .last_le(root, key, what)?
            .filter(|(k, _)| *k == key)
            .map(|(_, d)| d))
    }

    /// Adds the items of the subtree at `bytenr` with keys in
    /// `min..=max` and below `below` (the next key of its parent: a
    /// child holds only keys under it, so a block two pointers share
    /// yields its items once).
    #[allow(clippy::too_many_arguments)]
    fn collect(
        &self,
        bytenr: u64,
        level: u8,
        min: Key,
        max: Key,
        below: Option<Key>,
        what: &str,
        out: &mut Vec<(Key, Vec<u8>)>,
        budget: &mut Budget,
    ) -> Result<()> {
        budget.visits += 1;
        if budget.visits > MAX_NODE_VISITS {
            return Err(Error::limit(
                FS,
                None,
                format!("{what}: a search visits more than {MAX_NODE_VISITS} tree blocks"),
            ));
        }
        let node = self.node(bytenr, level, what)?;
        let beyond = |k: &Key| *k > max || below.is_some_and(|b| *k >= b);
        if level == 0 {
            for i in 0..node.nritems {
                let Some(k) = node.key(i) else { break };
                if k < min {
                    continue;
                }
                if beyond(&k) {
                    break;
                }
                let data = node.item(i).ok_or_else(|| {
                    Error::corrupt(
                        FS,
                        None,
                        format!("{what}: item {i} of block {bytenr:#x} past the block"),
                    )
                })?;
                budget.bytes += data.len();
                if out.len() >= MAX_ITEMS || budget.bytes > MAX_ITEM_BYTES {
                    return Err(Error::limit(
                        FS,
                        None,
                        format!("{what}: more than {MAX_ITEMS} items or {MAX_ITEM_BYTES} bytes"),
                    ));
                }
                out.push((k, data.to_vec()));
            }
            return Ok(());
        }
        for i in 0..node.nritems {
            let Some(k) = node.key(i) else { break };
            if beyond(&k) {
                break;
            }
            // This child covers [k, next key): skip it when next <= min.
            let next = node.key(i + 1).filter(|_| i + 1 < node.nritems);
            if next.is_some_and(|n| n <= min) {
                continue;
            }
            let child_below = match (next, below) {
                (Some(n), Some(b)) => Some(n.min(b)),
                (n, b) => n.or(b),
            };
            let child = node.child(i).unwrap_or(0);
            self.collect(
                child,
                level - 1,
                min.max(k),
                max,
                child_below,
                what,
                out,
                budget,
            )?;
        }
        Ok(())
    }

    /// Where the data at logical `bytenr` (`len` bytes, sector-aligned)
    /// has its crc32c checked against the checksum tree `csum_root`: a
    /// mismatch is a warning (strict: an error); sectors without a
    /// checksum item are not checked.
    pub fn verify_data(
        &self,
        csum_root: Option<Root>,
        bytenr: u64,
        data: &[u8],
        path: &str,
    ) -> Result<()> {
        let Some(root) = csum_root else {
            return Ok(());
        };
        if self.sb.csum_type != 0 {
            return Ok(());
        }
        let sector = u64::from(self.sb.sectorsize);
        if bytenr % sector != 0 {
            return Ok(());
        }
        let nsec = data.len() as u64 / sector;
        let mut s = 0u64;
        while s < nsec {
            let at = bytenr + s * sector;
            let key = Key::new(
                super::items::EXTENT_CSUM_OBJECTID,
                super::items::EXTENT_CSUM,
                at,
            );
            let Some((k, sums)) = self.last_le(root, key, "checksum tree")? else {
                return Ok(());
            };
            let covered = sums.len() as u64 / 4;
            let first = (at - k.offset) / sector;
            if first >= covered {
                // No checksum for this sector: look past it.
                s += 1;
                continue;
            }
            while s < nsec {
                let idx = (bytenr + s * sector - k.offset) / sector;
                if idx >= covered {
                    break;
                }
                let stored = le_u32(&sums, (idx * 4) as usize);
                let lo = (s * sector) as usize;
                let body = data.get(lo..lo + sector as usize).unwrap_or_default();
                let got = diskimage_formats::crc32c::update(0, body);
                if stored != Some(got) {
                    self.warn(Error::corrupt(
                        FS,
                        Some(path),
                        format!(
                            "data checksum mismatch at logical {:#x}",
                            bytenr + s * sector
                        ),
                    ))?;
                }
                s += 1;
            }
        }
        Ok(())
    }
}
