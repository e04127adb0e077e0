//! Reads a whole image in 1 MiB sequential `read_at` calls and prints the
//! throughput: `cargo run --release -p diskimage-formats --example seqread -- IMAGE [--format raw]`.
//! Used by `scripts/vmdk-perf.sh` to compare a VMDK with plain `pread` of
//! the same bytes in a raw file (`--format raw`).

use std::path::Path;
use std::time::Instant;

use diskimage_formats::{open, BlockDevice, Format, OpenOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = args.first().ok_or("usage: seqread IMAGE [--format raw]")?;
    let mut options = OpenOptions::default();
    if args.iter().any(|a| a == "raw") {
        options.format = Some(Format::Raw);
    }
    let image = open(Path::new(path), &options)?;
    let size = image.size();
    // A page-aligned buffer: the kernel copies into a `malloc`ed one (16
    // bytes past a page) 2-3x slower (`benches/README.md`).
    let mut storage = vec![0u8; (1 << 20) + 4096];
    let start = storage.as_ptr().align_offset(4096).min(4096);
    let buf = &mut storage[start..start + (1 << 20)];
    let start = Instant::now();
    let mut pos = 0u64;
    let mut sum = 0u64;
    while pos < size {
        let n = (size - pos).min(buf.len() as u64) as usize;
        image.read_at(&mut buf[..n], pos)?;
        sum = sum.wrapping_add(u64::from(buf[0]));
        pos += n as u64;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{:.1} MiB/s {secs:.3} s ({sum})",
        size as f64 / secs / 1048576.0
    );
    Ok(())
}
