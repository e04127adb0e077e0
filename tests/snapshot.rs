//! Snapshots of a powered-off VMware VM (create, revert, delete) on a copy
//! of `fixtures/vm/vmware` (made by `fixtures/vm/make.sh`), checked against
//! outside truth: the per-state sha256 qemu-img recorded in
//! `fixtures/vm/vmware.tsv`, and qemu-img run on every new or changed
//! file (`info --backing-chain`, `check`, `compare`, `convert -O raw`).
//! Without qemu-img its checks are skipped with a note
//! (`DISKIMAGE_REQUIRE_DIFF_TOOLS=1` makes that a failure).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use diskimage::snapshot::{self, SnapshotOptions};
use diskimage::vm::{Vm, VmOptions};
use diskimage::ErrorKind;

use crate::common::{diskimage, gunzip, repo, sha256_device, sha256_file, tsv_rows};

/// Copies `fixtures/vm/<name>` into `dst`, decompressing `*.gz`; the
/// fixtures folder itself is never written.
fn unpack(name: &str, dst: &Path) -> PathBuf {
    fn walk(src: &Path, dst: &Path) {
        std::fs::create_dir_all(dst).expect("mkdir");
        for e in std::fs::read_dir(src).expect("fixture dir").flatten() {
            let p = e.path();
            let file = e.file_name().to_string_lossy().into_owned();
            if p.is_dir() {
                walk(&p, &dst.join(&file));
            } else if let Some(stem) = file.strip_suffix(".gz") {
                gunzip(&p, &dst.join(stem));
            } else {
                std::fs::copy(&p, dst.join(&file)).expect("copy");
            }
        }
    }
    let out = dst.join(name);
    walk(&repo().join("fixtures/vm").join(name), &out);
    out
}

/// (state, slot) -> sha256 as qemu-img read each chain (`vmware.tsv`).
fn truth() -> BTreeMap<(String, String), String> {
    tsv_rows(&repo().join("fixtures/vm/vmware.tsv"))
        .into_iter()
        .map(|r| ((r[0].clone(), r[1].clone()), r[4].clone()))
        .collect()
}

fn truth_of(state: &str) -> BTreeMap<String, String> {
    truth()
        .into_iter()
        .filter(|((s, _), _)| s == state)
        .map(|((_, slot), sha)| (slot, sha))
        .collect()
}

/// slot -> sha256 of each disk of a state, through our reader.
fn ours(vmx: &Path, snapshot: Option<&str>) -> BTreeMap<String, String> {
    let vm = Vm::load(vmx).unwrap_or_else(|e| panic!("{}: {e}", vmx.display()));
    let opened = vm
        .open(&VmOptions::new().snapshot(snapshot.map(str::to_owned)))
        .unwrap_or_else(|e| panic!("{snapshot:?}: {e}"));
    assert!(opened.warnings.is_empty(), "{:?}", opened.warnings);
    opened
        .set
        .disks()
        .iter()
        .zip(&opened.state.disks)
        .map(|(d, s)| {
            let dev = d.image.device();
            (
                s.slot.clone(),
                sha256_device(dev.as_ref(), dev.size()).expect("read"),
            )
        })
        .collect()
}

fn require() -> bool {
    std::env::var_os("DISKIMAGE_REQUIRE_DIFF_TOOLS").is_some_and(|v| v == "1")
}

fn qemu() -> bool {
    let found = Command::new("qemu-img")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found || !require(),
        "qemu-img is needed (DISKIMAGE_REQUIRE_DIFF_TOOLS=1)"
    );
    if !found {
        eprintln!("snapshot: qemu-img not installed, its checks skipped");
    }
    found
}

fn qemu_img(args: &[&str]) -> std::process::Output {
    Command::new("qemu-img")
        .args(args)
        .output()
        .expect("run qemu-img")
}

/// sha256 of the chain topped by `top` as qemu-img reads it.
fn qemu_sha(top: &Path) -> String {
    let tmp = tempfile::tempdir().expect("tmp");
    let raw = tmp.path().join("raw");
    let out = qemu_img(&[
        "convert",
        "-f",
        "vmdk",
        "-O",
        "raw",
        &top.to_string_lossy(),
        &raw.to_string_lossy(),
    ]);
    assert!(
        out.status.success(),
        "qemu-img convert {}: {out:?}",
        top.display()
    );
    sha256_file(&raw)
}

/// qemu-img accepts a delta: `info --backing-chain` names `parent`,
/// `check` finds no corruption.
fn qemu_accepts(delta: &Path, parent: &str) {
    let d = delta.to_string_lossy();
    let info = qemu_img(&["info", "--backing-chain", &d]);
    let text = String::from_utf8_lossy(&info.stdout);
    assert!(info.status.success(), "qemu-img info {d}: {info:?}");
    assert!(
        text.contains(&format!("backing file: {parent}")),
        "{d}: backing file is not {parent}: {text}"
    );
    let check = qemu_img(&["check", "-f", "vmdk", &d]);
    assert!(check.status.success(), "qemu-img check {d}: {check:?}");
}

/// `qemu-img compare` finds the chains topped by `a` and `b` equal.
fn qemu_same(a: &Path, b: &Path) {
    let out = qemu_img(&[
        "compare",
        "-f",
        "vmdk",
        "-F",
        "vmdk",
        &a.to_string_lossy(),
        &b.to_string_lossy(),
    ]);
    assert!(
        out.status.success(),
        "qemu-img compare {} {}: {out:?}",
        a.display(),
        b.display()
    );
}

/// slot -> the top file of each disk of the current state (the `.vmx`).
fn current_tops(vmx: &Path) -> BTreeMap<String, PathBuf> {
    let vm = Vm::load(vmx).expect("load");
    vm.disks
        .iter()
        .map(|d| (d.slot.clone(), vm.resolve(&d.file, false).expect("resolve")))
        .collect()
}

/// Every snapshot: name -> slot -> sha256, through our reader.
fn every_snapshot(vmx: &Path) -> BTreeMap<String, BTreeMap<String, String>> {
    let vm = Vm::load(vmx).expect("load");
    vm.snapshots
        .iter()
        .map(|s| (s.name.clone(), ours(vmx, Some(&s.uid))))
        .collect()
}

/// The current state read by qemu-img through the `.vmx`'s tops.
fn qemu_current(vmx: &Path) -> BTreeMap<String, String> {
    current_tops(vmx)
        .into_iter()
        .map(|(slot, top)| (slot, qemu_sha(&top)))
        .collect()
}

fn no_temp_files(dir: &Path) {
    for e in std::fs::read_dir(dir).expect("dir").flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        assert!(!n.contains(".new-"), "a temporary file was left: {n}");
    }
}

#[test]
fn create_keeps_every_state_and_the_new_state_reads_as_the_old_current() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = unpack("vmware", tmp.path());
    let vmx = dir.join("fixture.vmx");
    let old_vmx = std::fs::read(&vmx).expect("vmx");
    let r = snapshot::create(
        &vmx,
        "third",
        &SnapshotOptions::new().description(Some("after \"updates\"\nline 2".into())),
    )
    .expect("create");
    assert_eq!((r.snapshot.as_str(), r.uid.as_str()), ("third", "3"));
    let names: Vec<String> = r
        .created
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "sys-000003.vmdk",
            "sata-000003.vmdk",
            "fixture-Snapshot3.vmsn"
        ]
    );
    // Old states, through our reader, as qemu-img recorded them.
    for state in ["installed", "updated"] {
        assert_eq!(ours(&vmx, Some(state)), truth_of(state), "{state}");
    }
    // The new snapshot and the new current state read as the old current.
    assert_eq!(ours(&vmx, Some("third")), truth_of("current"));
    assert_eq!(ours(&vmx, None), truth_of("current"));
    // The configuration: VMware's keys, spelling and quoting.
    let vmsd = std::fs::read_to_string(dir.join("fixture.vmsd")).expect("vmsd");
    assert!(vmsd.starts_with(".encoding = \"UTF-8\"\n"), "{vmsd}");
    for line in [
        "snapshot.lastUID = \"3\"",
        "snapshot.current = \"3\"",
        "snapshot2.uid = \"3\"",
        "snapshot2.filename = \"fixture-Snapshot3.vmsn\"",
        "snapshot2.parent = \"2\"",
        "snapshot2.displayName = \"third\"",
        "snapshot2.description = \"after |22updates|22|0Aline 2\"",
        "snapshot2.numDisks = \"2\"",
        "snapshot2.disk0.fileName = \"sys-000002.vmdk\"",
        "snapshot2.disk0.node = \"scsi0:0\"",
        "snapshot2.disk1.fileName = \"sata-000002.vmdk\"",
        "snapshot2.disk1.node = \"sata0:0\"",
        "snapshot.numSnapshots = \"3\"",
    ] {
        assert!(vmsd.lines().any(|l| l == line), "no {line:?} in\n{vmsd}");
    }
    assert!(vmsd.ends_with("snapshot.numSnapshots = \"3\"\n"), "{vmsd}");
    let high = vmsd
        .lines()
        .find_map(|l| l.strip_prefix("snapshot2.createTimeHigh = \""))
        .expect("createTimeHigh");
    assert!(high.trim_end_matches('"').parse::<u64>().expect("number") > 395_000);
    let vm = Vm::load(&vmx).expect("reload");
    let third = vm.find_snapshot("third").expect("third");
    assert_eq!(
        third.description.as_deref(),
        Some("after \"updates\"\nline 2")
    );
    assert!(third.created.as_deref().is_some_and(|t| t > "2024"));
    let text = std::fs::read_to_string(&vmx).expect("vmx");
    assert!(
        text.contains("scsi0:0.fileName = \"sys-000003.vmdk\"\n"),
        "{text}"
    );
    assert!(
        text.contains("SCSI0:0.FILENAME = \"sys-000003.vmdk\"\n"),
        "{text}"
    );
    assert!(
        text.contains("sata0:0.fileName = \"sata-000003.vmdk\"\n"),
        "{text}"
    );
    assert!(
        text.contains("scsi0:1.fileName = \"data.vmdk\"\n"),
        "independent disk moved"
    );
    assert!(
        text.ends_with("floppy0.present = \"FALSE\"\r\n"),
        "line ending lost"
    );
    // The .vmsn holds the configuration the snapshot was taken with.
    let vmsn = std::fs::read(dir.join("fixture-Snapshot3.vmsn")).expect("vmsn");
    assert_eq!(&vmsn[..4], &0xbed3_bed3u32.to_le_bytes());
    assert_eq!(snapshot::vmsn::config(&vmsn).expect("config"), old_vmx);
    no_temp_files(&dir);
    if qemu() {
        for (delta, parent) in [
            ("sys-000003.vmdk", "sys-000002.vmdk"),
            ("sata-000003.vmdk", "sata-000002.vmdk"),
        ] {
            qemu_accepts(&dir.join(delta), parent);
            qemu_same(&dir.join(delta), &dir.join(parent));
        }
        let cur = truth_of("current");
        for (slot, top) in current_tops(&vmx) {
            assert_eq!(qemu_sha(&top), cur[&slot], "{slot}");
        }
    }
}

#[test]
fn writing_into_the_new_delta_changes_only_the_new_state() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = unpack("vmware", tmp.path());
    let vmx = dir.join("fixture.vmx");
    snapshot::create(&vmx, "third", &SnapshotOptions::new()).expect("create");
    let blob = tmp.path().join("blob");
    std::fs::write(&blob, vec![0xabu8; 96 * 1024]).expect("blob");
    let delta = dir.join("sys-000003.vmdk");
    let out = diskimage(&[
        "write",
        &delta.to_string_lossy(),
        "--offset",
        "1000000",
        &blob.to_string_lossy(),
    ]);
    assert!(out.status.success(), "{out:?}");
    for state in ["installed", "updated"] {
        assert_eq!(ours(&vmx, Some(state)), truth_of(state), "{state}");
    }
    assert_eq!(ours(&vmx, Some("third")), truth_of("current"));
    let now = ours(&vmx, None);
    let cur = truth_of("current");
    assert_ne!(now["scsi0:0"], cur["scsi0:0"]);
    assert_eq!(now["sata0:0"], cur["sata0:0"]);
    if qemu() {
        // qemu-img reads the written bytes over the old current state.
        let raw = tmp.path().join("old.raw");
        let ok = qemu_img(&[
            "convert",
            "-O",
            "raw",
            &dir.join("sys-000002.vmdk").to_string_lossy(),
            &raw.to_string_lossy(),
        ]);
        assert!(ok.status.success());
        let mut expected = std::fs::read(&raw).expect("raw");
        expected[1_000_000..1_000_000 + 96 * 1024].fill(0xab);
        std::fs::write(&raw, &expected).expect("write raw");
        let cmp = qemu_img(&[
            "compare",
            "-f",
            "vmdk",
            "-F",
            "raw",
            &delta.to_string_lossy(),
            &raw.to_string_lossy(),
        ]);
        assert!(cmp.status.success(), "{cmp:?}");
        assert_eq!(qemu_sha(&delta), now["scsi0:0"]);
        qemu_accepts(&delta, "sys-000002.vmdk");
    }
}

#[test]
fn revert_then_delete_every_snapshot_keeps_the_current_bytes() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = unpack("vmware", tmp.path());
    let vmx = dir.join("fixture.vmx");
    let q = qemu();
    snapshot::create(&vmx, "third", &SnapshotOptions::new()).expect("create");
    std::fs::write(tmp.path().join("blob"), vec![0x5au8; 4096]).expect("blob");
    let out = diskimage(&[
        "write",
        &dir.join("sata-000003.vmdk").to_string_lossy(),
        "--offset",
        "4096",
        &tmp.path().join("blob").to_string_lossy(),
    ]);
    assert!(out.status.success(), "{out:?}");
    // "updated" has no .vmsn (the fixture has none): refused, unless
    // --fallback keeps the current configuration with its disks.
    let e = snapshot::revert(&vmx, "updated", &SnapshotOptions::new()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::MissingFile, "{e}");
    assert!(e.to_string().contains("--fallback"), "{e}");
    let r = snapshot::revert(&vmx, "updated", &SnapshotOptions::new().fallback(true))
        .expect("revert to updated");
    assert_eq!(r.uid, "2");
    assert_eq!(ours(&vmx, None), truth_of("updated"));
    assert_eq!(
        Vm::load(&vmx).expect("load").current_snapshot.as_deref(),
        Some("2")
    );
    // The files of the state left are kept.
    assert!(dir.join("sata-000003.vmdk").is_file());
    // "third" has a .vmsn: the .vmx is restored from it.
    let before_third = std::fs::read_to_string(&vmx).expect("vmx");
    let r = snapshot::revert(&vmx, "third", &SnapshotOptions::new()).expect("revert to third");
    assert_eq!(ours(&vmx, None), truth_of("current"));
    let restored = std::fs::read_to_string(&vmx).expect("vmx");
    assert_ne!(restored, before_third);
    assert!(
        restored.contains("sata0:0.fileName = \"sata-000005.vmdk\"\n"),
        "{restored}"
    );
    if q {
        assert_eq!(qemu_current(&vmx), truth_of("current"));
        // Every new delta sits on the file the snapshot recorded and reads
        // as it.
        let names: Vec<String> = r
            .created
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["sys-000005.vmdk", "sata-000005.vmdk"]);
        for (delta, parent) in [
            ("sys-000005.vmdk", "sys-000002.vmdk"),
            ("sata-000005.vmdk", "sata-000002.vmdk"),
        ] {
            qemu_accepts(&dir.join(delta), parent);
            qemu_same(&dir.join(delta), &dir.join(parent));
        }
    }
    let current = ours(&vmx, None);
    let mut snapshots = every_snapshot(&vmx);
    for name in ["installed", "updated", "third"] {
        let r = snapshot::delete(&vmx, name, &SnapshotOptions::new()).expect(name);
        assert_eq!(r.snapshot, name);
        snapshots.remove(name);
        assert_eq!(ours(&vmx, None), current, "current after deleting {name}");
        assert_eq!(
            every_snapshot(&vmx),
            snapshots,
            "snapshots after deleting {name}"
        );
        if q {
            assert_eq!(
                qemu_current(&vmx),
                current,
                "qemu-img: current after {name}"
            );
            let vm = Vm::load(&vmx).expect("load");
            for s in &vm.snapshots {
                for d in &s.disks {
                    let top = vm.resolve(&d.file, false).expect("resolve");
                    assert_eq!(qemu_sha(&top), snapshots[&s.name][&d.slot], "{}", s.name);
                }
            }
        }
        no_temp_files(&dir);
    }
    let vm = Vm::load(&vmx).expect("load");
    assert!(vm.snapshots.is_empty());
    let vmsd = std::fs::read_to_string(dir.join("fixture.vmsd")).expect("vmsd");
    assert!(vmsd.contains("snapshot.numSnapshots = \"0\""), "{vmsd}");
    assert!(!dir.join("fixture-Snapshot3.vmsn").exists());
    // Deleting "installed" merged sys-000001 into sys.vmdk (its only delta).
    assert!(!dir.join("sys-000001.vmdk").exists());
    if q {
        for e in std::fs::read_dir(&dir).expect("dir").flatten() {
            let p = e.path();
            let n = e.file_name().to_string_lossy().into_owned();
            if n.ends_with(".vmdk") && !n.ends_with("-ctk.vmdk") {
                let c = qemu_img(&["check", "-f", "vmdk", &p.to_string_lossy()]);
                assert!(c.status.success(), "qemu-img check {n}: {c:?}");
            }
        }
    }
}

#[test]
fn deleting_the_newest_snapshot_merges_its_delta_back() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = unpack("vmware", tmp.path());
    let vmx = dir.join("fixture.vmx");
    let before = std::fs::read_to_string(&vmx).expect("vmx");
    snapshot::create(&vmx, "third", &SnapshotOptions::new()).expect("create");
    std::fs::write(tmp.path().join("blob"), vec![0x77u8; 70_000]).expect("blob");
    let out = diskimage(&[
        "write",
        &dir.join("sys-000003.vmdk").to_string_lossy(),
        "--offset",
        "12345",
        &tmp.path().join("blob").to_string_lossy(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let current = ours(&vmx, None);
    let r = snapshot::delete(&vmx, "3", &SnapshotOptions::new()).expect("delete");
    assert!(r.removed.iter().any(|p| p.ends_with("sys-000003.vmdk")));
    assert!(r
        .removed
        .iter()
        .any(|p| p.ends_with("fixture-Snapshot3.vmsn")));
    // The .vmx points at the files merged into, as before the snapshot
    // (both spellings of the duplicated key now name the same file).
    let expected = before.replace(
        "scsi0:0.fileName = \"sys-000001.vmdk\"",
        "scsi0:0.fileName = \"sys-000002.vmdk\"",
    );
    assert_eq!(std::fs::read_to_string(&vmx).expect("vmx"), expected);
    assert_eq!(ours(&vmx, None), current);
    for state in ["installed", "updated"] {
        assert_eq!(ours(&vmx, Some(state)), truth_of(state), "{state}");
    }
    let vm = Vm::load(&vmx).expect("load");
    assert_eq!(vm.current_snapshot.as_deref(), Some("2"));
    assert_eq!(vm.snapshots.len(), 2);
    if qemu() {
        assert_eq!(qemu_current(&vmx), current);
        for f in ["sys-000002.vmdk", "sata-000002.vmdk"] {
            let c = qemu_img(&["check", "-f", "vmdk", &dir.join(f).to_string_lossy()]);
            assert!(c.status.success(), "{f}: {c:?}");
        }
    }
}

#[test]
fn a_vm_without_snapshots_gets_its_first() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = unpack("vmware", tmp.path());
    let vmx = dir.join("fixture.vmx");
    std::fs::remove_file(dir.join("fixture.vmsd")).expect("rm vmsd");
    let r = snapshot::create(&vmx, "first", &SnapshotOptions::new()).expect("create");
    assert_eq!(r.uid, "1");
    assert!(r.created.iter().any(|p| p.ends_with("fixture.vmsd")));
    let vmsd = std::fs::read_to_string(dir.join("fixture.vmsd")).expect("vmsd");
    assert!(vmsd.starts_with(".encoding = \"UTF-8\"\nsnapshot.lastUID = \"1\"\nsnapshot.current = \"1\"\nsnapshot0.uid = \"1\"\n"), "{vmsd}");
    assert!(!vmsd.contains("snapshot0.parent"), "{vmsd}");
    assert_eq!(ours(&vmx, Some("first")), truth_of("current"));
    assert_eq!(ours(&vmx, None), truth_of("current"));
    // Delete it again: back to one file per disk, the bytes unchanged.
    snapshot::delete(&vmx, "first", &SnapshotOptions::new()).expect("delete");
    assert_eq!(ours(&vmx, None), truth_of("current"));
    let vm = Vm::load(&vmx).expect("load");
    assert!(vm.snapshots.is_empty());
    assert_eq!(vm.current_snapshot, None);
}

#[test]
fn running_locked_suspended_or_incomplete_vms_are_refused() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = unpack("vmware", tmp.path());
    let vmx = dir.join("fixture.vmx");
    let files_before = folder_sums(&dir);
    let opts = SnapshotOptions::new();
    for (sign, dirlike) in [
        ("fixture.vmx.lck", true),
        ("sys-000002.vmdk.lck", true),
        ("fixture.vmem", false),
        ("fixture.vmss", false),
    ] {
        let p = dir.join(sign);
        if dirlike {
            std::fs::create_dir(&p).expect("lck");
        } else {
            std::fs::write(&p, b"x").expect("sign");
        }
        for r in [
            snapshot::create(&vmx, "x", &opts),
            snapshot::revert(&vmx, "installed", &opts.clone().fallback(true)),
            snapshot::delete(&vmx, "installed", &opts),
        ] {
            let e = r.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
            assert!(e.to_string().contains(sign), "{sign}: {e}");
        }
        if dirlike {
            std::fs::remove_dir(&p).expect("rm");
        } else {
            std::fs::remove_file(&p).expect("rm");
        }
    }
    let e = snapshot::create(&vmx, "x", &opts.clone().include_memory(true)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    assert!(e.to_string().contains("memory"), "{e}");
    let out = diskimage(&[
        "snapshot",
        "create",
        &vmx.to_string_lossy(),
        "x",
        "--include-memory",
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no memory state"),
        "{out:?}"
    );
    // Nothing was written by any refusal.
    assert_eq!(folder_sums(&dir), files_before);

    // An incomplete chain (the current state's newest delta deleted).
    let broken = unpack("vmware-broken", tmp.path());
    let bvmx = broken.join("fixture.vmx");
    for fallback in [false, true] {
        let e = snapshot::create(&bvmx, "x", &opts.clone().fallback(fallback)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::MissingFile, "{e}");
        assert!(e.to_string().contains("sys-000002.vmdk"), "{e}");
    }
    let e = snapshot::revert(&bvmx, "updated", &opts.clone().fallback(false)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::MissingFile, "{e}");
    assert!(e.to_string().contains("--fallback"), "{e}");
    // With --fallback, a change that needs only complete states goes on.
    snapshot::revert(&bvmx, "updated", &opts.clone().fallback(true)).expect("fallback revert");
    assert_eq!(ours(&bvmx, None), truth_of("updated"));

    // VirtualBox and Hyper-V are refused clearly.
    let e = snapshot::create(&dir.join("fixture.vbox"), "x", &opts).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    assert!(e.to_string().contains("VirtualBox snapshots"), "{e}");
    let hv = unpack("hyperv", tmp.path());
    let e = snapshot::create(&hv, "x", &opts).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    assert!(e.to_string().contains(".vmcx is not written"), "{e}");
}

/// File name -> sha256 of every file directly in `dir`.
fn folder_sums(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read_dir(dir)
        .expect("dir")
        .flatten()
        .filter(|e| e.path().is_file())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                sha256_file(&e.path()),
            )
        })
        .collect()
}

#[test]
fn a_file_outside_the_vm_folder_is_never_written() {
    // The "installed" snapshot's first disk is recorded as a file in a
    // sibling folder (a copy of sys.vmdk): the states that need it are
    // refused, and no change writes there.
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = unpack("vmware", tmp.path());
    let vmx = dir.join("fixture.vmx");
    let elsewhere = tmp.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).expect("mkdir");
    std::fs::copy(dir.join("sys.vmdk"), elsewhere.join("sys.vmdk")).expect("copy");
    let vmsd = dir.join("fixture.vmsd");
    let text = std::fs::read_to_string(&vmsd).expect("vmsd");
    let moved = text.replace(
        "snapshot0.disk0.fileName = \"sys.vmdk\"",
        "snapshot0.disk0.fileName = \"../elsewhere/sys.vmdk\"",
    );
    assert_ne!(moved, text);
    std::fs::write(&vmsd, moved).expect("vmsd");
    let outside = folder_sums(&elsewhere);
    let inside = folder_sums(&dir);
    let opts = SnapshotOptions::new();
    for r in [
        snapshot::create(&vmx, "x", &opts),
        snapshot::revert(&vmx, "installed", &opts.clone().fallback(true)),
        snapshot::delete(&vmx, "installed", &opts),
        snapshot::delete(&vmx, "installed", &opts.clone().fallback(true)),
    ] {
        let e = r.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::OutsideFolder, "{e}");
        assert!(e.to_string().contains("elsewhere"), "{e}");
    }
    assert_eq!(
        folder_sums(&dir),
        inside,
        "a refusal wrote into the VM folder"
    );
    // With --fallback a change that needs only the current state goes on,
    // and writes only inside the folder.
    snapshot::create(&vmx, "x", &opts.clone().fallback(true)).expect("create");
    snapshot::delete(&vmx, "x", &opts.clone().fallback(true)).expect("delete");
    assert_eq!(ours(&vmx, None), truth_of("current"));
    assert_eq!(
        folder_sums(&elsewhere),
        outside,
        "a file outside was written"
    );
    no_temp_files(&dir);
}

#[test]
fn an_interrupted_change_leaves_a_configuration_that_opens() {
    let all = |vmx: &Path| -> Vec<BTreeMap<String, String>> {
        let vm = Vm::load(vmx).expect("load");
        let mut v = vec![ours(vmx, None)];
        v.extend(vm.snapshots.iter().map(|s| ours(vmx, Some(&s.uid))));
        v
    };
    // Create, interrupted before each step.
    for step in ["deltas", "vmsn", "vmsd", "vmx"] {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = unpack("vmware", tmp.path());
        let vmx = dir.join("fixture.vmx");
        let old_vmx = std::fs::read(&vmx).expect("vmx");
        let old_vmsd = std::fs::read(dir.join("fixture.vmsd")).expect("vmsd");
        let mut opts = SnapshotOptions::new();
        opts.fail_before = Some(step.into());
        let e = snapshot::create(&vmx, "third", &opts).unwrap_err();
        assert!(e.to_string().contains(step), "{e}");
        no_temp_files(&dir);
        for state in ["current", "installed", "updated"] {
            let snap = (state != "current").then_some(state);
            assert_eq!(ours(&vmx, snap), truth_of(state), "{step}: {state}");
        }
        let vm = Vm::load(&vmx).expect("load");
        if step == "vmx" {
            // The new .vmsd is in place, the .vmx is the old one: the new
            // snapshot and the current state are the same files.
            assert_eq!(std::fs::read(&vmx).expect("vmx"), old_vmx);
            assert_eq!(vm.snapshots.len(), 3);
            assert_eq!(ours(&vmx, Some("third")), truth_of("current"));
        } else {
            assert_eq!(std::fs::read(&vmx).expect("vmx"), old_vmx, "{step}");
            assert_eq!(
                std::fs::read(dir.join("fixture.vmsd")).expect("vmsd"),
                old_vmsd
            );
            assert!(!dir.join("sys-000003.vmdk").exists(), "{step}: delta left");
            assert!(
                !dir.join("fixture-Snapshot3.vmsn").exists(),
                "{step}: vmsn left"
            );
        }
    }
    // Delete, interrupted after the merge and the relinks: the old
    // configuration still opens and every state it keeps reads the same.
    for step in ["relink", "vmsd", "vmx", "remove"] {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = unpack("vmware", tmp.path());
        let vmx = dir.join("fixture.vmx");
        let before = all(&vmx);
        let mut opts = SnapshotOptions::new();
        opts.fail_before = Some(step.into());
        snapshot::delete(&vmx, "installed", &opts).unwrap_err();
        no_temp_files(&dir);
        let vm = Vm::load(&vmx).expect("load");
        assert_eq!(ours(&vmx, None), before[0], "{step}: current");
        assert_eq!(ours(&vmx, Some("updated")), truth_of("updated"), "{step}");
        let expect = if matches!(step, "vmx" | "remove") {
            1
        } else {
            2
        };
        assert_eq!(vm.snapshots.len(), expect, "{step}");
        // Run again, the delete completes; the kept states still read the same.
        if expect == 2 {
            snapshot::delete(&vmx, "installed", &SnapshotOptions::new())
                .unwrap_or_else(|e| panic!("{step}: delete again: {e}"));
        }
        let vm = Vm::load(&vmx).expect("load");
        assert_eq!(vm.snapshots.len(), 1, "{step}");
        assert_eq!(ours(&vmx, None), before[0], "{step}: current after");
        assert_eq!(ours(&vmx, Some("updated")), truth_of("updated"), "{step}");
        if qemu() {
            assert_eq!(qemu_current(&vmx), before[0], "{step}: qemu-img");
        }
        no_temp_files(&dir);
    }
}

#[test]
fn command_line_create_revert_delete() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = unpack("vmware", tmp.path());
    let vmx = dir.join("fixture.vmx");
    let v = vmx.to_string_lossy().into_owned();
    let run = |args: &[&str]| {
        let out = diskimage(args);
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = run(&[
        "snapshot",
        "create",
        &v,
        "cli one",
        "--description",
        "from the CLI",
    ]);
    assert!(
        text.starts_with("created snapshot \"cli one\" (uid 3)\n"),
        "{text}"
    );
    assert!(
        text.contains("created ") && text.contains("sys-000003.vmdk"),
        "{text}"
    );
    let text = run(&["snapshot", "revert", &v, "installed", "--fallback"]);
    assert!(
        text.starts_with("reverted to snapshot \"installed\" (uid 1)"),
        "{text}"
    );
    assert_eq!(ours(&vmx, None), truth_of("installed"));
    let text = run(&["snapshot", "delete", &v, "3"]);
    assert!(
        text.starts_with("deleted snapshot \"cli one\" (uid 3)"),
        "{text}"
    );
    assert!(
        text.contains("removed ") && text.contains("fixture-Snapshot3.vmsn"),
        "{text}"
    );
    // The VM still lists and opens through the reading commands.
    let text = run(&["vm", &v]);
    assert!(
        text.contains("installed") && !text.contains("cli one"),
        "{text}"
    );
    let out = diskimage(&["snapshot", "delete", &v, "no such"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no snapshot named"),
        "{out:?}"
    );
}

#[test]
fn vmsn_seeds_never_panic() {
    let mut n = 0;
    for e in std::fs::read_dir(repo().join("fuzz/corpus/vmsn"))
        .expect("seeds")
        .flatten()
    {
        let data = std::fs::read(e.path()).expect("seed");
        diskimage::fuzzing::exercise_vm_config("vmsn", &data);
        n += 1;
    }
    assert!(n >= 2, "vmsn seeds: {n}");
    let seed = std::fs::read(repo().join("fuzz/corpus/vmsn/fixture.vmsn")).expect("seed");
    assert_eq!(
        snapshot::vmsn::config(&seed).expect("config"),
        std::fs::read(repo().join("fixtures/vm/vmware/fixture.vmx")).expect("vmx")
    );
}
