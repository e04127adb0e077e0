//! The real-world corpus (`../shared/corpus/`, or `$DISKIMAGE_CORPUS`):
//! images written by VMware, Hyper-V, Windows, Disk2vhd, Virtual PC and
//! qemu, checked against `TRUTH.tsv` (size and sha256 of the whole virtual
//! disk as `qemu-img convert -O raw` — or the reader the line names — sees it).
//!
//! Every line of TRUTH.tsv is in exactly one group:
//! - checked: opened with default options, size and sha256 must match;
//! - [`EXPECTED_ERRORS`]: lines where qemu fails; we must fail with a typed error of that kind;
//! - [`UNSUPPORTED`]: formats this version does not read, with the reason.
//!
//! A line in no group, or in a group that does not hold, fails the test.
//! The images are decompressed into a temporary folder, one corpus folder
//! at a time, under their original names (multi-file images need that).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use diskimage::{open, BlockDevice, ErrorKind, OpenOptions};

use crate::common::{gunzip_dir, sha256_device, sha256_file};

/// Images this version does not read, and why. Delete a line when its reader lands.
const UNSUPPORTED: &[(&str, &str)] = &[];

/// Lines where qemu could not open the image: we must refuse it with this kind of error.
const EXPECTED_ERRORS: &[(&str, ErrorKind)] = &[
    // Hyper-V checkpoint whose parent is not in the corpus (SOURCES.md).
    ("dissect/vhdx/differencing.avhdx", ErrorKind::MissingFile),
    // Capacity ~2^61 sectors: refused before any table is sized from it.
    ("qemu/afl9.vmdk", ErrorKind::LimitExceeded),
    // Descriptors whose extent files are not in the corpus.
    ("vmdk-rs/monolithicFlat.vmdk", ErrorKind::MissingFile),
    ("vmdk-rs/vmfs_thick-000001.vmdk", ErrorKind::MissingFile),
    // Its embedded descriptor is empty.
    ("go-vmdk-parser/vmdk-invalid.img", ErrorKind::Corrupt),
    // AFL-fuzzed VHD: footer copy at 0, dynamic header cut short by the end of the file.
    ("qemu/afl5.img", ErrorKind::Corrupt),
];

/// Lines whose truth qemu took with the size the CHS geometry describes,
/// where this library (like Windows and libvhdi) uses the footer's current
/// size: qemu sizes VHDs by geometry unless the creator is one it knows to
/// set the current size exactly (Windows, Disk2vhd, qemu itself, ...); it
/// does so for Virtual PC. The truth's size must equal the `chs_size` that
/// `info` shows, be at most our size, and the common prefix must hash to
/// the truth.
const CHS_SIZED_TRUTH: &[(&str, &str)] = &[(
    "qemu/virtualpc-dynamic.vhd",
    "Virtual PC: current size 136,365,211,648, qemu uses the CHS size 136,363,130,880",
)];

/// Differencing images whose parent is not in the corpus: qemu ignores VHD
/// parents, so its truth is a no-parents read (absent sectors as zeros).
/// Opened with default options they must fail with a missing-file error;
/// the truth is compared with `no_parents`.
const PARENT_NOT_SHIPPED: &[(&str, &str)] = &[(
    "dfvfs/fat-differential.vhd",
    "parent C:\\Projects\\dfvfs\\test_data\\fat-parent.vhd is not in the corpus",
)];

/// The corpus folder, or `None` (with the reason printed) when it is absent.
pub fn corpus_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("DISKIMAGE_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::common::repo().join("../shared/corpus"));
    if dir.join("TRUTH.tsv").is_file() {
        Some(dir)
    } else {
        eprintln!(
            "corpus: skipped: no TRUTH.tsv in {} (set DISKIMAGE_CORPUS to the corpus folder)",
            dir.display()
        );
        None
    }
}

/// One TRUTH.tsv line.
#[derive(Debug, Clone)]
pub struct Truth {
    /// Path under the corpus folder, without `.gz`.
    pub image: String,
    /// Virtual size in bytes, when qemu (or the named reader) opened it.
    pub size: Option<u64>,
    /// sha256 of the whole virtual disk, or the error text qemu gave.
    pub sha256_or_error: String,
}

/// Every TRUTH.tsv line; the ` (how the truth was taken)` suffix is dropped from the name.
pub fn truth(dir: &Path) -> Vec<Truth> {
    crate::common::tsv_rows(&dir.join("TRUTH.tsv"))
        .into_iter()
        .map(|row| {
            let name = row[0].split(" (").next().unwrap_or_default().to_owned();
            Truth {
                image: name,
                size: row.get(1).and_then(|s| s.parse().ok()),
                sha256_or_error: row.get(2).cloned().unwrap_or_default(),
            }
        })
        .collect()
}

/// Decompresses corpus folders on demand, once each, into one temporary folder.
pub struct Unpacked {
    corpus: PathBuf,
    root: tempfile::TempDir,
    done: Mutex<HashSet<PathBuf>>,
}

impl Unpacked {
    /// An empty unpacking area over `corpus`.
    pub fn new(corpus: PathBuf) -> Self {
        Unpacked {
            corpus,
            root: tempfile::tempdir().expect("tempdir"),
            done: Mutex::new(HashSet::new()),
        }
    }

    /// The decompressed path of `image` (e.g. `dfvfs/ext2.vmdk`), with all of its folder's files beside it.
    pub fn path(&self, image: &str) -> PathBuf {
        let rel = Path::new(image);
        let folder = rel.parent().unwrap_or(Path::new("")).to_path_buf();
        let mut done = self.done.lock().expect("lock");
        if !done.contains(&folder) {
            let dst = self.root.path().join(&folder);
            std::fs::create_dir_all(&dst).expect("mkdir");
            gunzip_dir(&self.corpus.join(&folder), &dst);
            done.insert(folder);
        }
        self.root.path().join(rel)
    }
}

fn check_line(unpacked: &Unpacked, t: &Truth) -> Result<String, String> {
    let path = unpacked.path(&t.image);
    let before = sha256_file(&path);
    let result = match EXPECTED_ERRORS.iter().find(|(i, _)| *i == t.image) {
        Some((_, kind)) => match open(&path, &OpenOptions::default()) {
            Ok(_) => Err(format!(
                "{}: opened, but a {} error was expected",
                t.image,
                kind.as_str()
            )),
            Err(e) if e.kind() == *kind => Ok(format!("{}: refused as expected: {e}", t.image)),
            Err(e) => Err(format!(
                "{}: expected {} error, got {}: {e}",
                t.image,
                kind.as_str(),
                e.kind().as_str()
            )),
        },
        None => {
            let (Some(size), sha) = (t.size, &t.sha256_or_error) else {
                return Err(format!(
                    "{}: TRUTH.tsv has no size ({}), and it is in no group",
                    t.image, t.sha256_or_error
                ));
            };
            let chs_sized = CHS_SIZED_TRUTH.iter().any(|(n, _)| *n == t.image);
            let mut options = OpenOptions::default();
            if PARENT_NOT_SHIPPED.iter().any(|(n, _)| *n == t.image) {
                match open(&path, &options) {
                    Err(e) if e.kind() == ErrorKind::MissingFile => {}
                    Err(e) => {
                        return Err(format!("{}: expected a missing parent, got {e}", t.image))
                    }
                    Ok(_) => return Err(format!("{}: opened without its parent", t.image)),
                }
                options.no_parents = true;
            }
            match open(&path, &options) {
                Err(e) => Err(format!("{}: open failed: {e}", t.image)),
                Ok(img) if chs_sized && !chs_size_is(&img, size) => Err(format!(
                    "{}: truth size {size} is not the CHS size in {:?} or exceeds our size {}",
                    t.image,
                    img.info().properties,
                    img.size()
                )),
                Ok(img) if !chs_sized && img.size() != size => {
                    Err(format!("{}: size {} != truth {size}", t.image, img.size()))
                }
                Ok(img) => match sha256_device(&img, size) {
                    Ok(h) if &h == sha => Ok(format!("{}: matches", t.image)),
                    Ok(h) => Err(format!("{}: sha256 {h} != truth {sha}", t.image)),
                    Err(e) => Err(format!("{}: read failed: {e}", t.image)),
                },
            }
        }
    };
    if sha256_file(&path) != before {
        return Err(format!(
            "{}: the image file changed while being read",
            t.image
        ));
    }
    result
}

/// Whether `size` is the CHS-derived size `info` shows and no larger than the image.
fn chs_size_is(img: &diskimage::DiskImage, size: u64) -> bool {
    let chs = img
        .info()
        .properties
        .iter()
        .find(|(k, _)| k == "chs_size")
        .and_then(|(_, v)| v.parse::<u64>().ok());
    chs == Some(size) && size <= img.size()
}

#[test]
fn every_supported_corpus_image_matches_truth_tsv() {
    let Some(dir) = corpus_dir() else { return };
    let lines = truth(&dir);
    assert!(!lines.is_empty(), "TRUTH.tsv has no lines");
    let named = UNSUPPORTED
        .iter()
        .map(|(n, _)| *n)
        .chain(EXPECTED_ERRORS.iter().map(|(n, _)| *n))
        .chain(CHS_SIZED_TRUTH.iter().map(|(n, _)| *n))
        .chain(PARENT_NOT_SHIPPED.iter().map(|(n, _)| *n));
    for name in named {
        assert!(
            lines.iter().any(|t| t.image == name),
            "{name} is in a table but not in TRUTH.tsv"
        );
    }
    let todo: Vec<&Truth> = lines
        .iter()
        .filter(|t| !UNSUPPORTED.iter().any(|(n, _)| *n == t.image))
        .collect();
    let unpacked = Unpacked::new(dir);
    let next = Mutex::new(todo.iter());
    let results = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| loop {
                let Some(t) = next.lock().expect("lock").next().copied() else {
                    break;
                };
                let r = check_line(&unpacked, t);
                results.lock().expect("lock").push(r);
            });
        }
    });
    let results = results.into_inner().expect("lock");
    for r in results.iter().flatten() {
        eprintln!("corpus: {r}");
    }
    for (n, why) in UNSUPPORTED {
        eprintln!("corpus: not checked: {n}: {why}");
    }
    let failures: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        failures.is_empty(),
        "corpus failures:\n{}",
        failures
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn dfvfs_iso9660_raw_is_an_iso_with_volume_id_cdrom() {
    // Not in TRUTH.tsv; SOURCES.md says: genisoimage, ISO 9660 level 3, volume id CDROM.
    // As a plain ISO its virtual disk is the file itself.
    let Some(dir) = corpus_dir() else { return };
    let unpacked = Unpacked::new(dir);
    let path = unpacked.path("dfvfs/iso9660.raw");
    let img = open(&path, &OpenOptions::default()).expect("open iso9660.raw");
    assert_eq!(img.format(), diskimage::Format::Iso);
    assert_eq!(img.sector_size(), 2048);
    assert!(
        img.info()
            .properties
            .contains(&("volume_id".into(), "CDROM".into())),
        "{:?}",
        img.info().properties
    );
    assert_eq!(
        sha256_device(&img, img.size()).expect("read"),
        sha256_file(&path)
    );
}

#[test]
fn dissect_differencing_avhdx_opens_alone_with_its_parent_locator() {
    // SOURCES.md: a Hyper-V checkpoint whose parent is not included; with
    // no_parents it opens, shows the locator and linkage, and reads what
    // the child holds (the rest as zeros).
    let Some(dir) = corpus_dir() else { return };
    let unpacked = Unpacked::new(dir);
    let path = unpacked.path("dissect/vhdx/differencing.avhdx");
    let before = sha256_file(&path);
    let opts = OpenOptions::new().no_parents(true);
    let img = open(&path, &opts).expect("open with no_parents");
    let props = &img.info().properties;
    let get = |k: &str| {
        props
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(img.info().subformat.as_deref(), Some("differencing"));
    assert_eq!(
        get("parent_locator.parent_linkage"),
        Some("{ff34003b-11ed-4cf8-a166-b2be05e20b80}")
    );
    assert!(get("parent_locator.relative_path")
        .is_some_and(|p| p.ends_with("Generation 1_49C4BAF3-4B25-4406-8C4B-D39E65C32385.avhdx")));
    assert!(get("parent_locator.absolute_win32_path").is_some());
    assert!(get("parent_locator.volume_path").is_some());
    let map = img.map(0, img.size()).expect("map");
    assert!(map
        .iter()
        .any(|e| e.kind == diskimage::ExtentKind::Unallocated));
    assert!(map.iter().any(|e| e.kind == diskimage::ExtentKind::Data));
    let e = open(&path, &OpenOptions::default()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::MissingFile);
    assert!(e.to_string().contains("Generation 1_49C4BAF3"), "{e}");
    assert_eq!(sha256_file(&path), before);
}

#[test]
fn dissect_sesparse_opened_as_one_sesparse_extent_of_a_descriptor() {
    // TRUTH.tsv: "(as one SESPARSE extent of 1048576 sectors)". The bare
    // file is checked by the main test; here a descriptor names it, as an
    // ESXi snapshot descriptor would.
    let Some(dir) = corpus_dir() else { return };
    let lines = truth(&dir);
    let t = lines
        .iter()
        .find(|t| t.image == "dissect/vmdk/sesparse.vmdk")
        .expect("sesparse line in TRUTH.tsv");
    let unpacked = Unpacked::new(dir);
    let path = unpacked.path(&t.image);
    let desc = path.with_file_name("sesparse-descriptor.vmdk");
    std::fs::write(
        &desc,
        "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n\
         createType=\"seSparse\"\nRW 1048576 SESPARSE \"sesparse.vmdk\"\n",
    )
    .expect("write descriptor");
    let img = open(&desc, &OpenOptions::default()).expect("open descriptor");
    assert_eq!(Some(img.size()), t.size);
    assert_eq!(
        sha256_device(&img, img.size()).expect("read"),
        t.sha256_or_error
    );
}

#[test]
fn vmdk_missing_extent_errors_name_the_missing_file() {
    // SOURCES.md: the extent files of these descriptors are not in the corpus.
    let Some(dir) = corpus_dir() else { return };
    let unpacked = Unpacked::new(dir);
    for (image, missing) in [
        ("vmdk-rs/monolithicFlat.vmdk", "monolithicFlat-flat.vmdk"),
        (
            "vmdk-rs/twoGbMaxExtentFlat.vmdk",
            "twoGbMaxExtentFlat-f001.vmdk",
        ),
        (
            "vmdk-rs/vmfs_thick-000001.vmdk",
            "vmfs_thick-000001-delta.vmdk",
        ),
    ] {
        let e = open(&unpacked.path(image), &OpenOptions::default()).expect_err(image);
        assert_eq!(e.kind(), ErrorKind::MissingFile, "{image}: {e}");
        assert!(e.to_string().contains(missing), "{image}: {e}");
    }
}

#[test]
fn dfvfs_vhds_with_bad_checksums_open_with_a_warning_and_strict_refuses_them() {
    // SOURCES.md: hand-edited by qemu users, wrong footer (and dynamic-header)
    // checksums; libvhdi reads them, qemu refuses them.
    let Some(dir) = corpus_dir() else { return };
    let unpacked = Unpacked::new(dir);
    for image in ["dfvfs/image.vhd", "dfvfs/image-differential.vhd"] {
        let path = unpacked.path(image);
        let img = open(&path, &OpenOptions::default()).expect(image);
        assert!(
            img.info()
                .warnings
                .iter()
                .any(|w| w.kind == diskimage::formats::WarningKind::Checksum),
            "{image}: {:?}",
            img.info().warnings
        );
        let strict = OpenOptions::new().strict(true);
        let e = open(&path, &strict).expect_err(image);
        assert_eq!(e.kind(), ErrorKind::Corrupt, "{image}: {e}");
        assert!(e.to_string().contains("checksum"), "{image}: {e}");
    }
    // The differential's parent (image.vhd, beside it) is found by its Unicode name.
    let img = open(
        &unpacked.path("dfvfs/image-differential.vhd"),
        &OpenOptions::default(),
    )
    .expect("image-differential.vhd");
    assert_eq!(img.info().chain().count(), 2);
}

#[test]
fn dfvfs_fat_differential_shows_its_parent_locators_without_its_parent() {
    let Some(dir) = corpus_dir() else { return };
    let unpacked = Unpacked::new(dir);
    let path = unpacked.path("dfvfs/fat-differential.vhd");
    let e = open(&path, &OpenOptions::default()).expect_err("parent is not shipped");
    assert_eq!(e.kind(), ErrorKind::MissingFile, "{e}");
    assert!(e.to_string().contains("fat-parent.vhd"), "{e}");
    let opts = OpenOptions::new().no_parents(true);
    let img = open(&path, &opts).expect("no_parents");
    let props = &img.info().properties;
    let has = |k: &str, v: &str| props.iter().any(|(pk, pv)| pk == k && pv == v);
    assert!(
        has(
            "parent_locator.0",
            "W2ku C:\\Projects\\dfvfs\\test_data\\fat-parent.vhd"
        ),
        "{props:?}"
    );
    assert!(
        has("parent_locator.1", "W2ru .\\fat-parent.vhd"),
        "{props:?}"
    );
    assert!(
        has("parent_unique_id", "5fa21a55-f394-aa4d-9958-1951a67d5540"),
        "{props:?}"
    );
}
