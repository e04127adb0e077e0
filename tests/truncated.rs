//! Truncated images: a file system whose image ends before the volume does.
//!
//! Each image of `fixtures/filesystems/` (FAT12/16/32, exFAT, NTFS,
//! ext2/3/4) and an ISO 9660 of `fixtures/iso/` is cut short at fifteen
//! points (sixteenths of its size) and every file of its listing (taken
//! from the source tree by the fixture scripts) is read through the
//! library: a read must give exactly the file's bytes (its sha256) or fail
//! with a typed error naming the offset, never short or zeroed data. The
//! cut with the most failures is then written to a file and read through
//! the CLI: `cat` of a file that failed exits 1, and `extract` exits 1,
//! names each file it could not read, and writes the others intact.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use diskimage::formats::MemoryDevice;
use diskimage::fs::{open_fs, ErrorKind as FsErrorKind};
use diskimage::{BlockDevice, SliceDevice};

use crate::common::{diskimage, gunzip_bytes, listing_tsv, repo, sha256_bytes, sha256_file, ListingRow};

/// (compressed image, its listing) under `fixtures/`.
const IMAGES: &[(&str, &str)] = &[
    ("filesystems/fat12.img.gz", "filesystems/fat12.img.listing.tsv"),
    ("filesystems/fat16.img.gz", "filesystems/fat16.img.listing.tsv"),
    ("filesystems/fat32.img.gz", "filesystems/fat32.img.listing.tsv"),
    ("filesystems/exfat.img.gz", "filesystems/exfat.img.listing.tsv"),
    ("filesystems/ntfs.img.gz", "filesystems/ntfs.img.listing.tsv"),
    ("filesystems/ext2.img.gz", "filesystems/ext2.img.listing.tsv"),
    ("filesystems/ext3.img.gz", "filesystems/ext3.img.listing.tsv"),
    ("filesystems/ext4.img.gz", "filesystems/ext4.img.listing.tsv"),
    ("iso/plain.iso.gz", "iso/plain.iso.listing.tsv"),
];

/// Cut points: this many parts of the image, every boundary but the ends.
const PARTS: u64 = 16;

/// What reading every file of one cut gave.
#[derive(Default)]
struct CutResult {
    /// The cut, in bytes.
    len: u64,
    /// Files read whole and right.
    good: Vec<String>,
    /// Files whose read failed, with the error.
    failed: Vec<(String, String)>,
}

/// Regular, non-empty files of a listing (streams and links are left out).
fn files(listing: &BTreeMap<String, ListingRow>) -> Vec<(&String, &ListingRow)> {
    listing
        .iter()
        .filter(|(p, r)| r.ty == "file" && r.size > 0 && !p.contains(':'))
        .collect()
}

/// Reads every file of `listing` from the first `len` bytes of `whole`.
/// `Err` when the file system does not open at all (a typed error is
/// checked by the caller); a wrong or short read panics.
fn read_cut(
    whole: &Arc<dyn BlockDevice>,
    len: u64,
    listing: &BTreeMap<String, ListingRow>,
    name: &str,
) -> Result<CutResult, diskimage::fs::Error> {
    let dev: Arc<dyn BlockDevice> = Arc::new(SliceDevice::new(whole.clone(), 0, len).expect("cut"));
    let fs = open_fs(dev)?;
    let mut out = CutResult {
        len,
        ..CutResult::default()
    };
    for (path, row) in files(listing) {
        let read = fs.open(path).and_then(|mut r| {
            let mut data = Vec::new();
            r.read_to_end(&mut data)
                .map_err(|e| diskimage::fs::Error::from_io(diskimage::fs::FsName::Detect, path, e))?;
            Ok(data)
        });
        match read {
            Ok(data) => {
                assert_eq!(
                    (data.len() as u64, sha256_bytes(&data)),
                    (row.size, row.sha256.clone()),
                    "{name} cut at {len}: {path} read without an error but its bytes are wrong \
                     (short, zeroed or misplaced)"
                );
                out.good.push(path.clone());
            }
            Err(e) => {
                check_typed(&e, name, len, path);
                out.failed.push((path.clone(), e.to_string()));
            }
        }
    }
    Ok(out)
}

/// A read that fails on a cut image fails with a typed error naming a
/// byte offset: the device's out-of-bounds error, or the reader's
/// corrupt error at an offset (a pointer past the end of the volume).
fn check_typed(e: &diskimage::fs::Error, name: &str, len: u64, path: &str) {
    let text = e.to_string();
    match e.kind() {
        FsErrorKind::Device => {
            if let diskimage::fs::Error::Device(d) = e {
                assert_eq!(
                    d.kind(),
                    diskimage::ErrorKind::OutOfBounds,
                    "{name} cut at {len}: {path}: {text}"
                );
                assert!(d.offset().is_some(), "{name} cut at {len}: {path}: no offset: {text}");
            }
        }
        FsErrorKind::Corrupt => {}
        other => panic!("{name} cut at {len}: {path}: unexpected error kind {other:?}: {text}"),
    }
    assert!(text.contains("0x"), "{name} cut at {len}: {path}: the error names no offset: {text}");
}

#[test]
fn truncated_images_fail_reads_past_the_end_never_short_data() {
    let work = tempfile::tempdir().expect("tempdir");
    let mut problems = Vec::new();
    for (gz, listing) in IMAGES {
        let name = gz.trim_end_matches(".gz");
        let bytes = gunzip_bytes(&repo().join("fixtures").join(gz));
        let listing = listing_tsv(&repo().join("fixtures").join(listing));
        let size = bytes.len() as u64;
        let whole: Arc<dyn BlockDevice> = Arc::new(MemoryDevice::new(bytes.clone()));
        let mut best: Option<CutResult> = None;
        for k in 1..PARTS {
            let len = size * k / PARTS / 512 * 512;
            match read_cut(&whole, len, &listing, name) {
                Ok(r) => {
                    if best.as_ref().is_none_or(|b| r.failed.len() > b.failed.len()) {
                        best = Some(r);
                    }
                }
                Err(e) => check_typed(&e, name, len, "/"),
            }
        }
        let Some(best) = best.filter(|b| !b.failed.is_empty()) else {
            problems.push(format!("{name}: no cut opened with a file past its end"));
            continue;
        };
        problems.extend(check_cli(name, &bytes[..best.len as usize], &best, &listing, work.path()));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The CLI on the cut `bytes` of `name`: `cat` of a failing file and
/// `extract` of the whole tree.
fn check_cli(
    name: &str,
    bytes: &[u8],
    cut: &CutResult,
    listing: &BTreeMap<String, ListingRow>,
    work: &Path,
) -> Vec<String> {
    let mut problems = Vec::new();
    let base = name.replace('/', "_");
    let img = work.join(format!("{base}.cut"));
    std::fs::write(&img, bytes).expect("write cut image");
    let img_s = img.to_str().expect("utf-8 path");
    let (path, why) = &cut.failed[0];
    let out = diskimage(&["cat", img_s, path]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() || !stderr.contains("error") {
        problems.push(format!(
            "{name} cut at {}: cat {path} (library: {why}) exited {:?}, stderr {stderr}",
            cut.len,
            out.status.code()
        ));
    }
    if let Some(row) = listing.get(path) {
        if sha256_bytes(&out.stdout) == row.sha256 {
            problems.push(format!("{name}: cat {path} gave the whole file yet the library failed"));
        }
    }
    let dest = work.join(format!("{base}.out"));
    let out = diskimage(&["extract", "-o", dest.to_str().expect("utf-8"), img_s]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() != Some(1) || !stderr.contains("could not be read") {
        problems.push(format!(
            "{name} cut at {}: extract exited {:?} without reporting failures: {stderr}",
            cut.len,
            out.status.code()
        ));
    }
    for (p, _) in &cut.failed {
        if !stderr.contains(p.as_str()) {
            problems.push(format!("{name} cut at {}: extract did not name {p}: {stderr}", cut.len));
        }
    }
    // What extract reports as written must be right.
    for p in &cut.good {
        let host = dest.join(p.trim_start_matches('/'));
        let Some(row) = listing.get(p) else { continue };
        if host.exists() && sha256_file(&host) != row.sha256 {
            problems.push(format!("{name}: extract wrote {p} with wrong bytes"));
        }
    }
    problems
}
