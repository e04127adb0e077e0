//! The whole-disk read paths of `dump` and `hash` on every container with a
//! recorded digest: `dump` to a pipe, to a regular file given as standard
//! output (where `sendfile` writes), to an O_APPEND file (where the kernel
//! refuses `sendfile` and the reader takes over), `dump -o` to a file on
//! another file system than the image (where `copy_file_range` refuses and
//! `sendfile` copies), and `hash` with one algorithm and with several. The
//! truth is each topic's `expected.tsv` (`qemu-img convert -O raw` +
//! `sha256sum` at fixture time), never our own reader.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::common::{gunzip_dir, hex, repo, sha256_file, tsv_rows};

/// Fixtures larger than this are left to the topic tests: each image here
/// goes through six whole-disk passes.
const MAX_SIZE: u64 = 128 << 20;

/// `(topic, image, size, sha256)` of every fixture opened without options.
fn cases() -> Vec<(&'static str, String, u64, String)> {
    let mut out = Vec::new();
    for topic in ["foundation", "vmdk", "vhd", "vhdx", "qcow2"] {
        let rows = tsv_rows(&repo().join("fixtures").join(topic).join("expected.tsv"));
        for r in rows {
            let [image, options, size, sha, ..] = r.as_slice() else {
                panic!("{topic}/expected.tsv: short row {r:?}");
            };
            let size: u64 = size.parse().expect("size");
            if options == "-" && size <= MAX_SIZE {
                out.push((topic, image.clone(), size, sha.clone()));
            }
        }
    }
    assert!(out.len() > 30, "only {} cases", out.len());
    out
}

fn run(args: &[&str], out: Stdio) -> std::process::ExitStatus {
    Command::new(env!("CARGO_BIN_EXE_diskimage"))
        .args(args)
        .stdout(out)
        .stderr(Stdio::inherit())
        .status()
        .expect("run diskimage")
}

/// A directory on a different file system than `of`, if the machine has
/// one (`/dev/shm` is tmpfs on Linux; the temporary directory usually is
/// not).
fn other_fs_dir(of: &Path) -> Option<tempfile::TempDir> {
    use std::os::unix::fs::MetadataExt;
    let shm = Path::new("/dev/shm");
    let dev = |p: &Path| std::fs::metadata(p).ok().map(|m| m.dev());
    (dev(shm)? != dev(of)?)
        .then(|| tempfile::tempdir_in(shm).ok())
        .flatten()
}

#[test]
fn dump_to_pipes_files_and_appended_files_and_hash_match_qemu_img() {
    let work = tempfile::tempdir().expect("tempdir");
    let other = other_fs_dir(work.path());
    if other.is_none() {
        eprintln!(
            "note: no second file system (/dev/shm): dump -o across file systems not covered"
        );
    }
    let mut unpacked = std::collections::BTreeSet::new();
    for (topic, image, size, sha) in cases() {
        let dir = work.path().join(topic);
        if unpacked.insert(topic) {
            std::fs::create_dir(&dir).expect("dir");
            gunzip_dir(&repo().join("fixtures").join(topic), &dir);
        }
        let img = dir.join(&image);
        let img = img.to_str().expect("utf-8 path");
        let name = format!("{topic}/{image}");

        // A pipe: what `dump | sha256sum` sees.
        let piped = Command::new(env!("CARGO_BIN_EXE_diskimage"))
            .args(["dump", img])
            .output()
            .expect("run diskimage");
        assert!(piped.status.success(), "{name}: dump to a pipe failed");
        assert_eq!(piped.stdout.len() as u64, size, "{name}: dump to a pipe");
        let digest = hex(&<sha2::Sha256 as sha2::Digest>::digest(&piped.stdout));
        assert_eq!(digest, sha, "{name}: dump to a pipe");

        // A regular file as standard output (`dump IMG > FILE`).
        let out = work.path().join("stdout.raw");
        let file = std::fs::File::create(&out).expect("create");
        assert!(run(&["dump", img], file.into()).success(), "{name}");
        assert_eq!(sha256_file(&out), sha, "{name}: dump > FILE");

        // An O_APPEND file after 3 bytes (`dump IMG >> FILE`).
        std::fs::write(&out, b"abc").expect("write");
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(&out)
            .expect("open");
        assert!(run(&["dump", img], file.into()).success(), "{name}");
        let appended = std::fs::read(&out).expect("read");
        assert_eq!(appended.get(..3), Some(&b"abc"[..]), "{name}: dump >> FILE");
        let digest = hex(&<sha2::Sha256 as sha2::Digest>::digest(
            appended.get(3..).unwrap_or_default(),
        ));
        assert_eq!(digest, sha, "{name}: dump >> FILE");
        std::fs::remove_file(&out).expect("remove");

        // `dump -o` onto another file system.
        if let Some(other) = &other {
            let out = other.path().join("out.raw");
            let o = out.to_str().expect("utf-8 path");
            assert!(
                run(&["dump", img, "-o", o], Stdio::null()).success(),
                "{name}"
            );
            assert_eq!(
                sha256_file(&out),
                sha,
                "{name}: dump -o across file systems"
            );
            std::fs::remove_file(&out).expect("remove");
        }

        // `hash`: one digest on the reading side, several on threads.
        let one = Command::new(env!("CARGO_BIN_EXE_diskimage"))
            .args(["hash", img])
            .output()
            .expect("run diskimage");
        assert!(one.status.success(), "{name}: hash failed");
        let text = String::from_utf8_lossy(&one.stdout);
        assert_eq!(text.split(' ').next(), Some(sha.as_str()), "{name}: hash");
        let several = Command::new(env!("CARGO_BIN_EXE_diskimage"))
            .args(["hash", "--algo", "md5", "--algo", "sha256", img])
            .output()
            .expect("run diskimage");
        assert!(several.status.success(), "{name}: hash failed");
        let text = String::from_utf8_lossy(&several.stdout);
        assert!(
            text.lines()
                .any(|l| l.starts_with("SHA256 (") && l.ends_with(&format!(" = {sha}"))),
            "{name}: hash --algo md5 --algo sha256 printed {text}"
        );
    }
}
