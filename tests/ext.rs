//! ext feature sets (fixtures/ext/make.sh): every image listed, stat'ed,
//! read and its links resolved, by path and through `visit_dir`, against
//! the listing the kernel (a read-only loop mount) or debugfs served;
//! bad checksums (group descriptor, inode, directory block) read with a
//! warning, refused in strict mode.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use diskimage::formats::MemoryDevice;
use diskimage::fs::{open_fs, open_fs_with, ErrorKind, FileSystem, FileType, FsOptions};

use crate::common::{gunzip_bytes, read_all, repo, sha256_bytes, tsv_rows, visit_rows, walk_rows};

fn dir() -> PathBuf {
    repo().join("fixtures/ext")
}

/// Every image of fixtures/ext with the incompat/ro_compat bit its name
/// promises (checked in the raw superblock, so the fixture really has it).
const IMAGES: [(&str, &str); 9] = [
    ("noft.img", "no filetype"),
    ("inline.img", "inline_data"),
    ("ea_inode.img", "ea_inode"),
    ("meta_bg.img", "meta_bg"),
    ("mmp.img", "mmp"),
    ("casefold.img", "casefold"),
    ("i128.img", "128-byte inodes"),
    ("badgd.img", "metadata_csum"),
    ("gdt_csum.img", "gdt_csum"),
];

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn has_feature(sb: &[u8], what: &str) -> bool {
    let incompat = le32(sb, 0x60);
    let ro = le32(sb, 0x64);
    match what {
        "no filetype" => incompat & 0x2 == 0,
        "inline_data" => incompat & 0x8000 != 0,
        "ea_inode" => incompat & 0x400 != 0,
        "meta_bg" => incompat & 0x10 != 0,
        "mmp" => incompat & 0x100 != 0,
        "casefold" => incompat & 0x2_0000 != 0,
        "128-byte inodes" => le16(sb, 0x58) == 128,
        "metadata_csum" => ro & 0x400 != 0,
        "gdt_csum" => ro & 0x10 != 0 && ro & 0x400 == 0,
        _ => false,
    }
}

/// One truth row: type, size, sha256, target, inode, mtime.
type Row = (String, u64, String, String, u64, i64);

fn truth(image: &str) -> BTreeMap<String, Row> {
    tsv_rows(&dir().join(format!("{image}.listing.tsv")))
        .into_iter()
        .map(|r| {
            assert_eq!(r.len(), 7, "{image}: {r:?}");
            (
                r[0].clone(),
                (
                    r[1].clone(),
                    r[2].parse().expect("size"),
                    r[3].clone(),
                    r[4].clone(),
                    r[5].parse().expect("inode"),
                    r[6].parse().expect("mtime"),
                ),
            )
        })
        .collect()
}

fn type_name(t: FileType) -> &'static str {
    match t {
        FileType::File => "file",
        FileType::Directory => "dir",
        FileType::Symlink => "symlink",
        FileType::Special => "special",
    }
}

/// The tree of `fs` by path methods, as truth rows.
/// A listing row: type, size, sha256, link target, inode, mtime seconds.
fn row(m: &diskimage::fs::Metadata, sha: String, target: String) -> Row {
    (
        type_name(m.file_type).to_string(),
        m.size,
        sha,
        target,
        m.inode.unwrap_or(0),
        m.modified.map_or(0, |t| t.secs),
    )
}

fn walk(fs: &dyn FileSystem) -> Result<BTreeMap<String, Row>, String> {
    walk_rows(fs, row)
}

/// The same tree through `visit_dir`, each entry read from the entry.
fn visit(fs: &dyn FileSystem) -> Result<BTreeMap<String, Row>, String> {
    visit_rows(fs, row)
}

fn device(bytes: Vec<u8>) -> Arc<MemoryDevice> {
    Arc::new(MemoryDevice::new(bytes))
}

fn strict() -> FsOptions {
    FsOptions::default().with_strict(true)
}

/// The differences between `ours` and `want`, one line each.
fn diff(image: &str, ours: &BTreeMap<String, Row>, want: &BTreeMap<String, Row>) -> Vec<String> {
    let mut errors = Vec::new();
    for (p, w) in want {
        match ours.get(p) {
            None => errors.push(format!("{image}: {p} missing")),
            Some(o) if o != w => errors.push(format!("{image}: {p}: ours {o:?}, truth {w:?}")),
            _ => {}
        }
    }
    for p in ours.keys().filter(|p| !want.contains_key(*p)) {
        errors.push(format!("{image}: {p} not in the truth"));
    }
    errors
}

#[test]
fn every_ext_feature_set_reads_as_the_kernel_or_debugfs_serves_it() {
    let mut errors = Vec::new();
    for (image, feature) in IMAGES {
        let bytes = gunzip_bytes(&dir().join(format!("{image}.gz")));
        assert!(
            has_feature(&bytes[1024..2048], feature),
            "{image}: {feature}"
        );
        let want = truth(image);
        assert!(want.len() > 90, "{image}: {} truth rows", want.len());
        let fs = match open_fs(device(bytes)) {
            Ok(fs) => fs,
            Err(e) => {
                errors.push(format!("{image}: open: {e}"));
                continue;
            }
        };
        for (how, got) in [("path", walk(fs.as_ref())), ("visit", visit(fs.as_ref()))] {
            match got {
                Ok(ours) => errors.extend(diff(&format!("{image} ({how})"), &ours, &want)),
                Err(e) => errors.push(format!("{image} ({how}): {e}")),
            }
        }
        if image != "badgd.img" {
            let w = fs.warnings();
            if !w.is_empty() {
                errors.push(format!("{image}: unexpected warnings {w:?}"));
            }
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

/// The label and UUID mke2fs was given (fixtures/ext/make.sh).
#[test]
fn ext_label_and_uuid_are_what_mke2fs_wrote() {
    let bytes = gunzip_bytes(&dir().join("meta_bg.img.gz"));
    let fs = open_fs(device(bytes)).expect("open");
    assert_eq!(fs.label().as_deref(), Some("metabg"));
    assert_eq!(
        fs.serial().as_deref(),
        Some("11111111-2222-3333-4444-555555555504")
    );
}

/// Group 1's descriptor checksum is flipped in badgd.img: the kernel
/// mounts it read-only with a warning, and so do we; strict mode refuses.
/// The same flip in gdt_csum.img (a CRC-16) is found the same way.
#[test]
fn bad_group_descriptor_checksum_is_a_warning_and_strict_refuses_it() {
    let gdt = {
        let mut b = gunzip_bytes(&dir().join("gdt_csum.img.gz"));
        let at = 2048 + 64 + 0x1E;
        b[at] ^= 0xFF;
        b
    };
    for (image, bytes) in [
        ("badgd.img", gunzip_bytes(&dir().join("badgd.img.gz"))),
        ("gdt_csum.img (flipped)", gdt),
    ] {
        let fs = open_fs(device(bytes.clone())).expect(image);
        let w = fs.warnings();
        assert_eq!(w.len(), 1, "{image}: {w:?}");
        assert!(
            w[0].contains("group descriptor checksum: stored 0x") && w[0].contains(" at 0x85e"),
            "{image}: {w:?}"
        );
        let e = open_fs_with(device(bytes), &strict())
            .err()
            .expect("strict refuses");
        assert_eq!(e.kind(), ErrorKind::Corrupt);
        let text = e.to_string();
        assert!(
            text.contains("group descriptor checksum: stored 0x") && text.contains(" at 0x85e"),
            "{image}: {text}"
        );
    }
}

/// The byte offset of inode `n` in an image (1 KiB blocks, descriptors
/// from block 2, not meta_bg), from its superblock and descriptors.
fn inode_offset(b: &[u8], n: u32) -> usize {
    let ipg = le32(b, 1024 + 0x28);
    let isize = usize::from(le16(b, 1024 + 0x58));
    let desc_size = if le32(b, 1024 + 0x60) & 0x80 != 0 {
        usize::from(le16(b, 1024 + 0xFE))
    } else {
        32
    };
    let g = ((n - 1) / ipg) as usize;
    let table = le32(b, 2048 + g * desc_size + 8) as usize;
    table * 1024 + ((n - 1) % ipg) as usize * isize
}

/// An inode checksum made wrong (inline.img's /small.txt, an inline-data
/// file): the file still reads as the kernel served it, with a warning
/// naming the inode; strict mode refuses the file.
#[test]
fn bad_inode_checksum_is_a_warning_and_strict_refuses_it() {
    let mut bytes = gunzip_bytes(&dir().join("inline.img.gz"));
    let want = truth("inline.img");
    let small = &want["/small.txt"];
    let at = inode_offset(&bytes, small.4 as u32) + 0x7C;
    bytes[at] ^= 0xFF;
    let fs = open_fs(device(bytes.clone())).expect("open");
    let data = read_all(fs.open("/small.txt").expect("open file")).expect("read");
    assert_eq!(sha256_bytes(&data), small.2);
    let w = fs.warnings();
    assert!(
        w.len() == 1
            && w[0].contains("inode checksum: stored 0x")
            && w[0].contains(&format!(" at {at:#x}")),
        "{w:?}"
    );
    let fs = open_fs_with(device(bytes), &strict()).expect("strict opens");
    let e = fs
        .open("/small.txt")
        .err()
        .expect("strict refuses the inode");
    assert_eq!(e.kind(), ErrorKind::Corrupt);
    assert!(
        matches!(
            e.detail(),
            Some(diskimage::fs::Detail::Checksum { what: "inode", stored, computed })
                if stored != computed
        ),
        "{e}"
    );
    // The other files are untouched.
    assert!(fs.open("/medium.txt").is_ok());
}

/// A directory leaf block's checksum made wrong (the first leaf tail in
/// i128.img): every entry still lists as the kernel served it, with one
/// warning; strict mode refuses that directory.
#[test]
fn bad_directory_block_checksum_is_a_warning_and_strict_refuses_it() {
    let mut bytes = gunzip_bytes(&dir().join("i128.img.gz"));
    let want = truth("i128.img");
    // The 12-byte leaf tail: inode 0, rec_len 12, name_len 0, type 0xDE.
    let tail = b"\x00\x00\x00\x00\x0c\x00\x00\xde";
    let at = (0..bytes.len() - 12)
        .step_by(1024)
        .map(|b| b + 1024 - 12)
        .find(|&t| &bytes[t..t + 8] == tail)
        .expect("a directory leaf block");
    bytes[at + 8] ^= 0xFF;
    let fs = open_fs(device(bytes.clone())).expect("open");
    let ours = walk(fs.as_ref()).expect("walk");
    let errors = diff("i128.img (bad dir csum)", &ours, &want);
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    let w = fs.warnings();
    assert!(
        w.len() == 1
            && w[0].contains("directory block")
            && w[0].contains(&format!(" at {:#x}", at + 12 - 1024)),
        "{w:?}"
    );
    let fs = open_fs_with(device(bytes), &strict()).expect("strict opens");
    let e = walk(fs.as_ref()).expect_err("strict refuses the directory");
    assert!(e.contains("directory block checksum: stored 0x"), "{e}");
}

/// What ext4-view refused by number is named: an unknown incompat bit
/// and journal_dev are Unsupported errors naming them.
#[test]
fn refused_ext_features_are_unsupported_errors_naming_them() {
    let mut bytes = gunzip_bytes(&dir().join("mmp.img.gz"));
    let incompat = le32(&bytes, 1024 + 0x60) | 0x8_0000;
    bytes[1024 + 0x60..1024 + 0x64].copy_from_slice(&incompat.to_le_bytes());
    // The superblock checksum no longer matches either: that alone is a warning.
    let e = open_fs(device(bytes)).err().expect("refused");
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    assert!(e.to_string().contains("unknown 0x80000"), "{e}");
}

/// Issue 19, item 6: on ext4 with 128-byte inodes a fast symlink was
/// dropped with "inode 2 is truncated: size=128". The kernel reads it.
#[test]
fn issue_19_fast_symlink_on_128_byte_inodes_reads() {
    let bytes = gunzip_bytes(&dir().join("i128.img.gz"));
    let want = truth("i128.img");
    let fs = open_fs(device(bytes)).expect("open");
    for link in ["/fast_link", "/slow_link"] {
        assert_eq!(fs.read_link(link).expect(link), want[link].3, "{link}");
    }
}

/// Issue 19, item 12: a volume without the filetype feature (as old ext2
/// made them) was refused whole; each entry's type now comes from its inode.
#[test]
fn issue_19_ext2_without_filetype_lists_types_from_inodes() {
    let bytes = gunzip_bytes(&dir().join("noft.img.gz"));
    let fs = open_fs(device(bytes)).expect("open");
    let types: BTreeMap<String, &str> = fs
        .read_dir("/")
        .expect("read_dir")
        .map(|e| (e.name, type_name(e.file_type)))
        .collect();
    assert_eq!(types["fifo"], "special");
    assert_eq!(types["fast_link"], "symlink");
    assert_eq!(types["many"], "dir");
    assert_eq!(types["small.txt"], "file");
}

/// The extent leaf block of ea_inode.img's /punched.bin (seven extents
/// between punched holes: a depth-1 tree) with its checksum made wrong:
/// the file still reads as the kernel served it, holes as zeros, with a
/// warning naming the block; strict mode refuses the file.
#[test]
fn bad_extent_block_checksum_is_a_warning_and_strict_refuses_it() {
    let mut bytes = gunzip_bytes(&dir().join("ea_inode.img.gz"));
    let want = truth("ea_inode.img");
    let punched = &want["/punched.bin"];
    // An extent header at a block start: magic, entries 5..=84, max 84
    // (a 1 KiB block), depth 0.
    let at = (0..bytes.len())
        .step_by(1024)
        .find(|&b| {
            bytes[b..b + 2] == [0x0a, 0xf3]
                && (5..=84).contains(&le16(&bytes, b + 2))
                && le16(&bytes, b + 4) == 84
                && le16(&bytes, b + 6) == 0
        })
        .expect("an extent leaf block");
    let tail = at + 12 + 12 * 84;
    bytes[tail] ^= 0xFF;
    let fs = open_fs(device(bytes.clone())).expect("open");
    let data = read_all(fs.open("/punched.bin").expect("open file")).expect("read");
    assert_eq!(sha256_bytes(&data), punched.2);
    let w = fs.warnings();
    assert!(
        w.len() == 1
            && w[0].contains("extent block checksum")
            && w[0].contains(&format!(" at {at:#x}")),
        "{w:?}"
    );
    let fs = open_fs_with(device(bytes), &strict()).expect("strict opens");
    let e = fs
        .open("/punched.bin")
        .err()
        .expect("strict refuses the file");
    assert_eq!(e.kind(), ErrorKind::Corrupt);
    assert!(e.to_string().contains("extent block checksum"), "{e}");
}

/// The common ext fixtures (fixtures/filesystems, made by mke2fs -d and
/// clean by e2fsck) give no warning: every checksum our reader checks
/// (superblock, descriptors, inodes, directory and extent blocks) agrees
/// with what mke2fs wrote, on every file and directory.
#[test]
fn common_ext_fixtures_have_no_checksum_warnings() {
    for image in ["ext2.img", "ext3.img", "ext4.img", "ext4_nocsum.img"] {
        let bytes = gunzip_bytes(
            &repo()
                .join("fixtures/filesystems")
                .join(format!("{image}.gz")),
        );
        let fs = open_fs_with(device(bytes), &strict()).expect(image);
        let tree = walk(fs.as_ref()).unwrap_or_else(|e| panic!("{image}: {e}"));
        assert!(tree.len() > 1000, "{image}: {} entries", tree.len());
        assert!(fs.warnings().is_empty(), "{image}: {:?}", fs.warnings());
    }
}
