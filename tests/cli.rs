//! The `diskimage` binary end to end, on the foundation fixtures.
//! Truth comes from `fixtures/foundation/*.tsv` (md5sum/sha1sum/sha256sum,
//! qemu-img, blkid), never from our own reader.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use crate::common::{diskimage, gunzip_dir, repo, sha256_file, tsv_rows};

struct Foundation {
    dir: tempfile::TempDir,
}

impl Foundation {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        gunzip_dir(&repo().join("fixtures/foundation"), dir.path());
        Foundation { dir }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn arg(&self, name: &str) -> String {
        self.path(name).to_string_lossy().into_owned()
    }
}

fn truth(file: &str) -> Vec<Vec<String>> {
    tsv_rows(&repo().join("fixtures/foundation").join(file))
}

fn stdout(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "diskimage failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("utf-8 output")
}

#[test]
fn hash_matches_md5sum_sha1sum_and_sha256sum() {
    let f = Foundation::new();
    for row in truth("digests.tsv") {
        let [image, md5, sha1, sha256] = row.as_slice() else {
            panic!("{row:?}")
        };
        let arg = f.arg(image);
        let out = stdout(&diskimage(&["hash", &arg]));
        assert_eq!(out, format!("{sha256}  {arg}\n"), "sha256 of {image}");
        let out = stdout(&diskimage(&["hash", "--algo", "md5", &arg]));
        assert_eq!(out, format!("{md5}  {arg}\n"), "md5 of {image}");
        let out = stdout(&diskimage(&[
            "hash", "--algo", "md5", "--algo", "sha1", "--algo", "sha256", &arg,
        ]));
        assert_eq!(
            out,
            format!("MD5 ({arg}) = {md5}\nSHA1 ({arg}) = {sha1}\nSHA256 ({arg}) = {sha256}\n"),
            "one-pass digests of {image}"
        );
    }
}

#[test]
fn dump_to_stdout_and_to_a_sparse_file_reproduce_the_bytes() {
    let f = Foundation::new();
    let expected: Vec<_> = truth("expected.tsv")
        .into_iter()
        .filter(|r| r[1] == "-")
        .collect();
    assert!(!expected.is_empty());
    for row in &expected {
        let (image, size, sha) = (&row[0], &row[2], &row[3]);
        let out = diskimage(&["dump", &f.arg(image)]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout.len().to_string(), *size, "dump size of {image}");
        assert_eq!(
            &crate::common::hex(&<sha2::Sha256 as sha2::Digest>::digest(&out.stdout)),
            sha,
            "dump of {image}"
        );
        let target = f.path(&format!("{image}.out"));
        stdout(&diskimage(&[
            "dump",
            &f.arg(image),
            "-o",
            &target.to_string_lossy(),
        ]));
        assert_eq!(&sha256_file(&target), sha, "dump -o of {image}");
    }
    // The 64 MiB disk is mostly empty: its dump must be a sparse file.
    let out = f.path("disk.001.out");
    let meta = std::fs::metadata(&out).expect("dump output");
    assert_eq!(meta.len(), 64 << 20);
    assert!(
        meta.blocks() * 512 < meta.len() / 4,
        "dump -o wrote {} bytes of blocks for a mostly empty disk",
        meta.blocks() * 512
    );
}

#[test]
fn dump_refuses_to_overwrite_its_input() {
    let f = Foundation::new();
    let before = sha256_file(&f.path("disk.img"));
    let out = diskimage(&["dump", &f.arg("disk.img"), "-o", &f.arg("disk.img")]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing to write"));
    let out = diskimage(&["dump", &f.arg("disk.001"), "-o", &f.arg("disk.003")]);
    assert!(!out.status.success(), "a split part is an input too");
    assert_eq!(sha256_file(&f.path("disk.img")), before);
}

#[test]
fn info_json_has_the_documented_fields_and_content_from_blkid() {
    let f = Foundation::new();
    let out = stdout(&diskimage(&["info", "--json", &f.arg("disk.001")]));
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["format"], "split-raw");
    assert_eq!(v["size"], 64u64 << 20);
    assert_eq!(v["sector_size"], 512);
    assert_eq!(v["files"].as_array().map(Vec::len), Some(7));
    assert!(v["warnings"].as_array().is_some_and(Vec::is_empty));
    assert!(v["parent"].is_null());
    assert_eq!(v["properties"]["parts"], "7");
    for row in truth("content.tsv") {
        let [image, kind, label, uuid] = row.as_slice() else {
            panic!("{row:?}")
        };
        let out = stdout(&diskimage(&["info", "--json", &f.arg(image)]));
        let v: serde_json::Value = serde_json::from_str(&out).expect("json");
        let c = &v["content"];
        let kind_ok = match kind.as_str() {
            "vfat" => c["kind"].as_str().is_some_and(|k| k.starts_with("fat")),
            k => c["kind"] == k,
        };
        assert!(kind_ok, "{image}: blkid says {kind}, we say {c}");
        assert_eq!(c["label"], label.as_str(), "{image} label");
        if image.ends_with(".iso") {
            // blkid's ISO "UUID" is the creation date, not an identifier we report.
            assert_eq!(v["sector_size"], 2048);
            assert_eq!(v["properties"]["volume_id"], label.as_str());
        } else {
            assert_eq!(
                c["uuid"].as_str().map(str::to_ascii_lowercase),
                Some(uuid.to_ascii_lowercase()),
                "{image} uuid"
            );
        }
    }
    let text = stdout(&diskimage(&["info", &f.arg("cd.iso")]));
    assert!(text.contains("format:       ISO (ISO 9660)"), "{text}");
    assert!(text.contains("sector size:  2048"), "{text}");
}

#[test]
fn map_json_covers_the_disk() {
    let f = Foundation::new();
    let out = stdout(&diskimage(&["map", "--json", &f.arg("odd.raw")]));
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["size"], 100_001);
    assert_eq!(
        v["extents"],
        serde_json::json!([{ "offset": 0, "length": 100_001, "kind": "data" }])
    );
    let text = stdout(&diskimage(&["map", &f.arg("odd.raw")]));
    assert!(
        text.lines()
            .nth(1)
            .is_some_and(|l| l.trim_end().ends_with("data")),
        "{text}"
    );
}

#[test]
fn bad_inputs_fail_with_one_line_and_exit_code_1() {
    let f = Foundation::new();
    let dir = f.dir.path().to_string_lossy().into_owned();
    let missing = f.arg("does-not-exist.img");
    for (args, needle) in [
        (vec!["info", &dir], "holds no VM"),
        (vec!["info", &missing], "No such file"),
        (vec!["hash", &f.arg("empty.iso")], "empty"),
        (
            vec!["info", &f.arg("bad-small.iso")],
            "16-sector ISO 9660 system area",
        ),
        (vec!["dump", &f.arg("garbage.dat")], "--format"),
    ] {
        let out = diskimage(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.starts_with("diskimage: error: ") && err.contains(needle),
            "{args:?}: {err}"
        );
        assert!(!err.contains("panicked"));
    }
    // Forcing a reader overrides the probe.
    let out = stdout(&diskimage(&[
        "info",
        "--json",
        "--format",
        "raw",
        &f.arg("garbage.dat"),
    ]));
    assert!(out.contains("\"format\": \"raw\""));
}

#[test]
fn readme_main_command_runs_on_the_bundled_example() {
    // README.md shows `cargo run --release -- ARGS` for the main job; run ARGS here.
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README.md");
    let line = readme
        .lines()
        .find(|l| l.trim_start().starts_with("cargo run --release -- "))
        .expect("README shows a `cargo run --release -- ...` command");
    let args: Vec<&str> = line
        .trim()
        .trim_start_matches("cargo run --release -- ")
        .split_whitespace()
        .collect();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_diskimage"))
        .args(&args)
        .current_dir(repo())
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{line}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.stdout.is_empty());
}

/// `info --deps` lists what to copy: the chain that `fixtures/vmdk/make.sh`
/// built with `qemu-img create -b` (top → mid → base), the extents of a
/// twoGbMaxExtentSparse image (big.vmdk: descriptor + 3 extents, as
/// qemu-img made them), and a VHDX's single file.
#[test]
fn info_deps_lists_every_file_an_image_needs() {
    let dir = tempfile::tempdir().expect("tempdir");
    gunzip_dir(&repo().join("fixtures/vmdk"), dir.path());
    let names = |args: &[&str]| -> Vec<String> {
        stdout(&diskimage(args))
            .lines()
            .map(|l| {
                PathBuf::from(l)
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect()
    };
    let top = dir
        .path()
        .join("chain-top.vmdk")
        .to_string_lossy()
        .into_owned();
    assert_eq!(
        names(&["info", "--deps", &top]),
        ["chain-top.vmdk", "chain-mid.vmdk", "chain-base.vmdk"]
    );
    let big = dir.path().join("big.vmdk").to_string_lossy().into_owned();
    assert_eq!(
        names(&["info", "--deps", &big]),
        [
            "big.vmdk",
            "big-s001.vmdk",
            "big-s002.vmdk",
            "big-s003.vmdk"
        ]
    );
    let missing = dir
        .path()
        .join("bad-missing-parent.vmdk")
        .to_string_lossy()
        .into_owned();
    let out = diskimage(&["info", "--deps", &missing]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("missing file"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let f = Foundation::new();
    assert_eq!(
        names(&["info", "--deps", &f.arg("disk.001")]).len(),
        7,
        "split raw: every part"
    );
}
