//! Read throughput through `BlockDevice` against the physical baseline:
//! plain `pread` of the same file, and pread against mmap. Every format
//! bench is compared with the `pread` numbers here.
//!
//! `cargo bench --bench read` (criterion options after `--`).

#![allow(missing_docs)] // criterion's macros generate undocumented items

mod common;

use std::fs::File;
use std::os::unix::fs::FileExt;

use common::{make_raw, run_groups, ReadFn};
use criterion::{criterion_group, criterion_main, Criterion};
use diskimage::{open, BlockDevice, OpenOptions};

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bench.img");
    make_raw(&path);
    let file = File::open(&path).expect("open");
    let pread = open(&path, &OpenOptions::default()).expect("open pread");
    let mmap = open(&path, &OpenOptions::new().mmap(true)).expect("open mmap");
    let readers: [(&str, &ReadFn); 3] = [
        ("plain-pread", &|b, o| {
            file.read_exact_at(b, o).expect("pread")
        }),
        ("raw-pread", &|b, o| pread.read_at(b, o).expect("read")),
        ("raw-mmap", &|b, o| mmap.read_at(b, o).expect("read")),
    ];
    run_groups(c, "raw", &readers);
}

criterion_group!(benches, bench);
criterion_main!(benches);
