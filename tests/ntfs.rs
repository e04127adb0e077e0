//! NTFS images of `fixtures/ntfs/` (made by mkntfs and ntfs-3g) against
//! what TSK and ntfs-3g read from them at fixture-making time: `fls -r -p`
//! for the names and `icat` sha256 for every `$DATA` stream, alternate
//! data streams and system files included (`*.data.tsv`). `$Boot` is also
//! compared with the first 8 KiB of the volume itself.
//!
//! - `frag_mft.img`: `$MFT` in many runs with a directory whose record
//!   crosses from one run into the next.
//! - `attr_list.img`: named streams in extension records reached through
//!   `$ATTRIBUTE_LIST`, LZNT1-compressed data split into pieces over
//!   extension records.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::common::{diskimage, gunzip, repo, sha256_bytes, sha256_file, tsv_rows};

fn dir() -> PathBuf {
    repo().join("fixtures/ntfs")
}

/// The image `name` decompressed into `work`.
fn image(name: &str, work: &Path) -> PathBuf {
    let img = work.join(name);
    gunzip(&dir().join(format!("{name}.gz")), &img);
    img
}

/// One `$DATA` stream as TSK read it: path (`path:stream` for a named one),
/// size and icat's sha256, and ntfscat's sha256 where it differs.
struct Truth {
    path: String,
    size: u64,
    sha256: String,
    /// ntfs-3g's sha256 where it differs from TSK's: `$MFT` and `$MFTMirr`
    /// (ntfscat applies the records' fixups, icat gives the stored bytes)
    /// and `$BadClus:$Bad` (icat gives nothing for a sparse stream whose
    /// initialized size is 0, ntfscat its whole size in zeros).
    other: Option<String>,
}

fn truth(name: &str) -> Vec<Truth> {
    let rows = tsv_rows(&dir().join(format!("{name}.data.tsv")));
    assert!(!rows.is_empty(), "{name}.data.tsv is empty");
    rows.into_iter()
        .map(|r| Truth {
            path: r[0].clone(),
            size: r[2].parse().expect("size"),
            sha256: r[3].clone(),
            other: (r[5] != "same").then(|| r[4].clone()),
        })
        .collect()
}

/// The allocated names of `fls -r -p` (files, directories, streams;
/// deleted and orphan entries and non-`$DATA` attributes left out), as
/// absolute paths.
fn fls_names(name: &str) -> BTreeSet<String> {
    let text = std::fs::read_to_string(dir().join(format!("{name}.fls.txt"))).expect("fls.txt");
    text.lines()
        .filter_map(|l| {
            let (head, path) = l.split_once('\t')?;
            let mut f = head.split_whitespace();
            let ty = f.next()?;
            let spec = f.next()?;
            if spec == "*" || path.starts_with("$OrphanFiles") {
                return None;
            }
            let data = spec.contains("-128-") || spec.contains("-144-") && ty == "d/d";
            data.then(|| format!("/{path}"))
        })
        .collect()
}

fn run_ok(args: &[&str]) -> Vec<u8> {
    let out = diskimage(args);
    assert!(
        out.status.success(),
        "diskimage {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `ls -r --json` of `img`: each path with its type, size and streams.
fn listing(img: &Path) -> BTreeMap<String, serde_json::Value> {
    let out = run_ok(&["ls", "-r", "--json", img.to_str().unwrap_or_default()]);
    let json: serde_json::Value = serde_json::from_slice(&out).expect("ls --json");
    json.as_array()
        .expect("array")
        .iter()
        .map(|e| {
            (
                e["path"].as_str().unwrap_or_default().to_string(),
                e.clone(),
            )
        })
        .collect()
}

/// Checks names, sizes and every stream's bytes of image `name` against
/// the truth: `ls -r` (names, sizes, stream names), `extract --streams`
/// (file and stream bytes), `cat` (system files). Returns the mismatches.
fn check(name: &str) -> Vec<String> {
    let work = tempfile::tempdir().expect("tempdir");
    let img = image(name, work.path());
    let i = img.to_str().unwrap_or_default();
    let before = sha256_file(&img);
    let mut errors = Vec::new();

    // Names: every allocated name TSK lists (with streams as path:stream).
    let listed = listing(&img);
    let mut ours = BTreeSet::new();
    for (path, e) in &listed {
        ours.insert(path.clone());
        for s in e["streams"].as_array().into_iter().flatten() {
            ours.insert(format!("{path}:{}", s.as_str().unwrap_or_default()));
        }
    }
    let want = fls_names(name);
    // TSK names index streams of system files ($Secure:$SDH, $Extend/$Quota:$O)
    // that are not $DATA; our listing has $DATA streams alone.
    let missing: Vec<_> = want.iter().filter(|p| !ours.contains(*p)).collect();
    if !missing.is_empty() {
        errors.push(format!("{name}: not listed: {missing:?}"));
    }

    // Bytes: extract --streams writes every file and stream.
    let out = work.path().join("out");
    run_ok(&[
        "extract",
        i,
        "-o",
        out.to_str().unwrap_or_default(),
        "--streams",
    ]);
    for t in truth(name) {
        let (file, stream) = match t.path.rsplit_once('/') {
            Some((_, last)) if last.contains(':') => {
                let (f, s) = t.path.rsplit_once(':').unwrap_or_default();
                (f.to_string(), Some(s.to_string()))
            }
            _ => (t.path.clone(), None),
        };
        let size = match &stream {
            None => listed.get(&file).and_then(|e| e["size"].as_u64()),
            Some(_) => None,
        };
        if stream.is_none() && !file.starts_with("/$") && size != Some(t.size) {
            errors.push(format!("{name}: {}: size {size:?}, TSK {}", t.path, t.size));
        }
        // System files ($MFT, $Boot ...) and their streams through cat.
        let got = if file.starts_with("/$") {
            let o = diskimage(&["cat", i, &t.path]);
            if !o.status.success() {
                errors.push(format!(
                    "{name}: cat {}: {}",
                    t.path,
                    String::from_utf8_lossy(&o.stderr).trim()
                ));
                continue;
            }
            sha256_bytes(&o.stdout)
        } else {
            let p = out.join(t.path.trim_start_matches('/'));
            if !p.exists() {
                errors.push(format!("{name}: {} not extracted", t.path));
                continue;
            }
            sha256_file(&p)
        };
        if got != t.sha256 && Some(&got) != t.other.as_ref() {
            errors.push(format!(
                "{name}: {}: sha256 {got}, icat {}",
                t.path, t.sha256
            ));
        }
    }
    assert_eq!(sha256_file(&img), before, "{name}: the image was written");
    errors
}

#[test]
fn boot_reads_the_first_8k_of_the_volume() {
    // $Boot's data run starts at cluster 0: stored data, not a sparse run.
    let work = tempfile::tempdir().expect("tempdir");
    for name in ["frag_mft.img", "attr_list.img"] {
        let img = image(name, work.path());
        let got = run_ok(&["cat", img.to_str().unwrap_or_default(), "/$Boot"]);
        let volume = std::fs::read(&img).expect("image");
        assert_eq!(got.len(), 8192, "{name}");
        assert!(
            got == volume[..8192],
            "{name}: $Boot is not the first 8 KiB"
        );
        let tsk = truth(name)
            .into_iter()
            .find(|t| t.path == "/$Boot")
            .expect("$Boot row");
        assert_eq!(sha256_bytes(&got), tsk.sha256, "{name}: icat $Boot");
        // extract copies it from where its run says it is stored (offset 0
        // of the volume), by the kernel or through the reader.
        for how in [&[][..], &["--no-kernel-copy"][..]] {
            let out = work.path().join(format!("x-{name}-{}", how.len()));
            let mut args = vec!["extract", img.to_str().unwrap_or_default(), "-o"];
            args.push(out.to_str().unwrap_or_default());
            args.extend(how);
            run_ok(&args);
            let boot = std::fs::read(out.join("$Boot")).expect("extracted $Boot");
            assert!(boot == volume[..8192], "{name} {how:?}: extracted $Boot");
        }
    }
}

#[test]
fn fragmented_mft_reads_like_tsk() {
    // The record of /straddle crosses from one $MFT run into the next.
    let mft = std::fs::read_to_string(dir().join("frag_mft.img.mft.txt")).expect("mft.txt");
    assert!(mft.contains("record 511 crosses"), "{mft}");
    let fls = std::fs::read_to_string(dir().join("frag_mft.img.fls.txt")).expect("fls");
    assert!(
        fls.contains("d/d 511-144-2:\tstraddle\n"),
        "fixture changed"
    );
    let errors = check("frag_mft.img");
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

#[test]
fn fragmented_mft_cli_walks_exit_zero() {
    let work = tempfile::tempdir().expect("tempdir");
    let img = image("frag_mft.img", work.path());
    let i = img.to_str().unwrap_or_default();
    let ls = String::from_utf8(run_ok(&["ls", "-r", i])).expect("utf-8");
    assert!(ls.contains("straddle/inner19.txt"), "{ls}");
    let body = String::from_utf8(run_ok(&["timeline", i])).expect("utf-8");
    assert!(body.contains("/straddle/inner00.txt"), "{body}");
    let out = work.path().join("x");
    run_ok(&["extract", i, "-o", out.to_str().unwrap_or_default()]);
    assert_eq!(
        std::fs::read(out.join("straddle/inner00.txt")).expect("extracted"),
        b"inside the straddling directory, file 0\n"
    );
}

#[test]
fn attribute_list_streams_read_like_tsk() {
    let errors = check("attr_list.img");
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

#[test]
fn ads_in_an_extension_record_by_cat() {
    let work = tempfile::tempdir().expect("tempdir");
    let img = image("attr_list.img", work.path());
    let i = img.to_str().unwrap_or_default();
    for t in truth("attr_list.img")
        .into_iter()
        .filter(|t| t.path.starts_with("/many_ads.txt:"))
    {
        let got = run_ok(&["cat", i, &t.path]);
        assert_eq!(sha256_bytes(&got), t.sha256, "{}", t.path);
    }
    // Stream names are looked up ignoring case, as Windows does.
    let got = run_ok(&["cat", i, "/many_ads.txt:STREAM39"]);
    assert_eq!(
        got,
        b"ads 39 "
            .repeat(49)
            .into_iter()
            .chain(*b"\n")
            .collect::<Vec<u8>>()
    );
}

#[test]
fn compressed_data_over_an_attribute_list_by_cat() {
    let work = tempfile::tempdir().expect("tempdir");
    let img = image("attr_list.img", work.path());
    let i = img.to_str().unwrap_or_default();
    let t = truth("attr_list.img")
        .into_iter()
        .find(|t| t.path == "/comp/big.txt")
        .expect("big.txt row");
    let got = run_ok(&["cat", i, "/comp/big.txt"]);
    assert_eq!(got.len() as u64, t.size);
    assert_eq!(sha256_bytes(&got), t.sha256);
}
