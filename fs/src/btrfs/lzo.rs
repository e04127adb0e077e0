//! LZO1X decompression, and the segmented framing Btrfs wraps it in.
//!
//! Why our own: the LZO1X stream format is small (the Linux kernel's
//! `Documentation/staging/lzo.rst` describes it in a page), and the
//! pure-Rust crates for it either wrap C or decode without bounds on the
//! output. This decoder writes into a caller-sized buffer and fails with
//! a reason on any instruction that would read past the input, copy from
//! before the start of the output or write past its end.
//!
//! Btrfs framing (`fs/btrfs/lzo.c`): a 4-byte little-endian total length
//! (itself included), then segments, each a 4-byte little-endian length
//! and that many bytes of one LZO1X stream decompressing to at most one
//! sector. A segment header never straddles a sector boundary: when fewer
//! than 4 bytes are left in the sector, the rest is padding.

/// Decodes one LZO1X stream `src`, appending to `out` without letting it
/// grow past `limit` bytes; `Err` names what is wrong.
pub(crate) fn decompress_lzo1x(src: &[u8], out: &mut Vec<u8>, limit: usize) -> Result<(), String> {
    let start = out.len();
    let mut ip = 0usize;
    let byte = |ip: &mut usize| -> Result<usize, String> {
        let b = src
            .get(*ip)
            .copied()
            .ok_or_else(|| format!("input ends at byte {ip}"))?;
        *ip += 1;
        Ok(usize::from(b))
    };
    // A run length continued by zero bytes (255 each) and a final byte.
    let extend = |ip: &mut usize, base: usize| -> Result<usize, String> {
        let mut len = base;
        loop {
            let b = src
                .get(*ip)
                .copied()
                .ok_or_else(|| format!("input ends in a run length at byte {ip}"))?;
            *ip += 1;
            if b != 0 {
                return Ok(len + usize::from(b));
            }
            len += 255;
            if len > limit {
                return Err(format!("run length past {limit} bytes"));
            }
        }
    };
    let literals = |ip: &mut usize, n: usize, out: &mut Vec<u8>| -> Result<(), String> {
        let s = src
            .get(*ip..ip.saturating_add(n))
            .ok_or_else(|| format!("{n} literals past the end of the input at byte {ip}"))?;
        if out.len() + n > limit {
            return Err(format!("output past {limit} bytes"));
        }
        out.extend_from_slice(s);
        *ip += n;
        Ok(())
    };
    let copy = |out: &mut Vec<u8>, dist: usize, len: usize| -> Result<(), String> {
        if dist == 0 || dist > out.len() - start {
            return Err(format!(
                "back reference {dist} bytes before output byte {}",
                out.len() - start
            ));
        }
        if out.len() + len > limit {
            return Err(format!("output past {limit} bytes"));
        }
        let from = out.len() - dist;
        for i in 0..len {
            let b = out.get(from + i).copied().unwrap_or(0);
            out.push(b);
        }
        Ok(())
    };

    // The number of literals the last instruction copied (4: four or more).
    let mut state;
    let first = *src.first().ok_or("empty input")?;
    if first > 17 {
        ip = 1;
        let n = usize::from(first) - 17;
        literals(&mut ip, n, out)?;
        state = if n < 4 { n } else { 4 };
    } else {
        state = 0;
    }
    loop {
        let t = byte(&mut ip)?;
        let (dist, len, next);
        if t < 16 {
            match state {
                0 => {
                    let n = if t == 0 { extend(&mut ip, 18)? } else { t + 3 };
                    literals(&mut ip, n, out)?;
                    state = 4;
                    continue;
                }
                1..=3 => {
                    let h = byte(&mut ip)?;
                    dist = (h << 2) + (t >> 2) + 1;
                    len = 2;
                }
                _ => {
                    let h = byte(&mut ip)?;
                    dist = (h << 2) + (t >> 2) + 2049;
                    len = 3;
                }
            }
            next = t & 3;
        } else if t < 32 {
            let l = t & 7;
            len = if l == 0 { extend(&mut ip, 9)? } else { l + 2 };
            let d = byte(&mut ip)? | (byte(&mut ip)? << 8);
            let far = 16384 + ((t & 8) << 11) + (d >> 2);
            if far == 16384 {
                // End of stream.
                return Ok(());
            }
            dist = far;
            next = d & 3;
        } else if t < 64 {
            let l = t & 31;
            len = if l == 0 { extend(&mut ip, 33)? } else { l + 2 };
            let d = byte(&mut ip)? | (byte(&mut ip)? << 8);
            dist = (d >> 2) + 1;
            next = d & 3;
        } else if t < 128 {
            let h = byte(&mut ip)?;
            len = 3 + ((t >> 5) & 1);
            dist = (h << 3) + ((t >> 2) & 7) + 1;
            next = t & 3;
        } else {
            let h = byte(&mut ip)?;
            len = 5 + ((t >> 5) & 3);
            dist = (h << 3) + ((t >> 2) & 7) + 1;
            next = t & 3;
        }
        copy(out, dist, len)?;
        literals(&mut ip, next, out)?;
        state = next;
    }
}

/// Decodes a Btrfs LZO extent `src` (sectors of `sector` bytes) into at
/// most `limit` bytes.
pub(crate) fn decompress_btrfs(src: &[u8], sector: usize, limit: usize) -> Result<Vec<u8>, String> {
    let le32 = |at: usize| -> Result<usize, String> {
        src.get(at..at + 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap_or_default()) as usize)
            .ok_or_else(|| format!("header at byte {at} past the end of {} bytes", src.len()))
    };
    let total = le32(0)?;
    if total > src.len() || total < 4 {
        return Err(format!(
            "total length {total} outside the {} bytes stored",
            src.len()
        ));
    }
    let sector = sector.max(4);
    let mut out = Vec::with_capacity(limit.min(1 << 17));
    let mut at = 4usize;
    while at < total && out.len() < limit {
        let left_in_sector = sector - at % sector;
        if left_in_sector < 4 {
            at += left_in_sector;
            if at >= total {
                break;
            }
        }
        let len = le32(at)?;
        at += 4;
        let seg = src
            .get(at..at.saturating_add(len))
            .filter(|_| at + len <= total)
            .ok_or_else(|| format!("segment of {len} bytes at byte {at} past the total length"))?;
        let seg_limit = (out.len() + sector).min(limit);
        decompress_lzo1x(seg, &mut out, seg_limit)?;
        at += len;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_run_then_match_then_end() {
        // 4 literals "abcd" (first byte 17 + 4), then a 64..127 match of
        // length 3 at distance 4 (H = 0, D = 3), no trailing literals,
        // then the end marker 0x11 0x00 0x00.
        let src = [21, b'a', b'b', b'c', b'd', 0x40 | (3 << 2), 0, 0x11, 0, 0];
        let mut out = Vec::new();
        decompress_lzo1x(&src, &mut out, 100).unwrap();
        assert_eq!(out, b"abcdabc");
    }

    #[test]
    fn bad_references_and_limits_are_errors() {
        let mut out = Vec::new();
        // A match before the start of the output.
        assert!(decompress_lzo1x(&[0x40 | (3 << 2), 9, 0x11, 0, 0], &mut out, 100).is_err());
        // Output limit.
        let src = [21, b'a', b'b', b'c', b'd', 0x40 | (3 << 2), 0, 0x11, 0, 0];
        assert!(decompress_lzo1x(&src, &mut Vec::new(), 5).is_err());
        // Cut short.
        assert!(decompress_lzo1x(&src[..6], &mut Vec::new(), 100).is_err());
        assert!(decompress_btrfs(&[9, 0, 0, 0], 4096, 10).is_err());
    }
}
