//! OS detection (`fixtures/os/`): `os --json` on a Linux and a Windows
//! disk against what the tools that made them say (sfdisk, blkid, readelf,
//! objdump, hivexget, the seeded files: see `fixtures/os/make.sh`), a
//! disk with no OS, the real Windows 10 1709 SYSTEM hive of the corpus,
//! and damaged hives.

use std::io::Read;
use std::path::PathBuf;

use diskimage::os::regf::{Hive, ValueData};
use diskimage::os::windows::map_mounted_device;
use diskimage::{DiskSet, ErrorKind, OpenOptions};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::common::{diskimage, repo, tsv_rows};

fn topic() -> PathBuf {
    repo().join("fixtures/os")
}

fn expected(name: &str) -> Value {
    let p = topic().join(name);
    serde_json::from_str(&std::fs::read_to_string(&p).expect("expected json")).expect("json")
}

fn os_json(image: &str) -> Value {
    let out = diskimage(&["os", "--json", topic().join(image).to_str().expect("path")]);
    assert!(
        out.status.success(),
        "os --json {image}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("os --json output")
}

/// Every key of `want` (an object) has the same value in `got`.
fn assert_fields(got: &Value, want: &Value, skip: &[&str]) {
    for (k, v) in want.as_object().expect("object") {
        if skip.contains(&k.as_str()) {
            continue;
        }
        assert_eq!(&got[k], v, "field {k}");
    }
}

#[test]
fn linux_fixture_os_json_matches_blkid_sfdisk_readelf_and_the_seeded_files() {
    let got = os_json("linux.vmdk");
    let systems = got["systems"].as_array().expect("systems");
    assert_eq!(systems.len(), 1, "{got:#}");
    let os = &systems[0];
    let want = expected("expected-linux.json");
    assert_fields(os, &want, &["os_folder", "mount_points"]);
    assert_eq!(os["os_folder"]["volume"], want["os_folder"]["volume"]);
    assert_eq!(os["os_folder"]["path"], want["os_folder"]["path"]);
    // fstab: UUID=, LABEL=, /dev/sda1, PARTUUID= matched; /srv unmatched.
    assert_eq!(os["mount_points"], want["mount_points"], "{os:#}");
    assert!(os["notes"].as_array().expect("notes").iter().any(|n| n
        .as_str()
        .is_some_and(|n| n.contains("/srv") && n.contains("no volume"))));
}

#[test]
fn linux_os_release_is_followed_through_a_symlink_into_the_separate_usr_volume() {
    // /etc/os-release -> ../usr/lib/os-release, /bin -> usr/bin, and
    // /usr/bin/sh -> dash live on volume 3, not on the root (volume 2):
    // without the /usr merge none of them resolves.
    let set = DiskSet::open(&[topic().join("linux.vmdk")], &OpenOptions::default()).expect("open");
    let root = set.volume(2).expect("root volume");
    let fs = set.mount(root).expect("mount root");
    assert_eq!(
        fs.read_link("/etc/os-release").expect("link"),
        "../usr/lib/os-release"
    );
    assert!(fs.metadata("/usr/lib/os-release").is_err());
    let report = diskimage::os::detect(&set);
    assert_eq!(report.systems.len(), 1);
    assert_eq!(report.systems[0].distribution.as_deref(), Some("debian"));
    assert_eq!(report.systems[0].architecture.as_deref(), Some("x86_64"));
}

#[test]
fn windows_fixture_os_json_matches_hivexget_sfdisk_and_objdump() {
    let got = os_json("windows.vmdk");
    let systems = got["systems"].as_array().expect("systems");
    assert_eq!(systems.len(), 1, "{got:#}");
    let os = &systems[0];
    let want = expected("expected-windows.json");
    assert_fields(
        os,
        &want,
        &["drive_letters", "mounted_devices_c", "os_folder"],
    );
    assert_eq!(os["os_folder"], want["os_folder"]);
    // ProductName says Windows 10, the build says 11.
    assert_eq!(os["product_name"], "Windows 11 Pro");
    let mounts = os["mount_points"].as_array().expect("mount points");
    for (letter, volume) in want["drive_letters"].as_object().expect("letters") {
        let m = mounts
            .iter()
            .find(|m| m["path"] == *letter)
            .unwrap_or_else(|| panic!("no {letter} in {mounts:?}"));
        assert_eq!(&m["volume"], volume, "{letter}");
    }
    assert_eq!(
        mounts.len(),
        2,
        "only \\DosDevices\\ values are drive letters"
    );
}

#[test]
fn windows_os_text_output_names_the_product_and_drive_letter() {
    let out = diskimage(&["os", topic().join("windows.vmdk").to_str().expect("path")]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Windows 11 Pro"), "{text}");
    assert!(text.contains("build             22631.3150"), "{text}");
    assert!(text.contains("mount C:"), "{text}");
}

/// The hives of the fixture, read out of its NTFS volume.
fn fixture_hive(name: &str) -> Vec<u8> {
    let set =
        DiskSet::open(&[topic().join("windows.vmdk")], &OpenOptions::default()).expect("open");
    let v = set.volume(2).expect("NTFS volume");
    let fs = set.mount(v).expect("mount");
    let mut data = Vec::new();
    fs.open(&format!("/Windows/System32/config/{name}"))
        .expect("hive")
        .read_to_end(&mut data)
        .expect("read hive");
    data
}

#[test]
fn fixture_hive_values_match_hivexget() {
    let rows = tsv_rows(&topic().join("windows.hivexget.tsv"));
    assert!(rows.len() >= 10);
    for name in ["SOFTWARE", "SYSTEM"] {
        let hive = Hive::new(name, fixture_hive(name)).expect("hive");
        for r in rows.iter().filter(|r| r[0] == name) {
            let v = hive
                .value(&r[1], &r[2])
                .expect("read")
                .unwrap_or_else(|| panic!("{r:?} not found"));
            let got = match v.data().expect("data") {
                ValueData::MultiSz(list) => list.join("|"),
                ValueData::Binary(b) if r[3].starts_with("sha256:") => {
                    format!("sha256:{}", crate::common::hex(&Sha256::digest(&b)))
                }
                _ => v.string().expect("data").unwrap_or_else(|| {
                    v.raw()
                        .expect("raw")
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                }),
            };
            assert_eq!(got, r[3], "{r:?}");
        }
        // Lookups ignore case, as Windows does.
        if name == "SYSTEM" {
            let v = hive
                .value(
                    "controlset001\\CONTROL\\computername\\COMPUTERNAME",
                    "computername",
                )
                .expect("read")
                .expect("found");
            assert_eq!(v.string().expect("data").as_deref(), Some("FIXTURE-WIN11"));
        }
    }
}

#[test]
fn real_windows_10_system_hive_facts_and_its_c_drive_on_the_fixture_disk() {
    let Some(dir) = crate::corpus::corpus_dir() else {
        return;
    };
    let gz = std::fs::File::open(dir.join("registry/SYSTEM_WIN_10_1709.gz")).expect("open");
    let mut data = Vec::new();
    flate2::read::GzDecoder::new(gz)
        .read_to_end(&mut data)
        .expect("gunzip");
    // Facts from SOURCES.md, confirmed there with hivexget.
    let hive = Hive::new("SYSTEM_WIN_10_1709", data).expect("real hive");
    let num = |k: &str, v: &str| {
        hive.value(k, v)
            .expect("read")
            .expect(v)
            .number()
            .expect("n")
    };
    let text = |k: &str, v: &str| {
        hive.value(k, v)
            .expect("read")
            .expect(v)
            .string()
            .expect("s")
    };
    assert_eq!(num("Select", "Current"), Some(1));
    assert_eq!(
        text(
            "ControlSet001\\Control\\ComputerName\\ComputerName",
            "ComputerName"
        )
        .as_deref(),
        Some("DESKTOP-2KGM189")
    );
    assert_eq!(
        text(
            "ControlSet001\\Control\\Session Manager\\Environment",
            "PROCESSOR_ARCHITECTURE"
        )
        .as_deref(),
        Some("AMD64")
    );
    let c = hive
        .value("MountedDevices", "\\DosDevices\\C:")
        .expect("read")
        .expect("C:")
        .raw()
        .expect("raw");
    assert_eq!(
        c,
        [0xae, 0x46, 0x45, 0xdf, 0x00, 0x00, 0x50, 0x1f, 0x00, 0x00, 0x00, 0x00]
    );
    // The fixture disk was made with that signature and offset: the real
    // value maps to its NTFS volume (sfdisk: partition 2 at 0x1F500000).
    let set =
        DiskSet::open(&[topic().join("windows.vmdk")], &OpenOptions::default()).expect("open");
    let (volume, _) = map_mounted_device(&set, &c);
    let want = expected("expected-windows.json");
    assert_eq!(
        volume.map(|v| v as u64),
        want["os_folder"]["volume"].as_u64()
    );
}

#[test]
fn a_disk_with_no_os_says_none_was_found() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let img = tmp.path().join("gpt.img");
    crate::common::gunzip(&repo().join("fixtures/volumes/gpt.img.gz"), &img);
    let out = diskimage(&["os", img.to_str().expect("path")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no operating system found"));
    let out = diskimage(&["os", "--json", img.to_str().expect("path")]);
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["systems"], serde_json::json!([]));
}

/// Walks every key and value once; returns the first error's kind.
fn walk(hive: &Hive) -> Option<ErrorKind> {
    let mut stack = vec![(hive.root_key().ok()?, 0)];
    let mut seen = std::collections::HashSet::new();
    let mut n = 0;
    while let Some((k, depth)) = stack.pop() {
        // A key reached twice (a subkey list pointing back up) is walked once.
        if !seen.insert(k.offset()) {
            continue;
        }
        n += 1;
        assert!(n < 1_000_000, "walk does not end");
        match k.values() {
            Ok(vs) => {
                for v in vs {
                    if let Err(e) = v.data() {
                        return Some(e.kind());
                    }
                }
            }
            Err(e) => return Some(e.kind()),
        }
        if depth < 64 {
            match k.subkeys() {
                Ok(ks) => stack.extend(ks.into_iter().map(|k| (k, depth + 1))),
                Err(e) => return Some(e.kind()),
            }
        }
    }
    None
}

#[test]
fn truncated_hives_give_typed_errors_naming_the_hive() {
    let data = fixture_hive("SYSTEM");
    assert_eq!(
        walk(&Hive::new("SYSTEM", data.clone()).expect("whole")),
        None
    );
    for len in [
        0,
        3,
        100,
        4095,
        4096,
        4100,
        4128,
        8192,
        data.len() / 2,
        data.len() - 1,
    ] {
        match Hive::new("SYSTEM", data[..len].to_vec()) {
            Err(e) => {
                assert!(matches!(
                    e.kind(),
                    ErrorKind::Corrupt | ErrorKind::OutOfBounds
                ));
                assert_eq!(e.file(), Some(std::path::Path::new("SYSTEM")), "{e}");
                assert!(e.to_string().contains("in SYSTEM"), "{e}");
            }
            Ok(h) => {
                // What opens reports a cut inside the hive bins and walks
                // to a typed error or the end.
                let bins_end = 4096 + u32_at(&data, 40);
                assert_eq!(!h.warnings().is_empty(), len < bins_end, "len {len}");
                let _ = walk(&h);
            }
        }
    }
}

fn patch_u32(data: &mut [u8], at: usize, v: u32) {
    data[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn u32_at(data: &[u8], at: usize) -> usize {
    u32::from_le_bytes(data[at..at + 4].try_into().expect("4")) as usize
}

#[test]
fn damaged_cells_give_typed_errors_never_a_panic_or_a_hang() {
    let data = fixture_hive("SOFTWARE");
    let root = 4096 + u32_at(&data, 36);
    let root_list = 4096 + u32_at(&data, root + 4 + 28);
    // A huge claimed cell size on the root key.
    let mut d = data.clone();
    patch_u32(&mut d, root, 0x8000_0008);
    let e = Hive::new("SOFTWARE", d).expect_err("huge cell");
    assert_eq!(e.kind(), ErrorKind::Corrupt);
    assert!(e.to_string().contains("outside"), "{e}");
    assert_eq!(e.offset(), Some(root as u64));
    // A garbage subkey list signature.
    let mut d = data.clone();
    d[root_list + 4..root_list + 6].copy_from_slice(b"zz");
    let h = Hive::new("SOFTWARE", d).expect("opens");
    let e = h
        .root_key()
        .expect("root")
        .subkeys()
        .expect_err("garbage list");
    assert!(e.to_string().contains("subkey list"), "{e}");
    // A cell offset loop: the root's list becomes an `ri` index whose
    // only entry is itself.
    let mut d = data.clone();
    d[root_list + 4..root_list + 6].copy_from_slice(b"ri");
    d[root_list + 6..root_list + 8].copy_from_slice(&1u16.to_le_bytes());
    patch_u32(&mut d, root_list + 8, (root_list - 4096) as u32);
    let h = Hive::new("SOFTWARE", d).expect("opens");
    let e = h.root_key().expect("root").subkeys().expect_err("loop");
    assert!(e.to_string().contains("loop"), "{e}");
    // A key whose subkey list points back at the root key itself: the
    // lookup by path ends (bounded by the path), the walk by its depth.
    let mut d = data.clone();
    let count = u16::from_le_bytes([d[root_list + 6], d[root_list + 7]]) as usize;
    let width = if &d[root_list + 4..root_list + 6] == b"li" {
        4
    } else {
        8
    };
    for i in 0..count {
        patch_u32(&mut d, root_list + 8 + i * width, (root - 4096) as u32);
    }
    let h = Hive::new("SOFTWARE", d).expect("opens");
    assert!(h.key("Microsoft\\Windows NT").expect("lookup").is_none());
    let _ = walk(&h);
    // A bad checksum and a dirty hive are read, with warnings.
    let mut d = data.clone();
    patch_u32(&mut d, 508, 0x1234_5678);
    patch_u32(&mut d, 4, u32_at(&data, 4) as u32 + 1);
    let h = Hive::new("SOFTWARE", d).expect("opens");
    assert!(h.dirty());
    assert_eq!(h.warnings().len(), 2, "{:?}", h.warnings());
    assert!(h
        .key("Microsoft\\Windows NT\\CurrentVersion")
        .expect("read")
        .is_some());
    // Every single-byte flip of the first cells: never a panic.
    for at in (4096..4096 + 8192).step_by(7) {
        let mut d = data.clone();
        d[at] ^= 0xff;
        if let Ok(h) = Hive::new("SOFTWARE", d) {
            let _ = walk(&h);
        }
    }
}

#[test]
fn a_gpt_mounted_devices_value_maps_to_the_partition_sfdisk_gave_that_guid() {
    // `DMIO:ID:` + the partition GUID in its on-disk (mixed-endian) form.
    let tmp = tempfile::tempdir().expect("tempdir");
    let img = tmp.path().join("gpt.img");
    crate::common::gunzip(&repo().join("fixtures/volumes/gpt.img.gz"), &img);
    let sf: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("fixtures/volumes/gpt.img.sfdisk.json"))
            .expect("sfdisk json"),
    )
    .expect("json");
    let set = DiskSet::open(&[&img], &OpenOptions::default()).expect("open");
    for (i, p) in sf["partitiontable"]["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .enumerate()
    {
        let guid = p["uuid"].as_str().expect("uuid").replace('-', "");
        let b: Vec<u8> = (0..16)
            .map(|j| u8::from_str_radix(&guid[j * 2..j * 2 + 2], 16).expect("hex"))
            .collect();
        let mut data = b"DMIO:ID:".to_vec();
        data.extend(b[..4].iter().rev());
        data.extend(b[4..6].iter().rev());
        data.extend(b[6..8].iter().rev());
        data.extend(&b[8..]);
        let (volume, source) = map_mounted_device(&set, &data);
        assert_eq!(volume, Some(i + 1), "{source}");
    }
    // The MBR form of another disk's signature matches nothing here.
    let (volume, _) = map_mounted_device(
        &set,
        &[0xae, 0x46, 0x45, 0xdf, 0, 0, 0x50, 0x1f, 0, 0, 0, 0],
    );
    assert_eq!(volume, None);
}
