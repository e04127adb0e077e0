//! Read throughput of a dynamic VHD (2 MiB blocks, every block allocated,
//! made by `qemu-img convert -O vpc` in the setup) against plain `pread` of
//! the raw file it was made from: 1 MiB sequential and 4 KiB random reads.
//! Target: at least 80% of `pread` on sequential reads (warm cache).
//!
//! `cargo bench --bench vhd` (criterion options after `--`); skipped with a
//! message when `qemu-img` is not installed.

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

/// A file of pseudo-random bytes (xorshift, fixed seed), so nothing is sparse.
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

/// Offsets of the random-read pattern (the same as in `read.rs`).
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
    let vhd = dir.path().join("bench.vhd");
    make_raw(&raw);
    let made = Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "vpc", "-o"])
        .arg("subformat=dynamic,force_size=on")
        .arg(&raw)
        .arg(&vhd)
        .status();
    if !made.is_ok_and(|s| s.success()) {
        eprintln!("vhd bench skipped: qemu-img could not make the dynamic VHD");
        return;
    }
    let file = File::open(&raw).expect("open");
    let image = open(&vhd, &OpenOptions::default()).expect("open vhd");
    assert_eq!(image.size(), IMAGE_SIZE);
    let readers: [(&str, &ReadFn); 2] = [
        ("plain-pread", &|b, o| {
            file.read_exact_at(b, o).expect("pread")
        }),
        ("vhd-dynamic", &|b, o| image.read_at(b, o).expect("read")),
    ];

    let mut g = c.benchmark_group("vhd-sequential-1MiB");
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
    let mut g = c.benchmark_group("vhd-random-4KiB");
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
