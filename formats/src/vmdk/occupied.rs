//! Where a hosted sparse extent opened for writing keeps its metadata and
//! the grains written in place, so that no write lands on bytes something
//! else owns.
//!
//! Reading a damaged extent only returns what its tables point at; writing
//! into one could overwrite a grain table, the directory or another grain
//! and make earlier writes read back wrong. The writer therefore refuses
//! an extent whose metadata overlaps, or reaches past the end of the file,
//! and refuses an in-place write whose grain overlaps metadata, lies
//! outside the data area, or shares bytes with another grain written in
//! place (two table entries naming the same sectors).

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{Detail, Error, Result};
use crate::Format;

/// One metadata structure: byte range and name.
#[derive(Debug, Clone, Copy)]
struct Region {
    start: u64,
    end: u64,
    what: &'static str,
    /// Its index (grain table number), for the error text.
    index: u64,
}

/// The extent's metadata ranges (sorted, disjoint), its data area, and the
/// grains written in place so far.
#[derive(Debug)]
pub(super) struct Occupied {
    regions: Vec<Region>,
    /// Bytes of the file when it was opened: in-place grains lie below.
    file_len: u64,
    /// Start of the data area (`overHead` in bytes, at least one sector).
    data_start: u64,
    /// Start byte of each grain written in place or appended -> its grain
    /// number. Bounded by the grains the file holds.
    written: BTreeMap<u64, u64>,
}

fn overlap(path: &Path, at: u64, text: String) -> Error {
    Error::corrupt(Format::Vmdk, Detail::Invalid(text))
        .at(at)
        .in_file(path)
}

impl Occupied {
    /// Collects and checks the metadata of an extent of `file_len` bytes:
    /// `fixed` holds the header, descriptor and directories (byte start,
    /// length, name); `tables` the grain tables' start bytes.
    pub(super) fn new(
        path: &Path,
        file_len: u64,
        data_start: u64,
        fixed: &[(u64, u64, &'static str)],
        tables: impl IntoIterator<Item = (u64, u64)>,
        table_bytes: u64,
    ) -> Result<Self> {
        let mut regions: Vec<Region> = fixed
            .iter()
            .filter(|(_, len, _)| *len > 0)
            .map(|&(start, len, what)| Region {
                start,
                end: start.saturating_add(len),
                what,
                index: 0,
            })
            .collect();
        regions.extend(tables.into_iter().map(|(index, start)| Region {
            start,
            end: start.saturating_add(table_bytes),
            what: "grain table",
            index,
        }));
        regions.sort_by_key(|r| (r.start, r.end));
        for r in &regions {
            if r.end > file_len {
                return Err(Error::out_of_range(
                    Format::Vmdk,
                    r.what,
                    r.start,
                    r.end - r.start,
                    file_len,
                )
                .in_file(path));
            }
        }
        for pair in regions.windows(2) {
            if let [a, b] = pair {
                if b.start < a.end {
                    return Err(overlap(
                        path,
                        b.start,
                        format!(
                            "{} {} at {:#x} overlaps {} {} at {:#x}: writing into this extent would overwrite its own metadata",
                            b.what, b.index, b.start, a.what, a.index, a.start
                        ),
                    ));
                }
            }
        }
        Ok(Occupied {
            regions,
            file_len,
            data_start: data_start.max(512),
            written: BTreeMap::new(),
        })
    }

    /// Records grain `g`, appended at byte `start` past the end of the file
    /// as it was opened: later writes go there in place.
    pub(super) fn appended(&mut self, g: u64, start: u64) {
        self.written.insert(start, g);
    }

    /// Checks that grain `g`, stored at byte `start` for `grain` bytes, may
    /// be written in place, and records it.
    pub(super) fn claim_in_place(
        &mut self,
        path: &Path,
        g: u64,
        start: u64,
        grain: u64,
    ) -> Result<()> {
        if self.written.get(&start) == Some(&g) {
            return Ok(());
        }
        let end = start.saturating_add(grain);
        if start < self.data_start || end > self.file_len {
            return Err(Error::bad_value(
                Format::Vmdk,
                "grain table entry",
                start / 512,
                format!(
                    "a grain inside the data area, sectors {}..{}",
                    self.data_start / 512,
                    self.file_len / 512
                ),
            )
            .in_file(path));
        }
        let i = self.regions.partition_point(|r| r.end <= start);
        if let Some(r) = self.regions.get(i).filter(|r| r.start < end) {
            return Err(overlap(
                path,
                start,
                format!(
                    "grain {g} at {start:#x} overlaps {} {} at {:#x}",
                    r.what, r.index, r.start
                ),
            ));
        }
        let low = start.saturating_sub(grain.saturating_sub(1));
        if let Some((&other_at, &other)) = self.written.range(low..end).next() {
            return Err(overlap(
                path,
                start,
                format!(
                    "grains {other} and {g} share bytes (at {other_at:#x} and {start:#x}): their grain table entries overlap"
                ),
            ));
        }
        self.written.insert(start, g);
        Ok(())
    }
}
