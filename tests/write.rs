//! The write side (create, child, write, convert, commit) against outside
//! readers: every image we write must pass `qemu-img check`, compare equal
//! (`qemu-img compare`) to a raw file holding what was written, and, for
//! VMDK, give the same sha256 through libvmdk (`pyvmdk`,
//! `scripts/libyal_sha256.py`). Corpus VMDKs that VMware products wrote
//! are converted and read back byte for byte against `TRUTH.tsv`. Bad
//! input (sizes, existing files, a source as destination, a changed
//! parent, a full disk) gives an error naming the file and leaves the
//! source unchanged; a writer killed at many points leaves an image that
//! opens and passes `qemu-img check` with every flushed byte in place.
//!
//! Without qemu-img (or pyvmdk) the tests say so and skip that oracle,
//! unless `DISKIMAGE_REQUIRE_DIFF_TOOLS=1` (set by `.ci/run`).

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use diskimage::formats::fuzzing::write::write_places;
use diskimage::formats::write::{self, CreateOptions, Subformat};
use diskimage::{BlockDevice, ErrorKind, Format, OpenOptions};

use crate::common::{repo, sha256_file};

pub(crate) fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_diskimage")
}

pub(crate) fn run(args: &[&str]) -> std::process::Output {
    Command::new(bin())
        .args(args)
        .output()
        .expect("run diskimage")
}

pub(crate) fn ok(args: &[&str]) {
    let out = run(args);
    assert!(
        out.status.success(),
        "diskimage {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub(crate) fn fails(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        !out.status.success(),
        "diskimage {} succeeded",
        args.join(" ")
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub(crate) fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn require() -> bool {
    std::env::var_os("DISKIMAGE_REQUIRE_DIFF_TOOLS").is_some_and(|v| v == "1")
}

fn have(tool: &str, probe: &[&str]) -> bool {
    let found = Command::new(tool)
        .args(probe)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found || !require(),
        "{tool} is needed (DISKIMAGE_REQUIRE_DIFF_TOOLS=1)"
    );
    found
}

pub(crate) fn qemu() -> bool {
    let q = have("qemu-img", &["--version"]);
    if !q {
        eprintln!("write: qemu-img not installed, its checks skipped");
    }
    q
}

pub(crate) fn pyvmdk() -> bool {
    let p = have("python3", &["-c", "import pyvmdk"]);
    if !p {
        eprintln!("write: pyvmdk not installed, libvmdk checks skipped");
    }
    p
}

/// qemu-img (required for what follows: `None` without it), whether
/// pyvmdk is there, and a fresh temporary folder.
fn oracles() -> Option<(bool, tempfile::TempDir)> {
    if !qemu() {
        return None;
    }
    Some((pyvmdk(), tempfile::tempdir().expect("tempdir")))
}

/// `qemu-img check` reports no corruption (leaked clusters are accepted).
pub(crate) fn qemu_check(image: &Path) {
    let out = Command::new("qemu-img")
        .args(["check", &s(image)])
        .output()
        .expect("qemu-img check");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    // Exit 0: clean; 3: leaks only. Anything else is corruption or a refusal.
    let code = out.status.code().unwrap_or(-1);
    assert!(
        code == 0 || code == 3,
        "qemu-img check {}: {text}",
        image.display()
    );
}

/// `qemu-img compare` finds `image` equal to the raw file `expected`.
pub(crate) fn qemu_compare(image: &Path, expected: &Path) {
    let out = Command::new("qemu-img")
        .args([
            "compare",
            "-f",
            "vmdk",
            "-F",
            "raw",
            &s(image),
            &s(expected),
        ])
        .output()
        .expect("qemu-img compare");
    assert!(
        out.status.success(),
        "qemu-img compare {} {}: {}{}",
        image.display(),
        expected.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn qemu_compare_raw(image: &Path, expected: &Path) {
    let out = Command::new("qemu-img")
        .args(["compare", "-F", "raw", &s(image), &s(expected)])
        .output()
        .expect("qemu-img compare");
    assert!(
        out.status.success(),
        "qemu-img compare {}: {}",
        image.display(),
        String::from_utf8_lossy(&out.stdout)
    );
}

/// libvmdk's sha256 of the chain `paths` (child first) equals the raw file's.
pub(crate) fn libvmdk_matches(paths: &[&Path], expected: &Path) {
    let mut cmd = Command::new("python3");
    cmd.arg(repo().join("scripts/libyal_sha256.py")).arg("vmdk");
    for p in paths {
        cmd.arg(p);
    }
    let out = cmd.output().expect("libyal_sha256.py");
    assert!(
        out.status.success(),
        "libvmdk on {}: {}",
        paths[0].display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let size = std::fs::metadata(expected).expect("expected").len();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("{size} {}", sha256_file(expected)),
        "libvmdk reads {} differently",
        paths[0].display()
    );
}

/// Our own reader's sha256 of `image` equals the raw file's.
pub(crate) fn ours_matches(image: &Path, expected: &Path) {
    let img = diskimage::open(image, &OpenOptions::new()).expect("open");
    let dev = img.device();
    assert_eq!(
        crate::common::sha256_device(dev.as_ref(), dev.size()).expect("read"),
        sha256_file(expected),
        "{}",
        image.display()
    );
}

/// A small deterministic generator (xorshift), for reproducible writes.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub(crate) fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| (self.next() >> 24) as u8).collect()
    }
}

/// A raw file of `size` zero bytes (sparse).
pub(crate) fn zeros(path: &Path, size: u64) {
    std::fs::File::create(path)
        .and_then(|f| f.set_len(size))
        .expect("raw");
}

/// Writes `data` at `offset` into both the image (through `diskimage
/// write`) and the expected raw file.
fn write_both(image: &Path, expected: &Path, dir: &Path, data: &[u8], offset: u64) {
    let input = dir.join("input.bin");
    std::fs::write(&input, data).expect("input");
    ok(&[
        "write",
        &s(image),
        "--offset",
        &offset.to_string(),
        &s(&input),
    ]);
    std::fs::OpenOptions::new()
        .write(true)
        .open(expected)
        .expect("expected")
        .write_all_at(data, offset)
        .expect("write expected");
}

/// Random writes of every alignment (inside grains, across grains and
/// extents, at the very end) into `image`, mirrored in `expected`.
fn scatter(image: &Path, expected: &Path, dir: &Path, size: u64, seed: u64) {
    let mut rng = Rng(seed | 1);
    let mut spots = vec![(0u64, 700usize), (size - 333, 333), (65536 - 5, 10)];
    for _ in 0..12 {
        let len = 1 + rng.below(200_000) as usize;
        spots.push((rng.below(size - len as u64), len));
    }
    for (at, len) in spots {
        write_both(image, expected, dir, &rng.bytes(len), at);
    }
}

const SPARSE_LAYOUTS: [&str; 2] = ["monolithicSparse", "twoGbMaxExtentSparse"];
const ALL_LAYOUTS: [&str; 5] = [
    "monolithicSparse",
    "monolithicFlat",
    "twoGbMaxExtentSparse",
    "twoGbMaxExtentFlat",
    "streamOptimized",
];

#[test]
fn created_images_are_exactly_sized_checked_and_carry_vmware_keys() {
    if !qemu() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    // Larger than one 2047 MiB extent, so the split layouts have three.
    let size: u64 = 4300 << 20;
    let expected = tmp.path().join("zeros.raw");
    zeros(&expected, size);
    for layout in ALL_LAYOUTS {
        let image = tmp.path().join(format!("{layout}.vmdk"));
        ok(&[
            "create",
            &s(&image),
            "--size",
            "4300M",
            "--subformat",
            layout,
        ]);
        qemu_check(&image);
        qemu_compare(&image, &expected);
        let info = Command::new("qemu-img")
            .args(["info", "--output=json", &s(&image)])
            .output()
            .expect("qemu-img info");
        let json = String::from_utf8_lossy(&info.stdout);
        assert!(
            json.contains(&format!("\"virtual-size\": {size}")),
            "{json}"
        );
        assert!(
            json.contains(&format!("\"create-type\": \"{layout}\"")),
            "{json}"
        );
        let head = std::fs::read(&image).expect("read");
        let text = String::from_utf8_lossy(head.get(..12288.min(head.len())).unwrap_or_default())
            .into_owned();
        for key in [
            "CID=",
            "ddb.adapterType",
            "ddb.geometry.cylinders",
            "ddb.geometry.heads",
            "ddb.geometry.sectors",
            "ddb.virtualHWVersion",
            "ddb.longContentID",
            "ddb.uuid",
        ] {
            assert!(text.contains(key), "{layout}: no {key} in\n{text}");
        }
    }
    let extents = |prefix: &str| {
        std::fs::read_dir(tmp.path())
            .expect("dir")
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().starts_with(prefix))
            })
            .count()
    };
    assert_eq!(extents("twoGbMaxExtentSparse-s"), 3);
    assert_eq!(extents("twoGbMaxExtentFlat-f"), 3);
    assert_eq!(extents("monolithicFlat-flat"), 1);
    // No staging folder is left behind.
    assert_eq!(extents(".monolithicSparse"), 0);
}

#[test]
fn writes_read_back_through_qemu_libvmdk_and_us() {
    let Some((libyal, tmp)) = oracles() else {
        return;
    };
    let size: u64 = 48 << 20;
    for (i, layout) in [
        "monolithicSparse",
        "monolithicFlat",
        "twoGbMaxExtentSparse",
        "twoGbMaxExtentFlat",
    ]
    .into_iter()
    .enumerate()
    {
        let image = tmp.path().join(format!("{layout}.vmdk"));
        let expected = tmp.path().join(format!("{layout}.raw"));
        ok(&["create", &s(&image), "--size", "48M", "--subformat", layout]);
        zeros(&expected, size);
        scatter(&image, &expected, tmp.path(), size, 77 + i as u64);
        qemu_check(&image);
        qemu_compare(&image, &expected);
        ours_matches(&image, &expected);
        if libyal {
            libvmdk_matches(&[&image], &expected);
        }
    }
    // Raw: the file is the disk.
    let image = tmp.path().join("disk.img");
    let expected = tmp.path().join("disk.expected");
    ok(&["create", &s(&image), "--size", "3M"]);
    assert_eq!(std::fs::metadata(&image).expect("raw").len(), 3 << 20);
    zeros(&expected, 3 << 20);
    scatter(&image, &expected, tmp.path(), 3 << 20, 5);
    assert_eq!(sha256_file(&image), sha256_file(&expected));
}

#[test]
fn a_child_copies_on_write_leaves_its_parent_alone_and_commits() {
    let Some((libyal, tmp)) = oracles() else {
        return;
    };
    let size: u64 = 40 << 20;
    for layout in SPARSE_LAYOUTS {
        let dir = tmp.path().join(layout);
        std::fs::create_dir(&dir).expect("dir");
        let base = dir.join("base.vmdk");
        let expected = dir.join("expected.raw");
        ok(&["create", &s(&base), "--size", "40M", "--subformat", layout]);
        zeros(&expected, size);
        scatter(&base, &expected, &dir, size, 3);
        let base_files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .expect("dir")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "vmdk"))
            .collect();
        let sums: Vec<String> = base_files.iter().map(|p| sha256_file(p)).collect();
        let child = dir.join("child.vmdk");
        ok(&["create", &s(&child), "--parent", &s(&base)]);
        let text = std::fs::read(&child).expect("child");
        let text = String::from_utf8_lossy(&text);
        assert!(text.contains("parentFileNameHint=\"base.vmdk\""), "{text}");
        qemu_compare(&child, &expected);
        // Partial-grain writes over the parent's data: the grain's other
        // bytes must come from the parent.
        scatter(&child, &expected, &dir, size, 11);
        for (p, sum) in base_files.iter().zip(&sums) {
            assert_eq!(&sha256_file(p), sum, "{} was written", p.display());
        }
        qemu_check(&child);
        qemu_compare(&child, &expected);
        ours_matches(&child, &expected);
        if libyal {
            libvmdk_matches(&[&child, &base], &expected);
        }
        ok(&["commit", &s(&child)]);
        qemu_check(&base);
        qemu_compare(&base, &expected);
        qemu_compare(&child, &expected);
        ours_matches(&base, &expected);
        ours_matches(&child, &expected);
        // The child was relinked to the parent's new CID: no warning.
        let info = run(&["info", &s(&child)]);
        assert!(
            !String::from_utf8_lossy(&info.stdout).contains("parent-mismatch"),
            "{}",
            String::from_utf8_lossy(&info.stdout)
        );
        ok(&["commit", &s(&child), "--drop"]);
        assert!(!child.exists());
        qemu_compare(&base, &expected);
    }
}

/// Deltas in 2 GiB extents (what VMware Workstation makes for a split
/// disk): the default child of a twoGbMaxExtentSparse parent, and
/// `--subformat twoGbMaxExtentSparse` over a monolithicSparse and a
/// monolithicFlat parent. Writes across the extent boundary copy the rest
/// of their grains from the parent; qemu-img, libvmdk and our reader see
/// the same bytes; a commit merges the split child into its parent.
#[test]
fn split_deltas_span_extents_and_commit() {
    let Some((libyal, tmp)) = oracles() else {
        return;
    };
    let size: u64 = 2100 << 20;
    let boundary: u64 = 2047 << 20;
    for (parent_layout, child_layout) in [
        ("twoGbMaxExtentSparse", None),
        ("monolithicSparse", Some("twoGbMaxExtentSparse")),
        ("monolithicFlat", Some("twoGbMaxExtentSparse")),
    ] {
        let dir = tmp.path().join(parent_layout);
        std::fs::create_dir(&dir).expect("dir");
        let base = dir.join("base.vmdk");
        let expected = dir.join("expected.raw");
        ok(&[
            "create",
            &s(&base),
            "--size",
            "2100M",
            "--subformat",
            parent_layout,
        ]);
        zeros(&expected, size);
        let mut rng = Rng(17);
        for (at, len) in [
            (0u64, 9000usize),
            (boundary - 70_000, 140_000),
            (size - 512, 512),
        ] {
            write_both(&base, &expected, &dir, &rng.bytes(len), at);
        }
        let sums: Vec<(PathBuf, String)> = std::fs::read_dir(&dir)
            .expect("dir")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "vmdk"))
            .map(|p| {
                let h = sha256_file(&p);
                (p, h)
            })
            .collect();
        let child = dir.join("child.vmdk");
        let mut args = vec!["create".to_owned(), s(&child), "--parent".into(), s(&base)];
        if let Some(l) = child_layout {
            args.extend(["--subformat".to_owned(), l.to_owned()]);
        }
        ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let text = std::fs::read_to_string(&child).expect("descriptor");
        assert!(
            text.contains("createType=\"twoGbMaxExtentSparse\"")
                && text.contains("parentFileNameHint=\"base.vmdk\"")
                && text.contains("\"child-s001.vmdk\"")
                && text.contains("\"child-s002.vmdk\""),
            "{text}"
        );
        qemu_check(&child);
        qemu_compare(&child, &expected);
        // Partial grains on both sides of the boundary and in the parent's data.
        for (at, len) in [(boundary - 3000, 6000usize), (100, 50), (size - 700, 300)] {
            write_both(&child, &expected, &dir, &rng.bytes(len), at);
        }
        for (p, sum) in &sums {
            assert_eq!(&sha256_file(p), sum, "{} was written", p.display());
        }
        qemu_check(&child);
        qemu_compare(&child, &expected);
        ours_matches(&child, &expected);
        if libyal {
            libvmdk_matches(&[&child, &base], &expected);
        }
        ok(&["commit", &s(&child), "--drop"]);
        assert!(!child.exists() && !dir.join("child-s001.vmdk").exists());
        qemu_check(&base);
        qemu_compare(&base, &expected);
    }
    // A delta in any other layout is refused, naming the child.
    let base = tmp.path().join("twoGbMaxExtentSparse/base.vmdk");
    let err = fails(&[
        "create",
        &s(&tmp.path().join("flatchild.vmdk")),
        "--parent",
        &s(&base),
        "--subformat",
        "monolithicFlat",
    ]);
    assert!(
        err.contains("flatchild.vmdk") && err.contains("monolithicFlat"),
        "{err}"
    );
}

#[test]
fn a_child_of_another_format_and_a_changed_parent_are_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let raw = tmp.path().join("disk.img");
    ok(&["create", &s(&raw), "--size", "1M"]);
    let child = tmp.path().join("child.vmdk");
    let err = fails(&[
        "create",
        &s(&child),
        "--parent",
        &s(&raw),
        "--format",
        "vmdk",
    ]);
    assert!(
        err.contains("VMDK parent") && err.contains("child.vmdk"),
        "{err}"
    );
    assert!(!child.exists());

    let base = tmp.path().join("base.vmdk");
    ok(&["create", &s(&base), "--size", "1M"]);
    ok(&["create", &s(&child), "--parent", &s(&base)]);
    let data = tmp.path().join("x.bin");
    std::fs::write(&data, b"changed").expect("data");
    // Writing into the parent itself gives it a new CID ...
    ok(&["write", &s(&base), "--offset", "0", &s(&data)]);
    let before = sha256_file(&child);
    // ... and the child refuses to be written over it.
    let err = fails(&["write", &s(&child), "--offset", "0", &s(&data)]);
    assert!(
        err.contains("parent changed") && err.contains("child.vmdk"),
        "{err}"
    );
    assert_eq!(sha256_file(&child), before);
    // streamOptimized is write-once.
    let stream = tmp.path().join("stream.vmdk");
    ok(&[
        "create",
        &s(&stream),
        "--size",
        "1M",
        "--subformat",
        "streamOptimized",
    ]);
    let err = fails(&["write", &s(&stream), "--offset", "0", &s(&data)]);
    assert!(
        err.contains("streamOptimized") && err.contains("unsupported"),
        "{err}"
    );
}

#[test]
fn convert_writes_every_layout_and_keeps_holes() {
    let Some((libyal, tmp)) = oracles() else {
        return;
    };
    // The source is a QCOW2 qemu-img made: data, zeros written as data,
    // and holes.
    let size: u64 = 64 << 20;
    let expected = tmp.path().join("expected.raw");
    zeros(&expected, size);
    let mut rng = Rng(99);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&expected)
        .expect("raw");
    let text: Vec<u8> = b"the quick brown fox jumps over the lazy dog\n"
        .iter()
        .copied()
        .cycle()
        .take(3 << 20)
        .collect();
    f.write_all_at(&text, 1 << 20).expect("text");
    f.write_all_at(&rng.bytes(1 << 20), 20 << 20)
        .expect("random");
    f.write_all_at(&rng.bytes(100), size - 100).expect("tail");
    drop(f);
    let source = tmp.path().join("source.qcow2");
    let made = Command::new("qemu-img")
        .args([
            "convert",
            "-f",
            "raw",
            "-O",
            "qcow2",
            &s(&expected),
            &s(&source),
        ])
        .status()
        .expect("qemu-img convert");
    assert!(made.success());
    let source_sum = sha256_file(&source);
    for layout in ALL_LAYOUTS {
        let out = tmp.path().join(format!("out-{layout}.vmdk"));
        ok(&["convert", &s(&source), &s(&out), "--subformat", layout]);
        qemu_check(&out);
        qemu_compare(&out, &expected);
        ours_matches(&out, &expected);
        if libyal {
            libvmdk_matches(&[&out], &expected);
        }
    }
    // Holes stay holes: the sparse and stream outputs hold little more
    // than the 4 MiB of data (text compresses).
    for layout in ["monolithicSparse", "streamOptimized"] {
        let len = std::fs::metadata(tmp.path().join(format!("out-{layout}.vmdk")))
            .expect("out")
            .len();
        assert!(len < 6 << 20, "{layout}: {len} bytes");
    }
    let raw = tmp.path().join("out.img");
    ok(&["convert", &s(&source), &s(&raw)]);
    assert_eq!(sha256_file(&raw), sha256_file(&expected));
    qemu_compare_raw(&raw, &expected);
    assert_eq!(sha256_file(&source), source_sum, "the source was written");
}

/// Corpus VMDKs (VMware's own, and other producers') converted to each
/// sparse layout and back to raw read as `TRUTH.tsv` says, byte for byte.
#[test]
fn corpus_vmdks_round_trip() {
    let corpus = repo().join("../shared/corpus");
    let truth = corpus.join("TRUTH.tsv");
    let Ok(rows) = std::fs::read_to_string(&truth) else {
        eprintln!("write: no corpus at {}, skipped", corpus.display());
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut done = 0;
    for row in rows.lines() {
        let cols: Vec<&str> = row.split('\t').collect();
        let [name, size, sha] = cols.as_slice() else {
            continue;
        };
        let is_vmdk = name.ends_with(".vmdk") || name.starts_with("go-vmdk-parser/vmdk-");
        if !is_vmdk || sha.len() != 64 || size.parse::<u64>().is_err() || name.contains(' ') {
            continue;
        }
        let size: u64 = size.parse().unwrap_or_default();
        if size > 64 << 20 {
            continue;
        }
        let gz = corpus.join(format!("{name}.gz"));
        if !gz.exists() {
            continue;
        }
        // The image and the extents beside it, unpacked into a folder of
        // their own (the corpus is read in place, never changed).
        let dir = tmp.path().join(name.replace('/', "_"));
        std::fs::create_dir(&dir).expect("dir");
        let src_dir = gz.parent().expect("folder");
        for e in std::fs::read_dir(src_dir).expect("corpus dir").flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if let Some(plain) = n.strip_suffix(".gz") {
                crate::common::gunzip(&e.path(), &dir.join(plain));
            }
        }
        let file_name = Path::new(name).file_name().expect("name");
        let image = dir.join(file_name);
        let Ok(img) = diskimage::open(&image, &OpenOptions::new()) else {
            continue;
        };
        drop(img);
        for layout in [
            "monolithicSparse",
            "streamOptimized",
            "twoGbMaxExtentSparse",
        ] {
            let out = dir.join(format!("rt-{layout}.vmdk"));
            let back = dir.join(format!("rt-{layout}.raw"));
            ok(&["convert", &s(&image), &s(&out), "--subformat", layout]);
            ok(&["convert", &s(&out), &s(&back)]);
            assert_eq!(&sha256_file(&back), sha, "{name} through {layout}");
        }
        done += 1;
    }
    assert!(done >= 5, "only {done} corpus VMDKs round-tripped");
}

#[test]
fn bad_input_names_the_file_and_leaves_the_source_alone() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = |n: &str| tmp.path().join(n);
    // A size that is not a whole number of sectors.
    let err = fails(&["create", &s(&d("odd.vmdk")), "--size", "1000"]);
    assert!(err.contains("odd.vmdk") && err.contains("512"), "{err}");
    assert!(!d("odd.vmdk").exists());
    // 4096-byte sectors are not a VMDK's.
    let err = fails(&[
        "create",
        &s(&d("4k.vmdk")),
        "--size",
        "1M",
        "--sector-size",
        "4096",
    ]);
    assert!(err.contains("4k.vmdk") && err.contains("4096"), "{err}");
    // An existing destination without --force.
    ok(&["create", &s(&d("a.vmdk")), "--size", "1M"]);
    let before = sha256_file(&d("a.vmdk"));
    let err = fails(&["create", &s(&d("a.vmdk")), "--size", "2M"]);
    assert!(err.contains("a.vmdk") && err.contains("--force"), "{err}");
    assert_eq!(sha256_file(&d("a.vmdk")), before);
    ok(&["create", &s(&d("a.vmdk")), "--size", "2M", "--force"]);
    // A destination that is one of the source's files, even with --force.
    ok(&[
        "create",
        &s(&d("b.vmdk")),
        "--size",
        "1M",
        "--subformat",
        "monolithicFlat",
    ]);
    let before = sha256_file(&d("b-flat.vmdk"));
    let err = fails(&[
        "convert",
        &s(&d("b.vmdk")),
        &s(&d("b-flat.vmdk")),
        "--format",
        "raw",
        "--force",
    ]);
    assert!(
        err.contains("b-flat.vmdk") && err.contains("source"),
        "{err}"
    );
    assert_eq!(sha256_file(&d("b-flat.vmdk")), before);
    // A format that is not written.
    let err = fails(&[
        "create",
        &s(&d("x.qcow2")),
        "--size",
        "1M",
        "--format",
        "qcow2",
    ]);
    assert!(
        err.contains("x.qcow2") && err.contains("unsupported"),
        "{err}"
    );
    // The library says the same, typed.
    let e = write::create(&d("lib.vmdk"), &CreateOptions::new(Format::Vmdk, 1000))
        .expect_err("odd size");
    assert_eq!(e.path(), Some(d("lib.vmdk").as_path()));
    let Err(e) = write::open_writable(&d("missing.vmdk"), &OpenOptions::new()) else {
        panic!("a missing image opened for writing");
    };
    assert!(e.path().is_some_and(|p| p.ends_with("missing.vmdk")), "{e}");
    let e = write::create(
        &d("s.vmdk"),
        &CreateOptions::new(Format::Vmdk, 1 << 20).subformat(Some(Subformat::Fixed)),
    )
    .expect_err("fixed vmdk");
    assert_eq!(e.kind(), ErrorKind::Unsupported);
}

/// A full disk while converting: the error names the file, nothing that
/// looks finished is left, the source is unchanged. The limit is a
/// file-size rlimit (`ulimit -f`, with SIGXFSZ ignored so the write fails
/// with EFBIG as it would with ENOSPC), which needs no privileges.
#[test]
fn a_full_disk_fails_cleanly() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src.img");
    let mut rng = Rng(5);
    std::fs::write(&src, rng.bytes(4 << 20)).expect("src");
    let sum = sha256_file(&src);
    for (dst, extra) in [
        ("dst.vmdk", ""),
        ("dst-stream.vmdk", "--subformat streamOptimized"),
        ("dst.img", ""),
    ] {
        let dst = tmp.path().join(dst);
        let script = format!(
            "trap '' XFSZ; ulimit -f 1024; exec '{}' convert '{}' '{}' {extra}",
            bin(),
            s(&src),
            s(&dst)
        );
        let out = Command::new("sh")
            .args(["-c", &script])
            .output()
            .expect("sh");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{}: convert succeeded under ulimit -f",
            dst.display()
        );
        assert!(
            err.contains("File too large")
                && err.contains(&s(&dst).rsplit('/').next().unwrap_or_default().to_owned()),
            "{err}"
        );
        assert!(!dst.exists(), "{} left behind", dst.display());
        assert_eq!(sha256_file(&src), sum);
    }
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .expect("dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, vec!["src.img".to_owned()], "{left:?}");
}

/// The writer killed (SIGKILL) at many points of a write: the image still
/// opens, `qemu-img check` finds no corruption, and everything written
/// by the writes that completed before reads back.
#[test]
fn a_killed_writer_leaves_a_consistent_image() {
    if !qemu() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let size: u64 = 256 << 20;
    let big = tmp.path().join("big.bin");
    let mut rng = Rng(1234);
    let payload: Vec<u8> = rng.bytes(1 << 20).repeat(96);
    std::fs::write(&big, &payload).expect("big");
    for (round, delay_ms) in [3u64, 25, 80, 200].into_iter().enumerate() {
        for layout in SPARSE_LAYOUTS {
            let image = tmp.path().join(format!("k{round}-{layout}.vmdk"));
            let expected = tmp.path().join(format!("k{round}-{layout}.raw"));
            ok(&[
                "create",
                &s(&image),
                "--size",
                "256M",
                "--subformat",
                layout,
            ]);
            zeros(&expected, size);
            // Completed (flushed) writes first.
            for i in 0..4u64 {
                let data = rng.bytes(70_000);
                write_both(&image, &expected, tmp.path(), &data, i * (50 << 20) + 1234);
            }
            // Then a long write, killed part-way, over [100 MiB, 196 MiB).
            let killed_at = 100u64 << 20;
            let mut child = Command::new(bin())
                .args([
                    "write",
                    &s(&image),
                    "--offset",
                    &killed_at.to_string(),
                    &s(&big),
                ])
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn");
            std::thread::sleep(std::time::Duration::from_millis(delay_ms));
            let _ = child.kill();
            let _ = child.wait();
            qemu_check(&image);
            let img = diskimage::open(&image, &OpenOptions::new()).expect("opens after a kill");
            let dev = img.device();
            // Outside the killed range, every byte is what the completed writes left.
            let want = std::fs::read(&expected).expect("expected");
            let mut got = vec![0u8; size as usize];
            dev.read_at(&mut got, 0).expect("read");
            let end = killed_at + payload.len() as u64;
            assert_eq!(
                got[..killed_at as usize],
                want[..killed_at as usize],
                "round {round} {layout}"
            );
            assert_eq!(
                got[end as usize..],
                want[end as usize..],
                "round {round} {layout}"
            );
            // Inside it, each grain holds either what was there or the new bytes.
            for g in (killed_at..end).step_by(65536) {
                let (a, b) = (g as usize, (g + 65536).min(end) as usize);
                let new = &payload[a - killed_at as usize..b - killed_at as usize];
                let old = &want[a..b];
                let part = &got[a..b];
                assert!(
                    part == new || part == old,
                    "round {round} {layout}: grain at {g} is neither"
                );
            }
        }
    }
}

/// A convert killed part-way leaves no destination (only a staging
/// folder, never the file's name).
#[test]
fn a_killed_convert_leaves_no_destination() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src.img");
    let mut rng = Rng(8);
    std::fs::write(&src, rng.bytes(1 << 20).repeat(64)).expect("src");
    for delay_ms in [5u64, 40, 150] {
        let dst = tmp.path().join(format!("out{delay_ms}.vmdk"));
        let mut child = Command::new(bin())
            .args([
                "convert",
                &s(&src),
                &s(&dst),
                "--subformat",
                "streamOptimized",
            ])
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let killed = child.kill().is_ok();
        let status = child.wait().expect("wait");
        if killed && !status.success() {
            assert!(
                !dst.exists(),
                "{} looks finished after a kill",
                dst.display()
            );
        } else {
            // It finished before the kill: then it must be whole.
            ours_matches(&dst, &src);
        }
    }
}

#[test]
fn example_write_flow_creates_writes_clones_and_commits() {
    if !qemu() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join("examples").join("write_flow");
    if !path.exists() {
        let built = Command::new(env!("CARGO"))
            .args(["build", "--example", "write_flow"])
            .current_dir(repo())
            .status()
            .expect("cargo build --example");
        assert!(built.success());
    }
    let out = Command::new(&path)
        .arg(tmp.path())
        .output()
        .expect("example");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("base now reads: written into THE base"),
        "{text}"
    );
    assert!(text.contains("cloned 67108864 bytes"), "{text}");
    let expected = tmp.path().join("expected.raw");
    zeros(&expected, 64 << 20);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&expected)
        .and_then(|f| f.write_all_at(b"written into THE base", 1 << 20))
        .expect("expected");
    for image in ["base.vmdk", "delta.vmdk", "clone.vmdk"] {
        let p = tmp.path().join(image);
        qemu_check(&p);
        qemu_compare(&p, &expected);
    }
}

/// The `vmdk_write` fuzz target's seeds (and any crash reproducers kept
/// beside them) through the same steps: open for writing, write, read
/// back; an error is fine, a panic or a write that does not read back is
/// not.
#[test]
fn vmdk_write_fuzz_seeds_replay() {
    let dir = repo().join("fuzz/corpus/vmdk_write");
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).expect("seeds").flatten() {
        let path = tmp.path().join("seed.vmdk");
        std::fs::copy(e.path(), &path).expect("copy");
        let options = OpenOptions::new()
            .format(Some(Format::Vmdk))
            .no_parents(true);
        let Ok(dev) = write::open_writable(&path, &options) else {
            continue;
        };
        let (done, tried) = write_places(dev.as_ref())
            .unwrap_or_else(|finding| panic!("{}: {finding}", e.path().display()));
        assert_eq!(done, tried, "{}: every write completes", e.path().display());
        dev.flush().expect("flush");
        drop(dev);
        let delta = String::from_utf8_lossy(&std::fs::read(&path).expect("seed"))
            .contains("parentFileNameHint");
        if !delta && qemu() {
            qemu_check(&path);
        }
        n += 1;
    }
    assert!(n >= 3, "{n} seeds opened for writing");
}

/// A VM's disk in a state (`--disk N`, `--snapshot S`) and one volume
/// (`-V N`) converted: qemu-img reads the output as the VM fixture's
/// recorded sha256 (made with `qemu-img convert -O raw` of the chain) and
/// as `dump` of the example disk's volume.
#[test]
fn convert_takes_a_vm_disk_state_and_a_volume() {
    let u = crate::common::Unpacked::new(&repo().join("fixtures/vm/vmware"));
    for f in ["fixture.vmx", "fixture.vmsd"] {
        std::fs::copy(repo().join("fixtures/vm/vmware").join(f), u.path(f)).expect("copy");
    }
    let rows = crate::common::tsv_rows(&repo().join("fixtures/vm/vmware.tsv"));
    let sha_of = |state: &str, top: &str| -> String {
        rows.iter()
            .find(|r| r.first().is_some_and(|s| s == state) && r.get(2).is_some_and(|t| t == top))
            .and_then(|r| r.get(4).cloned())
            .expect("vmware.tsv row")
    };
    let out = tempfile::tempdir().expect("tempdir");
    let cases = [
        (vec!["--disk", "0"], sha_of("current", "sys-000002.vmdk")),
        (vec!["--disk", "2"], sha_of("current", "sata-000002.vmdk")),
        (
            vec!["--disk", "2", "--snapshot", "installed"],
            sha_of("installed", "sata.vmdk"),
        ),
    ];
    for (i, (flags, sha)) in cases.iter().enumerate() {
        let dst = out.path().join(format!("vm{i}.vmdk"));
        let mut args = vec!["convert".to_owned(), u.arg("fixture.vmx"), s(&dst)];
        args.extend(flags.iter().map(|f| (*f).to_owned()));
        args.extend(["--subformat".to_owned(), "streamOptimized".to_owned()]);
        ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let back = out.path().join(format!("vm{i}.raw"));
        if qemu() {
            let st = Command::new("qemu-img")
                .args(["convert", "-O", "raw", &s(&dst), &s(&back)])
                .status()
                .expect("qemu-img convert");
            assert!(st.success());
        } else {
            ok(&["dump", &s(&dst), "-o", &s(&back)]);
        }
        assert_eq!(&sha256_file(&back), sha, "{flags:?}");
    }
    // Volume 1 of the example disk, against `dump` of the whole disk.
    let ex = tempfile::tempdir().expect("tempdir");
    std::fs::copy(
        repo().join("fixtures/example/example.vmdk"),
        ex.path().join("example.vmdk"),
    )
    .expect("copy");
    let whole = ex.path().join("whole.raw");
    ok(&[
        "dump",
        &s(&ex.path().join("example.vmdk")),
        "-o",
        &s(&whole),
    ]);
    let vol = ex.path().join("vol.img");
    ok(&[
        "convert",
        &s(&ex.path().join("example.vmdk")),
        "-V",
        "1",
        &s(&vol),
    ]);
    let whole = std::fs::read(&whole).expect("whole");
    let vol = std::fs::read(&vol).expect("vol");
    assert_eq!(vol.len(), 14 << 20);
    assert_eq!(vol[..], whole[1 << 20..15 << 20]);
}

/// A sparse extent whose grain tables name the same sectors for two
/// grains (made by qemu-img and qemu-io, then one table entry copied over
/// its neighbour) opens for reading but refuses in-place writes that would
/// change both grains; one whose `overHead` reaches past the end of the
/// file is refused for writing (`qemu-img check` reports neither).
#[test]
fn a_damaged_sparse_extent_refuses_writes_that_would_not_read_back() {
    if !qemu() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("shared.vmdk");
    crate::common::tool("qemu-img", &["create", "-q", "-f", "vmdk", &s(&path), "4M"]);
    crate::common::tool(
        "qemu-io",
        &[
            "-f",
            "vmdk",
            "-c",
            "write -P 0x11 0 64k",
            "-c",
            "write -P 0x22 64k 64k",
            &s(&path),
        ],
    );
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .expect("open");
    let u64_at = |at: u64| {
        let mut b = [0u8; 8];
        file.read_exact_at(&mut b, at).expect("read");
        u64::from_le_bytes(b)
    };
    let u32_at = |at: u64| {
        let mut b = [0u8; 4];
        file.read_exact_at(&mut b, at).expect("read");
        u32::from_le_bytes(b)
    };
    let gd = u64_at(0x38) * 512;
    let gt = u64::from(u32_at(gd)) * 512;
    let first = u32_at(gt);
    assert_ne!(first, 0, "qemu-io allocated grain 0");
    file.write_all_at(&first.to_le_bytes(), gt + 4)
        .expect("patch");
    let options = OpenOptions::new().format(Some(Format::Vmdk));
    let dev = write::open_writable(&path, &options).expect("the tables themselves are sound");
    let err = dev
        .write_at(&[0x33; 4096], 64 * 1024 - 2048)
        .expect_err("grains 0 and 1 share sectors");
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    assert!(err.to_string().contains("share bytes"), "{err}");
    drop(dev);

    // overHead (at 0x40, in sectors) far past the end of the file.
    file.write_all_at(&(u64::MAX - 0xff).to_le_bytes(), 0x40)
        .expect("patch");
    let err = write::open_writable(&path, &options)
        .err()
        .expect("overHead past the end is refused");
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    assert!(err.to_string().contains("overHead"), "{err}");
}

/// A descriptor is opened for writing only when every extent is a regular
/// file in its folder and no two extents share bytes of one file: an
/// extent naming `/dev/null`, a file in another folder, the descriptor
/// itself, or the same bytes twice is refused and nothing is written.
#[test]
fn a_descriptor_whose_extents_leave_its_folder_or_overlap_is_not_written() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let flat = tmp.path().join("d-flat.vmdk");
    std::fs::write(&flat, vec![7u8; 4096]).expect("flat");
    let outside = tempfile::tempdir().expect("tempdir");
    std::fs::write(outside.path().join("o.bin"), vec![7u8; 4096]).expect("outside");
    let outside_rel = format!(
        "../{}/o.bin",
        outside.path().file_name().unwrap().to_string_lossy()
    );
    let cases = [
        ("RW 8 FLAT \"/dev/null\" 0\n".to_owned(), "not a file name"),
        (
            format!("RW 8 FLAT \"{outside_rel}\" 0\n"),
            "not a file name",
        ),
        ("RW 8 FLAT \"d.vmdk\" 0\n".to_owned(), "descriptor"),
        (
            "RW 4 FLAT \"d-flat.vmdk\" 0\nRW 4 FLAT \"d-flat.vmdk\" 2\n".to_owned(),
            "shares bytes",
        ),
    ];
    for (extents, why) in cases {
        let desc = tmp.path().join("d.vmdk");
        std::fs::write(
            &desc,
            format!(
                "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n{extents}"
            ),
        )
        .expect("descriptor");
        let err = write::open_writable(&desc, &OpenOptions::new().format(Some(Format::Vmdk)))
            .err()
            .unwrap_or_else(|| panic!("{extents} opened for writing"));
        assert!(err.to_string().contains(why), "{extents}: {err}");
    }
    assert_eq!(std::fs::read(&flat).expect("flat"), vec![7u8; 4096]);
    assert_eq!(
        std::fs::read(outside.path().join("o.bin")).expect("outside"),
        vec![7u8; 4096]
    );
    // The same extents without overlap open and write.
    let desc = tmp.path().join("d.vmdk");
    std::fs::write(
        &desc,
        "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\nRW 4 FLAT \"d-flat.vmdk\" 0\nRW 4 FLAT \"d-flat.vmdk\" 4\n",
    )
    .expect("descriptor");
    let dev = write::open_writable(&desc, &OpenOptions::new().format(Some(Format::Vmdk)))
        .expect("disjoint extents open");
    dev.write_at(&[1u8; 4096], 0).expect("write");
    drop(dev);
    assert_eq!(std::fs::read(&flat).expect("flat"), vec![1u8; 4096]);
}
