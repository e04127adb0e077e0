//! The case metadata of the `header2` and `header` sections
//! (specification section 3.3 and 3.4).
//!
//! Both hold zlib-compressed text: `header2` in UTF-16 little-endian with
//! a byte-order mark, `header` in an 8-bit code page (read here as
//! Latin-1). The text is tab-separated: a category count, the category
//! name `main`, a line of identifiers (`c` case number, `n` evidence
//! number, `a` description, `e` examiner, `t` notes, `av` acquiry software
//! version, `ov` acquiry operating system, `m` acquisition date, `u`
//! system date, `p` password hash, `r` compression level, `md` model,
//! `sn` serial number, ...) and a line of values in the same order.
//! Dates are Unix seconds in `header2` and `YYYY M D h m s` (the
//! acquiring machine's local time) in `header`.

use crate::error::{Detail, Error, Format, Result};
use zune_inflate::{DeflateDecoder, DeflateOptions};

/// Most bytes a header section may inflate to (real ones hold a few
/// hundred bytes; the cap keeps a crafted stream from filling memory).
pub const MAX_HEADER_TEXT: usize = 1 << 20;

/// Inflates a zlib stream of section data, at most `limit` bytes out.
pub fn inflate_zlib(data: &[u8], limit: usize) -> std::result::Result<Vec<u8>, String> {
    let options = DeflateOptions::default()
        .set_limit(limit)
        .set_confirm_checksum(true);
    DeflateDecoder::new_with_options(data, options)
        .decode_zlib()
        .map_err(|e| format!("{:?}", e.error))
}

/// The decoded text of a `header2` (UTF-16LE) or `header` (8-bit) section.
pub fn decode(kind: &str, data: &[u8], offset: u64) -> Result<String> {
    let raw = inflate_zlib(data, MAX_HEADER_TEXT).map_err(|e| {
        Error::corrupt(
            Format::Ewf,
            Detail::Invalid(format!("{kind} section does not inflate: {e}")),
        )
        .at(offset)
    })?;
    if kind == "header2" {
        let body = raw.strip_prefix(&[0xff, 0xfe]).unwrap_or(&raw);
        Ok(crate::bytes::utf16le(body))
    } else {
        Ok(raw.iter().map(|&b| char::from(b)).collect())
    }
}

/// The `main` category as (identifier, value) pairs, in file order.
pub fn main_values(text: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = text.lines().map(|l| l.trim_end_matches('\r')).collect();
    let Some(at) = lines.iter().position(|l| *l == "main") else {
        return Vec::new();
    };
    let (Some(keys), Some(values)) = (lines.get(at + 1), lines.get(at + 2)) else {
        return Vec::new();
    };
    keys.split('\t')
        .zip(values.split('\t'))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// A date value as text: Unix seconds as ISO 8601 UTC; `YYYY M D h m s`
/// as `YYYY-MM-DD hh:mm:ss` (local time of the acquiring machine, zone
/// unknown); anything else as stored.
pub fn date(value: &str) -> String {
    let v = value.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(secs) = v.parse::<i64>() {
            return crate::time::format_unix_utc(secs);
        }
    }
    let parts: Vec<u32> = v
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    if let [y, mo, d, h, mi, s] = parts.as_slice() {
        if v.split_whitespace().count() == 6 {
            return format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}");
        }
    }
    v.to_owned()
}

/// The `info` property name of a header identifier, or `None` for one
/// that is not shown (the password hash, empty identifiers).
pub fn property_name(id: &str) -> Option<&'static str> {
    Some(match id {
        "c" => "case_number",
        "n" => "evidence_number",
        "a" => "description",
        "e" => "examiner",
        "t" => "notes",
        "av" => "acquisition_software_version",
        "ov" => "acquisition_os",
        "m" => "acquisition_date",
        "u" => "system_date",
        "md" => "model",
        "sn" => "serial_number",
        "dc" => "device_characteristics",
        "pid" => "process_id",
        "l" => "device_label",
        "ext" => "extents",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn main_category_of_header_and_header2_text() {
        let header = "1\r\nmain\r\nc\tn\ta\te\tt\tav\tov\tm\tu\tp\r\nC1\tE1\tdesc\tex\tno\t2014\tLinux\t2026 12 7 3 35 25\t2026 12 7 3 35 25\t0\r\n\r\n";
        let v = main_values(header);
        assert_eq!(v[0], ("c".into(), "C1".into()));
        assert_eq!(v[7].1, "2026 12 7 3 35 25");
        assert_eq!(date(&v[7].1), "2026-12-07 03:35:25");
        let header2 = "3\nmain\na\tc\tm\nd\tC2\t1796614525\n\nsrce\n";
        let v = main_values(header2);
        assert_eq!(v[1], ("c".into(), "C2".into()));
        assert_eq!(date(&v[2].1), "2026-12-07T03:35:25Z");
        assert!(main_values("garbage").is_empty());
        assert_eq!(date("soon"), "soon");
    }

    #[test]
    fn a_stream_that_is_not_zlib_is_corrupt_at_its_offset() {
        let e = decode("header", b"not zlib", 0x2c).unwrap_err();
        assert_eq!(e.offset(), Some(0x2c));
        assert_eq!(e.kind(), crate::ErrorKind::Corrupt);
    }
}
