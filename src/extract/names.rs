//! Host names for file-system names: one safe path component each.

/// Longest host name written, in bytes (ext4, NTFS and most hosts allow 255).
pub const MAX_NAME_BYTES: usize = 200;

/// `name` made safe as one host path component; `None` when unchanged.
///
/// `/`, `\`, control characters and the private-use code points some file
/// systems map unrepresentable bytes to become `_`; an empty name, `.` and
/// `..` get a `_` in front; a name longer than [`MAX_NAME_BYTES`] is cut
/// on a character boundary and ends in `~` and eight hex digits of a hash
/// of the whole name, so two long names sharing a prefix stay apart.
pub fn safe_name(name: &str) -> Option<String> {
    let mut s: String = name
        .chars()
        .map(|c| {
            if c == '/'
                || c == '\\'
                || c.is_control()
                || (0x10_FF00..=0x10_FFFF).contains(&u32::from(c))
            {
                '_'
            } else {
                c
            }
        })
        .collect();
    if s.is_empty() || s == "." || s == ".." {
        s = format!("_{s}");
    }
    if s.len() > MAX_NAME_BYTES {
        let mut cut = MAX_NAME_BYTES - 12;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        s = format!("{}~{:08x}", s.get(..cut).unwrap_or_default(), hash as u32);
    }
    (s != name).then_some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_are_renamed() {
        assert_eq!(safe_name("..").as_deref(), Some("_.."));
        assert_eq!(
            safe_name("../../etc/passwd").as_deref(),
            Some(".._.._etc_passwd")
        );
        assert_eq!(safe_name("a\\b").as_deref(), Some("a_b"));
        assert_eq!(safe_name("a\0b").as_deref(), Some("a_b"));
        assert_eq!(safe_name("").as_deref(), Some("_"));
        assert_eq!(safe_name("fine.txt"), None);
        let long = "é".repeat(200);
        let s = safe_name(&long).unwrap();
        assert!(s.len() <= MAX_NAME_BYTES);
    }
}
