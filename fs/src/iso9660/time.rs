//! ISO 9660 dates: the 7-byte recording date of directory records (and Rock
//! Ridge TF short form) and the 17-byte digit form of volume descriptors (and
//! TF long form), both with a GMT offset in 15-minute units, to UTC.

use crate::file_system::{days_from_civil, Timestamp};

fn to_utc(fields: [i64; 6], offset_quarters: i8, nanos: u32) -> Option<Timestamp> {
    let [y, mo, d, h, mi, s] = fields;
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let local = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s;
    Some(Timestamp {
        secs: local - i64::from(offset_quarters) * 15 * 60,
        nanos,
    })
}

/// The 7-byte form: years since 1900, month, day, hour, minute, second,
/// GMT offset. All zero means "not recorded".
pub fn short(b: &[u8]) -> Option<Timestamp> {
    let b: [u8; 7] = b.get(..7)?.try_into().ok()?;
    if b[..6].iter().all(|&x| x == 0) {
        return None;
    }
    let f = [
        1900 + i64::from(b[0]),
        i64::from(b[1]),
        i64::from(b[2]),
        i64::from(b[3]),
        i64::from(b[4]),
        i64::from(b[5]),
    ];
    to_utc(f, i8::from_ne_bytes([b[6]]), 0)
}

/// The 17-byte form: `YYYYMMDDHHMMSScc` digits (cc: hundredths) and a GMT
/// offset byte. All-zero digits mean "not recorded".
pub fn long(b: &[u8]) -> Option<Timestamp> {
    let b: [u8; 17] = b.get(..17)?.try_into().ok()?;
    let digits = b.get(..16)?;
    if !digits.iter().all(u8::is_ascii_digit) || digits.iter().all(|&c| c == b'0') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| {
        digits.get(r).map_or(0, |s| {
            s.iter().fold(0i64, |a, &c| a * 10 + i64::from(c - b'0'))
        })
    };
    let f = [
        num(0..4),
        num(4..6),
        num(6..8),
        num(8..10),
        num(10..12),
        num(12..14),
    ];
    let hundredths = u32::try_from(num(14..16)).unwrap_or(0);
    to_utc(f, i8::from_ne_bytes([b[16]]), hundredths * 10_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_form_applies_the_gmt_offset() {
        // 2020-09-13 12:26:40 at GMT+2 (8 quarters) is 10:26:40 UTC.
        let t = short(&[120, 9, 13, 12, 26, 40, 8]).unwrap();
        assert_eq!(t.secs, 1_600_000_000 - 2 * 3600);
        assert_eq!(short(&[0; 7]), None);
        let t = short(&[120, 9, 13, 12, 26, 40, (-4i8) as u8]).unwrap();
        assert_eq!(t.secs, 1_600_000_000 + 3600);
    }

    #[test]
    fn long_form_keeps_hundredths() {
        let t = long(b"2020091312264025\0").unwrap();
        assert_eq!((t.secs, t.nanos), (1_600_000_000, 250_000_000));
        assert_eq!(long(b"0000000000000000\0"), None);
        assert_eq!(long(&[0u8; 17]), None);
    }
}
