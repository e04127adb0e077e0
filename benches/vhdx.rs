//! VHDX read throughput next to the physical baseline (plain `pread` of the
//! raw file the VHDX was converted from): 1 MiB sequential and 4 KiB random
//! reads of a 256 MiB dynamic VHDX (32 MiB and 1 MiB blocks) made by
//! `qemu-img convert` in the setup. Skipped when qemu-img is missing.
//!
//! `cargo bench --bench vhdx` (criterion options after `--`).

#![allow(missing_docs)] // criterion's macros generate undocumented items

use std::fs::File;
use std::hint::black_box;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use diskimage::{open, BlockDevice, OpenOptions};

/// One way of reading `buf.len()` bytes at an offset.
type ReadFn<'a> = dyn Fn(&mut [u8], u64) + 'a;

const IMAGE_SIZE: u64 = 256 << 20;
const SEQ_CHUNK: usize = 1 << 20;
const RANDOM_CHUNK: usize = 4096;
const RANDOM_READS: u64 = 4096;

/// A raw file of pseudo-random bytes (xorshift, fixed seed), so nothing is sparse.
fn make_raw(path: &Path) {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut buf = vec![0u8; 1 << 20];
    let f = File::create(path).expect("create bench image");
    for block in 0..IMAGE_SIZE / buf.len() as u64 {
        for word in buf.chunks_exact_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.copy_from_slice(&state.to_le_bytes());
        }
        f.write_all_at(&buf, block * buf.len() as u64)
            .expect("write bench image");
    }
}

fn to_vhdx(raw: &Path, out: &Path, block_size: &str) -> bool {
    Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "vhdx", "-o"])
        .arg(format!("subformat=dynamic,block_size={block_size}"))
        .arg(raw)
        .arg(out)
        .status()
        .is_ok_and(|s| s.success())
}

/// Offsets of the random-read pattern (same for every reader).
fn random_offsets() -> Vec<u64> {
    let mut state = 12345u64;
    (0..RANDOM_READS)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) % (IMAGE_SIZE / RANDOM_CHUNK as u64) * RANDOM_CHUNK as u64
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let raw = dir.path().join("bench.img");
    make_raw(&raw);
    let v32 = dir.path().join("bench-32m.vhdx");
    let v1 = dir.path().join("bench-1m.vhdx");
    if !to_vhdx(&raw, &v32, "32M") || !to_vhdx(&raw, &v1, "1M") {
        eprintln!("vhdx bench skipped: qemu-img convert failed or is missing");
        return;
    }
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

    let mut g = c.benchmark_group("vhdx-sequential-1MiB");
    g.throughput(Throughput::Bytes(IMAGE_SIZE));
    g.sample_size(10);
    for (name, read) in &readers {
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            let mut buf = vec![0u8; SEQ_CHUNK];
            b.iter(|| {
                let mut off = 0;
                while off < IMAGE_SIZE {
                    read(&mut buf, off);
                    off += SEQ_CHUNK as u64;
                }
                black_box(&buf);
            });
        });
    }
    g.finish();

    let offsets = random_offsets();
    let mut g = c.benchmark_group("vhdx-random-4KiB");
    g.throughput(Throughput::Bytes(RANDOM_READS * RANDOM_CHUNK as u64));
    for (name, read) in &readers {
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            let mut buf = vec![0u8; RANDOM_CHUNK];
            b.iter(|| {
                for &o in &offsets {
                    read(&mut buf, o);
                }
                black_box(&buf);
            });
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
