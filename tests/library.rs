//! The library as a crate user meets it: the walk iterator, the default
//! volume, the extraction engine, the examples, and a command line that
//! takes its options anywhere. Truth: the fixtures' own records (sfdisk,
//! blkid, the files the make scripts wrote), and the command's earlier
//! (option-first) output.

use std::path::{Path, PathBuf};
use std::process::Command;

use diskimage::extract::{extract, ExtractOptions, Observer, Report};
use diskimage::walk::Walk;
use diskimage::{DiskSet, ErrorKind, OpenOptions};

use crate::common::{diskimage, repo};

fn example_vmdk() -> String {
    repo()
        .join("fixtures/example/example.vmdk")
        .to_string_lossy()
        .into_owned()
}

fn linux_vmdk() -> String {
    repo()
        .join("fixtures/os/linux.vmdk")
        .to_string_lossy()
        .into_owned()
}

/// Status, stdout and stderr of one run, with `dir` (a per-run output
/// folder or file) replaced by `OUT` so two runs compare.
fn run(args: &[&str], out: &Path) -> (bool, String, String) {
    let o = diskimage(args);
    let clean =
        |b: &[u8]| String::from_utf8_lossy(b).replace(&out.to_string_lossy().into_owned(), "OUT");
    (o.status.success(), clean(&o.stdout), clean(&o.stderr))
}

/// Every subcommand gives the same result with its options before the
/// positional arguments, between them and after them.
#[test]
fn options_may_stand_before_between_or_after_positional_arguments() {
    let ex = example_vmdk();
    let linux = linux_vmdk();
    let tmp = tempfile::tempdir().expect("tempdir");
    // (name, the same command written several ways); `{out}` is a fresh
    // output path per run.
    let cases: Vec<(&str, Vec<Vec<&str>>)> = vec![
        (
            "info",
            vec![vec!["info", "--json", &ex], vec!["info", &ex, "--json"]],
        ),
        (
            "map",
            vec![vec!["map", "--json", &ex], vec!["map", &ex, "--json"]],
        ),
        (
            "hash",
            vec![
                vec!["hash", "--algo", "md5", &ex],
                vec!["hash", &ex, "--algo", "md5"],
            ],
        ),
        (
            "dump",
            vec![
                vec!["dump", "-o", "{out}", &ex],
                vec!["dump", &ex, "-o", "{out}"],
            ],
        ),
        (
            "volumes",
            vec![
                vec!["volumes", "--json", &linux],
                vec!["volumes", &linux, "--json"],
            ],
        ),
        (
            "os",
            vec![vec!["os", "--json", &linux], vec!["os", &linux, "--json"]],
        ),
        (
            "ls",
            vec![
                vec!["ls", "-V", "2", "-r", "-l", &linux, "/etc"],
                vec!["ls", &linux, "-V", "2", "/etc", "-r", "-l"],
                vec!["ls", &linux, "/etc", "-l", "-V", "2", "-r"],
            ],
        ),
        (
            "cat",
            vec![
                vec!["cat", "-V", "2", &linux, "/etc/hostname"],
                vec!["cat", &linux, "-V", "2", "/etc/hostname"],
                vec!["cat", &linux, "/etc/hostname", "-V", "2"],
            ],
        ),
        (
            "extract",
            vec![
                vec!["extract", "-V", "2", "-o", "{out}", &linux, "/etc"],
                vec!["extract", &linux, "-V", "2", "/etc", "-o", "{out}"],
                vec!["extract", &linux, "/etc", "-o", "{out}", "-V", "2"],
            ],
        ),
        (
            "timeline",
            vec![
                vec!["timeline", "-V", "2", &linux],
                vec!["timeline", &linux, "-V", "2"],
            ],
        ),
        (
            "vm",
            vec![vec!["vm", "--json", &linux], vec!["vm", &linux, "--json"]],
        ),
        // The mount point does not exist: both spellings must get past
        // the flags to the same refusal (no FUSE needed).
        (
            "mount",
            vec![
                vec!["mount", "-V", "2", &linux, "{out}"],
                vec!["mount", &linux, "-V", "2", "{out}"],
            ],
        ),
    ];
    for (name, ways) in cases {
        let mut first: Option<(bool, String, String)> = None;
        for (i, way) in ways.iter().enumerate() {
            let out = tmp.path().join(format!("{name}-{i}"));
            let out_s = out.to_string_lossy().into_owned();
            let args: Vec<&str> = way
                .iter()
                .map(|a| if *a == "{out}" { out_s.as_str() } else { a })
                .collect();
            let got = run(&args, &out);
            assert!(
                !got.2.contains("Usage:") && !got.2.contains("required"),
                "{name}: {args:?} was refused by the flag parser: {}",
                got.2
            );
            match &first {
                None => first = Some(got),
                Some(f) => assert_eq!(&got, f, "{name}: {args:?} differs from the first spelling"),
            }
        }
        let (ok, _, err) = first.unwrap_or_default();
        if name != "mount" && name != "vm" {
            assert!(ok, "{name} failed: {err}");
        }
    }
}

/// `Walk` lists the same tree, in the same order, as `ls -r` (whose output
/// the fixture tests check against mke2fs's source tree and TSK).
#[test]
fn walk_iterates_the_tree_ls_lists() {
    let linux = linux_vmdk();
    let out = diskimage(&["ls", "-r", "-V", "2", &linux, "/"]);
    assert!(out.status.success());
    let listed: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    let set = DiskSet::open(&[&linux], &OpenOptions::default()).expect("open");
    let fs = set.mount(set.volume(2).expect("volume 2")).expect("mount");
    let walked: Vec<String> = Walk::new(fs.as_ref(), "/")
        .expect("walk")
        .map(|e| e.expect("entry").path)
        .collect();
    assert_eq!(walked, listed);
    assert!(walked.iter().any(|p| p == "/etc/hostname"));
    // A listing is one level only.
    let top: Vec<String> = Walk::list(fs.as_ref(), "/")
        .expect("list")
        .map(|e| e.expect("entry").path)
        .collect();
    assert!(top.iter().all(|p| p.matches('/').count() == 1), "{top:?}");
    // Entries open their data: /etc/hostname holds what make.sh seeded.
    let host = Walk::new(fs.as_ref(), "/etc")
        .expect("walk")
        .map(|e| e.expect("entry"))
        .find(|e| e.name() == "hostname")
        .expect("hostname");
    let mut data = String::new();
    std::io::Read::read_to_string(&mut host.open(fs.as_ref()).expect("open"), &mut data)
        .expect("read");
    let seeded = std::fs::read_to_string(repo().join("fixtures/os/linux.seeded/hostname"))
        .expect("seeded hostname");
    assert_eq!(data, seeded);
    // Not a directory: a typed error, not an empty walk.
    let e = Walk::new(fs.as_ref(), "/etc/hostname")
        .err()
        .expect("refused");
    assert_eq!(e.kind(), diskimage::fs::ErrorKind::WrongType);
}

/// The default volume: the one readable volume, or a typed refusal.
#[test]
fn default_volume_is_the_one_readable_volume_or_a_typed_error() {
    let set = DiskSet::open(&[example_vmdk()], &OpenOptions::default()).expect("open");
    assert_eq!(set.default_volume(None).expect("default").index, 1);
    let e = set.default_volume(Some(9)).expect_err("no volume 9");
    assert_eq!(e.kind(), ErrorKind::OutOfBounds);
    // linux.vmdk holds three readable file systems (sfdisk + mkfs in make.sh).
    let set = DiskSet::open(&[linux_vmdk()], &OpenOptions::default()).expect("open");
    let e = set.default_volume(None).expect_err("ambiguous");
    assert_eq!(e.kind(), ErrorKind::Ambiguous);
    assert!(e.to_string().contains("volumes 1, 2, 3"), "{e}");
    assert_eq!(set.default_volume(Some(2)).expect("-V 2").index, 2);
}

/// Counts reports, as a caller of the engine would.
#[derive(Default)]
struct Count(std::sync::Mutex<Vec<String>>);

impl Observer for Count {
    fn report(&self, r: &Report) {
        self.0.lock().expect("lock").push(r.to_string());
    }
}

/// The engine restores a tree whose bytes are the files `make.sh` wrote,
/// and refuses nothing on a clean volume.
#[test]
fn extract_engine_restores_the_files_the_fixture_was_made_from() {
    let set = DiskSet::open(&[example_vmdk()], &OpenOptions::default()).expect("open");
    let device = set.default_volume(None).expect("volume").device();
    let tmp = tempfile::tempdir().expect("tempdir");
    let log = Count::default();
    for threads in [1, 3] {
        let target = tmp.path().join(format!("t{threads}"));
        let options = ExtractOptions::new().threads(std::num::NonZeroUsize::new(threads));
        let summary = extract(&device, "/", &target, &options, &log).expect("extract");
        assert_eq!((summary.files, summary.failed), (2, 0));
        assert_eq!(
            std::fs::read_to_string(target.join("README.TXT")).expect("readme"),
            "diskimage example\n"
        );
        assert_eq!(
            std::fs::read_to_string(target.join("docs/nested.txt")).expect("nested"),
            "a nested file\n"
        );
    }
    assert!(log.0.lock().expect("lock").is_empty());
    // One file as the root of an extraction.
    let target = tmp.path().join("one");
    let summary = extract(
        &device,
        "/docs/nested.txt",
        &target,
        &ExtractOptions::new(),
        &(),
    )
    .expect("one file");
    assert_eq!(summary.files, 1);
    assert!(target.join("nested.txt").is_file());
    // A path that is not there: the file system's own error.
    let e = extract(&device, "/nope", &target, &ExtractOptions::new(), &()).expect_err("missing");
    assert_eq!(e.kind(), ErrorKind::NotFound);
}

/// The path of an example's binary, built by `cargo test` beside this
/// test binary's folder.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join("examples").join(name);
    if !path.exists() {
        // `cargo test --test integration` alone does not build examples.
        let built = Command::new(env!("CARGO"))
            .args(["build", "--example", name])
            .current_dir(repo())
            .status()
            .expect("cargo build --example");
        assert!(built.success(), "cargo build --example {name}");
    }
    path
}

fn run_example(name: &str, args: &[&str]) -> String {
    let out = Command::new(example(name))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("example {name}: {e} (cargo test builds examples)"));
    assert!(
        out.status.success(),
        "example {name} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn example_mntapi_flow_finds_the_system_and_reads_its_file() {
    let out = run_example("mntapi_flow", &[&linux_vmdk()]);
    let seeded = std::fs::read_to_string(repo().join("fixtures/os/linux.seeded/hostname"))
        .expect("seeded hostname");
    assert!(
        out.contains("os: linux Debian GNU/Linux 12 (x86_64), host fixture-linux, on volume 2"),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "/etc/hostname: {} bytes, starting \"{}\"",
            seeded.len(),
            seeded.escape_debug()
        )),
        "{out}"
    );
    assert!(out.contains("volume 2: gpt"), "{out}");
}

#[test]
fn example_copy_allocated_copies_the_disk_qemu_img_made() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let copy = tmp.path().join("copy.raw");
    let out = run_example(
        "copy_allocated",
        &[&example_vmdk(), &copy.to_string_lossy()],
    );
    assert!(out.contains("allocated: "), "{out}");
    // expected.tsv: sha256sum of the raw disk qemu-img converted.
    let expected = std::fs::read_to_string(repo().join("fixtures/example/expected.tsv"))
        .expect("expected.tsv");
    let sha = expected.split('\t').nth(3).expect("sha256 column");
    assert_eq!(crate::common::sha256_file(&copy), sha);
}

#[test]
fn example_restore_dir_restores_the_seeded_files() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let target = tmp.path().join("etc");
    let out = run_example(
        "restore_dir",
        &[&linux_vmdk(), "/etc", &target.to_string_lossy()],
    );
    assert!(out.contains("restored /etc of volume 2:"), "{out}");
    assert_eq!(
        std::fs::read_link(target.join("os-release")).expect("symlink"),
        PathBuf::from("../usr/lib/os-release")
    );
    for name in ["hostname", "fstab"] {
        let seeded =
            std::fs::read(repo().join("fixtures/os/linux.seeded").join(name)).expect("seeded");
        assert_eq!(
            std::fs::read(target.join(name)).expect("restored"),
            seeded,
            "{name}"
        );
    }
}

/// NTFS metadata files are left out on request: exactly the entries TSK
/// numbers as MFT records 0-23 or lists below `$Extend`.
#[test]
fn ntfs_metadata_files_can_be_left_out_of_walks_and_extracts() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let img = tmp.path().join("ntfs.img");
    crate::common::gunzip(&repo().join("fixtures/filesystems/ntfs.img.gz"), &img);
    // fls -r -p: "TYPE INODE-...:\tPATH[:STREAM]" (a file with only named
    // streams, like $Secure, is listed by its streams); TSK's virtual
    // $OrphanFiles and deleted entries are not in the namespace.
    let fls =
        std::fs::read_to_string(repo().join("fixtures/filesystems/ntfs.img.fls.txt")).expect("fls");
    let mut metadata = std::collections::BTreeSet::new();
    for line in fls.lines() {
        let Some((head, path)) = line.split_once(":\t") else {
            continue;
        };
        let path = path.split(':').next().unwrap_or_default();
        if path.starts_with("$OrphanFiles") || head.contains('*') {
            continue;
        }
        let inode: u64 = head
            .split_whitespace()
            .last()
            .and_then(|i| i.split('-').next())
            .and_then(|i| i.parse().ok())
            .expect("inode");
        if inode < 24 || path.starts_with("$Extend/") {
            metadata.insert(format!("/{path}"));
        }
    }
    assert!(
        metadata.contains("/$MFT") && metadata.contains("/$Extend"),
        "{metadata:?}"
    );
    let device = diskimage::open(&img, &OpenOptions::default())
        .expect("open")
        .device();
    let fs = diskimage::fs::open_fs(device.clone()).expect("ntfs");
    let all: std::collections::BTreeSet<String> = Walk::new(fs.as_ref(), "/")
        .expect("walk")
        .filter_map(Result::ok)
        .map(|e| e.path)
        .collect();
    let user: std::collections::BTreeSet<String> = Walk::new(fs.as_ref(), "/")
        .expect("walk")
        .skip_fs_metadata()
        .filter_map(Result::ok)
        .map(|e| e.path)
        .collect();
    let dropped: std::collections::BTreeSet<String> = all.difference(&user).cloned().collect();
    assert_eq!(dropped, metadata);
    // The extraction engine leaves the same files out.
    let target = tmp.path().join("out");
    let options = ExtractOptions::new().fs_metadata(false);
    extract(&device, "/", &target, &options, &()).expect("extract");
    assert!(!target.join("$MFT").exists() && !target.join("$Extend").exists());
    assert!(target.join("big_dir").is_dir());
}

/// One error type at the facade: a container error reached through a disk
/// set keeps its kind, file, offset and typed detail.
#[test]
fn facade_error_keeps_the_container_errors_file_offset_and_detail() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cut = tmp.path().join("cut.vmdk");
    // The example VMDK cut before its first grain (qemu-img puts it at 64 KiB).
    let bytes = std::fs::read(example_vmdk()).expect("example");
    std::fs::write(&cut, &bytes[..40_000]).expect("write");
    let direct = diskimage::open(&cut, &OpenOptions::default())
        .and_then(|img| {
            let mut buf = vec![0u8; 1 << 20];
            (0..16).try_for_each(|i| diskimage::BlockDevice::read_at(&img, &mut buf, i << 20))
        })
        .expect_err("truncated");
    let facade: diskimage::Error = direct.into();
    assert_eq!(facade.kind(), ErrorKind::OutOfBounds);
    assert_eq!(facade.file(), Some(cut.as_path()));
    assert!(facade.offset().is_some());
    assert!(
        matches!(
            facade.detail(),
            Some(
                diskimage::error::Detail::OutOfRange { .. }
                    | diskimage::error::Detail::Truncated { .. }
            )
        ),
        "{facade:?}"
    );
}

/// `--strict` reaches the file systems: a group descriptor whose checksum
/// e2fsck would fix (fixtures/ext/make.sh flips it) is a warning, and with
/// `--strict` every file-system command refuses it; the library engine
/// takes the same choice.
#[test]
fn strict_reaches_file_systems_through_the_cli_and_the_engine() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let img = tmp.path().join("badgd.img");
    crate::common::gunzip(&repo().join("fixtures/ext/badgd.img.gz"), &img);
    let img_s = img.to_string_lossy().into_owned();
    let out_dir = tmp.path().join("out");
    let out_s = out_dir.to_string_lossy().into_owned();
    let tolerant = diskimage(&["ls", &img_s]);
    assert!(tolerant.status.success());
    assert!(String::from_utf8_lossy(&tolerant.stderr).contains("warning: ext"));
    for args in [
        vec!["ls", "--strict", &img_s],
        vec!["timeline", "--strict", &img_s],
        vec!["cat", "--strict", &img_s, "/small.txt"],
        vec!["extract", "--strict", &img_s, "-o", &out_s],
    ] {
        let o = diskimage(&args);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("checksum: stored 0x"),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let device = diskimage::open(&img, &OpenOptions::new())
        .expect("open")
        .device();
    let e = extract(
        &device,
        "/",
        &out_dir,
        &ExtractOptions::new().strict(true),
        &(),
    )
    .expect_err("strict");
    assert_eq!(e.kind(), ErrorKind::Corrupt);
    let log = Count::default();
    extract(
        &device,
        "/",
        &tmp.path().join("tolerant"),
        &ExtractOptions::new(),
        &log,
    )
    .expect("tolerant");
    assert!(log.0.lock().expect("lock")[0].starts_with("warning: ext"));
}
