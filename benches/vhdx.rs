//! VHDX read throughput next to the physical baseline (plain `pread` of the
//! raw file the VHDX was converted from): 1 MiB sequential and 4 KiB random
//! reads of a 256 MiB dynamic VHDX (32 MiB and 1 MiB blocks) made by
//! `qemu-img convert` in the setup, and the time to open each. Skipped when
//! qemu-img is missing.
//!
//! `cargo bench --bench vhdx` (criterion options after `--`).

#![allow(missing_docs)] // criterion's macros generate undocumented items

mod common;

use std::fs::File;
use std::os::unix::fs::FileExt;

use common::{make_raw, qemu_convert, run_groups, run_open, ReadFn};
use criterion::{criterion_group, criterion_main, Criterion};
use diskimage::{open, BlockDevice, OpenOptions};

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let raw = dir.path().join("bench.img");
    make_raw(&raw);
    let v32 = dir.path().join("bench-32m.vhdx");
    let v1 = dir.path().join("bench-1m.vhdx");
    if !qemu_convert(&raw, &v32, "vhdx", "subformat=dynamic,block_size=32M")
        || !qemu_convert(&raw, &v1, "vhdx", "subformat=dynamic,block_size=1M")
    {
        eprintln!("vhdx bench skipped: qemu-img convert failed or is missing");
        return;
    }
    run_open(
        c,
        "vhdx",
        &[("vhdx-dynamic-32M", &v32), ("vhdx-dynamic-1M", &v1)],
    );
    let file = File::open(&raw).expect("open");
    let img32 = open(&v32, &OpenOptions::default()).expect("open vhdx 32M");
    let img1 = open(&v1, &OpenOptions::default()).expect("open vhdx 1M");
    let readers: [(&str, &ReadFn); 3] = [
        ("plain-pread", &|b, o| {
            file.read_exact_at(b, o).expect("pread")
        }),
        ("vhdx-dynamic-32M", &|b, o| {
            img32.read_at(b, o).expect("read")
        }),
        ("vhdx-dynamic-1M", &|b, o| img1.read_at(b, o).expect("read")),
    ];
    run_groups(c, "vhdx", &readers);
}

criterion_group!(benches, bench);
criterion_main!(benches);
