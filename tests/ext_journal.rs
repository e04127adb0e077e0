//! ext3/ext4 journals that need recovery (`fixtures/ext-journal/`), read
//! through our replay and compared with what e2fsck's replay
//! (`e2fsck -E journal_only`) made of the same volume: block by block
//! (`*.blocks.tsv`) and file by file as the kernel reads e2fsck's result
//! (`*.listing.tsv`).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

use diskimage::formats::{BlockDevice, MemoryDevice};
use diskimage::fs::ext4::journal;
use diskimage::fs::FileType;

use crate::common::{diskimage, gunzip, gunzip_bytes, repo, sha256_bytes, tsv_rows};

const IMAGES: [&str; 8] = [
    "ext3.img",
    "ext4_4k.img",
    "ext4_async.img",
    "ext4_csum1.img",
    "ext4_csum2.img",
    "ext4_csum3.img",
    "ext4_csum3_badblock.img",
    "ext4_csum3_baddesc.img",
];

/// Whether e2fsck refuses the journal of `image` altogether (its damage
/// note says so).
fn nothing_replayed(image: &str) -> bool {
    std::fs::read_to_string(dir().join(format!("{image}.damage.txt")))
        .is_ok_and(|d| d.contains("nothing replayed"))
}

fn dir() -> PathBuf {
    repo().join("fixtures/ext-journal")
}

fn volume(image: &str) -> (Vec<u8>, Arc<dyn BlockDevice>) {
    let bytes = gunzip_bytes(&dir().join(format!("{image}.gz")));
    let dev: Arc<dyn BlockDevice> = Arc::new(MemoryDevice::new(bytes.clone()));
    (bytes, dev)
}

fn replayed(image: &str) -> (Vec<u8>, journal::Replayed) {
    let (bytes, dev) = volume(image);
    let r = journal::replay(dev)
        .unwrap_or_else(|e| panic!("{image}: {e}"))
        .unwrap_or_else(|| panic!("{image}: the volume should need recovery"));
    (bytes, r)
}

/// The rows of a truth file, without its header.
fn rows(name: &str) -> Vec<Vec<String>> {
    tsv_rows(&dir().join(name)).into_iter().skip(1).collect()
}

/// The block size the superblock gives.
fn block_size(bytes: &[u8]) -> usize {
    1024 << u32::from_le_bytes(bytes[1024 + 0x18..1024 + 0x1C].try_into().expect("4 bytes"))
}

/// Every block e2fsck's replay changed and logdump shows in the journal
/// reads as e2fsck wrote it; every block it left alone reads as the
/// volume holds it (nothing replayed that e2fsck did not replay, such as
/// a revoked block or one failing its checksum). The changed blocks
/// differ from the volume as it stands, so the test can fail.
#[test]
fn replay_matches_e2fsck_block_by_block() {
    for image in IMAGES {
        let (raw, r) = replayed(image);
        let bs = block_size(&raw);
        let truth: BTreeMap<u64, (String, String)> = rows(&format!("{image}.blocks.tsv"))
            .into_iter()
            .map(|row| {
                (
                    row[0].parse().expect("block"),
                    (row[1].clone(), row[2].clone()),
                )
            })
            .collect();
        let logged = truth.values().filter(|(_, why)| why == "logged").count();
        if nothing_replayed(image) {
            assert_eq!(logged, 0, "{image}");
            assert_eq!(r.replayed_blocks().count(), 0, "{image}");
            assert!(
                r.warnings()[0].contains("not replayed"),
                "{:?}",
                r.warnings()
            );
        } else {
            assert!(logged > 0, "{image}: e2fsck replayed nothing");
        }
        let mut ours = vec![0u8; bs];
        let mut errors = Vec::new();
        for (b, stored) in raw.chunks_exact(bs).enumerate() {
            r.read_at(&mut ours, (b * bs) as u64).expect("read");
            match truth.get(&(b as u64)) {
                Some((sha, why)) if why == "logged" => {
                    assert_ne!(&sha256_bytes(stored), sha, "{image}: block {b}");
                    if &sha256_bytes(&ours) != sha {
                        errors.push(format!("block {b}: not as e2fsck replayed it"));
                    }
                }
                // e2fsck's own bookkeeping (superblocks, journal superblock).
                Some(_) => {}
                None => {
                    if ours != stored {
                        errors.push(format!("block {b}: changed, e2fsck left it"));
                    }
                }
            }
        }
        assert!(errors.is_empty(), "{image}: {errors:#?}");
        // The superblock is e2fsck's but for what e2fsck itself updates
        // after its replay.
        let mut sb = [0u8; 1024];
        r.read_at(&mut sb, 1024).expect("superblock");
        assert_eq!(sb[0x60] & 0x4, 0, "{image}: needs_recovery still set");
        let hex = std::fs::read_to_string(dir().join(format!("{image}.superblock.hex")))
            .expect("superblock.hex");
        let theirs: Vec<u8> = hex
            .split_whitespace()
            .flat_map(|l| {
                (0..l.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&l[i..i + 2], 16).expect("hex"))
                    .collect::<Vec<_>>()
            })
            .collect();
        let differ: Vec<String> = (0..1024)
            .filter(|&i| sb[i] != theirs[i] && !E2FSCK_BOOKKEEPING.iter().any(|r| r.contains(&i)))
            .map(|i| format!("{i:#x}"))
            .collect();
        assert!(differ.is_empty(), "{image}: superblock bytes {differ:?}");
    }
}

/// Superblock fields e2fsck sets itself once its replay is done: free
/// block and inode counts, write time, mount count, state, last check
/// time, their high halves, bytes written and the checksum.
const E2FSCK_BOOKKEEPING: [std::ops::Range<usize>; 8] = [
    0x0C..0x14,
    0x30..0x36,
    0x3A..0x3C,
    0x40..0x44,
    0x158..0x15C,
    0x178..0x180,
    0x274..0x278,
    0x3FC..0x400,
];

/// Files, directories and links as the kernel lists e2fsck's replayed
/// volume: type, mode, inode number, link count, size, mtime, ctime and
/// contents (or link target), through `open_fs` on the dirty volume.
#[test]
fn files_match_the_kernel_view_of_e2fsck_replay() {
    for image in IMAGES {
        let (_, dev) = volume(image);
        let fs = diskimage::fs::open_fs(dev).unwrap_or_else(|e| panic!("{image}: {e}"));
        assert!(!fs.warnings().is_empty(), "{image}: no replay warning");
        let listing = rows(&format!("{image}.listing.tsv"));
        let mut children: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for row in &listing {
            let (path, ty, mode, ino, nlink, size, mtime, ctime, extra) = (
                &row[0], &row[1], &row[2], &row[3], &row[4], &row[5], &row[6], &row[7], &row[8],
            );
            let m = fs
                .metadata(path)
                .unwrap_or_else(|e| panic!("{image}: {path}: {e}"));
            let want_type = match ty.as_str() {
                "d" => FileType::Directory,
                "f" => FileType::File,
                "l" => FileType::Symlink,
                _ => FileType::Special,
            };
            let ns = |t: Option<diskimage::fs::Timestamp>| {
                t.map(|t| i128::from(t.secs) * 1_000_000_000 + i128::from(t.nanos))
            };
            let what = format!("{image}: {path}");
            assert_eq!(m.file_type, want_type, "{what}");
            assert_eq!(m.mode, u32::from_str_radix(mode, 8).ok(), "{what}");
            assert_eq!(m.inode, ino.parse().ok(), "{what}");
            assert_eq!(m.nlink, nlink.parse().ok(), "{what}");
            assert_eq!(m.size, size.parse::<u64>().expect("size"), "{what}");
            assert_eq!(ns(m.modified), mtime.parse().ok(), "{what}: mtime");
            assert_eq!(ns(m.changed), ctime.parse().ok(), "{what}: ctime");
            match want_type {
                FileType::File => {
                    let mut data = Vec::new();
                    fs.open(path)
                        .and_then(|mut f| {
                            f.read_to_end(&mut data).map_err(|e| {
                                diskimage::fs::Error::from_io(diskimage::fs::FsName::Ext, path, e)
                            })
                        })
                        .unwrap_or_else(|e| panic!("{what}: {e}"));
                    assert_eq!(&sha256_bytes(&data), extra, "{what}: contents");
                }
                FileType::Symlink => {
                    assert_eq!(&fs.read_link(path).expect("link"), extra, "{what}");
                }
                _ => {}
            }
            if path != "/" {
                let (parent, name) = path.rsplit_once('/').expect("absolute path");
                let parent = if parent.is_empty() { "/" } else { parent };
                children
                    .entry(parent.to_string())
                    .or_default()
                    .push(name.to_string());
            }
        }
        for row in listing.iter().filter(|r| r[1] == "d") {
            let mut want = children.remove(&row[0]).unwrap_or_default();
            want.sort();
            let mut got: Vec<String> = fs
                .read_dir(&row[0])
                .unwrap_or_else(|e| panic!("{image}: {}: {e}", row[0]))
                .map(|e| e.name)
                .filter(|n| !(row[0] == "/" && n == "lost+found"))
                .collect();
            got.sort();
            assert_eq!(got, want, "{image}: entries of {}", row[0]);
        }
    }
}

/// The data block whose journal copy fails its tag checksum is skipped
/// (e2fsck says "Invalid checksum recovering data block N"), named in a
/// warning, and reads as the volume holds it; the other blocks of its
/// transaction are replayed.
#[test]
fn a_block_failing_its_checksum_is_skipped_and_named() {
    let image = "ext4_csum3_badblock.img";
    let damage =
        std::fs::read_to_string(dir().join(format!("{image}.damage.txt"))).expect("damage");
    let block: u64 = damage
        .split_whitespace()
        .nth(2)
        .and_then(|b| b.parse().ok())
        .expect("fs block N in the damage note");
    let e2fsck =
        std::fs::read_to_string(dir().join(format!("{image}.e2fsck.txt"))).expect("e2fsck");
    assert!(e2fsck.contains(&format!("Invalid checksum recovering data block {block} ")));
    let (raw, r) = replayed(image);
    let warned = r.warnings().iter().any(|w| {
        w.contains(&format!("skipped file-system block {block} ")) && w.contains("checksum")
    });
    assert!(warned, "{:#?}", r.warnings());
    assert!(!r.replayed_blocks().any(|b| b == block));
    let bs = block_size(&raw) as u64;
    let mut ours = vec![0u8; bs as usize];
    r.read_at(&mut ours, block * bs).expect("read");
    assert_eq!(
        ours,
        raw[(block * bs) as usize..((block + 1) * bs) as usize]
    );
    // The undamaged image replays that block.
    let (_, clean) = replayed("ext4_csum3.img");
    assert!(clean.replayed_blocks().any(|b| b == block));
    assert!(clean.warnings().iter().all(|w| !w.contains("skipped")));
}

/// Checksum v2 (debugfs): transaction 1 logs 900 (escaped), 901 and 902;
/// transaction 2 revokes 901; the commit block of transaction 3 is
/// damaged. e2fsck replays 900 and 902 and stops before transaction 3.
#[test]
fn revoke_escape_and_a_bad_commit_end_the_replay_as_e2fsck_does() {
    let e2fsck = std::fs::read_to_string(dir().join("ext4_csum2.img.e2fsck.txt")).expect("e2fsck");
    assert!(e2fsck.contains("Journal transaction 3 was corrupt, replay was aborted"));
    let (raw, r) = replayed("ext4_csum2.img");
    let blocks: Vec<u64> = r.replayed_blocks().collect();
    assert_eq!(blocks, [900, 902]);
    let mut b = [0u8; 1024];
    r.read_at(&mut b, 900 * 1024).expect("read");
    assert_eq!(&b[..4], b"\xc0\x3b\x39\x98", "escaped block restored");
    assert_ne!(&raw[900 * 1024..900 * 1024 + 4], &b[..4]);
    // The map covers the range and says the replayed block is data.
    let map = r.map(899 * 1024, 3 * 1024).expect("map");
    assert_eq!(map.iter().map(|e| e.len).sum::<u64>(), 3 * 1024);
    assert!(map.iter().any(|e| e.offset <= 900 * 1024
        && e.end() >= 901 * 1024
        && e.kind == diskimage::formats::ExtentKind::Data));
    let w = r.warnings().join("\n");
    assert!(w.contains("replayed 2 transactions (1 to 2)"), "{w}");
    assert!(w.contains("1 revoked"), "{w}");
    assert!(
        w.contains("transaction 3") && w.contains("fails its checksum"),
        "{w}"
    );
}

/// The log of the ext3 fixture wraps (logdump: a transaction whose blocks
/// run past the last journal block into the first); the replay follows it.
#[test]
fn the_log_wraps_around() {
    let logdump = std::fs::read_to_string(dir().join("ext3.img.logdump.txt")).expect("logdump");
    let blocks: Vec<u64> = logdump
        .lines()
        .filter(|l| l.starts_with("Found"))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    assert!(
        blocks.windows(2).any(|w| w[1] < w[0]),
        "the fixture's log does not wrap"
    );
    let (_, r) = replayed("ext3.img");
    let w = r.warnings().join("\n");
    let first = logdump
        .lines()
        .find_map(|l| l.strip_prefix("Journal starts at block "))
        .expect("start");
    let (start, seq) = first.split_once(", transaction ").expect("start line");
    assert!(w.contains(&format!("from journal block {start}")), "{w}");
    // Every committed transaction logdump shows, as e2fsck replays them.
    let last = logdump
        .lines()
        .rev()
        .filter(|l| l.contains("(commit block)"))
        .filter_map(|l| {
            l.strip_prefix("Found expected sequence ")?
                .split(',')
                .next()
        })
        .next()
        .expect("a commit");
    assert!(
        w.contains(&format!(" transactions ({seq} to {last})")),
        "{w}"
    );
}

/// `extract` (kernel copy on by default) and `cat` give e2fsck's files:
/// a replayed data block is never copied from where the volume stores
/// the stale one. The replay is reported on stderr.
#[test]
fn cli_extract_and_cat_read_the_replayed_files() {
    let work = tempfile::tempdir().expect("tempdir");
    for image in ["ext3.img", "ext4_csum3.img", "ext4_4k.img"] {
        let img = work.path().join(image);
        gunzip(&dir().join(format!("{image}.gz")), &img);
        let out_dir = work.path().join(format!("{image}.out"));
        let out = diskimage(&[
            "extract",
            "-o",
            out_dir.to_str().expect("utf-8"),
            img.to_str().expect("utf-8"),
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{image}: {err}");
        assert!(
            err.contains("warning: ext journal: replayed"),
            "{image}: {err}"
        );
        for row in rows(&format!("{image}.listing.tsv"))
            .iter()
            .filter(|r| r[1] == "f")
        {
            let data =
                std::fs::read(out_dir.join(row[0].trim_start_matches('/'))).expect("extracted");
            assert_eq!(sha256_bytes(&data), row[8], "{image}: {}", row[0]);
            let cat = diskimage(&["cat", img.to_str().expect("utf-8"), &row[0]]);
            assert!(cat.status.success());
            assert_eq!(sha256_bytes(&cat.stdout), row[8], "{image}: cat {}", row[0]);
        }
    }
}

/// Damaged journals: never a panic, and either an error or a volume
/// whose warnings say what happened. A journal superblock that is not
/// one is not replayed (e2fsck clears such a journal).
#[test]
fn damaged_journals_are_warnings_or_typed_errors() {
    let (bytes, dev) = volume("ext4_csum3.img");
    let first = journal::replay(dev).expect("replay").expect("dirty");
    let start = first.warnings()[0].clone();
    // The journal superblock's volume block: from logdump's first copy.
    let jsb = find(&bytes, b"\xc0\x3b\x39\x98\x00\x00\x00\x04").expect("journal superblock");
    let mut broken = bytes.clone();
    broken[jsb] ^= 0xFF;
    let r = journal::replay(Arc::new(MemoryDevice::new(broken)))
        .expect("replay")
        .expect("dirty");
    assert_eq!(r.replayed_blocks().count(), 0);
    assert!(
        r.warnings()[0].contains("not replayed"),
        "{:?}",
        r.warnings()
    );
    // Each byte of the journal superblock and of the first log blocks
    // flipped in turn: no panic.
    for at in (jsb..jsb + 4 * 1024).step_by(7) {
        let mut b = bytes.clone();
        b[at] ^= 0x5A;
        if let Ok(Some(r)) = journal::replay(Arc::new(MemoryDevice::new(b.clone()))) {
            assert!(!r.warnings().is_empty());
            let _ = diskimage::fs::open_fs(Arc::new(MemoryDevice::new(b)));
        }
    }
    assert!(start.contains("replayed"));
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A journal on an external device (superblock: no journal inode, a
/// journal device number) is not part of the image: a typed
/// "unsupported" error, from `open_fs` too.
#[test]
fn an_external_journal_is_unsupported() {
    let (mut bytes, _) = volume("ext3.img");
    bytes[1024 + 0xE0..1024 + 0xE4].copy_from_slice(&0u32.to_le_bytes());
    bytes[1024 + 0xE4..1024 + 0xE8].copy_from_slice(&0x0811u32.to_le_bytes());
    let e = journal::replay(Arc::new(MemoryDevice::new(bytes.clone()))).expect_err("external");
    assert_eq!(e.kind(), diskimage::fs::ErrorKind::Unsupported);
    assert!(e.to_string().contains("external device"), "{e}");
    let e = diskimage::fs::open_fs(Arc::new(MemoryDevice::new(bytes)))
        .err()
        .expect("error");
    assert_eq!(e.kind(), diskimage::fs::ErrorKind::Unsupported);
}
