//! Other partition schemes and container edge cases on `fixtures/schemes/`
//! (made by parted, fdisk, sfdisk, mkudffs, qemu-img and ewfacquire):
//! BSD disklabels and the Apple Partition Map against TSK's `mmls` and
//! parted's own listing, the file systems inside against `blkid`; Sun, SGI
//! and Atari labels named (as `blkid` names them) but not read; UDF with
//! 4,096-byte blocks opened raw and found as UDF (as `blkid` finds it); a
//! fixed VHD cut 64 KiB short against the bytes of its source; formats
//! recognised but not read named as `file` names them.

use std::collections::BTreeMap;
use std::path::PathBuf;

use diskimage::diskset::{DiskSet, Volume};
use diskimage::error::Scheme;
use diskimage::formats::WarningKind;
use diskimage::{open, BlockDevice, ErrorKind, OpenOptions};
use sha2::{Digest, Sha256};

use crate::common::{diskimage, hex, repo, sha256_file, tsv_rows, Unpacked};

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
    fn set(&self, name: &str) -> DiskSet {
        DiskSet::open(&[self.path(name)], &OpenOptions::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"))
    }
}

fn topic() -> PathBuf {
    repo().join("fixtures/schemes")
}

fn truth(name: &str) -> String {
    std::fs::read_to_string(topic().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// One allocated `mmls` row: (start sector, length, description).
type MmlsRow = (u64, u64, String);

/// The rows of an `mmls` listing that are table entries (not `Meta`, not
/// unallocated gaps).
fn mmls_rows(name: &str) -> Vec<MmlsRow> {
    truth(name)
        .lines()
        .filter_map(|l| {
            let cols: Vec<_> = l.split_whitespace().collect();
            let slot = cols.get(1)?;
            if *slot == "Meta" || !slot.chars().next()?.is_ascii_digit() {
                return None;
            }
            let desc = cols.get(5..)?.join(" ");
            Some((cols.get(2)?.parse().ok()?, cols.get(4)?.parse().ok()?, desc))
        })
        .collect()
}

/// (start sector, length, type code, type name) of the volumes of `scheme`.
fn ours(set: &DiskSet, scheme: Scheme) -> Vec<(u64, u64, String, String)> {
    set.volumes()
        .iter()
        .filter(|v| v.scheme == scheme)
        .map(|v| {
            (
                v.offset.expect("a partition has an offset") / 512,
                v.size / 512,
                v.type_code.clone().unwrap_or_default(),
                v.type_name.clone().unwrap_or_default(),
            )
        })
        .collect()
}

/// Sorted by start, then length (mmls sorts; tables keep slot order).
fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

#[test]
fn bsd_disklabels_match_mmls() {
    let f = Fixtures::new();
    for (image, listing) in [
        ("bsd-mbr.img", "bsd-mbr.img.bsd.mmls.txt"),
        ("bsd-disk.img", "bsd-disk.img.mmls.txt"),
    ] {
        let set = f.set(image);
        let truth = mmls_rows(listing);
        assert_eq!(truth.len(), 4, "{listing}: {truth:?}");
        // mmls prints "4.2BSD (0x07)": our type name and code.
        let expect: Vec<_> = truth
            .iter()
            .map(|(s, n, d)| {
                let (name, code) = d.rsplit_once(" (").expect("description (0x..)");
                (
                    *s,
                    *n,
                    code.trim_end_matches(')').to_owned(),
                    name.to_lowercase(),
                )
            })
            .collect();
        let got: Vec<_> = ours(&set, Scheme::Bsd)
            .into_iter()
            .map(|(s, n, c, t)| (s, n, c, t.to_lowercase()))
            .collect();
        assert_eq!(sorted(got), sorted(expect), "{image}");
        assert!(set.warnings().is_empty(), "{image}: {:?}", set.warnings());
    }
    // The MBR of bsd-mbr.img: the Linux partition and the FreeBSD slice,
    // each as the DOS mmls listing has it, the slice's label after it.
    let set = f.set("bsd-mbr.img");
    let mbr: Vec<_> = ours(&set, Scheme::Mbr)
        .into_iter()
        .map(|(s, n, _, _)| (s, n))
        .collect();
    let truth: Vec<_> = mmls_rows("bsd-mbr.img.mmls.txt")
        .into_iter()
        .map(|(s, n, _)| (s, n))
        .collect();
    assert_eq!(mbr, truth);
    let names: Vec<_> = set
        .volumes()
        .iter()
        .map(|v| (v.scheme.as_str(), v.name.clone().unwrap_or_default()))
        .collect();
    assert_eq!(
        names.get(1..4),
        Some(
            &[
                ("mbr", String::new()),
                ("bsd", "s2a".to_owned()),
                ("bsd", "s2b".to_owned()),
            ][..]
        )
    );
}

#[test]
fn parted_bsd_label_at_byte_64_matches_parted() {
    let f = Fixtures::new();
    let set = f.set("bsd-parted.img");
    // parted -m: "N:STARTs:ENDs:SIZEs:...".
    let truth: Vec<(u64, u64)> = truth("bsd-parted.img.parted.txt")
        .lines()
        .filter(|l| l.starts_with(|c: char| c.is_ascii_digit()))
        .map(|l| {
            let c: Vec<_> = l.split(':').collect();
            let n = |i: usize| c[i].trim_end_matches('s').parse::<u64>().expect("sectors");
            (n(1), n(3))
        })
        .collect();
    let got: Vec<_> = ours(&set, Scheme::Bsd)
        .into_iter()
        .map(|(s, n, _, _)| (s, n))
        .collect();
    assert_eq!(got, truth);
    // parted's d_checksum does not verify: a warning, and strict refuses.
    assert!(
        set.warnings()
            .iter()
            .any(|w| w.message.contains("d_checksum")),
        "{:?}",
        set.warnings()
    );
    let strict = OpenOptions::new().strict(true);
    assert!(DiskSet::open(&[f.path("bsd-parted.img")], &strict).is_err());
}

#[test]
fn apple_partition_map_matches_mmls_and_parted() {
    let f = Fixtures::new();
    let set = f.set("apm.img");
    assert_eq!(set.disks()[0].table.scheme, Some(Scheme::Apm));
    // Every map entry mmls lists, free space aside, with its pmParType.
    let listed: Vec<_> = mmls_rows("apm.img.mmls.txt")
        .into_iter()
        .filter(|(_, _, d)| d != "Apple_Free")
        .collect();
    assert_eq!(listed.len(), 3, "{listed:?}");
    let got: Vec<_> = ours(&set, Scheme::Apm)
        .into_iter()
        .map(|(s, n, c, _)| (s, n, c))
        .collect();
    assert_eq!(sorted(got), sorted(listed));
    // Names as parted prints them.
    let names: Vec<String> = truth("apm.img.parted.txt")
        .lines()
        .filter(|l| l.starts_with(|c: char| c.is_ascii_digit()))
        .map(|l| l.split(':').nth(5).unwrap_or_default().to_owned())
        .collect();
    let ours: Vec<String> = set
        .volumes()
        .iter()
        .map(|v| v.name.clone().unwrap_or_default())
        .collect();
    assert_eq!(ours, names);
}

fn by_offset(set: &DiskSet, sector: u64) -> &Volume {
    set.volumes()
        .iter()
        .find(|v| v.offset == Some(sector * 512))
        .unwrap_or_else(|| panic!("no volume at sector {sector}"))
}

#[test]
fn file_systems_inside_match_blkid() {
    let f = Fixtures::new();
    let rows = tsv_rows(&topic().join("fs.tsv"));
    assert_eq!(rows.len(), 4);
    for row in rows {
        let [image, start, kind, label, uuid, ..] = row.as_slice() else {
            panic!("fs.tsv row {row:?}")
        };
        let set = f.set(image);
        let v = by_offset(&set, start.parse().expect("start"));
        let fs =
            v.fs.as_ref()
                .unwrap_or_else(|| panic!("{image}@{start}: no fs"));
        let ours = fs.kind.as_str();
        let same = match kind.as_str() {
            "vfat" => ours.starts_with("fat"),
            k => ours == k,
        };
        assert!(same, "{image}@{start}: {ours} vs blkid {kind}");
        assert_eq!(fs.label.as_deref(), Some(label.as_str()), "{image}@{start}");
        assert_eq!(
            fs.uuid.as_deref().map(str::to_lowercase),
            Some(uuid.to_lowercase()),
            "{image}@{start}"
        );
        assert!(v.mountable, "{image}@{start}");
    }
}

/// `blkid -p -o export` of a whole image as key → value.
fn blkid(name: &str) -> BTreeMap<String, String> {
    truth(name)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[test]
fn sun_sgi_and_atari_labels_are_named_not_read() {
    let f = Fixtures::new();
    for image in ["sun.img", "sgi.img", "atari.img"] {
        let pttype = blkid(&format!("{image}.blkid.txt"))
            .remove("PTTYPE")
            .expect("blkid names the table");
        let set = f.set(image);
        let scheme = set.disks()[0].table.scheme.expect("a scheme");
        assert_eq!(scheme.as_str(), pttype, "{image}");
        assert!(set.volumes().is_empty(), "{image}");
        let w = &set.warnings()[0];
        assert_eq!(w.kind, WarningKind::Unsupported, "{image}");
        assert!(
            w.message.contains("not read by this version"),
            "{}",
            w.message
        );
        // Strict mode does not refuse a note.
        let strict = OpenOptions::new().strict(true);
        DiskSet::open(&[f.path(image)], &strict).expect("strict opens");
        let out = diskimage(&["volumes", &f.arg(image)]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success());
        assert!(text.contains(&format!("bytes, {pttype})")), "{text}");
        assert!(!text.contains("no partition table"), "{text}");
        assert!(text.contains("warning: [unsupported]"), "{text}");
    }
}

#[test]
fn udf_with_4k_blocks_opens_raw_and_is_found_as_udf() {
    let f = Fixtures::new();
    let b = blkid("udf4k.img.blkid.txt");
    assert_eq!(
        (b["TYPE"].as_str(), b["BLOCK_SIZE"].as_str()),
        ("udf", "4096")
    );
    let img = open(&f.path("udf4k.img"), &OpenOptions::default()).expect("opens");
    assert_eq!(img.format().as_str(), "raw");
    let set = f.set("udf4k.img");
    let v = &set.volumes()[0];
    assert_eq!(v.scheme, Scheme::WholeDisk);
    assert_eq!(v.fs.as_ref().map(|f| f.kind.as_str()), Some("udf"));
    // hash works on it (it was refused at the container layer).
    let out = diskimage(&["hash", &f.arg("udf4k.img")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sha = String::from_utf8_lossy(&out.stdout);
    assert!(sha.starts_with(&sha256_file(&f.path("udf4k.img"))), "{sha}");
    // Forced as ISO, the message says what is there and never contradicts itself.
    let e = diskimage::open(
        &f.path("udf4k.img"),
        &OpenOptions::new().format(Some(diskimage::formats::Format::Iso)),
    )
    .unwrap_err();
    let m = e.to_string();
    assert!(m.contains("4096-byte steps"), "{m}");
    assert!(!m.contains("expected a CD001, BEA01"), "{m}");
}

#[test]
fn fixed_vhd_cut_short_opens_with_a_warning() {
    let f = Fixtures::new();
    let rows = tsv_rows(&topic().join("short-fixed.tsv"));
    let [name, size, left, sha, short, ..] = rows[0].as_slice() else {
        panic!("short-fixed.tsv")
    };
    let (size, left): (u64, u64) = (size.parse().unwrap(), left.parse().unwrap());
    let path = f.path(name);
    let img = open(&path, &OpenOptions::default()).expect("opens with a warning");
    assert_eq!(img.size(), size);
    let w: Vec<_> = img.info().all_warnings().collect();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].message.contains(&format!("{short} bytes short")),
        "{}",
        w[0]
    );
    assert_eq!(w[0].offset, Some(left));
    // The bytes still there are the source's.
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut pos = 0;
    while pos < left {
        let n = (left - pos).min(buf.len() as u64) as usize;
        img.read_at(&mut buf[..n], pos)
            .expect("data before the cut");
        h.update(&buf[..n]);
        pos += n as u64;
    }
    assert_eq!(&hex(&h.finalize()), sha);
    // A read reaching past the data is an out-of-bounds error naming the file and offset.
    let e = img.read_at(&mut buf[..1024], left - 512).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::OutOfBounds);
    assert_eq!(e.offset(), Some(left - 512));
    assert_eq!(e.path(), Some(path.as_path()));
    // info shows the warning; --strict refuses.
    let out = diskimage(&["info", &f.arg(name)]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("bytes short"));
    let out = diskimage(&["info", "--strict", &f.arg(name)]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn formats_not_read_are_named_as_file_names_them() {
    let f = Fixtures::new();
    let file: BTreeMap<String, String> = tsv_rows(&topic().join("foreign.file.txt"))
        .into_iter()
        .filter_map(|r| Some((r.first()?.clone(), r.get(1)?.clone())))
        .collect();
    assert!(file["evidence.E01"].contains("EWF"));
    assert!(file["qcow1.qcow"].contains("QCOW Image (v1)"));
    for (image, needle) in [
        ("qcow1.qcow", "QCOW version 1"),
        ("udif.dmg", "Apple UDIF"),
        ("nero.nrg", "Nero"),
        ("image.aff4", "AFF4"),
    ] {
        let out = diskimage(&["info", &f.arg(image)]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{image}");
        assert!(err.contains(needle), "{image}: {err}");
        assert!(err.contains("not read by this version"), "{image}: {err}");
        assert!(
            !err.contains("no known disk image signature"),
            "{image}: {err}"
        );
    }
}

#[test]
fn mode1_bin_reads_as_the_iso_it_wraps() {
    let f = Fixtures::new();
    let img = open(&f.path("cd-mode1.bin"), &OpenOptions::default()).expect("opens");
    assert_eq!(img.format().as_str(), "iso");
    assert_eq!(img.sector_size(), 2048);
    assert_eq!(
        img.info().subformat.as_deref(),
        Some("ISO 9660 in raw MODE1/2352 sectors")
    );
    // Whatever its name: by content.
    let renamed = f.dir().join("track01");
    std::fs::copy(f.path("cd-mode1.bin"), &renamed).expect("copy");
    let img = open(&renamed, &OpenOptions::default()).expect("opens by content");
    std::fs::remove_file(&renamed).expect("remove");
    assert_eq!(img.format().as_str(), "iso");
    // The files xorriso put in the ISO, with their bytes.
    let set = f.set("cd-mode1.bin");
    let v = &set.volumes()[0];
    assert_eq!(v.fs.as_ref().map(|f| f.kind.as_str()), Some("iso9660"));
    let fs = set.mount(v).expect("mount");
    for line in truth("cd-mode1.bin.files.txt").lines() {
        let path = line.trim_matches('\'');
        let mut data = Vec::new();
        std::io::Read::read_to_end(
            &mut fs.open(path).unwrap_or_else(|e| panic!("{path}: {e}")),
            &mut data,
        )
        .expect("read");
        assert_eq!(data, b"raw sectors\n", "{path}");
    }
}

#[test]
fn volumes_json_names_the_new_schemes() {
    let f = Fixtures::new();
    let out = diskimage(&[
        "volumes",
        "--json",
        &f.arg("bsd-mbr.img"),
        &f.arg("apm.img"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let schemes: Vec<_> = j["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .map(|v| {
            (
                v["scheme"].as_str().unwrap_or(""),
                v["partition_kind"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert!(schemes.contains(&("bsd", "bsd")), "{schemes:?}");
    assert!(schemes.contains(&("apm", "apm")), "{schemes:?}");
    assert_eq!(j["disks"][1]["scheme"], "apm");
}

#[test]
fn fuzz_seeds_reach_the_new_parsers() {
    use diskimage::formats::{DiskImage, ImageInfo, MemoryDevice};
    let dir = repo().join("fuzz/corpus/volumes");
    for (seed, scheme, volumes) in [
        ("bsd-slice", Scheme::Mbr, 6),
        ("bsd-disk", Scheme::Bsd, 4),
        ("bsd-parted-offset64", Scheme::Bsd, 0),
        ("apm", Scheme::Apm, 3),
        ("sun-label", Scheme::Sun, 0),
        ("sgi-label", Scheme::Sgi, 0),
        ("atari-root", Scheme::Atari, 0),
    ] {
        let bytes = std::fs::read(dir.join(seed)).expect("seed");
        let dev = MemoryDevice::new(bytes);
        let info = ImageInfo::new(
            std::path::Path::new(seed),
            diskimage::Format::Raw,
            dev.size(),
            512,
        );
        let image = DiskImage::new(std::sync::Arc::new(dev), info);
        let set = DiskSet::from_images(vec![image], &OpenOptions::default())
            .unwrap_or_else(|e| panic!("{seed}: {e}"));
        assert_eq!(set.disks()[0].table.scheme, Some(scheme), "{seed}");
        assert_eq!(set.volumes().len(), volumes, "{seed}: {:?}", set.volumes());
    }
    // Raw disks holding these schemes are recognised by content, whatever their name.
    for seed in [
        "apm",
        "bsd-disk",
        "bsd-parted-offset64",
        "sun-label",
        "sgi-label",
    ] {
        let img = open(&dir.join(seed), &OpenOptions::default())
            .unwrap_or_else(|e| panic!("{seed}: {e}"));
        assert_eq!(img.format().as_str(), "raw", "{seed}");
    }
}
