//! Driving a writer the way a fuzz harness does: the input is a whole
//! image file, written to a scratch folder, opened with
//! [`open_writable`](crate::write::open_writable), written at a few places
//! (its start, inside and across blocks, unaligned, the last byte), read
//! back after each write and flushed; then opened again for reading. An
//! error anywhere is fine; a write that completes and then reads back
//! other bytes is a bug. Used by the `vmdk_write` and `write_vhd` targets
//! and by the seed replay in `cargo test`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::block_device::BlockDevice;
use crate::options::OpenOptions;
use crate::probe::open;
use crate::write::{open_writable, WritableDevice};

/// Bytes written by one run at most (a claimed multi-terabyte disk is
/// written at a few places only).
const PATTERN_BYTES: usize = 70_000;

/// A scratch file no other run (thread or process) uses.
fn scratch(name: &str) -> Option<PathBuf> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "diskimage-fuzz-write-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).ok()?;
    Some(dir.join(name))
}

/// Writes `bytes` as a file called `name` (its extension picks the
/// format), opens it for writing with `options`, writes, reads back and
/// flushes. Returns a description of the first completed write that read
/// back different bytes, or `None`.
pub fn write_and_read_back(name: &str, bytes: &[u8], options: &OpenOptions) -> Option<String> {
    let path = scratch(name)?;
    let mut finding = None;
    if std::fs::write(&path, bytes).is_ok() {
        if let Ok(dev) = open_writable(&path, options) {
            finding = write_places(dev.as_ref()).err();
            let _ = dev.flush();
        }
        if let Ok(image) = open(&path, options) {
            let mut buf = vec![0u8; 4096.min(usize::try_from(image.size()).unwrap_or(0))];
            let _ = image.device().read_at(&mut buf, 0);
        }
    }
    if let Some(dir) = path.parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
    finding
}

/// Writes a pattern at the device's start, across its first blocks, in
/// its middle (unaligned) and at its last byte, reading each write back.
/// Returns how many writes completed and how many were tried (places
/// past the end are skipped), or a description of the first completed
/// write that read back different bytes.
pub fn write_places(dev: &dyn WritableDevice) -> Result<(usize, usize), String> {
    let size = dev.size();
    let pattern: Vec<u8> = (0..PATTERN_BYTES as u32)
        .map(|i| (i % 251) as u8 + 1)
        .collect();
    let places = [
        (0u64, 512usize),
        (65_000, PATTERN_BYTES),
        (size / 2 + 7, 1500),
        (size.saturating_sub(1), 1),
    ];
    let (mut done, mut tried) = (0, 0);
    for (at, len) in places {
        let len = len.min(usize::try_from(size.saturating_sub(at)).unwrap_or(0));
        let buf = pattern.get(..len).unwrap_or_default();
        if len == 0 {
            continue;
        }
        tried += 1;
        if dev.write_at(buf, at).is_ok() {
            done += 1;
            let mut back = vec![0u8; len];
            if dev.read_at(&mut back, at).is_ok() && back != buf {
                return Err(format!(
                    "a completed write of {len} bytes at {at} reads back different bytes"
                ));
            }
        }
    }
    Ok((done, tried))
}

/// The `vmdk_write` target: `data` is a whole VMDK file.
pub fn vmdk_target(data: &[u8]) -> Option<String> {
    let options = OpenOptions::new()
        .format(Some(crate::Format::Vmdk))
        .no_parents(true);
    write_and_read_back("fuzz.vmdk", data, &options)
}

/// The `write_vhd` target: the first byte picks the format (bit 0 set:
/// VHDX, the rest a patch list for
/// [`vhdx_input::expand_fuzz_input`](super::vhdx_input::expand_fuzz_input);
/// clear: VHD, the rest the file's bytes).
pub fn vhd_target(data: &[u8]) -> Option<String> {
    let (&kind, rest) = data.split_first()?;
    let (name, bytes) = if kind & 1 == 1 {
        ("fuzz.vhdx", super::vhdx_input::expand_fuzz_input(rest))
    } else {
        ("fuzz.vhd", rest.to_vec())
    };
    write_and_read_back(name, &bytes, &OpenOptions::default())
}
