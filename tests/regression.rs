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
