//! Every fixture topic (`fixtures/<topic>/`): images made by real tools,
//! with truth taken from those tools (see each topic's `make.sh`).
//!
//! - `expected.tsv`: `image  options  size  sha256  source` — opens, has
//!   that size, and the whole virtual disk has that sha256; zero extents
//!   of the map read as zeros.
//! - `errors.tsv`: `image  options  kind  substring` — opening (or reading
//!   the whole disk) fails with that error kind and message.
//! - `warnings.tsv`: `image  options  kind  substring` — opens with such a warning.
//! - `sectors.tsv`: `image  logical-sector-size  source` — `sector_size()`
//!   reports what the independent reader says.
//!
//! Every topic's inputs must be byte-identical after all of this.

use std::collections::BTreeMap;
use std::path::Path;

use diskimage::{open, BlockDevice};

use crate::common::{
    check_zero_extents, gunzip_dir, parse_options, sha256_device, sha256_file, tsv_rows,
};

fn topics() -> Vec<std::path::PathBuf> {
    let mut t: Vec<_> = std::fs::read_dir(crate::common::repo().join("fixtures"))
        .expect("fixtures folder")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.is_dir() && (p.join("expected.tsv").exists() || p.join("errors.tsv").exists())
        })
        .collect();
    t.sort();
    t
}

fn check_topic(topic: &Path, failures: &mut Vec<String>) -> usize {
    let tmp = tempfile::tempdir().expect("tempdir");
    let files = gunzip_dir(topic, tmp.path());
    let before: BTreeMap<_, _> = files.iter().map(|f| (f.clone(), sha256_file(f))).collect();
    let name = topic
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .to_string();
    let mut checked = 0;
    let mut fail = |msg: String| failures.push(format!("{name}: {msg}"));

    for row in tsv_rows(&topic.join("expected.tsv")) {
        let [image, opts, size, sha, ..] = row.as_slice() else {
            fail(format!("malformed expected.tsv row {row:?}"));
            continue;
        };
        checked += 1;
        let path = tmp.path().join(image);
        // An image committed uncompressed (the README example) is read in place.
        let path = if path.exists() {
            path
        } else {
            topic.join(image)
        };
        let img = match open(&path, &parse_options(opts)) {
            Ok(i) => i,
            Err(e) => {
                fail(format!("{image} [{opts}]: open failed: {e}"));
                continue;
            }
        };
        let size: u64 = size.parse().expect("size column");
        if img.size() != size {
            fail(format!(
                "{image} [{opts}]: size {} != expected {size}",
                img.size()
            ));
            continue;
        }
        match sha256_device(&img, size) {
            Ok(h) if &h == sha => {}
            Ok(h) => fail(format!("{image} [{opts}]: sha256 {h} != expected {sha}")),
            Err(e) => fail(format!("{image} [{opts}]: read failed: {e}")),
        }
        if let Err(e) = check_zero_extents(&img) {
            fail(format!("{image} [{opts}]: zero extents: {e}"));
        }
    }

    for row in tsv_rows(&topic.join("errors.tsv")) {
        let [image, opts, kind, text, ..] = row.as_slice() else {
            fail(format!("malformed errors.tsv row {row:?}"));
            continue;
        };
        checked += 1;
        let path = tmp.path().join(image);
        let result = open(&path, &parse_options(opts))
            .and_then(|img| sha256_device(&img, img.size()).map(|_| ()));
        match result {
            Ok(()) => fail(format!(
                "{image} [{opts}]: expected a {kind} error, but it opened and read"
            )),
            Err(e) if e.kind().as_str() == kind && e.to_string().contains(text.as_str()) => {}
            Err(e) => fail(format!(
                "{image} [{opts}]: expected {kind} error with {text:?}, got {}: {e}",
                e.kind().as_str()
            )),
        }
    }

    for row in tsv_rows(&topic.join("warnings.tsv")) {
        let [image, opts, kind, text, ..] = row.as_slice() else {
            fail(format!("malformed warnings.tsv row {row:?}"));
            continue;
        };
        checked += 1;
        match open(&tmp.path().join(image), &parse_options(opts)) {
            Ok(img) => {
                let found = img
                    .info()
                    .all_warnings()
                    .any(|w| w.kind.as_str() == kind && w.message.contains(text.as_str()));
                if !found {
                    let all: Vec<_> = img.info().all_warnings().map(ToString::to_string).collect();
                    fail(format!(
                        "{image} [{opts}]: no {kind} warning with {text:?}; warnings: {all:?}"
                    ));
                }
            }
            Err(e) => fail(format!("{image} [{opts}]: open failed: {e}")),
        }
    }

    for row in tsv_rows(&topic.join("sectors.tsv")) {
        let [image, sector, ..] = row.as_slice() else {
            fail(format!("malformed sectors.tsv row {row:?}"));
            continue;
        };
        checked += 1;
        match open(&tmp.path().join(image), &diskimage::OpenOptions::default()) {
            Ok(img) if img.sector_size().to_string() == *sector => {}
            Ok(img) => fail(format!(
                "{image}: sector size {} != expected {sector}",
                img.sector_size()
            )),
            Err(e) => fail(format!("{image}: open failed: {e}")),
        }
    }

    for (f, sha) in &before {
        if &sha256_file(f) != sha {
            fail(format!("{} changed while being read", f.display()));
        }
    }
    checked
}

#[test]
fn every_fixture_matches_the_truth_of_the_tool_that_made_it() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for topic in topics() {
        checked += check_topic(&topic, &mut failures);
    }
    assert!(checked > 0, "no fixture rows found");
    assert!(
        failures.is_empty(),
        "{} of {checked} fixture checks failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!("{checked} fixture checks passed");
}
