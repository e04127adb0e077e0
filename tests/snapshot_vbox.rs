//! VirtualBox snapshots of a powered-off VM (`diskimage::snapshot` on a
//! `.vbox`): taken, reverted and deleted on a copy of `fixtures/vm/vmware`
//! (its `fixture.vbox` over VMDK chains made by qemu-img) and on a VHD
//! machine made here from qemu-img's VHDs.
//!
//! Truth is outside the project: every VMDK state is read by `qemu-img
//! convert -O raw` of its top file (qemu follows the chain by the
//! descriptors' `parentFileNameHint`) and by libvmdk (`pyvmdk`); every VHD
//! chain by libvhdi (`pyvhdi`: qemu does not read VHD differencing disks)
//! and its base by qemu-img; `qemu-img info --backing-chain` must accept
//! every new VMDK child, and python's `xml.etree` every `.vbox` written.
//! Without qemu-img or the libyal modules those checks say so and are
//! skipped (`.ci/run` installs them).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use diskimage::snapshot::{create, delete, revert, SnapshotOptions};
use diskimage::vm::{Vm, VmOptions};
use diskimage::{BlockDevice, ErrorKind};

use crate::common::{diskimage, gunzip, repo, sha256_device, sha256_file};

fn have(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

struct Tools {
    qemu: bool,
    vmdk: bool,
    vhdi: bool,
}

fn tools() -> Tools {
    let t = Tools {
        qemu: have("qemu-img", &["--version"]),
        vmdk: have("python3", &["-c", "import pyvmdk"]),
        vhdi: have("python3", &["-c", "import pyvhdi"]),
    };
    for (ok, what) in [(t.qemu, "qemu-img"), (t.vmdk, "pyvmdk"), (t.vhdi, "pyvhdi")] {
        if !ok {
            eprintln!("snapshot_vbox: {what} not installed, its checks skipped");
        }
    }
    t
}

fn run(cmd: &mut Command) -> (bool, String) {
    let o = cmd.output().expect("run");
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

/// Copies `fixtures/vm/vmware` into `dst`, decompressing `*.gz`.
fn unpack_vmware(dst: &Path) -> PathBuf {
    let src = repo().join("fixtures/vm/vmware");
    let out = dst.join("vm");
    std::fs::create_dir_all(&out).unwrap();
    for e in std::fs::read_dir(&src).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        match name.strip_suffix(".gz") {
            Some(stem) => gunzip(&e.path(), &out.join(stem)),
            None => {
                std::fs::copy(e.path(), out.join(&name)).unwrap();
            }
        }
    }
    out.join("fixture.vbox")
}

fn opts() -> SnapshotOptions {
    SnapshotOptions::default()
}

/// State name ("current" or a snapshot name) and slot -> (top file, sha256)
/// as our reader reads the state.
type States = BTreeMap<(String, String), (PathBuf, String)>;

fn our_states(vbox: &Path) -> States {
    let vm = Vm::load(vbox).unwrap_or_else(|e| panic!("load {}: {e}", vbox.display()));
    let mut out = States::new();
    let mut names = vec![None];
    names.extend(vm.snapshots.iter().map(|s| Some(s.name.clone())));
    for name in names {
        let opened = vm
            .open(&VmOptions::new().snapshot(name.clone()))
            .unwrap_or_else(|e| panic!("{name:?}: {e}"));
        assert!(opened.warnings.is_empty(), "{:?}", opened.warnings);
        for (disk, st) in opened.set.disks().iter().zip(&opened.state.disks) {
            let sha = sha256_device(disk.image.device().as_ref(), disk.image.size()).unwrap();
            out.insert(
                (
                    name.clone().unwrap_or_else(|| "current".into()),
                    st.slot.clone(),
                ),
                (st.top.clone(), sha),
            );
        }
    }
    out
}

fn shas(states: &States) -> BTreeMap<(String, String), String> {
    states
        .iter()
        .map(|(k, (_, s))| (k.clone(), s.clone()))
        .collect()
}

/// sha256 of what qemu-img reads from `top` (following the chain).
fn qemu_sha(top: &Path, driver: &str) -> String {
    let raw = top.with_extension("qemu.raw");
    let (ok, out) = run(Command::new("qemu-img").args([
        "convert",
        "-f",
        driver,
        "-O",
        "raw",
        top.to_str().unwrap(),
        raw.to_str().unwrap(),
    ]));
    assert!(ok, "qemu-img convert {}: {out}", top.display());
    let sha = sha256_file(&raw);
    std::fs::remove_file(&raw).unwrap();
    sha
}

/// The chain of a state's disk, top first, as our reader found it.
fn chain_of(vbox: &Path, state: &str, slot: &str) -> Vec<PathBuf> {
    let vm = Vm::load(vbox).unwrap();
    let st = vm
        .states(&VmOptions::new())
        .unwrap()
        .into_iter()
        .find(|s| s.name == state)
        .unwrap();
    let d = st.disks.into_iter().find(|d| d.slot == slot).unwrap();
    let mut files: Vec<PathBuf> = d
        .files
        .into_iter()
        .filter(|f| !f.to_string_lossy().ends_with("-ctk.vmdk"))
        .collect();
    files.dedup();
    files
}

/// sha256 of what libyal reads from a chain (child first).
fn libyal_sha(reader: &str, chain: &[PathBuf]) -> String {
    let mut cmd = Command::new("python3");
    cmd.arg(repo().join("scripts/libyal_sha256.py")).arg(reader);
    cmd.args(chain);
    let (ok, out) = run(&mut cmd);
    assert!(ok, "libyal {reader} {chain:?}: {out}");
    out.split_whitespace().nth(1).unwrap().to_owned()
}

/// Every VMDK state as our reader, qemu-img and libvmdk read it: all three
/// agree, and the shas are returned.
fn vmdk_truth(t: &Tools, vbox: &Path) -> BTreeMap<(String, String), String> {
    truth(t, vbox, true)
}

/// [`vmdk_truth`], libvmdk asked only with `libvmdk`.
fn truth(t: &Tools, vbox: &Path, libvmdk: bool) -> BTreeMap<(String, String), String> {
    let states = our_states(vbox);
    for ((state, slot), (top, sha)) in &states {
        if t.qemu {
            assert_eq!(&qemu_sha(top, "vmdk"), sha, "qemu-img: {state} {slot}");
        }
        if t.vmdk && libvmdk {
            let chain = chain_of(vbox, state, slot);
            assert_eq!(&libyal_sha("vmdk", &chain), sha, "libvmdk: {state} {slot}");
        }
    }
    shas(&states)
}

fn etree_parses(vbox: &Path) {
    let (ok, out) = run(Command::new("python3").args([
        "-c",
        "import sys, xml.etree.ElementTree as E; r = E.parse(sys.argv[1]).getroot(); assert r.tag.endswith('VirtualBox'), r.tag",
        vbox.to_str().unwrap(),
    ]));
    assert!(ok, "xml.etree: {out}");
}

fn backing_chain_ok(t: &Tools, child: &Path, depth: usize) {
    if !t.qemu {
        return;
    }
    let (ok, out) = run(Command::new("qemu-img").args([
        "info",
        "--backing-chain",
        "--output=json",
        child.to_str().unwrap(),
    ]));
    assert!(
        ok,
        "qemu-img info --backing-chain {}: {out}",
        child.display()
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v.as_array().unwrap().len(), depth, "{out}");
    let (ok, out) = run(Command::new("qemu-img").args(["check", child.to_str().unwrap()]));
    assert!(ok, "qemu-img check {}: {out}", child.display());
}

fn props(path: &Path) -> BTreeMap<String, String> {
    let img =
        diskimage::formats::open(path, &diskimage::OpenOptions::new().no_parents(true)).unwrap();
    img.info().properties.iter().cloned().collect()
}

const SYS: &str = "SCSI:0:0";
const DATA: &str = "SCSI:1:0";
const SATA: &str = "SATA:0:0";

#[test]
fn vmdk_create_keeps_every_state_and_writes_only_the_new_current() {
    let t = tools();
    let tmp = tempfile::tempdir().unwrap();
    let vbox = unpack_vmware(tmp.path());
    let original = std::fs::read(&vbox).unwrap();
    let before = vmdk_truth(&t, &vbox);
    assert_eq!(before.len(), 9);

    let report = create(
        &vbox,
        "third",
        &opts().description(Some("taken offline (a<b&c)".into())),
    )
    .unwrap();
    assert_eq!(report.snapshot, "third");
    // sys and sata get children; data.vmdk is Writethrough, left alone.
    assert_eq!(report.created.len(), 2, "{report:?}");
    assert_eq!(
        std::fs::read(vbox.with_extension("vbox-prev")).unwrap(),
        original,
        ".vbox-prev keeps the old settings"
    );
    assert!(!vbox.with_extension("vbox-tmp").exists());
    etree_parses(&vbox);

    let vm = Vm::load(&vbox).unwrap();
    assert_eq!(vm.current_snapshot.as_deref(), Some(report.uid.as_str()));
    let third = vm.find_snapshot("third").unwrap();
    assert_eq!(
        third.parent.as_deref(),
        Some("7d6f3a10-0000-4000-8000-0000000000b2")
    );
    assert_eq!(third.description.as_deref(), Some("taken offline (a<b&c)"));
    for d in &vm.disks {
        if d.slot == DATA {
            assert_eq!(d.file, "data.vmdk");
        } else {
            assert!(d.file.starts_with("Snapshots/{"), "{}", d.file);
        }
    }

    let after = vmdk_truth(&t, &vbox);
    assert_eq!(after.len(), 12);
    for ((state, slot), sha) in &before {
        if state == "current" {
            continue;
        }
        assert_eq!(
            &after[&(state.clone(), slot.clone())],
            sha,
            "{state} {slot}"
        );
    }
    for slot in [SYS, DATA, SATA] {
        let old = &before[&("current".into(), slot.into())];
        assert_eq!(&after[&("third".into(), slot.into())], old, "third {slot}");
        assert_eq!(
            &after[&("current".into(), slot.into())],
            old,
            "current {slot}"
        );
    }

    // The children carry VirtualBox's UUIDs and a chain qemu-img accepts.
    for child in &report.created {
        let p = props(child);
        let name = child.file_name().unwrap().to_string_lossy().into_owned();
        let uuid = name.trim_start_matches('{').trim_end_matches("}.vmdk");
        assert_eq!(p["ddb.uuid.image"], uuid);
        assert!(p.contains_key("ddb.uuid.modification"), "{p:?}");
        assert!(p.contains_key("ddb.uuid.parentmodification"), "{p:?}");
        let parent = &p["ddb.uuid.parent"];
        assert!(
            [
                "7d6f3a10-0000-4000-8000-000000000012",
                "7d6f3a10-0000-4000-8000-000000000032"
            ]
            .contains(&parent.as_str()),
            "{parent}"
        );
        assert!(p["parent_file_name_hint"].starts_with("../"), "{p:?}");
        backing_chain_ok(&t, child, 4);
    }

    // The command line reads the new tree.
    let out = diskimage(&["vm", "--json", vbox.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["snapshots"][2]["name"], "third");
    assert_eq!(v["snapshots"][2]["current"], true);

    // Writing into the new current state changes it and nothing else.
    let top = vm
        .disks
        .iter()
        .find(|d| d.slot == SYS)
        .map(|d| vbox.parent().unwrap().join(&d.file))
        .unwrap();
    let blob = tmp.path().join("blob");
    std::fs::write(&blob, vec![0xa5u8; 6000]).unwrap();
    let out = diskimage(&[
        "write",
        top.to_str().unwrap(),
        "--offset",
        "1000000",
        blob.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let written = vmdk_truth(&t, &vbox);
    for (k, sha) in &after {
        if k.0 == "current" && k.1 == SYS {
            assert_ne!(&written[k], sha, "the write shows in the current state");
        } else {
            assert_eq!(&written[k], sha, "{k:?} unchanged by the write");
        }
    }
}

#[test]
fn vmdk_revert_then_delete_of_every_snapshot_keeps_the_current_state() {
    let t = tools();
    let tmp = tempfile::tempdir().unwrap();
    let vbox = unpack_vmware(tmp.path());
    let third = create(&vbox, "third", &opts()).unwrap();
    // A write into the current state after "third": revert discards it.
    let vm = Vm::load(&vbox).unwrap();
    let cur_sys = vbox
        .parent()
        .unwrap()
        .join(&vm.disks.iter().find(|d| d.slot == SYS).unwrap().file);
    let w = diskimage::formats::open_writable(&cur_sys, &diskimage::OpenOptions::new()).unwrap();
    w.write_at(&[0x77; 4096], 8192).unwrap();
    w.flush().unwrap();
    drop(w);
    let before = vmdk_truth(&t, &vbox);

    // Revert to "installed": the current state reads as it.
    let r = revert(&vbox, "installed", &opts()).unwrap();
    assert_eq!(r.created.len(), 2);
    assert_eq!(r.removed.len(), 2, "the old current state's media: {r:?}");
    let s = vmdk_truth(&t, &vbox);
    for slot in [SYS, DATA, SATA] {
        let k = |st: &str| (st.to_owned(), slot.to_owned());
        assert_eq!(s[&k("current")], before[&k("installed")], "{slot}");
        for st in ["installed", "updated", "third"] {
            assert_eq!(s[&k(st)], before[&k(st)], "{st} {slot}");
        }
    }
    for c in &r.created {
        backing_chain_ok(&t, c, 2);
    }
    // "installed" now has two branches: deleting it is refused, as
    // VirtualBox refuses it.
    let e = delete(&vbox, "installed", &opts()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    assert!(e.to_string().contains("differencing children"), "{e}");

    // Revert to "third" by uid, then delete every snapshot in turn, the
    // leaf first: the current state never changes, nor do the others.
    revert(&vbox, &format!("{{{}}}", third.uid), &opts()).unwrap();
    let mut want = vmdk_truth(&t, &vbox);
    for slot in [SYS, DATA, SATA] {
        let k = |st: &str| (st.to_owned(), slot.to_owned());
        assert_eq!(want[&k("current")], before[&k("third")], "{slot}");
    }
    // "updated" first: its child's child (the current state's medium) is
    // relinked to the merged file; "third" last: its medium is merged into
    // the base.
    for name in ["updated", "installed", "third"] {
        let r = delete(&vbox, name, &opts()).unwrap_or_else(|e| panic!("delete {name}: {e}"));
        assert!(!r.removed.is_empty(), "{name}: {r:?}");
        for f in &r.removed {
            assert!(!f.exists(), "{}", f.display());
        }
        etree_parses(&vbox);
        want.retain(|k, _| k.0 != name);
        let got = vmdk_truth(&t, &vbox);
        assert_eq!(got, want, "after deleting {name}");
    }
    let vm = Vm::load(&vbox).unwrap();
    assert!(vm.snapshots.is_empty());
    assert_eq!(vm.current_snapshot, None);
    // Every state merged down: the current disks are the base files.
    for d in &vm.disks {
        assert!(!d.file.contains('/'), "{}", d.file);
        let chain = chain_of(&vbox, "current", &d.slot);
        assert_eq!(chain.len(), 1, "{chain:?}");
        backing_chain_ok(&t, &chain[0], 1);
    }
}

#[test]
fn refusals_name_what_was_found_and_change_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let vbox = unpack_vmware(tmp.path());
    let dir = vbox.parent().unwrap().to_path_buf();
    let original = std::fs::read(&vbox).unwrap();
    let unchanged = |what: &str| {
        assert_eq!(std::fs::read(&vbox).unwrap(), original, "{what}");
        assert!(
            !dir.join("Snapshots").exists()
                || std::fs::read_dir(dir.join("Snapshots"))
                    .unwrap()
                    .next()
                    .is_none(),
            "{what}"
        );
    };

    let e = create(&vbox, "m", &opts().include_memory(true)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    assert!(e.to_string().contains("memory"), "{e}");
    unchanged("memory");

    let e = revert(&vbox, "nope", &opts()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(e.to_string().contains("installed"), "{e}");

    // A saved machine: its state file.
    let saved = String::from_utf8(original.clone()).unwrap().replace(
        "snapshotFolder=",
        "stateFile=\"Snapshots/{x}.sav\" snapshotFolder=",
    );
    std::fs::write(&vbox, &saved).unwrap();
    let e = create(&vbox, "s", &opts()).unwrap_err();
    assert!(e.to_string().contains("{x}.sav"), "{e}");
    std::fs::write(&vbox, &original).unwrap();
    // A saved state no snapshot records.
    std::fs::create_dir(dir.join("Snapshots")).unwrap();
    std::fs::write(dir.join("Snapshots/2024-01-01.sav"), b"sav").unwrap();
    let e = create(&vbox, "s", &opts()).unwrap_err();
    assert!(e.to_string().contains("2024-01-01.sav"), "{e}");
    std::fs::remove_file(dir.join("Snapshots/2024-01-01.sav")).unwrap();
    // A settings save left behind.
    std::fs::write(dir.join("fixture.vbox-tmp"), b"x").unwrap();
    let e = create(&vbox, "s", &opts()).unwrap_err();
    assert!(e.to_string().contains("fixture.vbox-tmp"), "{e}");
    std::fs::remove_file(dir.join("fixture.vbox-tmp")).unwrap();
    // A process holding a medium open: a running VM.
    let mut holder = Command::new("sh")
        .arg("-c")
        .arg("exec 3<sata-000002.vmdk; exec sleep 60")
        .current_dir(&dir)
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let e = delete(&vbox, "updated", &opts()).unwrap_err();
    let _ = holder.kill();
    let _ = holder.wait();
    assert!(
        e.to_string().contains(&format!("process {}", holder.id()))
            && e.to_string().contains("sata-000002.vmdk"),
        "{e}"
    );
    unchanged("running");

    // VDI media: not yet written.
    let (ok, out) = run(Command::new("qemu-img")
        .args(["create", "-q", "-f", "vdi", "disk.vdi", "1M"])
        .current_dir(&dir));
    if ok {
        let vdi_vbox = dir.join("vdi.vbox");
        std::fs::write(
            &vdi_vbox,
            r#"<?xml version="1.0"?>
<VirtualBox xmlns="http://www.virtualbox.org/" version="1.16-linux">
  <Machine uuid="{00000000-0000-4000-8000-000000000001}" name="vdi" OSType="Other">
    <MediaRegistry><HardDisks>
      <HardDisk uuid="{00000000-0000-4000-8000-0000000000d1}" location="disk.vdi" format="VDI" type="Normal"/>
    </HardDisks></MediaRegistry>
    <Hardware/>
    <StorageControllers><StorageController name="SATA" type="AHCI">
      <AttachedDevice type="HardDisk" port="0" device="0"><Image uuid="{00000000-0000-4000-8000-0000000000d1}"/></AttachedDevice>
    </StorageController></StorageControllers>
  </Machine>
</VirtualBox>
"#,
        )
        .unwrap();
        let before = std::fs::read(&vdi_vbox).unwrap();
        let e = create(&vdi_vbox, "s", &opts()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported);
        assert!(e.to_string().contains("not yet written"), "{e}");
        assert_eq!(std::fs::read(&vdi_vbox).unwrap(), before);
        std::fs::remove_file(&vdi_vbox).unwrap();
    } else {
        eprintln!("snapshot_vbox: qemu-img cannot make a VDI ({out}), VDI refusal skipped");
    }
    unchanged("vdi");

    // An incomplete chain: refused; with fallback, revert leaves the broken
    // current state for a complete snapshot.
    let broken = dir.join("sys-000002.vmdk");
    std::fs::remove_file(&broken).unwrap();
    let e = create(&vbox, "s", &opts()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::MissingFile, "{e}");
    assert!(e.to_string().contains("sys-000002.vmdk"), "{e}");
    let e = create(&vbox, "s", &opts().fallback(true)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::MissingFile, "{e}");
    let e = revert(&vbox, "updated", &opts()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::MissingFile, "{e}");
    unchanged("incomplete");
    let r = revert(&vbox, "updated", &opts().fallback(true)).unwrap();
    assert_eq!(r.created.len(), 2);
    let vm = Vm::load(&vbox).unwrap();
    assert!(vm.open(&VmOptions::new()).is_ok());
}

/// A VHD of `size` bytes made by qemu-img, with a few patterns written.
fn qemu_vhd(path: &Path, size: &str, pattern: u8) {
    let (ok, out) = run(Command::new("qemu-img").args([
        "create",
        "-q",
        "-f",
        "vpc",
        "-o",
        "subformat=dynamic,force_size=on",
        path.to_str().unwrap(),
        size,
    ]));
    assert!(ok, "{out}");
    let (ok, out) = run(Command::new("qemu-io").args([
        "-f",
        "vpc",
        "-c",
        &format!("write -P {pattern} 0 64k"),
        "-c",
        &format!("write -P {} 1M 8k", pattern + 1),
        path.to_str().unwrap(),
    ]));
    assert!(ok, "{out}");
}

/// The medium UUID VirtualBox reads from a VHD: the footer's unique ID
/// bytes as a little-endian GUID (computed here without the library).
fn vhd_uuid(path: &Path) -> String {
    let b = std::fs::read(path).unwrap();
    let f = &b[b.len() - 512..];
    assert_eq!(&f[..8], b"conectix");
    let u = &f[68..84];
    format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        u[3], u[2], u[1], u[0], u[5], u[4], u[7], u[6], u[8], u[9], u[10], u[11], u[12], u[13], u[14], u[15]
    )
}

/// The parent unique ID bytes a differencing VHD's header records.
fn vhd_parent_bytes(path: &Path) -> Vec<u8> {
    let b = std::fs::read(path).unwrap();
    let off = u64::from_be_bytes(b[16..24].try_into().unwrap()) as usize;
    b[off + 40..off + 56].to_vec()
}

fn vhd_state(vbox: &Path, state: Option<&str>) -> (Vec<PathBuf>, String) {
    let vm = Vm::load(vbox).unwrap();
    let o = VmOptions::new().snapshot(state.map(str::to_owned));
    let opened = vm.open(&o).unwrap_or_else(|e| panic!("{state:?}: {e}"));
    let d = &opened.set.disks()[0];
    let sha = sha256_device(d.image.device().as_ref(), d.image.size()).unwrap();
    let st = &opened.state.disks[0];
    (st.files.clone(), sha)
}

/// A VirtualBox machine over qemu-img's VHDs made in `parent/vhdvm`: a
/// `Normal` 4 MiB `base.vhd` on SATA port 0 and a `Writethrough` 2 MiB
/// `scratch.vhd` (left out of snapshots) on port 1. Returns the `.vbox`
/// and the base.
fn vhd_machine(parent: &Path) -> (PathBuf, PathBuf) {
    let dir = parent.join("vhdvm");
    std::fs::create_dir(&dir).unwrap();
    let base = dir.join("base.vhd");
    let wt = dir.join("scratch.vhd");
    qemu_vhd(&base, "4M", 0x61);
    qemu_vhd(&wt, "2M", 0x71);
    let base_uuid = vhd_uuid(&base);
    let wt_uuid = vhd_uuid(&wt);
    let vbox = dir.join("vhd.vbox");
    std::fs::write(
        &vbox,
        format!(
            r#"<?xml version="1.0"?>
<!--
** DO NOT EDIT THIS FILE.
-->
<VirtualBox xmlns="http://www.virtualbox.org/" version="1.19-linux">
  <Machine uuid="{{5e1f0000-0000-4000-8000-000000000001}}" name="vhd" OSType="Other_64" snapshotFolder="Snapshots" currentStateModified="true" lastStateChange="2024-01-01T00:00:00Z">
    <MediaRegistry>
      <HardDisks>
        <HardDisk uuid="{{{base_uuid}}}" location="base.vhd" format="VHD" type="Normal"/>
        <HardDisk uuid="{{{wt_uuid}}}" location="scratch.vhd" format="VHD" type="Writethrough"/>
      </HardDisks>
    </MediaRegistry>
    <Hardware>
      <CPU count="1"/>
      <Memory RAMSize="512"/>
      <StorageControllers>
        <StorageController name="SATA" type="AHCI" PortCount="2" useHostIOCache="false" Bootable="true">
          <AttachedDevice type="HardDisk" hotpluggable="false" port="0" device="0">
            <Image uuid="{{{base_uuid}}}"/>
          </AttachedDevice>
          <AttachedDevice type="HardDisk" hotpluggable="false" port="1" device="0">
            <Image uuid="{{{wt_uuid}}}"/>
          </AttachedDevice>
        </StorageController>
      </StorageControllers>
    </Hardware>
  </Machine>
</VirtualBox>
"#
        ),
    )
    .unwrap();
    (vbox, base)
}

/// The tools, the VHD machine made in `dir` and its base's sha256 by
/// qemu-img; `None` (said on stderr) where qemu-img is missing.
fn vhd_machine_with_tools(dir: &Path) -> Option<(Tools, PathBuf, PathBuf, String)> {
    let t = tools();
    if !t.qemu {
        eprintln!("snapshot_vbox: qemu-img missing, the VHD machine is not made; skipped");
        return None;
    }
    let (vbox, base) = vhd_machine(dir);
    let base_sha = qemu_sha(&base, "vpc");
    Some((t, vbox, base, base_sha))
}

#[test]
fn vhd_machine_create_write_delete_revert() {
    let tmp = tempfile::tempdir().unwrap();
    let Some((t, vbox, base, base_sha)) = vhd_machine_with_tools(tmp.path()) else {
        return;
    };
    let (_, ours) = vhd_state(&vbox, None);
    assert_eq!(ours, base_sha, "our reader and qemu-img on the base");

    let first = create(&vbox, "first", &opts()).unwrap();
    assert_eq!(
        first.created.len(),
        1,
        "the writethrough disk is left alone"
    );
    let c1 = first.created[0].clone();
    etree_parses(&vbox);
    let text = std::fs::read_to_string(&vbox).unwrap();
    assert!(text.contains("DO NOT EDIT"), "the comment is kept");
    assert!(text.contains("currentStateModified=\"false\""));
    // The child's medium UUID is its footer's; its header names the base.
    let c1_uuid = vhd_uuid(&c1);
    assert_eq!(
        c1.file_name().unwrap().to_string_lossy(),
        format!("{{{c1_uuid}}}.vhd")
    );
    assert!(
        text.contains(&format!("location=\"Snapshots/{{{c1_uuid}}}.vhd\"")),
        "{text}"
    );
    let b = std::fs::read(&base).unwrap();
    assert_eq!(
        vhd_parent_bytes(&c1),
        b[b.len() - 512 + 68..b.len() - 512 + 84].to_vec()
    );
    let (files, sha) = vhd_state(&vbox, None);
    assert_eq!(files, [c1.clone(), base.clone()]);
    assert_eq!(sha, base_sha);
    assert_eq!(vhd_state(&vbox, Some("first")).1, base_sha);
    if t.vhdi {
        assert_eq!(libyal_sha("vhdi", &[c1.clone(), base.clone()]), base_sha);
    }

    // A write into the new current state: only it changes.
    let blob = tmp.path().join("blob");
    std::fs::write(&blob, vec![0x5au8; 3000]).unwrap();
    let out = diskimage(&[
        "write",
        c1.to_str().unwrap(),
        "--offset",
        "70000",
        blob.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let raw = tmp.path().join("expected.raw");
    let (ok, out) = run(Command::new("qemu-img").args([
        "convert",
        "-f",
        "vpc",
        "-O",
        "raw",
        base.to_str().unwrap(),
        raw.to_str().unwrap(),
    ]));
    assert!(ok, "{out}");
    let mut expected = std::fs::read(&raw).unwrap();
    expected[70000..73000].fill(0x5a);
    let written_sha = crate::common::sha256_bytes(&expected);
    assert_eq!(vhd_state(&vbox, None).1, written_sha);
    assert_eq!(vhd_state(&vbox, Some("first")).1, base_sha);
    assert_eq!(qemu_sha(&base, "vpc"), base_sha, "the base is not written");
    if t.vhdi {
        assert_eq!(libyal_sha("vhdi", &[c1.clone(), base.clone()]), written_sha);
    }

    // A second snapshot, then deleting it (a leaf: its child merges into it).
    let second = create(&vbox, "second", &opts().description(Some("two".into()))).unwrap();
    let c2 = second.created[0].clone();
    assert_eq!(vhd_state(&vbox, None).1, written_sha);
    let d = delete(&vbox, "second", &opts()).unwrap();
    assert_eq!(d.removed, std::slice::from_ref(&c2));
    assert!(!c2.exists());
    let (files, sha) = vhd_state(&vbox, None);
    assert_eq!(files, [c1.clone(), base.clone()]);
    assert_eq!(sha, written_sha);
    assert_eq!(vhd_state(&vbox, Some("first")).1, base_sha);
    if t.vhdi {
        assert_eq!(libyal_sha("vhdi", &[c1.clone(), base.clone()]), written_sha);
    }

    // Revert to "first": the current state reads as the base again, the
    // old current state's medium is discarded; then delete "first".
    let r = revert(&vbox, "first", &opts()).unwrap();
    assert_eq!(r.removed, std::slice::from_ref(&c1));
    let c3 = r.created[0].clone();
    let (files, sha) = vhd_state(&vbox, None);
    assert_eq!(files, [c3.clone(), base.clone()]);
    assert_eq!(sha, base_sha);
    let d = delete(&vbox, "first", &opts()).unwrap();
    assert_eq!(d.removed, [c3]);
    let vm = Vm::load(&vbox).unwrap();
    assert!(vm.snapshots.is_empty());
    assert_eq!(vm.disks[0].file, "base.vhd");
    assert_eq!(vhd_state(&vbox, None).1, base_sha);
    assert_eq!(qemu_sha(&base, "vpc"), base_sha);
    etree_parses(&vbox);
}

fn cli_ok(args: &[&str]) -> String {
    let out = diskimage(args);
    assert!(
        out.status.success(),
        "diskimage {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn cli_snapshot_create_revert_delete_on_a_vbox() {
    let t = tools();
    let tmp = tempfile::tempdir().unwrap();
    let vbox = unpack_vmware(tmp.path());
    let v = vbox.to_str().unwrap();
    let before = vmdk_truth(&t, &vbox);

    // Refused with a message and a failing status; nothing written.
    let original = std::fs::read(&vbox).unwrap();
    let out = diskimage(&["snapshot", "create", v, "m", "--include-memory"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("memory"),
        "{out:?}"
    );
    assert_eq!(std::fs::read(&vbox).unwrap(), original);

    let text = cli_ok(&[
        "snapshot",
        "create",
        v,
        "third",
        "--description",
        "from the CLI",
    ]);
    let vm = Vm::load(&vbox).unwrap();
    let third = vm.find_snapshot("third").unwrap();
    assert_eq!(vm.current_snapshot.as_deref(), Some(third.uid.as_str()));
    assert_eq!(third.description.as_deref(), Some("from the CLI"));
    assert!(
        text.starts_with(&format!("created snapshot \"third\" (uid {})", third.uid)),
        "{text}"
    );
    assert_eq!(text.matches("  created ").count(), 2, "{text}");
    assert!(text.contains("fixture.vbox-prev"), "{text}");
    let after = vmdk_truth(&t, &vbox);
    for slot in [SYS, DATA, SATA] {
        let k = |st: &str| (st.to_owned(), slot.to_owned());
        assert_eq!(after[&k("third")], before[&k("current")], "{slot}");
        assert_eq!(after[&k("current")], before[&k("current")], "{slot}");
        for st in ["installed", "updated"] {
            assert_eq!(after[&k(st)], before[&k(st)], "{st} {slot}");
        }
    }

    let text = cli_ok(&["snapshot", "revert", v, "updated"]);
    assert!(
        text.starts_with("reverted to snapshot \"updated\""),
        "{text}"
    );
    let reverted = vmdk_truth(&t, &vbox);
    for slot in [SYS, DATA, SATA] {
        let k = |st: &str| (st.to_owned(), slot.to_owned());
        assert_eq!(reverted[&k("current")], before[&k("updated")], "{slot}");
    }

    // "third" (a leaf whose medium has one child left after the revert
    // discarded the old current state's) merges away; every state left
    // reads as before.
    let text = cli_ok(&["snapshot", "delete", v, "third"]);
    assert!(text.starts_with("deleted snapshot \"third\""), "{text}");
    assert!(text.contains("  removed "), "{text}");
    let mut want = reverted.clone();
    want.retain(|k, _| k.0 != "third");
    assert_eq!(vmdk_truth(&t, &vbox), want);
    etree_parses(&vbox);
}

/// Every file under `root` but those under `skip`: path -> sha256.
fn sums_outside(root: &Path, skip: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.starts_with(skip) {
                continue;
            }
            if p.is_dir() {
                todo.push(p);
            } else {
                out.insert(p.clone(), sha256_file(&p));
            }
        }
    }
    out
}

/// The files of the VM folder and its snapshot folder, relative names.
fn vm_files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for sub in [dir.to_path_buf(), dir.join("Snapshots")] {
        let Ok(entries) = std::fs::read_dir(&sub) else {
            continue;
        };
        for e in entries.flatten().filter(|e| e.path().is_file()) {
            let p = e.path();
            out.push(p.strip_prefix(dir).unwrap().to_string_lossy().into_owned());
        }
    }
    out.sort();
    out
}

fn no_temp_files(dir: &Path) {
    let left: Vec<String> = vm_files(dir)
        .into_iter()
        .filter(|n| n.contains(".new-"))
        .collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
}

/// One change of the fixture VM and the names of its steps.
#[derive(Debug, Clone, Copy)]
enum Change {
    Create,
    Revert,
    Delete,
}

impl Change {
    fn run(self, vbox: &Path, o: &SnapshotOptions) -> Result<(), String> {
        match self {
            Change::Create => create(vbox, "third", o),
            Change::Revert => revert(vbox, "installed", o),
            Change::Delete => delete(vbox, "installed", o),
        }
        .map(|_| ())
        .map_err(|e| e.to_string())
    }

    fn steps(self) -> &'static [&'static str] {
        match self {
            Change::Create => &["media", "stage", "prev", "vbox"],
            Change::Revert => &["media", "stage", "prev", "vbox", "remove"],
            Change::Delete => &["merge", "stage", "prev", "relink", "vbox", "remove"],
        }
    }
}

#[test]
fn an_interrupted_change_leaves_the_old_or_the_new_configuration() {
    let t = tools();
    for change in [Change::Create, Change::Revert, Change::Delete] {
        // The change run whole: the states before and after it.
        let (before, after, after_files) = {
            let tmp = tempfile::tempdir().unwrap();
            let vbox = unpack_vmware(tmp.path());
            let before = shas(&our_states(&vbox));
            change.run(&vbox, &opts()).unwrap();
            let files = vm_files(vbox.parent().unwrap());
            (before, shas(&our_states(&vbox)), files.len())
        };
        assert_ne!(before, after, "{change:?}");
        for step in change.steps() {
            let what = format!("{change:?} interrupted before {step:?}");
            let tmp = tempfile::tempdir().unwrap();
            let vbox = unpack_vmware(tmp.path());
            let dir = vbox.parent().unwrap().to_path_buf();
            // A disk beside the VM folder: never written.
            let outside = tmp.path().join("outside");
            std::fs::create_dir(&outside).unwrap();
            std::fs::copy(dir.join("sys.vmdk"), outside.join("sys.vmdk")).unwrap();
            let outside_before = sums_outside(tmp.path(), &dir);
            let old_text = std::fs::read(&vbox).unwrap();
            let mut o = opts();
            o.fail_before = Some((*step).to_owned());
            let e = change.run(&vbox, &o).unwrap_err();
            assert!(e.contains(step), "{what}: {e}");
            no_temp_files(&dir);
            assert_eq!(
                sums_outside(tmp.path(), &dir),
                outside_before,
                "{what}: a file outside the VM folder was written"
            );
            // The folder opens, and qemu-img and libvmdk read every state
            // as our reader does. Between the relink and the rename the
            // relinked media name the merged medium while the old registry
            // still names their merged parent (VirtualBox too sees that
            // mismatch until the rename): libvmdk, given the registry's
            // chain, refuses it there; qemu-img follows the files.
            let relinked = matches!(change, Change::Delete) && *step == "vbox";
            let got = truth(&t, &vbox, !relinked);
            if *step == "remove" {
                // The new configuration is in place; only the removal of
                // media it no longer names was left.
                assert_ne!(std::fs::read(&vbox).unwrap(), old_text, "{what}");
                assert_eq!(got, after, "{what}");
                continue;
            }
            assert_eq!(std::fs::read(&vbox).unwrap(), old_text, "{what}");
            assert_eq!(got.len(), before.len(), "{what}");
            for (k, sha) in &before {
                // Once a medium of the deleted snapshot has its child merged
                // into it, that snapshot reads as its child snapshot.
                let merged = matches!(change, Change::Delete)
                    && *step != "merge"
                    && k.0 == "installed"
                    && got[k] == before[&("updated".to_owned(), k.1.clone())];
                assert!(&got[k] == sha || merged, "{what}: {k:?}");
            }
            // Run again, the change completes as if never interrupted, and
            // leaves no file behind.
            change
                .run(&vbox, &opts())
                .unwrap_or_else(|e| panic!("{what}, run again: {e}"));
            assert_eq!(shas(&our_states(&vbox)), after, "{what}, run again");
            assert_eq!(vm_files(&dir).len(), after_files, "{what}: files left");
            no_temp_files(&dir);
            etree_parses(&vbox);
        }
    }
}

/// The parent locators of a differencing VHD read from its bytes (not
/// through the library): platform code and UTF-16LE text of each entry.
fn vhd_locators(path: &Path) -> Vec<(String, String)> {
    let b = std::fs::read(path).unwrap();
    let f = &b[b.len() - 512..];
    let h = u64::from_be_bytes(f[16..24].try_into().unwrap()) as usize;
    let mut out = Vec::new();
    for i in 0..8 {
        let e = &b[h + 576 + i * 24..h + 576 + (i + 1) * 24];
        if e[..4] == [0; 4] {
            continue;
        }
        let len = u32::from_be_bytes(e[8..12].try_into().unwrap()) as usize;
        let at = u64::from_be_bytes(e[16..24].try_into().unwrap()) as usize;
        let units: Vec<u16> = b[at..at + len]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        out.push((
            String::from_utf8_lossy(&e[..4]).into_owned(),
            String::from_utf16(&units).unwrap(),
        ));
    }
    out
}

/// What libvhdi reads of a VHD chain (child first, each set as the
/// parent of the one before, read in 512-byte pieces: see
/// `scripts/libyal_sha256.py`): the sha256, the child's parent identifier,
/// its parent's identifier and the child's parent file name.
fn libvhdi_chain(chain: &[PathBuf]) -> (String, String, String, String) {
    let script = r#"
import hashlib, sys
sys.path.insert(0, sys.argv[1])
import libyal_sha256, pyvhdi
paths = sys.argv[2:]
data = libyal_sha256.read_chain("vhdi", paths, piece=512)
child, parent = pyvhdi.file(), pyvhdi.file()
child.open(paths[0])
parent.open(paths[1])
print(hashlib.sha256(data).hexdigest())
print(child.get_parent_identifier())
print(parent.get_identifier())
print(child.get_parent_filename())
"#;
    let mut cmd = Command::new("python3");
    cmd.args(["-c", script])
        .arg(repo().join("scripts"))
        .args(chain);
    let (ok, out) = run(&mut cmd);
    assert!(ok, "libvhdi {chain:?}: {out}");
    let l: Vec<String> = out.lines().map(str::to_owned).collect();
    (l[0].clone(), l[1].clone(), l[2].clone(), l[3].clone())
}

/// Writes `len` bytes of `byte` at `offset` into the current state's disk
/// on SATA port 0.
fn write_current(vbox: &Path, offset: u64, byte: u8, len: usize) {
    let vm = Vm::load(vbox).unwrap();
    let top = vbox.parent().unwrap().join(&vm.disks[0].file);
    let w = diskimage::formats::open_writable(&top, &diskimage::OpenOptions::new()).unwrap();
    w.write_at(&vec![byte; len], offset).unwrap();
    w.flush().unwrap();
}

#[test]
fn vhd_delete_of_a_middle_snapshot_relinks_its_grandchild() {
    let tmp = tempfile::tempdir().unwrap();
    let Some((t, vbox, base, base_sha)) = vhd_machine_with_tools(tmp.path()) else {
        return;
    };
    // Three snapshots, each state written after it was taken: writes in
    // both 2 MiB blocks, some over what the state before wrote.
    let mut tops = Vec::new();
    for (i, name) in ["s1", "s2", "s3"].into_iter().enumerate() {
        let r = create(&vbox, name, &opts()).unwrap();
        tops.push(r.created[0].clone());
        let k = i as u64;
        write_current(&vbox, 100_000 + k * 700, 0x11 * (k as u8 + 1), 5000);
        write_current(&vbox, 2_100_000 + k * 70_000, 0x21 * (k as u8 + 1), 70_000);
        write_current(&vbox, 4_194_304 - 512 * (k + 1), 0x31 + k as u8, 512);
    }
    let [c1, c2, c3] = [tops[0].clone(), tops[1].clone(), tops[2].clone()];
    let states = ["current", "s1", "s2", "s3"];
    let read = |s: &str| vhd_state(&vbox, (s != "current").then_some(s));
    let before: BTreeMap<&str, String> = states.iter().map(|s| (*s, read(s).1)).collect();
    assert_eq!(before["s1"], base_sha);
    assert_eq!(
        read("current").0,
        [c3.clone(), c2.clone(), c1.clone(), base.clone()]
    );
    let distinct: std::collections::BTreeSet<&String> = before.values().collect();
    assert_eq!(
        distinct.len(),
        4,
        "every state reads differently: {before:?}"
    );
    if t.vhdi {
        let (sha, ..) = libvhdi_chain(&[c3.clone(), c2.clone(), c1.clone(), base.clone()]);
        assert_eq!(sha, before["current"], "libvhdi before the delete");
    }

    // Interrupted before each step up to the rename: the old configuration
    // stays and opens; every state reads as before but "s2", whose medium
    // c1 reads as "s3" once c2 is merged into it.
    for step in ["merge", "stage", "prev", "relink", "vbox"] {
        let text = std::fs::read(&vbox).unwrap();
        let mut o = opts();
        o.fail_before = Some(step.to_owned());
        let e = delete(&vbox, "s2", &o).unwrap_err();
        assert!(e.to_string().contains(step), "{step}: {e}");
        assert_eq!(std::fs::read(&vbox).unwrap(), text, "{step}");
        no_temp_files(vbox.parent().unwrap());
        for s in ["current", "s1", "s3"] {
            assert_eq!(read(s).1, before[s], "{step}: {s}");
        }
        let s2 = read("s2").1;
        assert!(
            s2 == before["s2"] || (step != "merge" && s2 == before["s3"]),
            "{step}: s2"
        );
    }

    // "s2" records c1; c1's one child c2 is merged into it and c2's child
    // c3 (the current state) is relinked to c1.
    let r = delete(&vbox, "s2", &opts()).unwrap();
    assert_eq!(r.removed, std::slice::from_ref(&c2), "{r:?}");
    assert!(r.changed.contains(&c1) && r.changed.contains(&c3), "{r:?}");
    assert!(!c2.exists());
    etree_parses(&vbox);
    let vm = Vm::load(&vbox).unwrap();
    let names: Vec<&str> = vm.snapshots.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["s1", "s3"]);
    for s in ["current", "s1", "s3"] {
        assert_eq!(read(s).1, before[s], "{s} after the delete");
    }
    assert_eq!(read("current").0, [c3.clone(), c1.clone(), base.clone()]);
    assert_eq!(read("s3").0, [c1.clone(), base.clone()]);
    assert_eq!(qemu_sha(&base, "vpc"), base_sha, "the base is not written");

    // The relinked header names c1: its unique ID (the medium UUID the
    // registry gives c1), its file name, and locators read from the bytes.
    let c1_uuid = vhd_uuid(&c1);
    let c1_name = format!("{{{c1_uuid}}}.vhd");
    assert_eq!(vhd_parent_bytes(&c3), {
        let b = std::fs::read(&c1).unwrap();
        b[b.len() - 512 + 68..b.len() - 512 + 84].to_vec()
    });
    let locators = vhd_locators(&c3);
    assert_eq!(locators.len(), 2, "{locators:?}");
    assert_eq!(locators[0], ("W2ru".to_owned(), format!(".\\{c1_name}")));
    assert_eq!(locators[1].0, "W2ku");
    assert_eq!(
        PathBuf::from(&locators[1].1).canonicalize().unwrap(),
        c1.canonicalize().unwrap()
    );
    let text = std::fs::read_to_string(&vbox).unwrap();
    let c3_name = c3.file_name().unwrap().to_string_lossy().into_owned();
    let nested = format!("location=\"Snapshots/{c1_name}\" format=\"VHD\">");
    assert!(
        text.contains(&nested),
        "c1 has a child in the registry: {text}"
    );
    assert!(text.contains(&c3_name));
    // The file alone leads to its new parent (its locators, not the registry).
    let alone = diskimage::formats::open(&c3, &diskimage::OpenOptions::new()).unwrap();
    assert!(
        alone.info().warnings.is_empty(),
        "{:?}",
        alone.info().warnings
    );
    assert_eq!(
        alone
            .info()
            .parent
            .as_ref()
            .unwrap()
            .path
            .canonicalize()
            .unwrap(),
        c1.canonicalize().unwrap()
    );

    // libvhdi reads the relinked chain as we do and agrees on the link.
    if t.vhdi {
        let (sha, parent_id, c1_id, parent_name) =
            libvhdi_chain(&[c3.clone(), c1.clone(), base.clone()]);
        assert_eq!(
            sha, before["current"],
            "libvhdi: the relinked current state"
        );
        assert_eq!(parent_id, c1_id, "libvhdi: c3's parent identifier is c1's");
        assert_eq!(parent_name, c1_name, "libvhdi: c3's parent file name");
        let (sha, ..) = libvhdi_chain(&[c1.clone(), base.clone()]);
        assert_eq!(sha, before["s3"], "libvhdi: the merged medium");
    }

    // The current state takes writes after the relink (the parent time
    // stamp is the merged medium's), and libvhdi reads them.
    write_current(&vbox, 3_000_000, 0x5c, 9000);
    let written = read("current").1;
    assert_ne!(written, before["current"]);
    assert_eq!(read("s3").1, before["s3"]);
    if t.vhdi {
        let (sha, ..) = libvhdi_chain(&[c3.clone(), c1.clone(), base.clone()]);
        assert_eq!(sha, written, "libvhdi: a write after the relink");
    }
    // Deleting the rest merges everything into the base.
    delete(&vbox, "s1", &opts()).unwrap();
    delete(&vbox, "s3", &opts()).unwrap();
    let vm = Vm::load(&vbox).unwrap();
    assert!(vm.snapshots.is_empty());
    assert_eq!(vm.disks[0].file, "base.vhd");
    assert_eq!(read("current").1, written);
    assert_eq!(
        qemu_sha(&base, "vpc"),
        written,
        "qemu-img on the merged base"
    );
}
