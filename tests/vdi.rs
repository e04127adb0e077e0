//! VDI images made by qemu-img/qemu-io (`fixtures/vdi/make.sh`): maps
//! against `qemu-img map --output=json`, UUIDs against Python's reading
//! of the header, a differencing pair and a VirtualBox machine over it,
//! every command of the CLI on a VDI holding a GPT disk with FAT files
//! (against `fls` and `mtype`), and hostile changes. Whole-disk reads,
//! `errors.tsv` and `warnings.tsv` are checked by the `fixtures` module.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use diskimage::formats::{open_in_memory, MemoryFiles};
use diskimage::vm::{Vm, VmOptions};
use diskimage::{open, BlockDevice, ErrorKind, ExtentKind, OpenOptions};

use crate::common::{diskimage, gunzip_bytes, sha256_bytes, sha256_device, tsv_rows, Unpacked};

fn topic() -> PathBuf {
    crate::common::repo().join("fixtures/vdi")
}

/// qemu-img map's data ranges (start, length), merged.
fn qemu_data_ranges(json: &Path) -> Vec<(u64, u64)> {
    let text = std::fs::read_to_string(json).expect("map json");
    let v: serde_json::Value = serde_json::from_str(&text).expect("json");
    let mut out: Vec<(u64, u64)> = Vec::new();
    for e in v.as_array().expect("array") {
        if e["data"] != true {
            continue;
        }
        let (s, l) = (e["start"].as_u64().unwrap(), e["length"].as_u64().unwrap());
        match out.last_mut() {
            Some(last) if last.0 + last.1 == s => last.1 += l,
            _ => out.push((s, l)),
        }
    }
    out
}

fn our_ranges(img: &dyn BlockDevice, kind: impl Fn(ExtentKind) -> bool) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for e in img.map(0, img.size()).expect("map") {
        if !kind(e.kind) {
            continue;
        }
        match out.last_mut() {
            Some(last) if last.0 + last.1 == e.offset => last.1 += e.len,
            _ => out.push((e.offset, e.len)),
        }
    }
    out
}

#[test]
fn maps_match_qemu_img_map() {
    let u = Unpacked::new(&topic());
    for name in ["dynamic.vdi", "fixed.vdi", "disk.vdi"] {
        let img = open(&u.path(name), &OpenOptions::default()).expect(name);
        let theirs = qemu_data_ranges(&topic().join(format!("{name}.map.json")));
        let ours = our_ranges(&img, |k| k == ExtentKind::Data);
        assert_eq!(ours, theirs, "{name}: data ranges differ from qemu-img map");
        // Everything else is a hole (qemu maps unallocated VDI blocks as zero).
        let holes = our_ranges(&img, |k| k != ExtentKind::Data);
        let total: u64 = ours.iter().chain(&holes).map(|r| r.1).sum();
        assert_eq!(total, img.size(), "{name}");
    }
    // The re-blocked copy: its data blocks lie inside dynamic.vdi's data.
    let img = open(&u.path("blocks-256k.vdi"), &OpenOptions::default()).expect("open");
    let theirs = qemu_data_ranges(&topic().join("dynamic.vdi.map.json"));
    for (s, l) in our_ranges(&img, |k| k == ExtentKind::Data) {
        assert!(
            theirs.iter().any(|&(ts, tl)| ts <= s && s + l <= ts + tl),
            "blocks-256k.vdi data {s:#x}+{l:#x} outside qemu's data"
        );
    }
    assert!(!our_ranges(&img, |k| k == ExtentKind::Zero).is_empty());
    assert_eq!(img.info().properties_get("block_size"), Some("262144"));
    assert_eq!(img.info().properties_get("block_extra"), Some("512"));
}

/// Lookup of an info property.
trait Props {
    fn properties_get(&self, key: &str) -> Option<&str>;
}

impl Props for diskimage::ImageInfo {
    fn properties_get(&self, key: &str) -> Option<&str> {
        self.properties
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

#[test]
fn uuids_types_and_chain_as_the_header_holds_them() {
    let u = Unpacked::new(&topic());
    for row in tsv_rows(&topic().join("uuids.tsv")) {
        let [name, uuid, modify, parent, parent_modify, ..] = row.as_slice() else {
            panic!("row {row:?}")
        };
        let img = open(&u.path(name), &OpenOptions::default()).expect(name);
        let info = img.info();
        assert_eq!(info.properties_get("uuid"), Some(uuid.as_str()), "{name}");
        assert_eq!(
            info.properties_get("modification_uuid"),
            Some(modify.as_str())
        );
        if name == "child.vdi" {
            assert_eq!(info.subformat.as_deref(), Some("differencing"));
            assert_eq!(info.properties_get("parent_uuid"), Some(parent.as_str()));
            assert_eq!(
                info.properties_get("parent_modification_uuid"),
                Some(parent_modify.as_str())
            );
            let p = info.parent.as_deref().expect("parent");
            assert_eq!(p.path, u.path("base.vdi"));
            assert_eq!(p.properties_get("uuid"), Some(parent.as_str()));
            assert!(info.warnings.is_empty(), "{:?}", info.warnings);
        } else {
            assert!(info.parent.is_none());
        }
    }
    let fixed = open(&u.path("fixed.vdi"), &OpenOptions::default()).expect("fixed");
    assert_eq!(fixed.info().subformat.as_deref(), Some("fixed"));
    let dynamic = open(&u.path("dynamic.vdi"), &OpenOptions::default()).expect("dynamic");
    assert_eq!(dynamic.info().subformat.as_deref(), Some("dynamic"));
    assert_eq!(dynamic.info().properties_get("version"), Some("1.1"));
}

#[test]
fn differencing_map_names_parent_zero_and_data_blocks() {
    let u = Unpacked::new(&topic());
    const MB: u64 = 1 << 20;
    // make.sh: the child holds block 1, block 2 is a ZERO block, blocks 0
    // and 3 are FREE (base.vdi, which holds every block).
    let img = open(&u.path("child.vdi"), &OpenOptions::default()).expect("open");
    let map: Vec<_> = img
        .map(0, img.size())
        .unwrap()
        .into_iter()
        .map(|e| (e.offset, e.len, e.kind))
        .collect();
    assert_eq!(
        map,
        vec![
            (0, MB, ExtentKind::Parent { depth: 1 }),
            (MB, MB, ExtentKind::Data),
            (2 * MB, MB, ExtentKind::Zero),
            (3 * MB, MB, ExtentKind::Parent { depth: 1 }),
        ]
    );
    let alone = open(&u.path("child.vdi"), &OpenOptions::new().no_parents(true)).expect("open");
    let kinds: Vec<_> = alone
        .map(0, alone.size())
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds,
        vec![
            ExtentKind::Unallocated,
            ExtentKind::Data,
            ExtentKind::Zero,
            ExtentKind::Unallocated
        ]
    );
}

#[test]
fn virtualbox_machine_opens_every_state() {
    let u = Unpacked::new(&topic());
    // The machine's folder as VirtualBox lays it out (make.sh).
    let dir = u.path("vm");
    std::fs::create_dir_all(dir.join("Snapshots")).unwrap();
    std::fs::copy(topic().join("vm/vm.vbox"), dir.join("vm.vbox")).unwrap();
    std::fs::copy(u.path("base.vdi"), dir.join("base.vdi")).unwrap();
    std::fs::copy(
        u.path("child.vdi"),
        dir.join("Snapshots/{7d2a7c1e-57d4-4a2b-9a55-7e0f3c1d2b41}.vdi"),
    )
    .unwrap();
    let config = dir.join("vm.vbox");
    let vm = Vm::load(&config).expect("load vm.vbox");
    let states = tsv_rows(&topic().join("vm/states.tsv"));
    assert_eq!(states.len(), 2);
    for row in states {
        let [state, sha, ..] = row.as_slice() else {
            panic!("row {row:?}")
        };
        let snapshot = (state != "current").then(|| state.clone());
        let opened = vm
            .open(&VmOptions::new().snapshot(snapshot))
            .unwrap_or_else(|e| panic!("{state}: {e}"));
        let disk = opened.set.disks().first().expect("one disk").image.clone();
        let got = sha256_device(&disk, disk.size()).expect("read");
        assert_eq!(&got, sha, "state {state}");
    }
    // The CLI: `hash` of the VM in each state.
    let out = diskimage(&["hash", &u.arg("vm/vm.vbox"), "--snapshot", "before"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_command_reads_a_vdi() {
    let u = Unpacked::new(&topic());
    let disk = u.arg("disk.vdi");
    let expected: Vec<Vec<String>> = tsv_rows(&topic().join("expected.tsv"));
    let sha = &expected.iter().find(|r| r[0] == "disk.vdi").expect("row")[3];

    let run = |args: &[&str]| {
        let out = diskimage(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let info: serde_json::Value = serde_json::from_slice(&run(&["info", &disk, "--json"])).unwrap();
    assert_eq!(info["format"], "vdi", "{info}");
    assert_eq!(info["subformat"], "dynamic", "{info}");
    let hash = String::from_utf8(run(&["hash", &disk])).unwrap();
    assert!(hash.starts_with(sha.as_str()), "{hash}");
    let dumped = u.dir().join("dump.raw");
    run(&["dump", &disk, "-o", dumped.to_str().unwrap()]);
    assert_eq!(&sha256_bytes(&std::fs::read(&dumped).unwrap()), sha);
    let map: serde_json::Value = serde_json::from_slice(&run(&["map", &disk, "--json"])).unwrap();
    assert!(map.to_string().contains("\"data\""), "{map}");
    let volumes = String::from_utf8(run(&["volumes", &disk])).unwrap();
    assert!(volumes.contains("VDIFAT"), "{volumes}");

    // ls -r against fls -r -p (regular files and folders).
    let fls = std::fs::read_to_string(topic().join("disk.fls.txt")).unwrap();
    let mut theirs: Vec<String> = fls
        .lines()
        .filter(|l| l.starts_with("r/r") || l.starts_with("d/d"))
        .filter_map(|l| l.split('\t').nth(1))
        .filter(|n| !n.starts_with('$') && !n.contains("(Volume Label Entry)"))
        .map(|n| format!("/{n}"))
        .collect();
    theirs.sort();
    let listing = String::from_utf8(run(&["ls", "-r", &disk])).unwrap();
    let mut ours: Vec<String> = listing
        .lines()
        .map(|l| l.trim_end_matches('/').to_owned())
        .filter(|l| !l.is_empty())
        .collect();
    ours.sort();
    assert_eq!(ours, theirs, "ls -r differs from fls");
    for row in tsv_rows(&topic().join("disk.files.tsv")) {
        let out = run(&["cat", &disk, &format!("/{}", row[0])]);
        assert_eq!(sha256_bytes(&out), row[1], "cat {}", row[0]);
    }
}

const NAME: &str = "t.vdi";

fn mem_open(
    bytes: Vec<u8>,
    options: &OpenOptions,
) -> diskimage::formats::Result<diskimage::DiskImage> {
    let mut files = MemoryFiles::new();
    files.insert(PathBuf::from(NAME), Arc::from(bytes));
    open_in_memory(Path::new(NAME), &files, options)
}

#[test]
fn hostile_block_maps_are_typed_errors() {
    let base = gunzip_bytes(&topic().join("dynamic.vdi.gz"));
    // A block map larger than the memory budget: refused before it is read.
    let e = mem_open(base.clone(), &OpenOptions::new().memory_limit(Some(16))).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::LimitExceeded, "{e}");
    assert_eq!(e.offset(), Some(0x200), "{e}");
    // A data block pointing past the file: the read fails naming the entry.
    let mut b = base.clone();
    b[0x200 + 4..0x200 + 8].copy_from_slice(&7u32.to_le_bytes());
    let img = mem_open(b, &OpenOptions::default()).expect("opens");
    let mut buf = vec![0u8; 4096];
    let e = img.read_at(&mut buf, 1 << 20).unwrap_err();
    assert_eq!(
        (e.kind(), e.offset()),
        (ErrorKind::OutOfBounds, Some(0x204)),
        "{e}"
    );
    assert!(img.read_at(&mut buf, 0).is_ok());
    // A map of 2^32 - 1 entries claimed by a 4 KiB file.
    let mut b = base.clone();
    b[0x170..0x178].copy_from_slice(&(0xFFFF_FFFFu64 << 20).to_le_bytes());
    b[0x180..0x184].copy_from_slice(&u32::MAX.to_le_bytes());
    let e = mem_open(b, &OpenOptions::default()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::OutOfBounds, "{e}");
    // Every truncation of the header is an error, never a panic.
    for cut in [0x40, 0x47, 0x48, 0x100, 0x1c7, 0x1ff, 0x204] {
        assert!(
            mem_open(base[..cut].to_vec(), &OpenOptions::default()).is_err(),
            "cut {cut:#x}"
        );
    }
    // Differencing: a parent UUID no file carries is a missing-file error
    // listing what was looked at.
    let mut files = MemoryFiles::new();
    let child = gunzip_bytes(&topic().join("orphan.vdi.gz"));
    files.insert(PathBuf::from("d/c.vdi"), Arc::from(child));
    files.insert(PathBuf::from("d/other.vdi"), Arc::from(base));
    let e = open_in_memory(Path::new("d/c.vdi"), &files, &OpenOptions::default()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::MissingFile, "{e}");
    assert!(e.to_string().contains("d/other.vdi"), "{e}");
}
