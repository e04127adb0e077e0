//! Writes a deterministic series of writes into a writable image, flushing
//! every few writes: the writer the crash-consistency tests kill.
//!
//! ```text
//! cargo run --example write_loop -- IMAGE SEED COUNT FLUSH_EVERY SLOT
//! ```
//!
//! Write `i` (from 0) goes to slot `i` of the disk (`SLOT` bytes each,
//! slots never overlap), at an unaligned offset within it, with bytes and
//! a length drawn from SplitMix64 seeded with `SEED` and `i`
//! ([`write_of`]). After each flush it prints `flushed N` (N writes are
//! durable) on standard output.

use std::io::Write;
use std::path::PathBuf;

use diskimage::formats::{open_writable, OpenOptions};

/// SplitMix64, so the test that checks the image can draw the same writes.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Write `i` of series `seed` in slots of `slot` bytes: (offset, bytes).
fn write_of(seed: u64, i: u64, slot: u64) -> (u64, Vec<u8>) {
    let mut s = seed ^ i.wrapping_mul(0x1000_0000_01b3);
    let skew = splitmix(&mut s) % (slot / 4);
    let len = 1 + splitmix(&mut s) % (slot - skew);
    let mut data = Vec::with_capacity(len as usize);
    while (data.len() as u64) < len {
        data.extend_from_slice(&splitmix(&mut s).to_le_bytes());
    }
    data.truncate(len as usize);
    (i * slot + skew, data)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [image, seed, count, every, slot] = args.as_slice() else {
        return Err("usage: write_loop IMAGE SEED COUNT FLUSH_EVERY SLOT".into());
    };
    let (seed, count, every, slot): (u64, u64, u64, u64) =
        (seed.parse()?, count.parse()?, every.parse()?, slot.parse()?);
    let device = open_writable(&PathBuf::from(image), &OpenOptions::default())?;
    let mut out = std::io::stdout().lock();
    for i in 0..count {
        let (offset, data) = write_of(seed, i, slot);
        device.write_at(&data, offset)?;
        if (i + 1) % every.max(1) == 0 || i + 1 == count {
            device.flush()?;
            writeln!(out, "flushed {}", i + 1)?;
            out.flush()?;
        }
    }
    Ok(())
}
