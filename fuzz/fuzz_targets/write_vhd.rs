//! The VHD and VHDX writers' open and write paths on hostile files: the
//! input's first byte picks the format (bit 0 set: VHDX, the rest a patch
//! list expanded by `diskimage_formats::fuzzing::vhdx_input::expand_fuzz_input`;
//! clear: VHD, the rest the file's bytes). The file is written to a
//! temporary folder, opened with `open_writable`, and written at its
//! start, middle (unaligned) and last byte, read back and flushed; then
//! read again through `open`. Seeds: `corpus/write_vhd/` (small dynamic
//! and fixed VHDs made by the writer, a few writes in them).
#![no_main]

use diskimage_formats::fuzzing::vhdx_input::expand_fuzz_input;
use diskimage_formats::{open, open_writable, BlockDevice, OpenOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    let (name, bytes) = if kind & 1 == 1 {
        ("fuzz.vhdx", expand_fuzz_input(rest))
    } else {
        ("fuzz.vhd", rest.to_vec())
    };
    let dir = std::env::temp_dir().join(format!("diskimage-fuzz-write-{}", std::process::id()));
    if std::fs::create_dir_all(&dir).is_err() {
        return;
    }
    let path = dir.join(name);
    if std::fs::write(&path, &bytes).is_err() {
        return;
    }
    let options = OpenOptions::default();
    if let Ok(dev) = open_writable(&path, &options) {
        let size = dev.size();
        let payload = [0x5au8; 1500];
        for offset in [0, size / 2 + 7, size.saturating_sub(1)] {
            let n = usize::try_from(size.saturating_sub(offset)).unwrap_or(0).min(payload.len());
            if dev.write_at(&payload[..n], offset).is_ok() {
                let mut back = vec![0u8; n];
                if dev.read_at(&mut back, offset).is_ok() {
                    assert_eq!(back, payload[..n], "a write reads back");
                }
            }
        }
        let _ = dev.flush();
    }
    if let Ok(image) = open(&path, &options) {
        let mut buf = vec![0u8; 4096.min(usize::try_from(image.size()).unwrap_or(0))];
        let _ = image.device().read_at(&mut buf, 0);
    }
    let _ = std::fs::remove_file(&path);
});
