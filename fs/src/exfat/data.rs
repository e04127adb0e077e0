//! A file's data as runs of its clusters, read through the crate's
//! [`RunReader`]. Bytes from ValidDataLength to DataLength read as zeros,
//! without touching the clusters (exFAT specification §7.6.5: their
//! content is undefined).

use std::sync::Arc;

use diskimage_formats::BlockDevice;

use super::boot_sector::BootSector;
use super::cluster_chain::Run;
use super::FS;
use crate::error::Error;
use crate::runs::{DataRun, RunReader};

/// A reader of `size` bytes (the first `valid` of them stored) in the
/// clusters `runs`, which must cover `valid` bytes.
pub fn reader(
    device: Arc<dyn BlockDevice>,
    boot: &BootSector,
    runs: &[Run],
    size: u64,
    valid: u64,
    path: &str,
) -> crate::Result<RunReader> {
    let cluster = boot.cluster_size();
    let mut pieces = Vec::with_capacity(runs.len());
    let mut at = 0u64;
    for r in runs {
        if at >= valid {
            break;
        }
        let len = r.count.saturating_mul(cluster).min(valid - at);
        pieces.push(DataRun {
            file_offset: at,
            len,
            at: Some(boot.cluster_offset(r.first)),
        });
        at += len;
    }
    if at < valid {
        return Err(Error::corrupt(
            FS,
            Some(path),
            format!("clusters hold {at} bytes, ValidDataLength is {valid}"),
        ));
    }
    Ok(RunReader::new(device, pieces, size).valid_to(valid))
}
