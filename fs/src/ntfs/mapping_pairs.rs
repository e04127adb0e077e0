//! Mapping-pairs arrays: the data runs of a non-resident attribute.

use super::record::bad;
use super::MAX_RUNS;
use crate::error::{Error, FsName, Result};

const FS: FsName = FsName::Ntfs;
use crate::runs::DataRun;

/// Decodes the mapping-pairs array `pairs` of a piece that starts at VCN
/// `start_vcn`, with clusters of `cluster` bytes. A pair without an LCN
/// field is a sparse run; LCN 0 is a real cluster.
pub fn decode_runs(pairs: &[u8], start_vcn: u64, cluster: u64, path: &str) -> Result<Vec<DataRun>> {
    let mut runs = Vec::new();
    let mut pos = 0usize;
    let mut lcn: i64 = 0;
    let mut vcn = start_vcn;
    while let Some(&header) = pairs.get(pos) {
        if header == 0 {
            break;
        }
        if runs.len() >= MAX_RUNS {
            return Err(Error::limit(
                FS,
                Some(path),
                format!("more than {MAX_RUNS} data runs"),
            ));
        }
        let (len_n, off_n) = (usize::from(header & 0x0F), usize::from(header >> 4));
        if len_n == 0 || len_n > 8 || off_n > 8 {
            return Err(bad(
                path,
                format!("data run header {header:#04x} at mapping-pairs offset {pos}"),
            ));
        }
        let field = |from: usize, n: usize| -> Option<[u8; 8]> {
            let src = pairs.get(from..from.checked_add(n)?)?;
            let mut b = [0u8; 8];
            b.get_mut(..n)?.copy_from_slice(src);
            Some(b)
        };
        let count = field(pos + 1, len_n)
            .map(u64::from_le_bytes)
            .ok_or_else(|| bad(path, "mapping pairs end inside a data run"))?;
        let delta = match off_n {
            0 => None,
            n => {
                let raw = field(pos + 1 + len_n, n)
                    .ok_or_else(|| bad(path, "mapping pairs end inside a data run"))?;
                let shift = 64 - 8 * n as u32;
                Some(
                    i64::from_le_bytes(raw)
                        .wrapping_shl(shift)
                        .wrapping_shr(shift),
                )
            }
        };
        if count == 0 || (count as i64) < 0 {
            return Err(bad(
                path,
                format!("data run of {count} clusters at mapping-pairs offset {pos}"),
            ));
        }
        let len = count
            .checked_mul(cluster)
            .ok_or_else(|| bad(path, format!("data run of {count} clusters")))?;
        let lcn_byte = match delta {
            None => None,
            Some(d) => {
                lcn = lcn.checked_add(d).filter(|l| *l >= 0).ok_or_else(|| {
                    bad(
                        path,
                        format!("data run to a negative cluster at mapping-pairs offset {pos}"),
                    )
                })?;
                Some(
                    (lcn as u64)
                        .checked_mul(cluster)
                        .ok_or_else(|| bad(path, format!("data run at cluster {lcn}")))?,
                )
            }
        };
        let vcn_byte = vcn
            .checked_mul(cluster)
            .ok_or_else(|| bad(path, format!("data run at VCN {vcn}")))?;
        runs.push(DataRun {
            file_offset: vcn_byte,
            len,
            at: lcn_byte,
        });
        vcn = vcn
            .checked_add(count)
            .ok_or_else(|| bad(path, format!("data run at VCN {vcn}")))?;
        pos += 1 + len_n + off_n;
    }
    Ok(runs)
}
