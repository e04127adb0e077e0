//! Read throughput of a dynamic VHD (2 MiB blocks, every block allocated,
//! made by `qemu-img convert -O vpc` in the setup) against plain `pread` of
//! the raw file it was made from: 1 MiB sequential and 4 KiB random reads.
//! Target: at least 80% of `pread` on sequential reads (warm cache).
//!
//! `cargo bench --bench vhd` (criterion options after `--`); skipped with a
//! message when `qemu-img` is not installed.

#![allow(missing_docs)] // criterion's macros generate undocumented items

mod common;

use std::fs::File;
use std::os::unix::fs::FileExt;

use common::{image_size, make_raw, qemu_convert, run_groups, ReadFn};
use criterion::{criterion_group, criterion_main, Criterion};
use diskimage::{open, BlockDevice, OpenOptions};

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let raw = dir.path().join("bench.img");
    let vhd = dir.path().join("bench.vhd");
    make_raw(&raw);
    if !qemu_convert(&raw, &vhd, "vpc", "subformat=dynamic,force_size=on") {
        eprintln!("vhd bench skipped: qemu-img could not make the dynamic VHD");
        return;
    }
    let file = File::open(&raw).expect("open");
    let image = open(&vhd, &OpenOptions::default()).expect("open vhd");
    assert_eq!(image.size(), image_size());
    let readers: [(&str, &ReadFn); 2] = [
        ("plain-pread", &|b, o| {
            file.read_exact_at(b, o).expect("pread")
        }),
        ("vhd-dynamic", &|b, o| image.read_at(b, o).expect("read")),
    ];
    run_groups(c, "vhd", &readers);
}

criterion_group!(benches, bench);
criterion_main!(benches);
