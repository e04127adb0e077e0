//! What changed between two states of a VM (`diskimage::changes`,
//! `diskimage changes`): the VM of `fixtures/changes/` (made by its
//! `make.sh`) against the runs qemu-img map gives for the layers above the
//! files both chains share, the sectors that differ between the raw states
//! qemu-img converts, and the file changes found in the trees mtools and
//! debugfs extracted; the VMs of `fixtures/vm/` (`.vmx`, `.vbox`, Hyper-V)
//! against qemu-img map run live.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use diskimage::changes::{
    changed_areas, changed_files, Change, ChangeOptions, DiskChanges, Run, VolumeChanges,
};
use diskimage::fs::FileType;
use diskimage::ErrorKind;

use crate::common::{diskimage, gunzip, repo, sha256_file, tsv_rows};

/// Copies `fixtures/<topic>/<name>` into `dst`, decompressing `*.gz`;
/// returns the folder and the sha256 of every file, to check afterwards
/// that nothing was written.
fn unpack(topic: &str, name: &str, dst: &Path) -> (PathBuf, BTreeMap<PathBuf, String>) {
    fn walk(src: &Path, dst: &Path, sums: &mut BTreeMap<PathBuf, String>) {
        std::fs::create_dir_all(dst).expect("mkdir");
        for e in std::fs::read_dir(src).expect("read fixture dir").flatten() {
            let p = e.path();
            let file = e.file_name().to_string_lossy().into_owned();
            if p.is_dir() {
                walk(&p, &dst.join(&file), sums);
                continue;
            }
            let out = match file.strip_suffix(".gz") {
                Some(stem) => {
                    gunzip(&p, &dst.join(stem));
                    dst.join(stem)
                }
                None => {
                    std::fs::copy(&p, dst.join(&file)).expect("copy");
                    dst.join(&file)
                }
            };
            sums.insert(out.clone(), sha256_file(&out));
        }
    }
    let out = dst.join(name);
    let mut sums = BTreeMap::new();
    walk(
        &repo().join("fixtures").join(topic).join(name),
        &out,
        &mut sums,
    );
    (out, sums)
}

fn unchanged(sums: &BTreeMap<PathBuf, String>) {
    for (f, sha) in sums {
        assert_eq!(&sha256_file(f), sha, "{} was written", f.display());
    }
}

fn truth(file: &str) -> Vec<Vec<String>> {
    tsv_rows(&repo().join("fixtures/changes").join(file))
}

const PAIRS: [(&str, &str); 4] = [
    ("base", "edited"),
    ("edited", "current"),
    ("base", "current"),
    ("current", "base"),
];

fn runs(d: &DiskChanges) -> Vec<(u64, u64)> {
    d.runs.iter().map(|r| (r.offset, r.length)).collect()
}

fn disk<'a>(disks: &'a [DiskChanges], slot: &str) -> &'a DiskChanges {
    disks
        .iter()
        .find(|d| d.slot == slot)
        .unwrap_or_else(|| panic!("no disk {slot}"))
}

#[test]
fn runs_are_qemu_img_maps_of_the_layers_above_the_shared_files() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (dir, sums) = unpack("changes", "vmware", tmp.path());
    let vmx = dir.join("chg.vmx");
    let rows = truth("blocks.tsv");
    assert!(rows.len() >= 12, "blocks.tsv is short");
    for (from, to) in PAIRS {
        let disks = changed_areas(&vmx, from, Some(to), &ChangeOptions::new())
            .unwrap_or_else(|e| panic!("{from} -> {to}: {e}"));
        assert_eq!(disks.len(), 2, "{from} -> {to}");
        for slot in ["scsi0:0", "scsi0:1"] {
            let want: Vec<&Vec<String>> = rows
                .iter()
                .filter(|r| r[0] == from && r[1] == to && r[2] == slot)
                .collect();
            let d = disk(&disks, slot);
            let expected: Vec<(u64, u64)> = want
                .iter()
                .map(|r| (r[3].parse().expect("offset"), r[4].parse().expect("length")))
                .collect();
            assert_eq!(runs(d), expected, "{from} -> {to} {slot}");
            let whole = want.iter().any(|r| r[5].starts_with("whole disk"));
            assert_eq!(d.whole_disk, whole, "{from} -> {to} {slot}");
            if whole {
                assert!(d.shared.is_empty() && d.note.is_some(), "{d:?}");
            } else {
                assert!(!d.shared.is_empty(), "{d:?}");
            }
        }
    }
    // A state against itself: nothing changed.
    for state in ["base", "edited", "current", "1", "2"] {
        for d in changed_areas(&vmx, state, Some(state), &ChangeOptions::new()).expect(state) {
            assert!(d.runs.is_empty(), "{state} {}: {:?}", d.slot, d.runs);
            assert!(d.from_layers.is_empty() && d.to_layers.is_empty());
        }
    }
    unchanged(&sums);
}

/// Whether every byte of `[offset, offset + len)` lies in `runs`.
fn covered(runs: &[Run], offset: u64, len: u64) -> bool {
    let mut at = offset;
    let end = offset + len;
    for r in runs {
        if r.offset <= at && at < r.end() {
            at = r.end();
        }
        if at >= end {
            return true;
        }
    }
    at >= end
}

#[test]
fn every_sector_that_differs_lies_in_a_reported_run() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (dir, _) = unpack("changes", "vmware", tmp.path());
    let vmx = dir.join("chg.vmx");
    let rows = truth("bytes.tsv");
    assert!(!rows.is_empty());
    for (from, to) in PAIRS {
        let disks = changed_areas(&vmx, from, Some(to), &ChangeOptions::new()).expect("areas");
        let mut seen = 0;
        for r in rows.iter().filter(|r| r[0] == from && r[1] == to) {
            let (o, l): (u64, u64) = (r[3].parse().expect("offset"), r[4].parse().expect("len"));
            let d = disk(&disks, &r[2]);
            assert!(
                covered(&d.runs, o, l),
                "{from} -> {to} {}: sectors {o}+{l} differ but lie outside {:?}",
                r[2],
                d.runs
            );
            seen += 1;
        }
        assert!(seen > 0, "{from} -> {to}: no differing sectors recorded");
    }
}

fn qemu_missing() -> bool {
    let missing = std::process::Command::new("qemu-img")
        .arg("--version")
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(true);
    if missing {
        assert!(
            !std::env::var("DISKIMAGE_REQUIRE_DIFF_TOOLS").is_ok_and(|v| v == "1"),
            "qemu-img missing (apt install qemu-utils)"
        );
        eprintln!("changes: qemu-img not installed, live comparison skipped");
    }
    missing
}

fn qemu_raw(image: &Path, out: &Path) -> Vec<u8> {
    let st = std::process::Command::new("qemu-img")
        .args(["convert", "-O", "raw"])
        .arg(image)
        .arg(out)
        .status()
        .expect("qemu-img convert");
    assert!(st.success(), "qemu-img convert {}", image.display());
    std::fs::read(out).expect("raw")
}

/// qemu-img map --output=json of `top`: (start, end, depth) of each range.
fn qemu_map(top: &Path) -> Vec<(u64, u64, u64)> {
    let o = std::process::Command::new("qemu-img")
        .args(["map", "--output=json"])
        .arg(top)
        .output()
        .expect("qemu-img map");
    assert!(o.status.success(), "qemu-img map {}", top.display());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    v.as_array()
        .expect("array")
        .iter()
        .map(|e| {
            let s = e["start"].as_u64().expect("start");
            (
                s,
                s + e["length"].as_u64().expect("length"),
                e["depth"].as_u64().expect("depth"),
            )
        })
        .collect()
}

/// Checks `d` live: the bytes of both states outside its runs are equal as
/// qemu-img reads them, and its runs are qemu-img map's ranges of both tops
/// above the shared files.
fn check_live(d: &DiskChanges, tmp: &Path) {
    let (Some(a), Some(b)) = (&d.from_top, &d.to_top) else {
        return;
    };
    let ra = qemu_raw(a, &tmp.join("a.raw"));
    let rb = qemu_raw(b, &tmp.join("b.raw"));
    assert_eq!(
        (ra.len() as u64, rb.len() as u64),
        (d.from_size, d.to_size),
        "{}",
        d.slot
    );
    // Past the smaller state every byte must lie in a run.
    let (small, large) = (ra.len().min(rb.len()), ra.len().max(rb.len()));
    if small < large {
        assert!(
            covered(&d.runs, small as u64, (large - small) as u64),
            "{}: tail",
            d.slot
        );
    }
    let mut at = 0usize;
    for r in d.runs.iter().chain(std::iter::once(&Run {
        offset: small as u64,
        length: 0,
    })) {
        let start = (r.offset as usize).min(small);
        if start < at {
            break;
        }
        assert!(
            ra[at..start] == rb[at..start],
            "{}: bytes {at}..{start} outside the runs differ",
            d.slot
        );
        at = r.end() as usize;
    }
    if d.whole_disk {
        return;
    }
    let mut expected: Vec<(u64, u64)> = Vec::new();
    for (top, above) in [(a, d.from_layers.len()), (b, d.to_layers.len())] {
        for (s, e, depth) in qemu_map(top) {
            if (depth as usize) < above {
                expected.push((s, e));
            }
        }
    }
    expected.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for (s, e) in expected {
        match merged.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    let merged: Vec<(u64, u64)> = merged.into_iter().map(|(s, e)| (s, e - s)).collect();
    assert_eq!(runs(d), merged, "{}: runs differ from qemu-img map", d.slot);
}

#[test]
fn bytes_outside_the_runs_read_the_same_in_both_states_through_qemu_img() {
    if qemu_missing() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let (dir, sums) = unpack("changes", "vmware", tmp.path());
    for (from, to) in PAIRS {
        for d in changed_areas(&dir.join("chg.vmx"), from, Some(to), &ChangeOptions::new())
            .expect("areas")
        {
            check_live(&d, tmp.path());
        }
    }
    unchanged(&sums);
}

#[test]
fn vm_fixture_vmx_and_vbox_give_qemu_img_maps_runs() {
    if qemu_missing() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let (dir, sums) = unpack("vm", "vmware", tmp.path());
    let states = ["installed", "updated", "current"];
    for from in states {
        for to in states {
            let vmx = changed_areas(
                &dir.join("fixture.vmx"),
                from,
                Some(to),
                &ChangeOptions::new(),
            )
            .unwrap_or_else(|e| panic!("vmx {from} -> {to}: {e}"));
            let vbox = changed_areas(
                &dir.join("fixture.vbox"),
                from,
                Some(to),
                &ChangeOptions::new(),
            )
            .unwrap_or_else(|e| panic!("vbox {from} -> {to}: {e}"));
            assert_eq!(vmx.len(), 3);
            assert_eq!(vmx.len(), vbox.len());
            for (x, y) in vmx.iter().zip(&vbox) {
                assert_eq!(runs(x), runs(y), "{from} -> {to}: .vmx and .vbox disagree");
                check_live(x, tmp.path());
            }
            // The independent disk is the same file in every state.
            let data = disk(&vmx, "scsi0:1");
            assert!(data.runs.is_empty() && !data.whole_disk, "{data:?}");
        }
    }
    // What make.sh wrote with qemu-io into the deltas, in 64 KiB grains.
    let d = changed_areas(
        &dir.join("fixture.vmx"),
        "installed",
        None,
        &ChangeOptions::new(),
    )
    .expect("areas");
    assert_eq!(
        runs(disk(&d, "scsi0:0")),
        vec![
            (1 << 20, 64 << 10),
            (2 << 20, 64 << 10),
            (4032 << 10, 64 << 10)
        ]
    );
    assert_eq!(
        runs(disk(&d, "sata0:0")),
        vec![(512 << 10, 64 << 10), (2 << 20, 64 << 10)]
    );
    unchanged(&sums);
}

#[test]
fn hyper_v_folder_compares_its_current_state_only() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (dir, _) = unpack("vm", "hyperv", tmp.path());
    let d = changed_areas(&dir, "current", None, &ChangeOptions::new()).expect("current");
    assert_eq!(d.len(), 1);
    assert!(d[0].runs.is_empty());
    let e = changed_areas(&dir, "checkpoint 1", None, &ChangeOptions::new()).expect_err("named");
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    assert!(e.to_string().contains(".vmcx"), "{e}");
}

#[test]
fn incomplete_and_unknown_states_are_refused_by_name() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (dir, _) = unpack("vm", "vmware-broken", tmp.path());
    let vmx = dir.join("fixture.vmx");
    let e = changed_areas(&vmx, "installed", None, &ChangeOptions::new()).expect_err("missing");
    assert_eq!(e.kind(), ErrorKind::MissingFile, "{e}");
    assert!(e.to_string().contains("current state"), "{e}");
    // Two complete states still compare.
    let d = changed_areas(&vmx, "installed", Some("updated"), &ChangeOptions::new()).expect("ok");
    assert_eq!(
        runs(disk(&d, "scsi0:0")),
        vec![(1 << 20, 64 << 10), (2 << 20, 64 << 10)]
    );
    let e = changed_areas(&vmx, "no such", None, &ChangeOptions::new()).expect_err("unknown");
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    assert!(
        e.to_string().contains("installed"),
        "lists the snapshots: {e}"
    );
}

/// (offset, change, path, type, size, what) rows of our result.
fn our_rows(volumes: &[VolumeChanges]) -> Vec<(String, String, String, String, String, String)> {
    let mut out = Vec::new();
    for v in volumes {
        for c in &v.changes {
            let f = c.facts().expect("facts");
            let what = if c.what.is_empty() {
                "-".to_string()
            } else {
                c.what.join(",")
            };
            // The recorded trees give no directory size (it is not compared).
            let size = if f.file_type == FileType::Directory {
                0
            } else {
                f.size
            };
            out.push((
                v.offset.expect("offset").to_string(),
                c.change.as_str().to_string(),
                c.path.clone(),
                f.file_type.as_str().to_string(),
                size.to_string(),
                what,
            ));
        }
    }
    out.sort();
    out
}

#[test]
fn files_are_the_changes_mtools_and_debugfs_made() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (dir, sums) = unpack("changes", "vmware", tmp.path());
    let vmx = dir.join("chg.vmx");
    let rows = truth("files.tsv");
    for (from, to) in PAIRS {
        let vols = changed_files(&vmx, from, Some(to), &ChangeOptions::new())
            .unwrap_or_else(|e| panic!("{from} -> {to}: {e}"));
        assert_eq!(vols.len(), 2, "{from} -> {to}: {vols:?}");
        for v in &vols {
            assert!(v.problems.is_empty(), "{:?}", v.problems);
            assert!(v.walked, "{v:?}");
            assert_eq!(v.slot.as_deref(), Some("scsi0:0"));
        }
        let mut want: Vec<_> = rows
            .iter()
            .filter(|r| r[0] == from && r[1] == to)
            .map(|r| {
                (
                    r[2].clone(),
                    r[3].clone(),
                    r[4].clone(),
                    r[5].clone(),
                    r[6].clone(),
                    r[7].clone(),
                )
            })
            .collect();
        want.sort();
        assert!(!want.is_empty());
        assert_eq!(our_rows(&vols), want, "{from} -> {to}");
        // Same-size files carry both digests.
        for c in vols.iter().flat_map(|v| &v.changes) {
            if c.what.contains(&"content") {
                let (a, b) = (c.from.as_ref().expect("from"), c.to.as_ref().expect("to"));
                assert!(a.sha256.is_some() && b.sha256.is_some() && a.sha256 != b.sha256);
            }
        }
    }
    // Without content comparison, a same-size, same-mtime change is not seen.
    let quick = changed_files(
        &vmx,
        "base",
        Some("edited"),
        &ChangeOptions::new().compare_content(false),
    )
    .expect("quick");
    let paths: Vec<&str> = quick
        .iter()
        .flat_map(|v| &v.changes)
        .map(|c| c.path.as_str())
        .collect();
    assert!(
        !paths.contains(&"/DOCS/NOTES.TXT") && paths.contains(&"/touched.txt"),
        "{paths:?}"
    );
    // A state against itself: no volume walked, nothing changed.
    for v in changed_files(&vmx, "edited", Some("2"), &ChangeOptions::new()).expect("same") {
        assert!(!v.walked && v.changes.is_empty(), "{v:?}");
    }
    unchanged(&sums);
}

#[test]
fn cli_prints_runs_like_map_json_and_the_files() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (dir, sums) = unpack("changes", "vmware", tmp.path());
    let vmx = dir.join("chg.vmx");
    let vmx = vmx.to_str().expect("utf-8");
    let o = diskimage(&["changes", vmx, "--from", "base", "--json", "--files"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["from"]["uid"], "1");
    assert_eq!(v["to"]["name"], "current");
    let disks = changed_areas(vmx.as_ref(), "base", None, &ChangeOptions::new()).expect("areas");
    let json_disks = v["disks"].as_array().expect("disks");
    assert_eq!(json_disks.len(), disks.len());
    for (j, d) in json_disks.iter().zip(&disks) {
        assert_eq!(j["slot"], d.slot.as_str());
        let got: Vec<(u64, u64)> = j["runs"]
            .as_array()
            .expect("runs")
            .iter()
            .map(|r| {
                (
                    r["offset"].as_u64().expect("offset"),
                    r["length"].as_u64().expect("length"),
                )
            })
            .collect();
        assert_eq!(got, runs(d));
    }
    let files: Vec<(String, String)> = v["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .flat_map(|vol| vol["changes"].as_array().expect("changes").clone())
        .map(|c| {
            (
                c["change"].as_str().expect("change").to_string(),
                c["path"].as_str().expect("path").to_string(),
            )
        })
        .collect();
    assert!(
        files.contains(&("added".into(), "/NEW.TXT".into())),
        "{files:?}"
    );
    assert!(
        files.contains(&("removed".into(), "/gone.txt".into())),
        "{files:?}"
    );
    let o = diskimage(&["changes", vmx, "--from", "edited", "--to", "current"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("disk scsi0:0:") && text.contains("0x100000"),
        "{text}"
    );
    let o = diskimage(&["changes", vmx, "--from", "nothing"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("no snapshot named"));
    assert!(Change::Added != Change::Removed);
    unchanged(&sums);
}
