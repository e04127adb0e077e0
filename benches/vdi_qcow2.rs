//! Read throughput of a dynamic VDI, a fixed VDI (1 MiB blocks) and an
//! uncompressed QCOW2 (64 KiB clusters), every block allocated, made by
//! `qemu-img convert` in the setup, against plain `pread` of the raw file
//! they were made from: 1 MiB sequential and 4 KiB random reads. Target:
//! at least 80% of `pread` on sequential reads (warm cache).
//!
//! `cargo bench --bench vdi_qcow2` (criterion options after `--`); skipped
//! with a message when `qemu-img` is not installed.

#![allow(missing_docs)] // criterion's macros generate undocumented items

mod common;

use std::fs::File;
use std::os::unix::fs::FileExt;

use common::{image_size, make_raw, qemu_convert, run_groups, ReadFn};
use criterion::{criterion_group, criterion_main, Criterion};
use diskimage::{open, BlockDevice, DiskImage, OpenOptions};

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let raw = dir.path().join("bench.img");
    make_raw(&raw);
    let mut images: Vec<(&str, DiskImage)> = Vec::new();
    for (name, file, format, options) in [
        ("vdi-dynamic", "bench.vdi", "vdi", "static=off"),
        ("vdi-fixed", "fixed.vdi", "vdi", "static=on"),
        ("qcow2", "bench.qcow2", "qcow2", "cluster_size=65536"),
    ] {
        let path = dir.path().join(file);
        if !qemu_convert(&raw, &path, format, options) {
            eprintln!("vdi_qcow2 bench skipped: qemu-img could not make {file}");
            return;
        }
        let image = open(&path, &OpenOptions::default()).expect("open image");
        assert_eq!(image.size(), image_size());
        images.push((name, image));
    }
    let file = File::open(&raw).expect("open");
    let pread = |b: &mut [u8], o: u64| file.read_exact_at(b, o).expect("pread");
    let reads: Vec<_> = images
        .iter()
        .map(|(name, image)| {
            (*name, move |b: &mut [u8], o: u64| {
                image.read_at(b, o).expect("read")
            })
        })
        .collect();
    let mut readers: Vec<(&str, &ReadFn)> = vec![("plain-pread", &pread)];
    for (name, read) in &reads {
        readers.push((name, read));
    }
    run_groups(c, "vdi-qcow2", &readers);
}

criterion_group!(benches, bench);
criterion_main!(benches);
