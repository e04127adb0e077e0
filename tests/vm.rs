//! VM configurations (issue 7): the fixture VMs of `fixtures/vm/` (made by
//! its `make.sh`) against the truth qemu-img and libvhdi gave for each state,
//! and hostile configurations.

use std::path::{Path, PathBuf};

use diskimage::vm::{Vm, VmOptions};
use diskimage::{BlockDevice, ErrorKind};

use crate::common::{diskimage, gunzip, repo, sha256_device, tsv_rows};

/// Copies `fixtures/vm/<name>` into `dst`, decompressing `*.gz`.
fn unpack(name: &str, dst: &Path) -> PathBuf {
    fn walk(src: &Path, dst: &Path) {
        std::fs::create_dir_all(dst).expect("mkdir");
        for e in std::fs::read_dir(src).expect("read fixture dir").flatten() {
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

/// (state, slot, size, sha256) rows of a truth file.
fn truth(file: &str) -> Vec<(String, String, u64, String)> {
    tsv_rows(&repo().join("fixtures/vm").join(file))
        .into_iter()
        .map(|r| {
            (
                r[0].clone(),
                r[1].clone(),
                r[3].parse().expect("size"),
                r[4].clone(),
            )
        })
        .collect()
}

fn options(snapshot: Option<&str>) -> VmOptions {
    VmOptions::new().snapshot(snapshot.map(str::to_owned))
}

/// Checks every state of `config` against the truth rows, taking the
/// truth's slots in the order of the `.vmx` (`slot_of` maps them).
fn check_states(config: &Path, slot_of: impl Fn(&str) -> usize) {
    let vm = Vm::load(config).unwrap_or_else(|e| panic!("{}: {e}", config.display()));
    let rows = truth("vmware.tsv");
    assert_eq!(rows.len(), 9);
    for (state, slot, size, sha) in rows {
        let snap = (state != "current").then_some(state.as_str());
        let opened = vm
            .open(&options(snap))
            .unwrap_or_else(|e| panic!("{state}: {e}"));
        assert!(opened.warnings.is_empty(), "{:?}", opened.warnings);
        let disk = &opened.set.disks()[slot_of(&slot)];
        assert_eq!(disk.image.size(), size, "{state} {slot}");
        let got = sha256_device(disk.image.device().as_ref(), size).expect("read");
        assert_eq!(got, sha, "{state} {slot} of {}", config.display());
    }
}

fn vmx_slot(slot: &str) -> usize {
    ["scsi0:0", "scsi0:1", "sata0:0"]
        .iter()
        .position(|s| *s == slot)
        .expect("slot")
}

#[test]
fn vmx_states_read_as_qemu_img_reads_their_chains() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = unpack("vmware", tmp.path());
    check_states(&dir.join("fixture.vmx"), vmx_slot);
    // The uid selects the same state as the name.
    let vm = Vm::load(&dir.join("fixture.vmx")).expect("load");
    let by_uid = vm.open(&options(Some("1"))).expect("uid 1");
    assert_eq!(by_uid.state.name, "installed");
}

#[test]
fn vbox_opens_the_same_disks() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = unpack("vmware", tmp.path());
    check_states(&dir.join("fixture.vbox"), vmx_slot);
    let vm = Vm::load(&dir.join("fixture.vbox")).expect("load");
    let slots: Vec<&str> = vm.disks.iter().map(|d| d.slot.as_str()).collect();
    assert_eq!(slots, ["SCSI:0:0", "SCSI:1:0", "SATA:0:0"]);
    assert_eq!(
        vm.current_snapshot.as_deref(),
        Some("7d6f3a10-0000-4000-8000-0000000000b2")
    );
}

#[test]
fn vmx_facts_and_snapshot_tree() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = unpack("vmware", tmp.path());
    let vm = Vm::load(&dir.join("fixture.vmx")).expect("load");
    assert_eq!(vm.facts.name.as_deref(), Some("Fixture \"one\" VM"));
    assert_eq!(vm.facts.memory_mib, Some(2048));
    assert_eq!(vm.facts.cpus, Some(2));
    assert_eq!(vm.facts.firmware.as_deref(), Some("efi"));
    assert_eq!(vm.facts.hardware_version.as_deref(), Some("19"));
    // The later duplicate (other case) of scsi0:0.fileName wins; the CD-ROM
    // and the disk marked not present are not disks of the VM.
    let disks: Vec<(&str, &str)> = vm
        .disks
        .iter()
        .map(|d| (d.slot.as_str(), d.file.as_str()))
        .collect();
    assert_eq!(
        disks,
        [
            ("scsi0:0", "sys-000002.vmdk"),
            ("scsi0:1", "data.vmdk"),
            ("sata0:0", "sata-000002.vmdk")
        ]
    );
    let tree: Vec<(&str, Option<&str>, &str, Option<&str>)> = vm
        .snapshots
        .iter()
        .map(|s| {
            (
                s.uid.as_str(),
                s.parent.as_deref(),
                s.name.as_str(),
                s.created.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        tree,
        [
            ("1", None, "installed", Some("2023-11-14T22:13:20Z")),
            ("2", Some("1"), "updated", Some("2023-11-14T23:13:20Z"))
        ]
    );
    let (files, problems) = vm.dependencies(&VmOptions::default()).expect("deps");
    assert!(problems.is_empty(), "{problems:?}");
    let role = |name: &str| {
        files
            .iter()
            .find(|f| f.path.file_name().is_some_and(|n| n == name))
            .map(|f| f.role)
    };
    assert_eq!(role("sys-000002-ctk.vmdk"), Some("change tracking (CBT)"));
    assert_eq!(role("sys.vmdk"), Some("disk"));
    assert_eq!(role("fixture.vmsd"), Some("snapshot database"));
    assert_eq!(files.len(), 10);
}

#[test]
fn hyperv_folder_opens_the_checkpoint_chain() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = unpack("hyperv", tmp.path());
    let vm = Vm::load(&dir).expect("load");
    let rows = truth("hyperv.tsv");
    assert_eq!(rows.len(), 1);
    let opened = vm.open(&VmOptions::default()).expect("open");
    assert_eq!(opened.set.disks().len(), 1);
    let chain: Vec<String> = opened.state.disks[0]
        .files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(chain, ["diff-1m-l2.avhdx", "diff-1m.avhdx", "dyn-1m.vhdx"]);
    let (_, _, size, sha) = &rows[0];
    let dev = opened.set.disks()[0].image.device();
    assert_eq!(&sha256_device(dev.as_ref(), *size).expect("read"), sha);
    assert!(vm
        .files
        .iter()
        .any(|f| f.path.extension().is_some_and(|e| e == "vmcx")));
    let e = vm.open(&options(Some("any"))).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    assert!(e.to_string().contains(".vmcx"), "{e}");
}

#[test]
fn deleted_delta_is_a_typed_error_and_fallback_opens_the_last_complete_state() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = unpack("vmware-broken", tmp.path());
    let vm = Vm::load(&dir.join("fixture.vmx")).expect("load");
    let e = vm.open(&VmOptions::default()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::MissingFile);
    let text = e.to_string();
    assert!(text.contains("sys-000002.vmdk"), "{text}");
    assert!(
        text.contains("complete states: updated (uid 2), installed (uid 1)"),
        "{text}"
    );
    let opened = vm.open(&VmOptions::new().fallback(true)).expect("fallback");
    assert_eq!(opened.state.name, "updated");
    assert!(opened.warnings[0].contains("opened the newest complete state instead: updated"));
    for (state, slot, size, sha) in truth("vmware.tsv") {
        if state == "updated" {
            let dev = opened.set.disks()[vmx_slot(&slot)].image.device();
            assert_eq!(
                sha256_device(dev.as_ref(), size).expect("read"),
                sha,
                "{slot}"
            );
        }
    }
    // The CLI says the same.
    let vmx = dir.join("fixture.vmx");
    let out = diskimage(&["hash", "--disk", "0", vmx.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("sys-000002.vmdk"));
    let out = diskimage(&["hash", "--fallback", "--disk", "0", vmx.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("warning"));
}

#[test]
fn cli_vm_json_lists_the_tree_and_hash_reads_a_snapshot() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = unpack("vmware", tmp.path());
    let vmx = dir.join("fixture.vmx");
    let out = diskimage(&["vm", "--json", vmx.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["kind"], "vmware");
    assert_eq!(v["current_snapshot"], "2");
    assert_eq!(v["snapshots"][0]["name"], "installed");
    assert_eq!(v["snapshots"][1]["parent"], "1");
    assert_eq!(v["snapshots"][1]["current"], true);
    assert_eq!(v["snapshots"][1]["state"]["complete"], true);
    let files: Vec<&str> = v["snapshots"][1]["state"]["disks"][0]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().rsplit('/').next().unwrap())
        .collect();
    assert_eq!(files, ["sys-000001.vmdk", "sys.vmdk"]);
    let rows = truth("vmware.tsv");
    let want = rows
        .iter()
        .find(|r| r.0 == "installed" && r.1 == "sata0:0")
        .unwrap();
    let out = diskimage(&[
        "hash",
        "--snapshot",
        "installed",
        "--disk",
        "2",
        vmx.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with(&want.3));
    let out = diskimage(&["hash", vmx.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--disk N"));
    // A VM where a disk set is taken: every disk of the state.
    let out = diskimage(&["volumes", "--json", vmx.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write");
}

#[test]
fn hostile_configurations_give_typed_errors_and_open_nothing_outside() {
    let tmp = tempfile::tempdir().expect("tmp");
    let vmdir = tmp.path().join("vm");
    std::fs::create_dir(&vmdir).unwrap();
    let disk = |name: &str| {
        format!("scsi0.present = \"TRUE\"\nscsi0:0.present = \"TRUE\"\nscsi0:0.deviceType = \"scsi-hardDisk\"\nscsi0:0.fileName = \"{name}\"\n")
    };
    // A relative path out of the folder.
    write(&vmdir.join("a.vmx"), &disk("../../etc/passwd"));
    let e = Vm::load(&vmdir.join("a.vmx"))
        .unwrap()
        .open(&VmOptions::default())
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::OutsideFolder, "{e}");
    assert!(e.to_string().contains("a.vmx"), "{e}");
    // An absolute path is looked for by its name in the folder only.
    write(&vmdir.join("b.vmx"), &disk("/etc/passwd"));
    let e = Vm::load(&vmdir.join("b.vmx"))
        .unwrap()
        .open(&VmOptions::default())
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::MissingFile, "{e}");
    assert!(
        e.to_string()
            .contains(&vmdir.join("passwd").display().to_string()),
        "{e}"
    );
    // A delta whose parent lies outside the folder: not opened, unless allowed.
    let outside = tmp.path().join("outside.vmdk");
    write(
        &outside,
        "# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\nRW 8 FLAT \"outside-flat.vmdk\" 0\n",
    );
    std::fs::write(tmp.path().join("outside-flat.vmdk"), vec![7u8; 4096]).unwrap();
    write(
        &vmdir.join("delta.vmdk"),
        "# Disk DescriptorFile\nversion=1\nCID=2\nparentCID=1\ncreateType=\"monolithicFlat\"\nparentFileNameHint=\"../outside.vmdk\"\nRW 8 FLAT \"delta-flat.vmdk\" 0\n",
    );
    std::fs::write(vmdir.join("delta-flat.vmdk"), vec![0u8; 4096]).unwrap();
    write(&vmdir.join("c.vmx"), &disk("delta.vmdk"));
    let vm = Vm::load(&vmdir.join("c.vmx")).unwrap();
    let e = vm.open(&VmOptions::default()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::MissingFile, "{e}");
    let allowed = vm
        .open(&VmOptions::new().allow_outside(true))
        .expect("--allow-outside");
    assert_eq!(allowed.state.disks[0].files.len(), 4);
    // No hard disk at all.
    write(&vmdir.join("none.vmx"), "displayName = \"x\"\n");
    let e = Vm::load(&vmdir.join("none.vmx"))
        .unwrap()
        .open(&VmOptions::default())
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    // A 10 MB .vmx.
    let big = vmdir.join("big.vmx");
    std::fs::write(&big, vec![b'#'; 10 << 20]).unwrap();
    let e = Vm::load(&big).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::LimitExceeded, "{e}");
    assert!(e.to_string().contains("big.vmx"), "{e}");
    // A snapshot tree with a cycle.
    write(&vmdir.join("d.vmx"), &disk("x.vmdk"));
    write(
        &vmdir.join("d.vmsd"),
        "snapshot0.uid = \"1\"\nsnapshot0.parent = \"3\"\nsnapshot1.uid = \"2\"\nsnapshot1.parent = \"1\"\nsnapshot2.uid = \"3\"\nsnapshot2.parent = \"2\"\n",
    );
    let e = Vm::load(&vmdir.join("d.vmx")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert!(e.to_string().contains("d.vmsd"), "{e}");
    // XML bombs in a .vbox: entity definitions and undefined entities.
    let bomb = "<?xml version=\"1.0\"?>\n<!DOCTYPE v [<!ENTITY a \"aaaaaaaaaa\"><!ENTITY b \"&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;\"><!ENTITY c \"&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;\">]>\n<VirtualBox><Machine name=\"&c;\"/></VirtualBox>\n";
    write(&vmdir.join("bomb.vbox"), bomb);
    let e = Vm::load(&vmdir.join("bomb.vbox")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    let external = "<!DOCTYPE v [<!ENTITY x SYSTEM \"file:///etc/passwd\">]><VirtualBox><Machine name=\"&x;\"/></VirtualBox>";
    write(&vmdir.join("ext.vbox"), external);
    assert!(Vm::load(&vmdir.join("ext.vbox")).is_err());
    // A VDI medium that is not a VDI: an error naming the VDI signature.
    write(
        &vmdir.join("vdi.vbox"),
        "<VirtualBox><Machine name=\"v\"><MediaRegistry><HardDisks><HardDisk uuid=\"{1}\" location=\"d.vdi\" format=\"VDI\"/></HardDisks></MediaRegistry><StorageControllers><StorageController name=\"SATA\"><AttachedDevice type=\"HardDisk\" port=\"0\" device=\"0\"><Image uuid=\"{1}\"/></AttachedDevice></StorageController></StorageControllers></Machine></VirtualBox>",
    );
    std::fs::write(vmdir.join("d.vdi"), vec![0u8; 512]).unwrap();
    let e = Vm::load(&vmdir.join("vdi.vbox"))
        .unwrap()
        .open(&VmOptions::default())
        .unwrap_err();
    assert!(e.to_string().contains("VDI signature"), "{e}");
    // An encrypted VM.
    write(
        &vmdir.join("e.vmx"),
        &format!(
            "{}encryption.keySafe = \"vmware:key\"\n",
            disk("delta.vmdk")
        ),
    );
    let e = Vm::load(&vmdir.join("e.vmx"))
        .unwrap()
        .open(&VmOptions::default())
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    assert!(e.to_string().contains("encrypted"), "{e}");
}
