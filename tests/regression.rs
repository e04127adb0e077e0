//! One test per bug found, named after what it pins. Add one with every fix.

use diskimage::{open, BlockDevice, OpenOptions};

use crate::common::{gunzip_dir, repo};

/// qemu-img pads a raw file to a multiple of 512 bytes; we must not: the
/// last read of a 100,001-byte raw image ends at byte 100,001, and a read
/// of the padding qemu would show is an error.
#[test]
fn raw_size_not_a_multiple_of_512_is_kept_exact() {
    let dir = tempfile::tempdir().expect("tempdir");
    gunzip_dir(&repo().join("fixtures/foundation"), dir.path());
    let img = open(&dir.path().join("odd.raw"), &OpenOptions::default()).expect("open");
    assert_eq!(img.size(), 100_001);
    let mut b = [0u8; 2];
    img.read_at(&mut b[..1], 100_000).expect("last byte");
    assert!(img.read_at(&mut b, 100_000).is_err());
}

/// Each chain link opens its parent from inside its own open: 255 links
/// of VMDK descriptors overflowed a 2 MiB thread stack in a debug build
/// (found by the hostile-image table). The chain now moves to a fresh
/// thread every few links, so the depth limit is reached with a typed error.
#[test]
fn a_chain_at_the_depth_limit_does_not_overflow_a_small_stack() {
    use diskimage::formats::open_in_memory;
    use std::path::{Path, PathBuf};
    use std::sync::Arc;
    let mut files = diskimage::formats::fuzzing::vmdk_descriptor_chain(
        257,
        "monolithicFlat",
        "RW 1 FLAT \"flat.bin\" 0",
    );
    files.insert(PathBuf::from("flat.bin"), Arc::from(vec![0u8; 512]));
    let e = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            open_in_memory(Path::new("l0.vmdk"), &files, &OpenOptions::default())
                .map(|_| ())
                .unwrap_err()
        })
        .expect("spawn")
        .join()
        .expect("no stack overflow, no panic");
    assert_eq!(e.kind(), diskimage::ErrorKind::LimitExceeded, "{e}");
    assert!(e.to_string().contains("parent chain depth"), "{e}");
}

/// fs_fat fuzzing: a FAT16 subdirectory entry whose first cluster is 0
/// opens the root directory again (the `fatfs` crate reads cluster 0 as
/// the root), so `ls -r` walked the root's subdirectories through the root
/// 256 levels deep, branching at every level (1.5 million lines, 9 s for
/// a 45 KB image; the fuzz walk timed out). Such a subdirectory does not
/// start with its `.` entry: it is reported and not entered.
#[test]
fn fat_subdirectory_at_cluster_0_is_not_a_way_back_to_the_root() {
    let seed =
        crate::common::repo().join("fuzz/corpus/fs_fat/subdir-at-cluster-0-loops-through-root");
    let out = crate::common::diskimage(&["ls", "-r", &seed.to_string_lossy()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.lines().count() < 200,
        "{} lines",
        stdout.lines().count()
    );
    assert!(
        stderr.contains("does not start with its '.' entry"),
        "{stderr}"
    );
}
