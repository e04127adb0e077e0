//! The NTFS volume label: the `$VOLUME_NAME` attribute (0x60) of the
//! `$Volume` file, MFT record 3, as blkid reads it.
//!
//! The record is read at the MFT's start plus three records (`$Volume` is
//! always within the MFT's first extent), its update sequence applied
//! when it checks out (blkid reads the record raw, which differs only for
//! a label straddling a sector's last two bytes), and its attributes walked
//! within the record. Anything unreadable or inconsistent gives no label,
//! never an error: detection goes on with the type and serial.

use diskimage_formats::bytes::{le_u16, le_u32, le_u64};
use diskimage_formats::BlockDevice;

/// The MFT record of `$Volume`.
const VOLUME_RECORD: u64 = 3;
/// The `$VOLUME_NAME` attribute type.
const VOLUME_NAME: u32 = 0x60;
/// The end-of-attributes marker.
const END: u32 = 0xFFFF_FFFF;
/// Largest cluster and MFT record size accepted (2 MiB and 64 KiB).
const MAX_CLUSTER: u64 = 2 << 20;
const MAX_RECORD: u64 = 64 << 10;
/// The stride of the update sequence (always 512 bytes in NTFS).
const USA_STRIDE: usize = 512;

/// The label of the NTFS volume on `device` whose boot sector is `b`.
pub(super) fn label(device: &dyn BlockDevice, b: &[u8]) -> Option<String> {
    let sector = u64::from(le_u16(b, 11)?);
    let spc = match *b.get(13)? {
        // Cluster sizes past 64 KiB: 2^(256 - n) sectors.
        n @ 0xF4.. => 1u64.checked_shl(256 - u32::from(n))?,
        n => u64::from(n),
    };
    let cluster = sector.checked_mul(spc)?;
    if !(256..=4096).contains(&sector) || !spc.is_power_of_two() || cluster > MAX_CLUSTER {
        return None;
    }
    let per_record = *b.get(0x40)? as i8;
    let record = if per_record > 0 {
        cluster.checked_mul(u64::try_from(per_record).ok()?)?
    } else {
        1u64.checked_shl(u32::from(per_record.unsigned_abs()))?
    };
    if !(256..=MAX_RECORD).contains(&record) {
        return None;
    }
    let at = le_u64(b, 0x30)?
        .checked_mul(cluster)?
        .checked_add(VOLUME_RECORD * record)?;
    let mut raw = vec![0u8; usize::try_from(record).ok()?];
    device.read_at(&mut raw, at).ok()?;
    if raw.get(..4)? != b"FILE" {
        return None;
    }
    let rec = fixed_up(&raw).unwrap_or(raw);
    volume_name(&rec)
}

/// The record's bytes with the update sequence put back, if it checks out.
fn fixed_up(raw: &[u8]) -> Option<Vec<u8>> {
    let offset = usize::from(le_u16(raw, 4)?);
    let count = usize::from(le_u16(raw, 6)?);
    let usn = raw.get(offset..offset.checked_add(2)?)?;
    let mut out = raw.to_vec();
    for i in 1..count {
        let saved = raw.get(offset + 2 * i..offset + 2 * i + 2)?;
        let end = (i * USA_STRIDE).checked_sub(2)?;
        let tail = out.get_mut(end..end + 2)?;
        if tail != usn {
            return None;
        }
        tail.copy_from_slice(saved);
    }
    Some(out)
}

/// The `$VOLUME_NAME` value of MFT record `rec`, decoded from UTF-16LE
/// (an unpaired surrogate becomes U+FFFD).
fn volume_name(rec: &[u8]) -> Option<String> {
    let mut off = usize::from(le_u16(rec, 0x14)?);
    // Each attribute is at least 16 bytes long: the walk ends.
    while off < rec.len() {
        let ty = le_u32(rec, off)?;
        let len = usize::try_from(le_u32(rec, off + 4)?).ok()?;
        if ty == END || len < 16 {
            return None;
        }
        if ty == VOLUME_NAME {
            // Resident only (byte 8: the non-resident flag).
            if *rec.get(off + 8)? != 0 {
                return None;
            }
            let vlen = usize::try_from(le_u32(rec, off + 0x10)?).ok()?;
            let voff = usize::from(le_u16(rec, off + 0x14)?);
            let start = off.checked_add(voff)?;
            let value = rec.get(start..start.checked_add(vlen)?)?;
            let units: Vec<u16> = value.chunks_exact(2).filter_map(|c| le_u16(c, 0)).collect();
            let s: String = char::decode_utf16(units)
                .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
                .collect();
            return (!s.is_empty()).then_some(s);
        }
        off = off.checked_add(len)?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use diskimage_formats::MemoryDevice;

    /// A volume of 512-byte sectors, 4 KiB clusters, 1 KiB records, the
    /// MFT at cluster 1, whose `$Volume` record holds `name`.
    fn volume(name: &str) -> Vec<u8> {
        let mut v = vec![0u8; 4096 + 4 * 1024];
        v[3..11].copy_from_slice(b"NTFS    ");
        v[11..13].copy_from_slice(&512u16.to_le_bytes());
        v[13] = 8;
        v[0x30..0x38].copy_from_slice(&1u64.to_le_bytes());
        v[0x40] = (-10i8) as u8;
        let r = 4096 + 3 * 1024;
        let rec = &mut v[r..r + 1024];
        rec[..4].copy_from_slice(b"FILE");
        rec[4..6].copy_from_slice(&48u16.to_le_bytes()); // update sequence at 48
        rec[6..8].copy_from_slice(&3u16.to_le_bytes()); // USN + 2 entries
        rec[48..50].copy_from_slice(&[0xAB, 0xCD]);
        rec[0x14..0x16].copy_from_slice(&56u16.to_le_bytes());
        // A $STANDARD_INFORMATION-like attribute, then $VOLUME_NAME, then the end.
        rec[56..60].copy_from_slice(&0x10u32.to_le_bytes());
        rec[60..64].copy_from_slice(&24u32.to_le_bytes());
        let a = 80;
        let units: Vec<u8> = name.encode_utf16().flat_map(u16::to_le_bytes).collect();
        rec[a..a + 4].copy_from_slice(&VOLUME_NAME.to_le_bytes());
        rec[a + 4..a + 8]
            .copy_from_slice(&(24 + units.len() as u32).next_multiple_of(8).to_le_bytes());
        rec[a + 0x10..a + 0x14].copy_from_slice(&(units.len() as u32).to_le_bytes());
        rec[a + 0x14..a + 0x16].copy_from_slice(&24u16.to_le_bytes());
        rec[a + 24..a + 24 + units.len()].copy_from_slice(&units);
        let end = (a + 24 + units.len()).next_multiple_of(8);
        rec[end..end + 4].copy_from_slice(&END.to_le_bytes());
        // The sectors' last two bytes hold the USN; the saved bytes are 0.
        rec[510..512].copy_from_slice(&[0xAB, 0xCD]);
        rec[1022..1024].copy_from_slice(&[0xAB, 0xCD]);
        v
    }

    #[test]
    fn label_comes_from_the_volume_record() {
        let v = volume("Données");
        let boot = v[..512].to_vec();
        assert_eq!(
            label(&MemoryDevice::new(v), &boot).as_deref(),
            Some("Données")
        );
    }

    #[test]
    fn damaged_records_give_no_label() {
        let v = volume("x");
        let boot = v[..512].to_vec();
        let r = 4096 + 3 * 1024;
        // Not a FILE record; an attribute length of 0; a value past the record.
        for (at, bytes) in [
            (r, &b"BAAD"[..]),
            (r + 84, &[0, 0, 0, 0][..]),
            (r + 80 + 0x10, &[0xFF, 0xFF, 0, 0][..]),
        ] {
            let mut d = v.clone();
            d[at..at + bytes.len()].copy_from_slice(bytes);
            assert_eq!(label(&MemoryDevice::new(d), &boot), None);
        }
        // The MFT past the device; a record size field of nonsense.
        let mut b = boot.clone();
        b[0x30..0x38].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(label(&MemoryDevice::new(v.clone()), &b), None);
        let mut b = boot.clone();
        b[0x40] = 0x80;
        assert_eq!(label(&MemoryDevice::new(v), &b), None);
    }
}
