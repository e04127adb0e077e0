//! Whole-image tests over VHDs assembled in memory: fixed, dynamic with
//! partial sector bitmaps, differencing chains, damaged footers, parents
//! that are missing, mismatched or looping.

use std::path::{Path, PathBuf};

use super::footer::ones_complement_checksum;
use crate::{
    open_in_memory, BlockDevice, ErrorKind, ExtentKind, MemoryFiles, OpenOptions, WarningKind,
};

const BLOCK: u32 = 4096;

/// A dynamic or differencing VHD to assemble.
struct Vhd {
    size: u64,
    disk_type: u32,
    uuid: [u8; 16],
    parent_uuid: [u8; 16],
    parent_name: &'static str,
    /// (platform code, platform data)
    locators: Vec<(&'static [u8; 4], Vec<u8>)>,
    /// (block number, sectors present, byte each present sector is filled with)
    blocks: Vec<(u32, Vec<u32>, u8)>,
}

impl Vhd {
    fn dynamic(size: u64) -> Self {
        Vhd {
            size,
            disk_type: 3,
            uuid: [1; 16],
            parent_uuid: [0; 16],
            parent_name: "",
            locators: Vec::new(),
            blocks: Vec::new(),
        }
    }

    fn child_of(size: u64, parent: [u8; 16], name: &'static str) -> Self {
        Vhd {
            disk_type: 4,
            uuid: [2; 16],
            parent_uuid: parent,
            parent_name: name,
            locators: vec![(b"W2ru", utf16le(&format!(".\\{name}")))],
            ..Vhd::dynamic(size)
        }
    }

    fn footer(&self) -> Vec<u8> {
        let mut f = vec![0u8; 512];
        f[..8].copy_from_slice(b"conectix");
        f[8..12].copy_from_slice(&2u32.to_be_bytes());
        f[12..16].copy_from_slice(&0x0001_0000u32.to_be_bytes());
        let data_offset = if self.disk_type == 2 { u64::MAX } else { 512 };
        f[16..24].copy_from_slice(&data_offset.to_be_bytes());
        f[28..32].copy_from_slice(b"test");
        f[36..40].copy_from_slice(b"Wi2k");
        f[40..48].copy_from_slice(&self.size.to_be_bytes());
        f[48..56].copy_from_slice(&self.size.to_be_bytes());
        f[56..60].copy_from_slice(&[0, 1, 1, 1]);
        f[60..64].copy_from_slice(&self.disk_type.to_be_bytes());
        f[68..84].copy_from_slice(&self.uuid);
        let c = ones_complement_checksum(&f, 64);
        f[64..68].copy_from_slice(&c.to_be_bytes());
        f
    }

    fn build(&self) -> Vec<u8> {
        let entries = self.size.div_ceil(u64::from(BLOCK)) as usize;
        let bat_len = (entries * 4).div_ceil(512) * 512;
        let mut out = self.footer();
        let mut h = vec![0u8; 1024];
        h[..8].copy_from_slice(b"cxsparse");
        h[8..16].copy_from_slice(&[0xff; 8]);
        h[16..24].copy_from_slice(&1536u64.to_be_bytes());
        h[24..28].copy_from_slice(&0x0001_0000u32.to_be_bytes());
        h[28..32].copy_from_slice(&(entries as u32).to_be_bytes());
        h[32..36].copy_from_slice(&BLOCK.to_be_bytes());
        h[40..56].copy_from_slice(&self.parent_uuid);
        for (i, c) in self.parent_name.encode_utf16().enumerate() {
            h[64 + 2 * i..66 + 2 * i].copy_from_slice(&c.to_be_bytes());
        }
        let mut tail = Vec::new();
        let mut next = 1536 + bat_len;
        for (i, (code, data)) in self.locators.iter().enumerate() {
            let at = 576 + 24 * i;
            h[at..at + 4].copy_from_slice(*code);
            h[at + 4..at + 8].copy_from_slice(&512u32.to_be_bytes());
            h[at + 8..at + 12].copy_from_slice(&(data.len() as u32).to_be_bytes());
            h[at + 16..at + 24].copy_from_slice(&(next as u64).to_be_bytes());
            let mut d = data.clone();
            d.resize(512, 0);
            tail.extend(d);
            next += 512;
        }
        let c = ones_complement_checksum(&h, 36);
        h[36..40].copy_from_slice(&c.to_be_bytes());
        out.extend(h);
        let mut bat = vec![0xffu8; bat_len];
        for (block, sectors, fill) in &self.blocks {
            let b = *block as usize;
            bat[4 * b..4 * b + 4].copy_from_slice(&((next / 512) as u32).to_be_bytes());
            let mut bitmap = vec![0u8; 512];
            let mut data = vec![0u8; BLOCK as usize];
            for &s in sectors {
                bitmap[(s / 8) as usize] |= 0x80 >> (s % 8);
                data[s as usize * 512..(s as usize + 1) * 512].fill(*fill);
            }
            tail.extend(bitmap);
            tail.extend(data);
            next += 512 + BLOCK as usize;
        }
        out.extend(bat);
        out.extend(tail);
        out.extend(self.footer());
        out
    }
}

fn utf16le(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

fn mem(files: &[(&str, Vec<u8>)]) -> MemoryFiles {
    files
        .iter()
        .map(|(n, d)| (PathBuf::from(n), std::sync::Arc::from(d.clone())))
        .collect()
}

fn read_all(dev: &dyn BlockDevice) -> Vec<u8> {
    let mut buf = vec![0u8; dev.size() as usize];
    // Odd-sized pieces cross sector, run and block boundaries.
    let mut pos = 0;
    while pos < buf.len() {
        let n = 777.min(buf.len() - pos);
        dev.read_at(&mut buf[pos..pos + n], pos as u64).unwrap();
        pos += n;
    }
    buf
}

#[test]
fn fixed_disk_reads_the_bytes_before_the_footer() {
    let mut v = Vhd::dynamic(2048);
    v.disk_type = 2;
    let mut file: Vec<u8> = (0..2048u32).map(|i| i as u8).collect();
    file.extend(v.footer());
    let img = open_in_memory(
        Path::new("f.vhd"),
        &mem(&[("f.vhd", file.clone())]),
        &OpenOptions::default(),
    )
    .unwrap();
    assert_eq!(img.info().subformat.as_deref(), Some("fixed"));
    assert_eq!(read_all(&img), file[..2048]);
    assert_eq!(img.map(0, 2048).unwrap()[0].kind, ExtentKind::Data);
    // The old 511-byte footer.
    file.pop();
    let img = open_in_memory(
        Path::new("f.vhd"),
        &mem(&[("f.vhd", file.clone())]),
        &OpenOptions::default(),
    )
    .unwrap();
    assert_eq!(img.size(), 2048);
    // A current size larger than the data before the footer: opens with
    // a warning naming the shortfall; reads past the data end fail.
    let mut short = file[1024..].to_vec();
    short.truncate(1024 + 511);
    let files = mem(&[("f.vhd", short.clone())]);
    let img = open_in_memory(Path::new("f.vhd"), &files, &OpenOptions::default()).unwrap();
    assert_eq!(img.size(), 2048);
    let w = &img.info().warnings;
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(w[0].offset, Some(1024));
    assert!(
        w[0].message
            .contains("1024 bytes short of its current size"),
        "{}",
        w[0].message
    );
    let mut buf = vec![0u8; 1024];
    img.read_at(&mut buf, 0).unwrap();
    assert_eq!(buf, short[..1024]);
    let e = img.read_at(&mut buf[..200], 900).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::OutOfBounds);
    assert_eq!(
        (e.offset(), e.path()),
        (Some(900), Some(Path::new("f.vhd")))
    );
    assert!(img.read_at(&mut buf[..10], 1500).is_err());
    let strict = OpenOptions {
        strict: true,
        ..OpenOptions::default()
    };
    let e = open_in_memory(Path::new("f.vhd"), &files, &strict).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::OutOfBounds);
    assert_eq!(e.offset(), Some(1024));
}

#[test]
fn dynamic_disk_honours_the_sector_bitmap() {
    let mut v = Vhd::dynamic(3 * u64::from(BLOCK) - 512);
    v.blocks = vec![(1, vec![0, 1, 5], 0xaa)];
    let img = open_in_memory(
        Path::new("d.vhd"),
        &mem(&[("d.vhd", v.build())]),
        &OpenOptions::default(),
    )
    .unwrap();
    let all = read_all(&img);
    let b = BLOCK as usize;
    assert!(all[..b].iter().all(|&x| x == 0));
    assert!(all[b..b + 1024].iter().all(|&x| x == 0xaa));
    assert!(all[b + 1024..b + 2560].iter().all(|&x| x == 0));
    assert!(all[b + 2560..b + 3072].iter().all(|&x| x == 0xaa));
    assert!(all[b + 3072..].iter().all(|&x| x == 0));
    let map = img.map(0, img.size()).unwrap();
    let kinds: Vec<_> = map.iter().map(|e| (e.offset, e.len, e.kind)).collect();
    assert_eq!(
        kinds,
        vec![
            (0, 4096, ExtentKind::Unallocated),
            (4096, 1024, ExtentKind::Data),
            (5120, 1536, ExtentKind::Unallocated),
            (6656, 512, ExtentKind::Data),
            (7168, img.size() - 7168, ExtentKind::Unallocated),
        ]
    );
    assert_eq!(
        img.read_at(&mut [0u8; 2], img.size() - 1)
            .unwrap_err()
            .kind(),
        ErrorKind::OutOfBounds
    );
}

fn chain() -> MemoryFiles {
    let size = 2 * u64::from(BLOCK);
    let mut base = Vhd::dynamic(size);
    base.blocks = vec![(0, (0..8).collect(), 0x11), (1, vec![0], 0x12)];
    let mut mid = Vhd::child_of(size, [1; 16], "base.vhd");
    mid.blocks = vec![(0, vec![1], 0x21)];
    let mut top = Vhd::child_of(size, [2; 16], "mid.vhd");
    top.uuid = [3; 16];
    top.blocks = vec![(0, vec![2], 0x31), (1, vec![7], 0x32)];
    mem(&[
        ("vm/base.vhd", base.build()),
        ("vm/mid.vhd", mid.build()),
        ("vm/top.vhd", top.build()),
    ])
}

#[test]
fn differencing_chain_reads_through_both_parents() {
    let files = chain();
    let img = open_in_memory(Path::new("vm/top.vhd"), &files, &OpenOptions::default()).unwrap();
    assert!(img.info().warnings.is_empty(), "{:?}", img.info().warnings);
    assert_eq!(img.info().chain().count(), 3);
    let all = read_all(&img);
    let sector = |s: usize| all[s * 512];
    assert_eq!(sector(0), 0x11);
    assert_eq!(sector(1), 0x21);
    assert_eq!(sector(2), 0x31);
    assert_eq!(sector(3), 0x11);
    assert_eq!(sector(8), 0x12);
    assert_eq!(sector(9), 0);
    assert_eq!(sector(15), 0x32);
    let map = img.map(0, img.size()).unwrap();
    let kinds: Vec<_> = map
        .iter()
        .map(|e| (e.offset / 512, e.len / 512, e.kind))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (0, 1, ExtentKind::Parent { depth: 2 }),
            (1, 1, ExtentKind::Parent { depth: 1 }),
            (2, 1, ExtentKind::Data),
            (3, 5, ExtentKind::Parent { depth: 2 }),
            (8, 1, ExtentKind::Parent { depth: 2 }),
            (9, 6, ExtentKind::Unallocated),
            (15, 1, ExtentKind::Data),
        ]
        .into_iter()
        .fold(Vec::new(), |mut v: Vec<(u64, u64, ExtentKind)>, e| {
            match v.last_mut() {
                Some(l) if l.2 == e.2 && l.0 + l.1 == e.0 => l.1 += e.1,
                _ => v.push(e),
            }
            v
        })
    );
    let opts = OpenOptions {
        no_parents: true,
        ..OpenOptions::default()
    };
    let alone = open_in_memory(Path::new("vm/top.vhd"), &files, &opts).unwrap();
    let all = read_all(&alone);
    assert_eq!((all[0], all[1024], all[15 * 512]), (0, 0x31, 0x32));
    assert!(alone
        .info()
        .properties
        .iter()
        .any(|(k, v)| k == "parent_locator.0" && v == "W2ru .\\mid.vhd"));
}

#[test]
fn parent_problems_are_typed() {
    let mut files = chain();
    files.remove(Path::new("vm/base.vhd"));
    let e = open_in_memory(Path::new("vm/top.vhd"), &files, &OpenOptions::default()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::MissingFile);
    assert!(e.to_string().contains("base.vhd"), "{e}");

    // A parent whose unique ID is not the one the child records.
    let size = 2 * u64::from(BLOCK);
    let other = Vhd {
        uuid: [9; 16],
        ..Vhd::dynamic(size)
    };
    let child = Vhd::child_of(size, [1; 16], "p.vhd");
    let files = mem(&[("p.vhd", other.build()), ("c.vhd", child.build())]);
    let img = open_in_memory(Path::new("c.vhd"), &files, &OpenOptions::default()).unwrap();
    assert_eq!(img.info().warnings[0].kind, WarningKind::ParentMismatch);
    let strict = OpenOptions {
        strict: true,
        ..OpenOptions::default()
    };
    assert_eq!(
        open_in_memory(Path::new("c.vhd"), &files, &strict)
            .unwrap_err()
            .kind(),
        ErrorKind::Corrupt
    );

    // A disk that names itself as its parent.
    let me = Vhd {
        uuid: [4; 16],
        ..Vhd::child_of(size, [4; 16], "c.vhd")
    };
    let files = mem(&[("c.vhd", me.build())]);
    let e = open_in_memory(Path::new("c.vhd"), &files, &OpenOptions::default()).unwrap_err();
    assert!(e.to_string().contains("loops"), "{e}");
}

#[test]
fn damaged_end_footer_falls_back_to_the_copy() {
    let mut v = Vhd::dynamic(u64::from(BLOCK));
    v.blocks = vec![(0, vec![0], 0x55)];
    let mut file = v.build();
    let n = file.len();
    file[n - 512 + 90] ^= 1;
    let files = mem(&[("d.vhd", file.clone())]);
    let img = open_in_memory(Path::new("d.vhd"), &files, &OpenOptions::default()).unwrap();
    assert_eq!(img.info().warnings[0].kind, WarningKind::RedundantCopyUsed);
    assert_eq!(read_all(&img)[0], 0x55);
    let strict = OpenOptions {
        strict: true,
        ..OpenOptions::default()
    };
    assert!(open_in_memory(Path::new("d.vhd"), &files, &strict).is_err());
    // Both copies with a bad checksum: a checksum warning.
    file[90] ^= 1;
    let files = mem(&[("d.vhd", file)]);
    let img = open_in_memory(Path::new("d.vhd"), &files, &OpenOptions::default()).unwrap();
    assert_eq!(img.info().warnings[0].kind, WarningKind::Checksum);
}

#[test]
fn truncated_and_hostile_tables_are_errors() {
    let mut v = Vhd::dynamic(2 * u64::from(BLOCK));
    v.blocks = vec![(1, vec![0], 1)];
    let good = v.build();
    // max table entries too small for the size.
    let mut bad = good.clone();
    bad[512 + 28..512 + 32].copy_from_slice(&1u32.to_be_bytes());
    let e = open_in_memory(
        Path::new("d.vhd"),
        &mem(&[("d.vhd", bad)]),
        &OpenOptions::default(),
    )
    .unwrap_err();
    assert_eq!((e.kind(), e.offset()), (ErrorKind::Corrupt, Some(540)));
    // A BAT entry past the end of the file.
    let mut bad = good.clone();
    bad[1536 + 4..1536 + 8].copy_from_slice(&0x00ff_ffffu32.to_be_bytes());
    let e = open_in_memory(
        Path::new("d.vhd"),
        &mem(&[("d.vhd", bad)]),
        &OpenOptions::default(),
    )
    .unwrap_err();
    assert_eq!((e.kind(), e.offset()), (ErrorKind::OutOfBounds, Some(1540)));
    // A dynamic header offset past the end.
    let mut bad = good;
    for at in [16, bad.len() - 512 + 16] {
        bad[at..at + 8].copy_from_slice(&(1u64 << 40).to_be_bytes());
        let c = ones_complement_checksum(&bad[at - 16..at + 496], 64);
        bad[at + 48..at + 52].copy_from_slice(&c.to_be_bytes());
    }
    let e = open_in_memory(
        Path::new("d.vhd"),
        &mem(&[("d.vhd", bad)]),
        &OpenOptions::default(),
    )
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt);
}
