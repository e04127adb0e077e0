//! The volume layer and disk sets on `fixtures/volumes/` (made by
//! sfdisk, mke2fs, mkfs.fat and the lvm tools): partition tables against
//! `sfdisk --json` and TSK's `mmls`, file systems against `blkid`, the
//! two-disk LVM2 volume group against `pvs/lvs/vgs --reportformat json`
//! and the sha256 of what was written into each LV — through `DiskSet`
//! and through `diskimage volumes --json`. Bad inputs give typed errors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use diskimage::diskset::{DiskSet, Volume};
use diskimage::volume::PartitionKind;
use diskimage::{BlockDevice, ErrorKind, OpenOptions};
use serde_json::Value;

use crate::common::{diskimage, gunzip_dir, repo, sha256_device, tsv_rows, Unpacked};

/// The topic's fixtures, unpacked (and checked unchanged when dropped).
struct Fixtures(Unpacked);

impl std::ops::Deref for Fixtures {
    type Target = Unpacked;
    fn deref(&self) -> &Unpacked {
        &self.0
    }
}

impl Fixtures {
    fn new() -> Self {
        Fixtures(Unpacked::new(&topic()))
    }
    fn open(&self, names: &[&str]) -> Result<DiskSet, diskimage::error::Error> {
        let paths: Vec<_> = names.iter().map(|n| self.path(n)).collect();
        DiskSet::open(&paths, &OpenOptions::default())
    }
    fn cli_json(&self, names: &[&str]) -> Value {
        let mut args = vec!["volumes".to_owned(), "--json".to_owned()];
        args.extend(
            names
                .iter()
                .map(|n| self.path(n).to_string_lossy().into_owned()),
        );
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = diskimage(&refs);
        assert!(
            out.status.success(),
            "volumes --json {names:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("volumes --json is JSON")
    }
}

fn topic() -> PathBuf {
    repo().join("fixtures/volumes")
}

fn truth_json(name: &str) -> Value {
    let p = topic().join(name);
    serde_json::from_str(&std::fs::read_to_string(&p).expect("truth file")).expect("truth JSON")
}

fn bytes(v: &Value) -> u64 {
    v.as_str()
        .and_then(|s| s.trim_end_matches('B').parse().ok())
        .or_else(|| v.as_u64())
        .unwrap_or_else(|| panic!("not a byte count: {v}"))
}

/// (number, offset, size, type, uuid, name, bootable, attributes bit 63) per sfdisk.
type Row = (
    u32,
    u64,
    u64,
    String,
    Option<String>,
    Option<String>,
    bool,
    bool,
);

fn sfdisk_rows(image: &str) -> (String, String, Vec<Row>) {
    let t = &truth_json(&format!("{image}.sfdisk.json"))["partitiontable"];
    let ss = t["sectorsize"].as_u64().expect("sectorsize");
    let label = t["label"].as_str().expect("label").to_owned();
    let rows = t["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .map(|p| {
            let node = p["node"].as_str().expect("node");
            let number = node
                .rsplit("img")
                .next()
                .expect("number")
                .parse()
                .expect("number");
            let ty = p["type"].as_str().expect("type");
            let ty = if label == "dos" {
                format!("0x{:02x}", u8::from_str_radix(ty, 16).expect("hex type"))
            } else {
                ty.to_owned()
            };
            (
                number,
                p["start"].as_u64().expect("start") * ss,
                p["size"].as_u64().expect("size") * ss,
                ty,
                p["uuid"].as_str().map(str::to_owned),
                p["name"].as_str().map(str::to_owned),
                p["bootable"].as_bool().unwrap_or(false),
                p["attrs"].as_str().is_some_and(|a| a.contains("GUID:63")),
            )
        })
        .collect();
    (label, t["id"].as_str().expect("id").to_owned(), rows)
}

fn our_rows(vols: &[Volume]) -> Vec<Row> {
    vols.iter()
        .filter(|v| v.number.is_some())
        .map(|v| {
            (
                v.number.unwrap_or(0),
                v.offset.unwrap_or(0),
                v.size,
                v.type_code.clone().unwrap_or_default(),
                v.guid.clone(),
                v.name.clone(),
                v.bootable,
                v.attributes.is_some_and(|a| a & (1 << 63) != 0),
            )
        })
        .collect()
}

#[test]
fn partition_tables_match_sfdisk_json() {
    let f = Fixtures::new();
    for image in ["mbr.img", "gpt.img", "gpt-noprimary.img"] {
        let (label, id, truth) = sfdisk_rows(image);
        let set = f.open(&[image]).unwrap_or_else(|e| panic!("{image}: {e}"));
        let table = &set.disks()[0].table;
        let scheme = table.scheme.map(|s| s.as_str());
        assert_eq!(
            scheme,
            Some(if label == "dos" { "mbr" } else { "gpt" }),
            "{image}"
        );
        assert_eq!(table.disk_id.as_deref(), Some(id.as_str()), "{image}");
        assert_eq!(our_rows(set.volumes()), truth, "{image}");

        // The CLI's JSON says the same.
        let j = f.cli_json(&[image]);
        let cli: Vec<_> = j["volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .map(|v| {
                (
                    v["number"].as_u64().expect("number") as u32,
                    v["offset"].as_u64().expect("offset"),
                    v["size"].as_u64().expect("size"),
                    v["type"].as_str().expect("type").to_owned(),
                )
            })
            .collect();
        let want: Vec<_> = truth.iter().map(|r| (r.0, r.1, r.2, r.3.clone())).collect();
        assert_eq!(cli, want, "{image} volumes --json");
        assert_eq!(j["disks"][0]["disk_id"].as_str(), Some(id.as_str()));
    }
}

#[test]
fn mbr_logicals_have_their_kind_and_extended_is_a_container() {
    let f = Fixtures::new();
    let set = f.open(&["mbr.img"]).expect("mbr.img");
    let kinds: Vec<_> = set
        .volumes()
        .iter()
        .map(|v| (v.number.unwrap_or(0), v.partition_kind.expect("kind")))
        .collect();
    use PartitionKind::*;
    assert_eq!(
        kinds,
        vec![
            (1, Primary),
            (2, Primary),
            (3, Primary),
            (4, Extended),
            (5, Logical),
            (6, Logical),
            (7, Logical)
        ]
    );
}

/// Allocated rows of `mmls` output: (start sector, length in sectors).
fn mmls_rows(image: &str) -> Vec<(u64, u64)> {
    let text = std::fs::read_to_string(topic().join(format!("{image}.mmls.txt"))).expect("mmls");
    text.lines()
        .filter_map(|l| {
            let cols: Vec<_> = l.split_whitespace().collect();
            let slot = cols.get(1)?;
            if *slot == "Meta" || slot.starts_with('-') || !slot.chars().next()?.is_ascii_digit() {
                return None;
            }
            Some((cols.get(2)?.parse().ok()?, cols.get(4)?.parse().ok()?))
        })
        .collect()
}

#[test]
fn partitions_match_mmls() {
    let f = Fixtures::new();
    // gpt-noprimary.img is left out: TSK does not fall back to the backup
    // GPT header and lists only the protective MBR entry there.
    for image in ["mbr.img", "gpt.img"] {
        let set = f.open(&[image]).expect("open");
        let ours: Vec<_> = set
            .volumes()
            .iter()
            .filter(|v| v.partition_kind != Some(PartitionKind::Extended))
            .map(|v| (v.offset.unwrap_or(0) / 512, v.size / 512))
            .collect();
        let truth = mmls_rows(image);
        assert!(!truth.is_empty(), "{image}: no mmls rows parsed");
        assert_eq!(ours, truth, "{image}");
    }
}

#[test]
fn zeroed_primary_gpt_uses_the_backup_and_warns() {
    let f = Fixtures::new();
    let set = f.open(&["gpt-noprimary.img"]).expect("open");
    assert!(
        set.warnings()
            .iter()
            .any(|w| w.kind.as_str() == "redundant-copy-used" && w.message.contains("backup")),
        "{:?}",
        set.warnings()
    );
    let j = f.cli_json(&["gpt-noprimary.img"]);
    assert_eq!(j["warnings"][0]["kind"], "redundant-copy-used");
    let strict = DiskSet::open(
        &[f.path("gpt-noprimary.img")],
        &OpenOptions::new().strict(true),
    );
    assert!(
        strict.is_err(),
        "strict mode must refuse the damaged primary"
    );
    assert!(f.open(&["gpt.img"]).expect("open").warnings().is_empty());
}

fn fs_kind_name(ty: &str, version: &str) -> String {
    match ty {
        "vfat" => version.to_ascii_lowercase(),
        other => other.to_owned(),
    }
}

#[test]
fn file_systems_in_partitions_match_blkid() {
    let f = Fixtures::new();
    let rows = tsv_rows(&topic().join("fs.tsv"));
    assert!(rows.len() >= 4);
    for row in rows {
        let [image, number, ty, version, label, uuid] = row.as_slice() else {
            panic!("fs.tsv row {row:?}")
        };
        let set = f.open(&[image]).expect("open");
        let number: u32 = number.parse().expect("number");
        let v = set
            .volumes()
            .iter()
            .find(|v| v.number == Some(number))
            .unwrap_or_else(|| panic!("{image} has no partition {number}"));
        let fs =
            v.fs.as_ref()
                .unwrap_or_else(|| panic!("{image} {number}: no fs"));
        assert_eq!(
            fs.kind.as_str(),
            fs_kind_name(ty, version),
            "{image} {number}"
        );
        assert_eq!(
            fs.label.as_deref(),
            Some(label.as_str()),
            "{image} {number}"
        );
        assert_eq!(fs.uuid.as_deref(), Some(uuid.as_str()), "{image} {number}");
        assert!(v.mountable, "{image} {number}");
    }
}

fn lv_truth() -> BTreeMap<String, (String, u64, String)> {
    let lvs = truth_json("lvm.lvs.json");
    lvs["report"][0]["lv"]
        .as_array()
        .expect("lv")
        .iter()
        .map(|l| {
            (
                format!(
                    "{}/{}",
                    l["vg_name"].as_str().expect("vg"),
                    l["lv_name"].as_str().expect("lv")
                ),
                (
                    l["lv_uuid"].as_str().expect("uuid").to_owned(),
                    bytes(&l["lv_size"]),
                    l["segtype"].as_str().expect("segtype").to_owned(),
                ),
            )
        })
        .collect()
}

#[test]
fn two_disk_lvm_set_lists_both_lvs_and_reads_them_byte_identical() {
    let f = Fixtures::new();
    let set = f.open(&["lvm-a.img", "lvm-b.img"]).expect("open LVM set");
    let vgs = truth_json("lvm.vgs.json");
    let vg_truth = &vgs["report"][0]["vg"][0];
    let [vg] = set.volume_groups() else {
        panic!("expected one VG, got {:?}", set.volume_groups())
    };
    assert_eq!(vg.name, vg_truth["vg_name"].as_str().expect("vg_name"));
    assert_eq!(vg.uuid, vg_truth["vg_uuid"].as_str().expect("vg_uuid"));
    assert_eq!(vg.extent_size, bytes(&vg_truth["vg_extent_size"]));
    assert_eq!(
        vg.seqno.to_string(),
        vg_truth["vg_seqno"].as_str().expect("seqno")
    );
    assert!(vg.complete());
    let pvs = truth_json("lvm.pvs.json");
    let mut pv_uuids: Vec<_> = pvs["report"][0]["pv"]
        .as_array()
        .expect("pv")
        .iter()
        .map(|p| p["pv_uuid"].as_str().expect("pv_uuid").to_owned())
        .collect();
    let mut ours: Vec<_> = vg.pvs.iter().map(|p| p.uuid.clone()).collect();
    pv_uuids.sort();
    ours.sort();
    assert_eq!(ours, pv_uuids);

    let truth = lv_truth();
    let lvs: BTreeMap<_, _> = set
        .volumes()
        .iter()
        .filter_map(|v| {
            v.lv.as_ref()
                .map(|lv| (format!("{}/{}", lv.vg, lv.name), (v, lv)))
        })
        .collect();
    assert_eq!(
        lvs.keys().collect::<Vec<_>>(),
        truth.keys().collect::<Vec<_>>()
    );
    for (name, (uuid, size, segtype)) in &truth {
        let (v, lv) = lvs[name];
        assert_eq!(&lv.uuid, uuid, "{name}");
        assert_eq!(v.size, *size, "{name}");
        assert_eq!(&lv.lv_type, segtype, "{name}");
    }
    // The linear LV spans both disks.
    let (_, linear) = lvs["vgfix/linear"];
    let disks: Vec<_> = linear
        .segments
        .iter()
        .flat_map(|s| s.stripes.iter().map(|st| st.disk))
        .collect();
    assert_eq!(disks, vec![Some(0), Some(1)]);
    let (lin_vol, _) = lvs["vgfix/linear"];
    assert_eq!(lin_vol.fs.as_ref().map(|f| f.kind.as_str()), Some("ext4"));
    assert_eq!(
        lin_vol.fs.as_ref().and_then(|f| f.label.as_deref()),
        Some("FIX_LVROOT")
    );

    for row in tsv_rows(&topic().join("lvm.content.tsv")) {
        let [name, size, sha] = row.as_slice() else {
            panic!("{row:?}")
        };
        if !name.starts_with("vgfix/") {
            continue;
        }
        let (v, _) = lvs[name.as_str()];
        let dev = v.device();
        assert_eq!(dev.size().to_string(), *size, "{name}");
        assert_eq!(
            &sha256_device(dev.as_ref(), dev.size()).expect("read LV"),
            sha,
            "{name}"
        );
    }

    let j = f.cli_json(&["lvm-a.img", "lvm-b.img"]);
    assert_eq!(j["volume_groups"][0]["complete"], true);
    let names: Vec<_> = j["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .filter(|v| v["scheme"] == "lvm2")
        .map(|v| v["name"].as_str().expect("name").to_owned())
        .collect();
    assert_eq!(names.len(), truth.len());
    for n in names {
        assert!(truth.contains_key(&n), "{n}");
    }
}

#[test]
fn one_disk_of_the_lvm_set_lists_the_vg_as_incomplete() {
    let f = Fixtures::new();
    let set = f.open(&["lvm-a.img"]).expect("open one PV");
    let pvs = truth_json("lvm.pvs.json");
    let missing = pvs["report"][0]["pv"]
        .as_array()
        .expect("pv")
        .iter()
        .find(|p| p["pv_name"] == "lvm-b.img")
        .and_then(|p| p["pv_uuid"].as_str())
        .expect("lvm-b.img PV")
        .to_owned();
    let [vg] = set.volume_groups() else {
        panic!("one VG")
    };
    assert!(!vg.complete());
    assert_eq!(vg.missing, vec![missing.clone()]);
    // Both LVs touch the missing PV: listed, not readable.
    let lvs: Vec<_> = set.volumes().iter().filter(|v| v.lv.is_some()).collect();
    assert_eq!(lvs.len(), lv_truth().len());
    for v in lvs {
        let mut b = [0u8; 512];
        let e = v.device().read_at(&mut b, 0).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::MissingFile, "{e}");
        assert!(v.problem.as_deref().is_some_and(|p| p.contains(&missing)));
    }
    let j = f.cli_json(&["lvm-a.img"]);
    assert_eq!(j["volume_groups"][0]["complete"], false);
    assert_eq!(j["volume_groups"][0]["missing_pvs"][0], missing.as_str());
}

#[test]
fn bad_inputs_give_typed_errors() {
    let f = Fixtures::new();
    let rows = tsv_rows(&topic().join("bad.tsv"));
    assert!(rows.len() >= 3);
    for row in rows {
        let [images, kind, text] = row.as_slice() else {
            panic!("{row:?}")
        };
        let names: Vec<&str> = images.split(',').collect();
        let e = f.open(&names).expect_err(images);
        assert_eq!(e.kind().as_str(), kind, "{images}: {e}");
        assert!(e.to_string().contains(text.as_str()), "{images}: {e}");
        let mut args = vec!["volumes".to_owned()];
        args.extend(
            names
                .iter()
                .map(|n| f.path(n).to_string_lossy().into_owned()),
        );
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = diskimage(&refs);
        assert!(!out.status.success(), "{images}: the CLI must fail");
        assert!(String::from_utf8_lossy(&out.stderr).contains(text.as_str()));
    }
}

#[test]
fn whole_disk_file_systems_are_one_volume() {
    let dir = tempfile::tempdir().expect("tempdir");
    gunzip_dir(&repo().join("fixtures/foundation"), dir.path());
    // Every one of these is read (diskimage_fs::reads), ISO 9660 included.
    for (image, kind, mountable) in [
        ("ext4.img", "ext4", true),
        ("fat16.img", "fat16", true),
        ("cd.iso", "iso9660", true),
    ] {
        let p: &Path = &dir.path().join(image);
        let set = DiskSet::open(&[p], &OpenOptions::default()).expect(image);
        let [v] = set.volumes() else {
            panic!("{image}: {:?}", set.volumes())
        };
        assert_eq!(v.scheme.as_str(), "whole-disk");
        assert_eq!(v.fs.as_ref().map(|f| f.kind.as_str()), Some(kind));
        assert_eq!(v.mountable, mountable, "{image}");
    }
}

#[test]
fn fuzz_seeds_replay_through_the_volume_layer() {
    let dir = repo().join("fuzz/corpus/volumes");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).expect("fuzz/corpus/volumes") {
        let p = e.expect("entry").path();
        diskimage::fuzzing::exercise_volumes(&std::fs::read(&p).expect("seed"));
        n += 1;
    }
    assert!(n >= 5, "{n} seeds");
}

/// The hand-made LVM2 seed: a linear LV of two segments (extents 4-5,
/// then extent 1, of 4 KiB each, data area at 32 KiB) and a thin LV.
#[test]
fn multi_segment_linear_lv_reads_and_thin_lv_is_unsupported() {
    let p = repo().join("fuzz/corpus/volumes/lvm-linear-thin");
    let set = DiskSet::open(&[p], &OpenOptions::default()).expect("open seed");
    let lin = set
        .volumes()
        .iter()
        .find(|v| v.name.as_deref() == Some("vgf/lin"))
        .expect("lin");
    assert_eq!(lin.size, 3 * 4096);
    let dev = lin.device();
    let mut b = [0u8; 15];
    for (i, extent) in [4, 5, 1].iter().enumerate() {
        dev.read_at(&mut b, i as u64 * 4096).expect("read");
        assert_eq!(&b[..], format!("extent {extent:08}").as_bytes());
    }
    let thin = set
        .volumes()
        .iter()
        .find(|v| v.name.as_deref() == Some("vgf/thin1"))
        .expect("thin1");
    assert_eq!(thin.type_code.as_deref(), Some("thin"));
    let e = thin.device().read_at(&mut b, 0).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    assert!(e.to_string().contains("not supported"), "{e}");
}

/// gpt4k.img was partitioned by sfdisk on a loop device with 4096-byte
/// logical sectors; served here as a 4Kn disk it must match sfdisk and mmls.
#[test]
fn gpt_with_4096_byte_sectors_matches_sfdisk_and_mmls() {
    use diskimage::formats::{DiskImage, Format, ImageInfo, MemoryDevice};
    let f = Fixtures::new();
    let path = f.path("gpt4k.img");
    let dev = MemoryDevice::new(std::fs::read(&path).expect("gpt4k.img")).with_sector_size(4096);
    let info = ImageInfo::new(&path, Format::Raw, dev.size(), 4096);
    let image = DiskImage::new(std::sync::Arc::new(dev), info);
    let set = DiskSet::from_images(vec![image], &OpenOptions::default()).expect("4Kn GPT");
    let (_, id, truth) = sfdisk_rows("gpt4k.img");
    assert_eq!(set.disks()[0].table.disk_id.as_deref(), Some(id.as_str()));
    assert_eq!(our_rows(set.volumes()), truth);
    let ours: Vec<_> = set
        .volumes()
        .iter()
        .map(|v| (v.offset.unwrap_or(0) / 4096, v.size / 4096))
        .collect();
    assert_eq!(ours, mmls_rows("gpt4k.img"));
    // Read with 512-byte sectors, the same bytes hold no valid GPT at LBA 1.
    assert!(f
        .open(&["gpt4k.img"])
        .map_or(true, |s| s.volumes().is_empty()));
}

/// The corpus's dissect/vhd/fixed.vhd (made by Windows 10) read as raw
/// bytes (a fixed VHD is the disk followed by a 512-byte footer): its MBR
/// must match what TSK's `mmls` printed for it
/// (`fixtures/volumes/corpus-dissect-fixed.vhd.mmls.txt`), and the
/// partition holds NTFS as SOURCES.md says. Skipped without the corpus.
#[test]
fn corpus_fixed_vhd_partition_matches_mmls() {
    let Some(corpus) = crate::corpus::corpus_dir() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let raw = tmp.path().join("fixed.vhd");
    crate::common::gunzip(&corpus.join("dissect/vhd/fixed.vhd.gz"), &raw);
    let options = OpenOptions::new().format(Some(diskimage::Format::Raw));
    let set = DiskSet::open(&[&raw], &options).expect("fixed.vhd as raw");
    let ours: Vec<_> = set
        .volumes()
        .iter()
        .map(|v| (v.offset.unwrap_or(0) / 512, v.size / 512))
        .collect();
    assert_eq!(ours, mmls_rows("corpus-dissect-fixed.vhd"));
    assert_eq!(
        set.volumes()[0].fs.as_ref().map(|f| f.kind.as_str()),
        Some("ntfs")
    );
}

/// lvm-part.img: a PV inside MBR partition 1 (type 8e), made by pvcreate on
/// a loop device at the partition's offset; one linear LV.
#[test]
fn pv_inside_an_mbr_partition() {
    let f = Fixtures::new();
    let set = f.open(&["lvm-part.img"]).expect("lvm-part.img");
    let (_, _, truth) = sfdisk_rows("lvm-part.img");
    assert_eq!(our_rows(set.volumes()), truth);
    let part = &set.volumes()[0];
    assert_eq!(part.fs.as_ref().map(|f| f.kind.as_str()), Some("lvm2-pv"));
    assert!(!part.mountable);
    let pvs = truth_json("lvm-part.pvs.json");
    let pv = &pvs["report"][0]["pv"][0];
    let [vg] = set.volume_groups() else {
        panic!("one VG")
    };
    assert!(vg.complete());
    assert_eq!(vg.pvs[0].uuid, pv["pv_uuid"].as_str().expect("pv_uuid"));
    assert_eq!(vg.pvs[0].offset, Some(truth[0].1));
    let lvs = truth_json("lvm-part.lvs.json");
    let lv_truth = &lvs["report"][0]["lv"][0];
    let v = set
        .volumes()
        .iter()
        .find(|v| v.lv.is_some())
        .expect("an LV");
    let lv = v.lv.as_ref().expect("lv");
    assert_eq!(lv.uuid, lv_truth["lv_uuid"].as_str().expect("lv_uuid"));
    assert_eq!(v.size, bytes(&lv_truth["lv_size"]));
    // Where the LV's first extent is on the disk: partition + pe_start.
    let seg = &lv.segments[0].stripes[0];
    assert_eq!(seg.disk_offset, Some(truth[0].1 + bytes(&pv["pe_start"])));
    let row = tsv_rows(&topic().join("lvm.content.tsv"))
        .into_iter()
        .find(|r| r[0] == "vgpart/inpart")
        .expect("content row");
    let dev = v.device();
    assert_eq!(
        sha256_device(dev.as_ref(), dev.size()).expect("read"),
        row[2]
    );
}

/// `-V N` of the file-system commands is the number `volumes` prints; with
/// no `-V`, the one readable volume is used, and several are listed.
/// Truth: sfdisk put FAT12, FAT16 and ext4 (labels by mkfs, see fs.tsv) in
/// gpt.img's partitions 1-3; mke2fs always makes `lost+found`.
#[test]
fn file_system_commands_select_volumes_as_volumes_numbers_them() {
    let f = Fixtures::new();
    let gpt = f.path("gpt.img").to_string_lossy().into_owned();
    let out = diskimage(&["ls", &gpt]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("volumes 1, 2, 3 hold file systems"),
        "{err}"
    );
    let out = diskimage(&["ls", "-V", "3", &gpt]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.ends_with("lost+found")));
    let out = diskimage(&["ls", "-V", "9", &gpt]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("-V 9: the disk set has 3 volumes"));
    // The two-disk LVM set: only the linear LV holds a file system (ext4 FIX_LVROOT).
    let (a, b) = (f.path("lvm-a.img"), f.path("lvm-b.img"));
    let out = diskimage(&["ls", &a.to_string_lossy(), &b.to_string_lossy()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.ends_with("lost+found")));
}
