//! OSTA Compressed Unicode (UDF 2.1.1, 2.1.3): file identifiers and
//! dstrings.

/// Decodes a compressed-Unicode identifier: its first byte is the
/// compression ID (8 or 254: one byte per character, Latin-1; 16 or 255:
/// UTF-16BE), the rest the characters. An unknown compression ID, an odd
/// 16-bit length or an unpaired surrogate gives U+FFFD in place of what
/// cannot be decoded; an empty identifier gives an empty string.
pub fn decode(b: &[u8]) -> String {
    let Some((&id, rest)) = b.split_first() else {
        return String::new();
    };
    match id {
        8 | 254 => rest.iter().map(|&c| char::from(c)).collect(),
        16 | 255 => {
            let units: Vec<u16> = rest
                .chunks(2)
                .map(|c| match c {
                    [hi, lo] => u16::from_be_bytes([*hi, *lo]),
                    _ => 0xFFFD,
                })
                .collect();
            String::from_utf16_lossy(&units)
        }
        _ => "\u{FFFD}".to_string(),
    }
}

/// Decodes a dstring (ECMA-167 1/7.2.12) of `b.len()` bytes: its last
/// byte is the number of bytes used, compression ID included. Trailing
/// NULs and spaces are dropped; an empty string is `None`.
pub fn dstring(b: &[u8]) -> Option<String> {
    let (&used, body) = b.split_last()?;
    let used = usize::from(used).min(body.len());
    let s = decode(body.get(..used)?);
    let s = s.trim_end_matches(['\0', ' ']).to_string();
    (!s.is_empty()).then_some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_widths_decode() {
        assert_eq!(decode(b"\x08caf\xe9"), "café");
        assert_eq!(decode(b"\x10\x65\xe5\x67\x2c"), "日本");
        assert_eq!(decode(b"\x10\x00"), "\u{FFFD}");
        assert_eq!(decode(b"\x07abc"), "\u{FFFD}");
        assert_eq!(decode(b""), "");
    }

    #[test]
    fn dstrings_use_their_length_byte() {
        let mut b = [0u8; 32];
        b[..6].copy_from_slice(b"\x08LABEL");
        b[31] = 6;
        assert_eq!(dstring(&b).as_deref(), Some("LABEL"));
        b[31] = 0;
        assert_eq!(dstring(&b), None);
        b[31] = 200;
        assert_eq!(dstring(&b).as_deref(), Some("LABEL"));
    }
}
