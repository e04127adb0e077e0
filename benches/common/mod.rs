//! What every read bench shares: the seeded raw image, the random-read
//! pattern, and the two groups (1 MiB sequential, 4 KiB random) run over a
//! list of readers, plain `pread` of the raw file always among them.
//! (Each bench binary uses part of it, hence the `dead_code` allowance.)

#![allow(dead_code)]

use std::fs::File;
use std::hint::black_box;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use criterion::{BenchmarkId, Criterion, Throughput};

/// One way of reading `buf.len()` bytes at an offset.
pub type ReadFn<'a> = dyn Fn(&mut [u8], u64) + 'a;

/// Size of the bench image in bytes: `DISKIMAGE_BENCH_MIB` MiB, 256 by
/// default.
pub fn image_size() -> u64 {
    std::env::var("DISKIMAGE_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|&m| m > 0)
        .unwrap_or(256)
        << 20
}
const SEQ_CHUNK: usize = 1 << 20;
const RANDOM_CHUNK: usize = 4096;
const RANDOM_READS: u64 = 4096;

/// A file of pseudo-random bytes (xorshift, fixed seed), so nothing is sparse.
pub fn make_raw(path: &Path) {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut buf = vec![0u8; 1 << 20];
    let f = File::create(path).expect("create bench image");
    for block in 0..image_size() / buf.len() as u64 {
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

/// A file of text-like bytes (seeded words and spaces, a little different
/// in every MiB): compressible as real file-system data is, for the
/// compressed formats (streamOptimized VMDK).
pub fn make_text_raw(path: &Path) {
    const WORDS: [&[u8]; 10] = [
        b"disk", b"grain", b"table", b"extent", b"sector", b"vmware", b"stream", b"delta",
        b"alpha", b"omega",
    ];
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut block = Vec::with_capacity((1 << 20) + 16);
    while block.len() < 1 << 20 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        block.extend_from_slice(WORDS[(state % 10) as usize]);
        block.push(b' ');
    }
    block.truncate(1 << 20);
    let f = File::create(path).expect("create bench image");
    for i in 0..image_size() >> 20 {
        block.rotate_left(1);
        f.write_all_at(&block, i << 20).expect("write bench image");
    }
}

/// Converts `raw` with `qemu-img convert -O FORMAT -o OPTIONS`; false when
/// qemu-img is missing or fails (the bench then says it is skipped).
pub fn qemu_convert(raw: &Path, out: &Path, format: &str, options: &str) -> bool {
    Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", format, "-o", options])
        .arg(raw)
        .arg(out)
        .status()
        .is_ok_and(|s| s.success())
}

/// Offsets of the random-read pattern (the same for every reader and bench).
fn random_offsets() -> Vec<u64> {
    let mut state = 12345u64;
    (0..RANDOM_READS)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) % (image_size() / RANDOM_CHUNK as u64) * RANDOM_CHUNK as u64
        })
        .collect()
}

/// Runs `PREFIX-sequential-1MiB` and `PREFIX-random-4KiB` over the readers.
pub fn run_groups(c: &mut Criterion, prefix: &str, readers: &[(&str, &ReadFn)]) {
    let mut g = c.benchmark_group(format!("{prefix}-sequential-1MiB"));
    g.throughput(Throughput::Bytes(image_size()));
    g.sample_size(10);
    for (name, read) in readers {
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            let mut buf = vec![0u8; SEQ_CHUNK];
            b.iter(|| {
                let mut off = 0;
                while off < image_size() {
                    read(&mut buf, off);
                    off += SEQ_CHUNK as u64;
                }
                black_box(&buf);
            });
        });
    }
    g.finish();

    let offsets = random_offsets();
    let mut g = c.benchmark_group(format!("{prefix}-random-4KiB"));
    g.throughput(Throughput::Bytes(RANDOM_READS * RANDOM_CHUNK as u64));
    for (name, read) in readers {
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

/// Runs `PREFIX-open`: opening each image (headers, tables, grain
/// directory or BAT read and checked) and dropping it, the files warm in
/// the page cache.
pub fn run_open(c: &mut Criterion, prefix: &str, images: &[(&str, &Path)]) {
    let mut g = c.benchmark_group(format!("{prefix}-open"));
    for (name, path) in images {
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                black_box(diskimage::open(path, &diskimage::OpenOptions::default()).expect("open"));
            });
        });
    }
    g.finish();
}
