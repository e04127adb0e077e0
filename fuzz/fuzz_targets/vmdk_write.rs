//! The VMDK writer's own parsing of an image opened for writing (header,
//! embedded descriptor, grain directory and its redundant copy, grain
//! tables): the input is a whole hosted sparse file, written to a scratch
//! file, opened with `open_writable`, written at a few offsets (inside a
//! grain, across grains, the last byte), flushed and read back. An error
//! is fine; a panic, or a completed write that does not read back, is a
//! bug.
#![no_main]

use diskimage_formats::write::open_writable;
use diskimage_formats::{BlockDevice, Format, OpenOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = std::env::temp_dir().join(format!("vmdk-write-fuzz-{}.vmdk", std::process::id()));
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let options = OpenOptions::new().format(Some(Format::Vmdk)).no_parents(true);
    if let Ok(dev) = open_writable(&path, &options) {
        let size = dev.size();
        let pattern: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8 + 1).collect();
        for (at, len) in [(0u64, 512usize), (65_000, 70_000), (size.saturating_sub(1), 1)] {
            let len = len.min(usize::try_from(size.saturating_sub(at)).unwrap_or(0));
            // Bounded: a claimed multi-terabyte disk is written at most 70 KB.
            let buf = &pattern[..len];
            if dev.write_at(buf, at).is_ok() {
                let mut back = vec![0u8; len];
                if dev.read_at(&mut back, at).is_ok() {
                    assert_eq!(back, buf, "a completed write reads back different bytes");
                }
            }
        }
        let _ = dev.flush();
    }
    let _ = std::fs::remove_file(&path);
});
