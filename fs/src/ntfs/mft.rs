//! Our own reading of MFT records and of the `$DATA` attributes of a file.
//!
//! `ntfs` 0.4 finds an MFT record by the volume position of its first
//! byte and reads the record's size from there, so a record that starts
//! near the end of one `$MFT` data run and goes on in the next (clusters
//! smaller than records on a fragmented `$MFT`) is read from the wrong
//! place. It also takes a data run at cluster 0 for a sparse one (its
//! positions are non-zero integers), so `$Boot` reads as zeros. Here:
//!
//! - [`Mft`] maps `$MFT` record by record through its data runs, split
//!   across runs where a record crosses one; [`Mft::record`] gives a record
//!   with its update sequence (fixups) applied and checked, and
//!   [`Mft::crossing`] tells the volume reader which positions start a
//!   record that crosses a run, so that the crate's own reads of it are
//!   served from the runs too.
//! - [`decode_runs`] decodes a mapping-pairs array: a run with no LCN
//!   field is sparse, a run whose LCN comes to 0 is stored at cluster 0.
//! - [`Mft::stream`] gathers a `$DATA` attribute from the base record and,
//!   through `$ATTRIBUTE_LIST`, from the extension records (each read with
//!   its fixups), piece by piece by starting VCN, as The Sleuth Kit does.

use std::collections::HashMap;
use std::io::Read;
use std::sync::Arc;

use diskimage_formats::bytes::le_u64;
use diskimage_formats::BlockDevice;

use super::data::RunReader;
pub use super::mapping_pairs::decode_runs;
pub use super::record::{
    attributes, fixed_up, Attr, Body, NonResident, ATTR_DATA, ATTR_LIST, ATTR_REPARSE_POINT,
    FLAG_COMPRESSED, FLAG_ENCRYPTED, FLAG_SPARSE,
};
use super::record::{bad, check_record, list_entries};
use crate::error::{Error, FsName, Result};
use crate::runs::DataRun;

const FS: FsName = FsName::Ntfs;

/// Largest `$ATTRIBUTE_LIST` read, in bytes (the format keeps it under 256 KiB).
pub const MAX_ATTR_LIST: u64 = 1 << 20;
/// Most extension records read for one file.
pub const MAX_EXTENSIONS: usize = 4096;
/// Most data runs of one attribute.
pub const MAX_RUNS: usize = super::MAX_RUNS;

/// A `$DATA` stream gathered from every piece of it.
#[derive(Debug, Clone)]
pub struct Stream {
    /// Its size in bytes.
    pub size: u64,
    /// Bytes stored; the rest up to `size` read as zeros.
    pub initialized: u64,
    /// Attribute flags of the first piece.
    pub flags: u16,
    /// Compression unit exponent of the first piece.
    pub unit_exp: u8,
    /// The value.
    pub data: StreamData,
}

/// The value of a [`Stream`].
#[derive(Debug, Clone)]
pub enum StreamData {
    /// Held in the record.
    Resident(Vec<u8>),
    /// In these runs (byte offsets within the value).
    Runs(Vec<DataRun>),
}

/// `$MFT` mapped through its data runs.
pub struct Mft {
    device: Arc<dyn BlockDevice>,
    cluster: u64,
    record_size: usize,
    runs: Vec<DataRun>,
    /// Volume offset of the first byte of each record that crosses from
    /// one run into the next, and the record's number.
    crossings: HashMap<u64, u64>,
}

impl std::fmt::Debug for Mft {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mft")
            .field("cluster", &self.cluster)
            .field("record_size", &self.record_size)
            .field("runs", &self.runs)
            .finish()
    }
}

impl Mft {
    /// Maps `$MFT` from its own record, at volume offset `mft_offset`, on a
    /// volume of `cluster`-byte clusters and `record_size`-byte records.
    pub fn open(
        device: Arc<dyn BlockDevice>,
        cluster: u64,
        record_size: usize,
        mft_offset: u64,
    ) -> Result<Self> {
        let path = "/$MFT";
        if !(256..=65536).contains(&record_size) || cluster == 0 {
            return Err(bad(path, format!("MFT records of {record_size} bytes")));
        }
        let mut raw = vec![0u8; record_size];
        device
            .read_at(&mut raw, mft_offset)
            .map_err(|e| bad(path, format!("record 0 unreadable: {e}")).at(mft_offset))?;
        let rec = check_record(&raw, 0, path).map_err(|e| e.at(mft_offset))?;
        // The first run (in the record itself) is enough to reach the
        // extension records an $ATTRIBUTE_LIST of $MFT names.
        let first = attributes(&rec, path)?
            .into_iter()
            .find_map(|a| match a.body {
                Body::NonResident(n) if a.ty == ATTR_DATA && a.name.is_empty() => {
                    Some(decode_runs(n.pairs, n.start_vcn, cluster, path))
                }
                _ => None,
            })
            .ok_or_else(|| bad(path, "$MFT has no non-resident $DATA"))??;
        let mut mft = Mft {
            device,
            cluster,
            record_size,
            runs: first,
            crossings: HashMap::new(),
        };
        if let Some(s) = mft.stream(0, &rec, "", path)? {
            if let StreamData::Runs(runs) = s.data {
                mft.runs = runs;
            }
        }
        mft.crossings = crossings(&mft.runs, record_size as u64);
        Ok(mft)
    }

    /// The raw bytes of record `n`, read run by run.
    pub fn raw_record(&self, n: u64) -> Result<Vec<u8>> {
        let path = format!("/$MFT record {n}");
        let rs = self.record_size as u64;
        let (start, end) = n
            .checked_mul(rs)
            .and_then(|s| Some((s, s.checked_add(rs)?)))
            .ok_or_else(|| bad(&path, "record number out of range"))?;
        let mut out = vec![0u8; self.record_size];
        let mut covered = 0u64;
        for r in &self.runs {
            let (s, e) = (
                r.file_offset.max(start),
                r.file_offset.saturating_add(r.len).min(end),
            );
            if s >= e {
                continue;
            }
            let Some(at) = r.at else {
                return Err(bad(&path, "record lies in a sparse run of $MFT"));
            };
            let d = (s - start) as usize;
            let from = at
                .checked_add(s - r.file_offset)
                .ok_or_else(|| bad(&path, "record lies past the end of the volume"))?;
            let dst = out
                .get_mut(d..d + (e - s) as usize)
                .ok_or_else(|| bad(&path, "data runs of $MFT overlap"))?;
            self.device
                .read_at(dst, from)
                .map_err(|err| bad(&path, format!("unreadable: {err}")).at(from))?;
            covered += e - s;
        }
        if covered != rs {
            return Err(bad(&path, "record lies past the data runs of $MFT"));
        }
        Ok(out)
    }

    /// Record `n` with its update sequence applied and checked.
    pub fn record(&self, n: u64) -> Result<Vec<u8>> {
        let raw = self.raw_record(n)?;
        check_record(&raw, n, &format!("/$MFT record {n}"))
    }

    /// If a read of one record's size at volume offset `pos` is the read of
    /// a record that crosses from one `$MFT` run into the next, the number
    /// of that record.
    pub fn crossing(&self, pos: u64) -> Option<u64> {
        self.crossings.get(&pos).copied()
    }

    /// The `$DATA` stream `name` ("": the unnamed one) of the file whose
    /// base record, number `num`, is `base` (fixups applied); `None` when
    /// it has no such stream. Pieces in extension records are found
    /// through its `$ATTRIBUTE_LIST`.
    pub fn stream(&self, num: u64, base: &[u8], name: &str, path: &str) -> Result<Option<Stream>> {
        self.attribute(num, base, ATTR_DATA, name, path)
    }

    /// The attribute of type `ty` named `name` of the file whose base
    /// record, number `num`, is `base`, gathered as [`Mft::stream`] does.
    pub fn attribute(
        &self,
        num: u64,
        base: &[u8],
        ty: u32,
        name: &str,
        path: &str,
    ) -> Result<Option<Stream>> {
        let attrs = attributes(base, path)?;
        let Some(list_attr) = attrs.iter().find(|a| a.ty == ATTR_LIST) else {
            let pieces: Vec<Attr<'_>> = pick(attrs, ty, name, |a| (a.ty, a.name.as_str()));
            return assemble(&pieces, self.cluster, path);
        };
        let list = self.attr_list(list_attr, path)?;
        let entries = list_entries(&list, path)?;
        let entries = pick(entries, ty, name, |e| (e.ty, e.name.as_str()));
        let mut records: HashMap<u64, Vec<u8>> = HashMap::new();
        for e in &entries {
            if e.record != num && !records.contains_key(&e.record) {
                if records.len() >= MAX_EXTENSIONS {
                    return Err(Error::limit(
                        FS,
                        Some(path),
                        format!("more than {MAX_EXTENSIONS} extension records"),
                    ));
                }
                let rec = self.record(e.record)?;
                let base_ref = le_u64(&rec, 0x20).unwrap_or(0) & 0xFFFF_FFFF_FFFF;
                if base_ref != num {
                    return Err(bad(
                        path,
                        format!(
                            "$ATTRIBUTE_LIST names record {} whose base record is {base_ref}, not {num}",
                            e.record
                        ),
                    ));
                }
                records.insert(e.record, rec);
            }
        }
        let mut pieces = Vec::new();
        for e in &entries {
            let rec = if e.record == num {
                base
            } else {
                records.get(&e.record).map_or(&[][..], Vec::as_slice)
            };
            let attr = attributes(rec, path)?
                .into_iter()
                .find(|a| a.ty == e.ty && a.id == e.id)
                .ok_or_else(|| {
                    bad(
                        path,
                        format!(
                            "$ATTRIBUTE_LIST names attribute {} of record {}, which it lacks",
                            e.id, e.record
                        ),
                    )
                })?;
            pieces.push(attr);
        }
        assemble(&pieces, self.cluster, path)
    }

    /// The names of the named `$DATA` streams of the file whose base record,
    /// number `num`, is `base`.
    pub fn stream_names(&self, base: &[u8], path: &str) -> Result<Vec<String>> {
        let attrs = attributes(base, path)?;
        let names: Vec<String> = match attrs.iter().find(|a| a.ty == ATTR_LIST) {
            Some(list_attr) => {
                let list = self.attr_list(list_attr, path)?;
                list_entries(&list, path)?
                    .into_iter()
                    .filter(|e| e.ty == ATTR_DATA)
                    .map(|e| e.name)
                    .collect()
            }
            None => attrs
                .into_iter()
                .filter(|a| a.ty == ATTR_DATA)
                .map(|a| a.name)
                .collect(),
        };
        let mut out: Vec<String> = Vec::new();
        for n in names {
            if !n.is_empty() && !out.contains(&n) {
                out.push(n);
            }
        }
        Ok(out)
    }

    /// The bytes of an `$ATTRIBUTE_LIST` attribute.
    fn attr_list(&self, a: &Attr<'_>, path: &str) -> Result<Vec<u8>> {
        match &a.body {
            Body::Resident(v) => Ok(v.to_vec()),
            Body::NonResident(n) => {
                if n.size > MAX_ATTR_LIST {
                    return Err(Error::limit(
                        FS,
                        Some(path),
                        format!("$ATTRIBUTE_LIST of {} bytes", n.size),
                    ));
                }
                let runs = decode_runs(n.pairs, 0, self.cluster, path)?;
                let mut out = Vec::new();
                RunReader::new(
                    Arc::clone(&self.device),
                    runs,
                    n.size,
                    n.initialized,
                    None,
                    path,
                )?
                .read_to_end(&mut out)
                .map_err(|e| Error::from_io(FS, path, e))?;
                Ok(out)
            }
        }
    }
}

/// The records that cross from one of `runs` into the next (records of
/// `rs` bytes): volume offset of the first byte and record number.
fn crossings(runs: &[DataRun], rs: u64) -> HashMap<u64, u64> {
    let mut out = HashMap::new();
    for r in runs {
        let (Some(at), Some(end)) = (r.at, r.file_offset.checked_add(r.len)) else {
            continue;
        };
        // The last record that starts in this run, if it ends past it.
        let Some(last) = end.checked_sub(1).map(|b| b - b % rs) else {
            continue;
        };
        if last >= r.file_offset && last.checked_add(rs).is_none_or(|e| e > end) {
            if let Some(pos) = at.checked_add(last - r.file_offset) {
                out.insert(pos, last / rs);
            }
        }
    }
    out
}

/// The items of type `ty` of `items` named `name`: exactly, else ignoring
/// case (stream names are looked up case-insensitively, as Windows does).
fn pick<T>(items: Vec<T>, ty: u32, name: &str, key: impl Fn(&T) -> (u32, &str)) -> Vec<T> {
    let want = ty;
    let exact = items.iter().any(|i| key(i) == (want, name));
    let upper = name.to_uppercase();
    items
        .into_iter()
        .filter(|i| {
            let (ty, n) = key(i);
            ty == want
                && if exact {
                    n == name
                } else {
                    n.to_uppercase() == upper
                }
        })
        .collect()
}

/// One stream from its pieces (`$DATA` attributes of one name).
fn assemble(pieces: &[Attr<'_>], cluster: u64, path: &str) -> Result<Option<Stream>> {
    let Some(first) = pieces.first() else {
        return Ok(None);
    };
    if let Body::Resident(v) = first.body {
        if pieces.len() > 1 {
            return Err(bad(path, "a resident $DATA attribute in several pieces"));
        }
        return Ok(Some(Stream {
            size: v.len() as u64,
            initialized: v.len() as u64,
            flags: first.flags,
            unit_exp: 0,
            data: StreamData::Resident(v.to_vec()),
        }));
    }
    let mut nr: Vec<(&NonResident<'_>, u16)> = Vec::with_capacity(pieces.len());
    for p in pieces {
        match &p.body {
            Body::NonResident(n) => nr.push((n, p.flags)),
            Body::Resident(_) => {
                return Err(bad(path, "a $DATA attribute both resident and in pieces"))
            }
        }
    }
    nr.sort_by_key(|(n, _)| n.start_vcn);
    let Some(&(head, flags)) = nr.first() else {
        return Ok(None);
    };
    if head.start_vcn != 0 {
        return Err(bad(
            path,
            format!("the first piece of $DATA starts at VCN {}", head.start_vcn),
        ));
    }
    let mut runs: Vec<DataRun> = Vec::new();
    let mut next_vcn = 0u64;
    for (n, _) in &nr {
        if n.start_vcn < next_vcn {
            return Err(bad(
                path,
                format!("pieces of $DATA overlap at VCN {}", n.start_vcn),
            ));
        }
        let piece = decode_runs(n.pairs, n.start_vcn, cluster, path)?;
        if runs.len() + piece.len() > MAX_RUNS {
            return Err(Error::limit(
                FS,
                Some(path),
                format!("more than {MAX_RUNS} data runs"),
            ));
        }
        next_vcn = n.last_vcn.saturating_add(1).max(n.start_vcn);
        runs.extend(piece);
    }
    Ok(Some(Stream {
        size: head.size,
        initialized: head.initialized.min(head.size),
        flags,
        unit_exp: head.unit_exp,
        data: StreamData::Runs(runs),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lcn_zero_is_stored_and_no_lcn_is_sparse() {
        // 16 clusters at LCN 0 (offset field 0x00), then 8 sparse clusters,
        // then 4 clusters 0x10 further on.
        let pairs = [0x11, 16, 0, 0x01, 8, 0x11, 4, 0x10, 0];
        let runs = decode_runs(&pairs, 0, 512, "/x").unwrap();
        assert_eq!(
            runs,
            vec![
                DataRun {
                    file_offset: 0,
                    len: 16 * 512,
                    at: Some(0)
                },
                DataRun {
                    file_offset: 16 * 512,
                    len: 8 * 512,
                    at: None
                },
                DataRun {
                    file_offset: 24 * 512,
                    len: 4 * 512,
                    at: Some(16 * 512)
                },
            ]
        );
    }

    #[test]
    fn records_crossing_runs_are_found() {
        // $MFT of frag_mft.img: 1,023 clusters of 512 bytes, then 23, then
        // 32: record 511 starts 1,022 clusters in and crosses into the
        // second run; the second run ends on a record boundary.
        let runs = [
            DataRun {
                file_offset: 0,
                len: 1023 * 512,
                at: Some(32 * 512),
            },
            DataRun {
                file_offset: 1023 * 512,
                len: 23 * 512,
                at: Some(2605 * 512),
            },
            DataRun {
                file_offset: 1046 * 512,
                len: 32 * 512,
                at: Some(2657 * 512),
            },
        ];
        let c = crossings(&runs, 1024);
        assert_eq!(c.len(), 1);
        assert_eq!(c.get(&((32 + 1022) * 512)), Some(&511));
        // A record larger than a whole run: it starts in neither of the
        // later ones' interiors, so only its start is a crossing.
        let runs = [
            DataRun {
                file_offset: 0,
                len: 512,
                at: Some(8192),
            },
            DataRun {
                file_offset: 512,
                len: 512,
                at: Some(512),
            },
        ];
        assert_eq!(crossings(&runs, 1024).get(&8192), Some(&0));
    }

    /// A 1,024-byte record (no update sequence) holding `attrs` from 0x38.
    fn record(attrs: &[&[u8]]) -> Vec<u8> {
        let mut rec = vec![0u8; 1024];
        rec[..4].copy_from_slice(b"FILE");
        rec[0x14..0x16].copy_from_slice(&0x38u16.to_le_bytes());
        let mut off = 0x38;
        for a in attrs {
            rec[off..off + a.len()].copy_from_slice(a);
            off += a.len();
        }
        rec[off..off + 4].copy_from_slice(&0xFFFF_FFFFu32.to_le_bytes());
        rec[0x18..0x1C].copy_from_slice(&(off as u32 + 8).to_le_bytes());
        rec
    }

    /// A resident attribute of type `ty`, id `id`, holding `value`.
    fn resident(ty: u32, id: u16, value: &[u8]) -> Vec<u8> {
        let len = (0x18 + value.len() + 7) & !7;
        let mut a = vec![0u8; len];
        a[..4].copy_from_slice(&ty.to_le_bytes());
        a[4..8].copy_from_slice(&(len as u32).to_le_bytes());
        a[0x0E..0x10].copy_from_slice(&id.to_le_bytes());
        a[0x10..0x14].copy_from_slice(&(value.len() as u32).to_le_bytes());
        a[0x14..0x16].copy_from_slice(&0x18u16.to_le_bytes());
        a[0x18..0x18 + value.len()].copy_from_slice(value);
        a
    }

    #[test]
    fn attributes_are_bounded_by_their_record() {
        let data = resident(ATTR_DATA, 1, b"hello");
        let rec = record(&[&data]);
        let attrs = attributes(&rec, "/x").unwrap();
        assert_eq!(attrs.len(), 1);
        assert!(matches!(attrs[0].body, Body::Resident(b"hello")));
        // A length of zero (an endless loop if trusted), a length past the
        // record, a value past its attribute: errors.
        for (at, bytes) in [(4usize, 0u32), (4, 4096), (0x10, 4000)] {
            let mut bad = data.clone();
            bad[at..at + 4].copy_from_slice(&bytes.to_le_bytes());
            assert!(attributes(&record(&[&bad]), "/x").is_err(), "{at} {bytes}");
        }
    }

    #[test]
    fn attribute_list_entries_are_checked() {
        let mut e = vec![0u8; 0x20];
        e[..4].copy_from_slice(&ATTR_DATA.to_le_bytes());
        e[4..6].copy_from_slice(&0x20u16.to_le_bytes());
        e[0x10..0x18].copy_from_slice(&70u64.to_le_bytes());
        e[0x18..0x1A].copy_from_slice(&3u16.to_le_bytes());
        let got = list_entries(&e, "/x").unwrap();
        assert_eq!((got[0].record, got[0].id), (70, 3));
        for len in [0u16, 0x19, 0x40] {
            e[4..6].copy_from_slice(&len.to_le_bytes());
            assert!(list_entries(&e, "/x").is_err(), "{len}");
        }
    }

    #[test]
    fn pieces_must_start_at_vcn_0_and_not_overlap() {
        let piece = |start: u64, last: u64| {
            let mut a = vec![0u8; 0x48];
            a[..4].copy_from_slice(&ATTR_DATA.to_le_bytes());
            a[4..8].copy_from_slice(&0x48u32.to_le_bytes());
            a[8] = 1;
            a[0x10..0x18].copy_from_slice(&start.to_le_bytes());
            a[0x18..0x20].copy_from_slice(&last.to_le_bytes());
            a[0x20..0x22].copy_from_slice(&0x40u16.to_le_bytes());
            a[0x30..0x38].copy_from_slice(&4096u64.to_le_bytes());
            a[0x38..0x40].copy_from_slice(&4096u64.to_le_bytes());
            // (last - start + 1) clusters at LCN 100.
            a[0x40..0x43].copy_from_slice(&[0x11, (last - start + 1) as u8, 100]);
            a
        };
        let (a, b) = (piece(0, 3), piece(4, 7));
        let rec = record(&[&a, &b]);
        let s = assemble(&attributes(&rec, "/x").unwrap(), 512, "/x")
            .unwrap()
            .unwrap();
        let StreamData::Runs(runs) = s.data else {
            panic!("runs")
        };
        assert_eq!(runs[1].file_offset, 4 * 512);
        let (a, b) = (piece(0, 3), piece(2, 7));
        let rec = record(&[&a, &b]);
        assert!(assemble(&attributes(&rec, "/x").unwrap(), 512, "/x").is_err());
        let rec = record(&[&piece(4, 7)]);
        assert!(assemble(&attributes(&rec, "/x").unwrap(), 512, "/x").is_err());
    }

    #[test]
    fn bad_pairs_are_errors() {
        assert!(decode_runs(&[0x11, 0, 1, 0], 0, 512, "/x").is_err()); // zero length
        assert!(decode_runs(&[0x11, 1, 0xFF, 0], 0, 512, "/x").is_err()); // negative LCN
        assert!(decode_runs(&[0x19, 1], 0, 512, "/x").is_err()); // 9-byte field
        assert!(decode_runs(&[0x21, 1, 5], 0, 512, "/x").is_err()); // cut short
    }

    #[test]
    fn fixups_must_match() {
        let mut rec = vec![0u8; 1024];
        rec[4..6].copy_from_slice(&0x30u16.to_le_bytes());
        rec[6..8].copy_from_slice(&3u16.to_le_bytes());
        rec[0x30..0x36].copy_from_slice(&[0xAB, 0xCD, 1, 2, 3, 4]);
        rec[510..512].copy_from_slice(&[0xAB, 0xCD]);
        rec[1022..1024].copy_from_slice(&[0xAB, 0xCD]);
        let fixed = fixed_up(&rec).unwrap();
        assert_eq!(&fixed[510..512], &[1, 2]);
        assert_eq!(&fixed[1022..1024], &[3, 4]);
        rec[1022] = 0;
        assert_eq!(fixed_up(&rec), None);
    }
}
