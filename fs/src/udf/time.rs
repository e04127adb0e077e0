//! Timestamps (ECMA-167 1/7.3).

use diskimage_formats::bytes::zeroed::le_u16;

use crate::file_system::{days_from_civil, Timestamp};

/// The timestamp of 12 bytes at `off` of `b`, in UTC: the recorded local
/// time less its offset from UTC when the type is 1 (local time) and an
/// offset is given; taken as UTC otherwise. `None` for an all-zero or
/// impossible date (month 0, day 0 ...).
pub fn timestamp(b: &[u8], off: usize) -> Option<Timestamp> {
    let t = diskimage_formats::bytes::array::<12>(b, off)?;
    let type_tz = le_u16(&t, 0);
    let year = i64::from(le_u16(&t, 2) as i16);
    let [month, day, hour, minute, second, centi, hundred_us, us] =
        [t[4], t[5], t[6], t[7], t[8], t[9], t[10], t[11]].map(i64::from);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut tz = i64::from(type_tz & 0x0FFF);
    if tz & 0x800 != 0 {
        tz -= 0x1000;
    }
    // -2047: no offset recorded; past +-1440 minutes: not an offset.
    if type_tz >> 12 != 1 || tz == -2047 || !(-1440..=1440).contains(&tz) {
        tz = 0;
    }
    let secs =
        days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - tz * 60;
    let nanos = (centi.min(99) * 10_000 + hundred_us.min(99) * 100 + us.min(99)) * 1000;
    Some(Timestamp {
        secs,
        nanos: u32::try_from(nanos).unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(tz: i16, y: u16, rest: [u8; 8]) -> [u8; 12] {
        let mut b = [0u8; 12];
        let tt = 0x1000u16 | (tz as u16 & 0x0FFF);
        b[..2].copy_from_slice(&tt.to_le_bytes());
        b[2..4].copy_from_slice(&y.to_le_bytes());
        b[4..].copy_from_slice(&rest);
        b
    }

    #[test]
    fn offsets_are_taken_off() {
        // 2023-11-14 22:13:20 UTC is 1700000000.
        let b = stamp(0, 2023, [11, 14, 22, 13, 20, 0, 0, 0]);
        assert_eq!(timestamp(&b, 0).unwrap().secs, 1_700_000_000);
        let b = stamp(60, 2023, [11, 14, 23, 13, 20, 50, 1, 2]);
        let t = timestamp(&b, 0).unwrap();
        assert_eq!((t.secs, t.nanos), (1_700_000_000, 500_102_000));
        let b = stamp(-2047, 2023, [11, 14, 22, 13, 20, 0, 0, 0]);
        assert_eq!(timestamp(&b, 0).unwrap().secs, 1_700_000_000);
        assert_eq!(timestamp(&[0u8; 12], 0), None);
    }
}
