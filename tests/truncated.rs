//! Truncated images: a file system whose image ends before the volume does.
//!
//! Each image of `fixtures/filesystems/` (FAT12/16/32, exFAT, NTFS,
//! ext2/3/4) and an ISO 9660 of `fixtures/iso/` is cut short at many
//! points (a bisection for the shortest cut at which every file still
//! reads, then cuts just below it, and at fractions of the image) and
//! every file of its listing (taken from the source tree by the fixture
//! scripts) met by a walk of the file system is read through the
//! library: a read must give exactly the file's bytes (its sha256) or fail
//! with a typed error naming the offset, never short or zeroed data. The
//! cut with the most failures is then written to a file and read through
//! the CLI: `cat` of a file that failed exits 1, and `extract` exits 1,
//! names each file it could not read, and writes the others intact.

use std::collections::BTreeMap;
use std::io::Read;
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;

use diskimage::formats::MemoryDevice;
use diskimage::fs::{open_fs, ErrorKind as FsErrorKind, FileType};
use diskimage::{BlockDevice, SliceDevice};

use crate::common::{
    diskimage, gunzip_bytes, listing_tsv, repo, sha256_bytes, sha256_file, ListingRow,
};

/// (compressed image, its listing) under `fixtures/`.
const IMAGES: &[(&str, &str)] = &[
    (
        "filesystems/fat12.img.gz",
        "filesystems/fat12.img.listing.tsv",
    ),
    (
        "filesystems/fat16.img.gz",
        "filesystems/fat16.img.listing.tsv",
    ),
    (
        "filesystems/fat32.img.gz",
        "filesystems/fat32.img.listing.tsv",
    ),
    (
        "filesystems/exfat.img.gz",
        "filesystems/exfat.img.listing.tsv",
    ),
    (
        "filesystems/ntfs.img.gz",
        "filesystems/ntfs.img.listing.tsv",
    ),
    (
        "filesystems/ext2.img.gz",
        "filesystems/ext2.img.listing.tsv",
    ),
    (
        "filesystems/ext3.img.gz",
        "filesystems/ext3.img.listing.tsv",
    ),
    (
        "filesystems/ext4.img.gz",
        "filesystems/ext4.img.listing.tsv",
    ),
    ("iso/plain.iso.gz", "iso/plain.iso.listing.tsv"),
];

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
fn is_checked(path: &str, row: &ListingRow) -> bool {
    row.ty == "file" && row.size > 0 && !path.contains(':')
}

/// Walks the file system on the first `len` bytes of `whole` (through
/// `visit_dir`, as `extract` does), reading every file of `listing` it
/// meets. `Err` when the file system does not open at all (a typed error
/// is checked by the caller); a wrong or short read panics, and so does a
/// file of the listing that the walk neither read nor failed to reach
/// through a directory that failed (a directory cut short in silence).
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
    let mut dirs = vec!["/".to_string()];
    while let Some(dir) = dirs.pop() {
        let mut entries: Vec<(String, Result<Vec<u8>, diskimage::fs::Error>)> = Vec::new();
        let walked = fs.visit_dir(&dir, &mut |v| {
            let v = match v {
                Ok(v) => v,
                Err((p, e)) => {
                    entries.push((p, Err(e)));
                    return ControlFlow::Continue(());
                }
            };
            let path = format!("{}/{}", dir.trim_end_matches('/'), v.name());
            match v.metadata().map(|m| m.file_type) {
                Ok(FileType::Directory) => dirs.push(path),
                Ok(FileType::File) if listing.get(&path).is_some_and(|r| is_checked(&path, r)) => {
                    let data = v.open("").and_then(|mut r| {
                        let mut data = Vec::new();
                        r.read_to_end(&mut data).map_err(|e| {
                            diskimage::fs::Error::from_io(diskimage::fs::FsName::Detect, &path, e)
                        })?;
                        Ok(data)
                    });
                    entries.push((path, data));
                }
                Ok(_) => {}
                Err(e) => entries.push((path, Err(e))),
            }
            ControlFlow::Continue(())
        });
        if let Err(e) = walked {
            check_typed(&e, name, len, &dir);
            out.failed.push((dir.clone(), e.to_string()));
        }
        for (path, read) in entries {
            match read {
                Ok(data) => {
                    let row = &listing[&path];
                    assert_eq!(
                        (data.len() as u64, sha256_bytes(&data)),
                        (row.size, row.sha256.clone()),
                        "{name} cut at {len}: {path} read without an error but its bytes are wrong \
                         (short, zeroed or misplaced)"
                    );
                    out.good.push(path);
                }
                Err(e) => {
                    check_typed(&e, name, len, &path);
                    out.failed.push((path, e.to_string()));
                }
            }
        }
    }
    for (path, row) in listing {
        let reached = out.good.contains(path)
            || out.failed.iter().any(|(f, _)| {
                f == path || path.starts_with(&format!("{}/", f.trim_end_matches('/')))
            });
        assert!(
            !is_checked(path, row) || reached,
            "{name} cut at {len}: {path} is neither read nor below a directory that failed: \
             a directory was cut short without an error"
        );
    }
    Ok(out)
}

/// A read that fails on a cut image fails with a typed error naming a
/// byte offset: the device's out-of-bounds error, or the reader's
/// corrupt error at an offset (a pointer past the end of the volume).
fn check_typed(e: &diskimage::fs::Error, name: &str, len: u64, path: &str) {
    let text = e.to_string();
    // FAT reaches the device through one cursor: always the device's error.
    if name.contains("/fat") {
        assert_eq!(
            e.kind(),
            FsErrorKind::Device,
            "{name} cut at {len}: {path}: {text}"
        );
    }
    match e.kind() {
        FsErrorKind::Device => {
            if let diskimage::fs::Error::Device(d) = e {
                assert_eq!(
                    d.kind(),
                    diskimage::ErrorKind::OutOfBounds,
                    "{name} cut at {len}: {path}: {text}"
                );
                assert!(
                    d.offset().is_some(),
                    "{name} cut at {len}: {path}: no offset: {text}"
                );
            }
        }
        FsErrorKind::Corrupt => {}
        other => panic!("{name} cut at {len}: {path}: unexpected error kind {other:?}: {text}"),
    }
    assert!(
        text.contains("0x") || text.contains("offset "),
        "{name} cut at {len}: {path}: the error names no offset: {text}"
    );
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
        let mut try_cut = |len: u64| -> bool {
            match read_cut(&whole, len, &listing, name) {
                Ok(r) => {
                    let all_good = r.failed.is_empty();
                    // The cut with the most failures, one with files read
                    // too where there is one (a FAT32 root directory grows
                    // at the end of the data: cut short, nothing lists).
                    let score = |c: &CutResult| (!c.good.is_empty(), c.failed.len());
                    if !r.failed.is_empty() && best.as_ref().is_none_or(|b| score(&r) > score(b)) {
                        best = Some(r);
                    }
                    all_good
                }
                // Cut before the superblock: nothing is detected at all.
                Err(e) if e.kind() == FsErrorKind::Unsupported => {
                    assert!(
                        e.to_string().contains("no known file system"),
                        "{name} cut at {len}: {e}"
                    );
                    false
                }
                Err(e) => {
                    check_typed(&e, name, len, "/");
                    false
                }
            }
        };
        // The shortest cut (in sectors) at which every file still reads,
        // by bisection; just below it some file lies past the end.
        // Cuts at whole sectors (an ISO image must be whole 2 KiB sectors).
        let sector = if name.ends_with(".iso") { 2048 } else { 512 };
        assert!(try_cut(size), "{name}: the whole image does not read");
        let (mut lo, mut hi) = (0u64, size / sector);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if try_cut(mid * sector) {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        let edge = hi * sector;
        for len in [
            edge - sector,
            edge.saturating_sub(4096),
            edge * 7 / 8,
            edge * 3 / 4,
            edge / 2,
            size / 4,
            size / 2,
            size * 3 / 4,
        ] {
            try_cut(len / sector * sector);
        }
        let Some(best) = best.filter(|b| !b.failed.is_empty()) else {
            problems.push(format!("{name}: no cut opened with files past its end"));
            continue;
        };
        problems.extend(check_cli(
            name,
            &bytes[..best.len as usize],
            &best,
            &listing,
            work.path(),
        ));
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
    // The ISO container refuses an image shorter than its volume space
    // (a typed out-of-bounds error); read as raw, the file system's reader
    // meets the end.
    let raw: &[&str] = if name.ends_with(".iso") {
        &["--format", "raw"]
    } else {
        &[]
    };
    // `cat` of each file that failed on its own read fails; one below a
    // directory that failed may be found before the bad part of the
    // directory (a lookup stops at its name), and then gives its bytes.
    let below = |p: &str| {
        cut.failed
            .iter()
            .any(|(f, _)| f != p && p.starts_with(&format!("{}/", f.trim_end_matches('/'))))
    };
    let candidates = listing
        .iter()
        .filter(|(p, r)| is_checked(p, r) && (cut.failed.iter().any(|(f, _)| f == *p) || below(p)));
    for (path, row) in candidates.take(3) {
        let out = diskimage(&[&["cat", img_s, path.as_str()], raw].concat());
        let stderr = String::from_utf8_lossy(&out.stderr);
        let whole = sha256_bytes(&out.stdout) == row.sha256;
        let ok = if below(path) {
            (out.status.success() && whole)
                || (out.status.code() == Some(1) && stderr.contains("error"))
        } else {
            out.status.code() == Some(1) && stderr.contains("error") && !whole
        };
        if !ok {
            problems.push(format!(
                "{name} cut at {}: cat {path} exited {:?} (whole file: {whole}), stderr {stderr}",
                cut.len,
                out.status.code()
            ));
        }
    }
    let dest = work.join(format!("{base}.out"));
    let out = diskimage(
        &[
            &["extract", "-o", dest.to_str().expect("utf-8"), img_s],
            raw,
        ]
        .concat(),
    );
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
            problems.push(format!(
                "{name} cut at {}: extract did not name {p}: {stderr}",
                cut.len
            ));
        }
    }
    // A file that could not be read is not left behind short or empty.
    for (p, _) in &cut.failed {
        let host = dest.join(p.trim_start_matches('/'));
        if listing.get(p).is_some_and(|r| r.ty == "file") && host.exists() {
            problems.push(format!(
                "{name} cut at {}: extract left {p} behind although it failed",
                cut.len
            ));
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

/// A partitioned disk cut inside its partition (a partial acquisition):
/// the set still opens and lists the partition where the table puts it
/// (fixtures/example/make.sh wrote it with sfdisk at sector 2048, 28,672
/// sectors long; mmls lists the cut image the same way), with a warning;
/// the files before the cut read, `--strict` refuses the set.
#[test]
fn a_partition_reaching_past_a_cut_disk_is_listed_with_a_warning() {
    use diskimage::{BlockDevice, DiskSet, OpenOptions};
    let tmp = tempfile::tempdir().expect("tempdir");
    let example = crate::common::repo().join("fixtures/example/example.vmdk");
    let image = diskimage::open(&example, &OpenOptions::new()).expect("example");
    let mut raw = vec![0u8; 8 << 20];
    image.read_at(&mut raw, 0).expect("first 8 MiB");
    let cut = tmp.path().join("cut.raw");
    std::fs::write(&cut, &raw).expect("write");
    let set = DiskSet::open(&[&cut], &OpenOptions::new()).expect("a cut disk opens");
    let v = set.volume(1).expect("the partition is listed");
    assert_eq!((v.offset, v.size), (Some(2048 * 512), 28_672 * 512));
    assert!(
        set.warnings()
            .iter()
            .any(|w| w.message.contains("ends past the end of disk 0")),
        "{:?}",
        set.warnings()
    );
    let fs = set.mount(v).expect("FAT16 mounts");
    let mut text = String::new();
    std::io::Read::read_to_string(&mut fs.open("/README.TXT").expect("open"), &mut text)
        .expect("read");
    assert_eq!(text, "diskimage example\n");
    // A read past the cut is an out-of-bounds error, never zeros.
    let mut buf = [0u8; 512];
    let e = v
        .device()
        .read_at(&mut buf, 10 << 20)
        .expect_err("past the cut");
    assert_eq!(e.kind(), diskimage::ErrorKind::OutOfBounds);
    assert!(DiskSet::open(&[&cut], &OpenOptions::new().strict(true)).is_err());
}
