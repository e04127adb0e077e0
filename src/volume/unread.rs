//! Partition schemes recognised but not read: Sun disk labels, SGI volume
//! headers and Atari AHDI root sectors. A disk holding one is reported
//! with its scheme and an unsupported note, never as "no partition
//! table"; its partitions are not listed.
//!
//! - Sun (SPARC VTOC, `sun_disklabel`): sector 0, magic `0xDABE` (u16
//!   big-endian at 508), and the XOR of the sector's 256 big-endian words
//!   is 0 (checksum at 510).
//! - SGI (`sgi_disklabel`, IRIX "dvh"): sector 0, magic `0x0BE5A941` (u32
//!   big-endian at 0), and the sum of the header's 128 big-endian u32
//!   words is 0.
//! - Atari AHDI: sector 0 holds the disk size in sectors (`hd_siz`, u32
//!   big-endian at 0x1C2) and four 12-byte entries from 0x1C6: flags (bit
//!   0: in use), a three-character id (`GEM`, `BGM`, `XGM`, `LNX`, ...),
//!   start and size in sectors (u32 big-endian). It has no magic, so it is
//!   taken only when an entry is in use and every entry in use has an
//!   alphanumeric id and lies within `hd_siz`, which lies within the disk.

use diskimage_formats::bytes::{be_u16, be_u32, has_at};
use diskimage_formats::BlockDevice;

use super::read_bytes;
use crate::error::{Result, Scheme};

/// Sun label magic at byte 508.
pub const SUN_MAGIC: u16 = 0xDABE;
/// SGI volume header magic at byte 0.
pub const SGI_MAGIC: u32 = 0x0BE5_A941;

fn sun(s: &[u8]) -> bool {
    be_u16(s, 508) == Some(SUN_MAGIC)
        && s.chunks_exact(2)
            .map(|w| be_u16(w, 0).unwrap_or(0))
            .fold(0u16, |x, w| x ^ w)
            == 0
}

fn sgi(s: &[u8]) -> bool {
    be_u32(s, 0) == Some(SGI_MAGIC)
        && s.chunks_exact(4)
            .map(|w| be_u32(w, 0).unwrap_or(0))
            .fold(0u32, u32::wrapping_add)
            == 0
}

fn atari(s: &[u8], disk_sectors: u64) -> bool {
    let hd_siz = u64::from(be_u32(s, 0x1C2).unwrap_or(0));
    if hd_siz == 0 || hd_siz > disk_sectors {
        return false;
    }
    let mut used = 0;
    for i in 0..4 {
        let e = 0x1C6 + i * 12;
        let flags = s.get(e).copied().unwrap_or(0);
        if flags & 1 == 0 {
            continue;
        }
        let id_ok = s
            .get(e + 1..e + 4)
            .is_some_and(|id| id.iter().all(u8::is_ascii_alphanumeric));
        let start = u64::from(be_u32(s, e + 4).unwrap_or(0));
        let size = u64::from(be_u32(s, e + 8).unwrap_or(0));
        if !id_ok || start == 0 || size == 0 || start + size > hd_siz {
            return false;
        }
        used += 1;
    }
    used > 0
}

/// Which of the schemes this module knows sector 0 of `dev` holds.
/// `fs_found` says whether a file system was detected at the start of the
/// disk: the Atari test, which has no magic, is skipped then.
pub fn detect(dev: &dyn BlockDevice, fs_found: bool) -> Result<Option<Scheme>> {
    if dev.size() < 512 {
        return Ok(None);
    }
    let s = read_bytes(dev, 0, 512, Scheme::WholeDisk)?;
    let disk_sectors = dev.size() / 512;
    Ok(if sun(&s) {
        Some(Scheme::Sun)
    } else if sgi(&s) {
        Some(Scheme::Sgi)
    } else if !fs_found && !has_at(&s, 510, &[0x55, 0xAA]) && atari(&s, disk_sectors) {
        Some(Scheme::Atari)
    } else {
        None
    })
}

/// The note a disk with an unread scheme gets.
pub fn note(scheme: Scheme) -> String {
    let what = match scheme {
        Scheme::Sun => "a Sun disk label (magic 0xDABE at byte 508)",
        Scheme::Sgi => "an SGI volume header (magic 0x0BE5A941 at byte 0)",
        _ => "an Atari AHDI root sector (partition entries from byte 0x1C6)",
    };
    format!("sector 0 holds {what}: this partition scheme is recognised but not read by this version, so its partitions are not listed")
}

#[cfg(test)]
mod tests {
    use super::*;
    use diskimage_formats::MemoryDevice;

    fn dev(s: Vec<u8>) -> MemoryDevice {
        let mut d = s;
        d.resize(1 << 20, 0);
        MemoryDevice::new(d)
    }

    #[test]
    fn sun_needs_magic_and_checksum() {
        let mut s = vec![0u8; 512];
        s[..4].copy_from_slice(b"disk");
        s[508..510].copy_from_slice(&SUN_MAGIC.to_be_bytes());
        let x = s
            .chunks_exact(2)
            .fold(0u16, |x, w| x ^ u16::from_be_bytes([w[0], w[1]]));
        s[510..512].copy_from_slice(&x.to_be_bytes());
        assert_eq!(detect(&dev(s.clone()), false).unwrap(), Some(Scheme::Sun));
        s[0] ^= 1;
        assert_eq!(detect(&dev(s), false).unwrap(), None);
    }

    #[test]
    fn sgi_needs_magic_and_sum() {
        let mut s = vec![0u8; 512];
        s[..4].copy_from_slice(&SGI_MAGIC.to_be_bytes());
        s[8..12].copy_from_slice(&7u32.to_be_bytes());
        let sum = s.chunks_exact(4).fold(0u32, |a, w| {
            a.wrapping_add(u32::from_be_bytes([w[0], w[1], w[2], w[3]]))
        });
        s[4..8].copy_from_slice(&0u32.wrapping_sub(sum).to_be_bytes());
        assert_eq!(detect(&dev(s.clone()), false).unwrap(), Some(Scheme::Sgi));
        s[9] = 1;
        assert_eq!(detect(&dev(s), false).unwrap(), None);
    }

    #[test]
    fn atari_entries_must_make_sense() {
        let mut s = vec![0u8; 512];
        s[0x1C2..0x1C6].copy_from_slice(&2048u32.to_be_bytes());
        s[0x1C6] = 1;
        s[0x1C7..0x1CA].copy_from_slice(b"GEM");
        s[0x1CA..0x1CE].copy_from_slice(&2u32.to_be_bytes());
        s[0x1CE..0x1D2].copy_from_slice(&100u32.to_be_bytes());
        assert_eq!(detect(&dev(s.clone()), false).unwrap(), Some(Scheme::Atari));
        assert_eq!(detect(&dev(s.clone()), true).unwrap(), None);
        let mut bad = s.clone();
        bad[0x1C8] = 0;
        assert_eq!(detect(&dev(bad), false).unwrap(), None);
        let mut bad = s;
        bad[0x1CE..0x1D2].copy_from_slice(&5000u32.to_be_bytes());
        assert_eq!(detect(&dev(bad), false).unwrap(), None);
        assert_eq!(detect(&dev(vec![0u8; 512]), false).unwrap(), None);
    }
}
