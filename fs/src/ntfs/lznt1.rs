//! LZNT1 decompression ([MS-XCA] 2.5), as NTFS stores compressed files.
//!
//! A buffer is a run of chunks, each with a 16-bit header: bits 0-11 hold
//! the chunk's stored size minus 3 (header included), bit 15 says whether
//! it is compressed. An uncompressed chunk holds up to [`CHUNK_SIZE`]
//! literal bytes. A compressed chunk is groups of one flag byte and eight
//! tokens: a clear flag bit is one literal byte, a set one a 16-bit
//! back-reference whose split between offset and length bits depends on
//! how much of the chunk is already decompressed. A zero header ends the
//! buffer.

use diskimage_formats::bytes::le_u16;

/// Bytes one chunk decompresses to (at most; every chunk but the last of a
/// compression unit decompresses to exactly this).
pub const CHUNK_SIZE: usize = 4096;

/// Why a buffer could not be decompressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lznt1Error {
    /// Offset of the bad chunk or token in the compressed input.
    pub offset: usize,
    /// What is wrong.
    pub what: &'static str,
}

/// Decompresses `input` into at most `limit` bytes.
pub fn decompress(input: &[u8], limit: usize) -> Result<Vec<u8>, Lznt1Error> {
    let mut out = Vec::with_capacity(limit.min(1 << 20));
    let mut pos = 0usize;
    while out.len() < limit {
        let Some(header) = le_u16(input, pos) else {
            break;
        };
        if header == 0 {
            break;
        }
        let stored = usize::from(header & 0x0FFF) + 1; // data bytes after the header
        let data = input.get(pos + 2..pos + 2 + stored).ok_or(Lznt1Error {
            offset: pos,
            what: "chunk runs past the end of the compressed data",
        })?;
        let start = out.len();
        if header & 0x8000 == 0 {
            out.extend_from_slice(data);
        } else {
            chunk(data, &mut out, start).map_err(|what| Lznt1Error { offset: pos, what })?;
        }
        if out.len() - start > CHUNK_SIZE {
            return Err(Lznt1Error {
                offset: pos,
                what: "chunk decompresses to more than 4096 bytes",
            });
        }
        // A chunk that decompresses short is followed by zeros up to the
        // chunk size when another chunk follows.
        let next = pos + 2 + stored;
        if out.len() - start < CHUNK_SIZE && input.get(next..next + 2).is_some_and(|h| h != [0, 0])
        {
            out.resize(start + CHUNK_SIZE, 0);
        }
        pos = next;
    }
    out.truncate(limit);
    Ok(out)
}

fn chunk(data: &[u8], out: &mut Vec<u8>, start: usize) -> Result<(), &'static str> {
    let mut i = 0usize;
    while i < data.len() {
        let flags = data.get(i).copied().unwrap_or(0);
        i += 1;
        for bit in 0..8 {
            if i >= data.len() {
                return Ok(());
            }
            if flags & (1 << bit) == 0 {
                out.push(data.get(i).copied().unwrap_or(0));
                i += 1;
                continue;
            }
            let token = usize::from(le_u16(data, i).ok_or("truncated back-reference")?);
            i += 2;
            let done = out.len() - start;
            if done == 0 {
                return Err("back-reference before any literal");
            }
            let mut len_mask = 0x0FFFusize;
            let mut offset_shift = 12u32;
            let mut p = done - 1;
            while p >= 0x10 {
                len_mask >>= 1;
                offset_shift -= 1;
                p >>= 1;
            }
            let offset = (token >> offset_shift) + 1;
            let length = (token & len_mask) + 3;
            if offset > done {
                return Err("back-reference before the start of the chunk");
            }
            if done + length > CHUNK_SIZE {
                return Err("back-reference past the chunk size");
            }
            let from = out.len() - offset;
            for k in 0..length {
                let b = out.get(from + k).copied().unwrap_or(0);
                out.push(b);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_and_back_reference() {
        // "abcabcabc": literals a b c, then a back-reference of offset 3, length 6.
        // With 3 bytes done: 12 length bits; token = (3-1) << 12 | (6-3).
        let token: u16 = (2 << 12) | 3;
        let mut data = vec![0b0000_1000, b'a', b'b', b'c'];
        data.extend_from_slice(&token.to_le_bytes());
        let header: u16 = 0x8000 | 0x3000 | (data.len() as u16 - 1);
        let mut input = header.to_le_bytes().to_vec();
        input.extend_from_slice(&data);
        assert_eq!(decompress(&input, 100).unwrap(), b"abcabcabc");
    }

    #[test]
    fn uncompressed_chunk_and_bad_reference() {
        let mut input = (0x3000u16 | 3).to_le_bytes().to_vec();
        input.extend_from_slice(b"wxyz");
        assert_eq!(decompress(&input, 100).unwrap(), b"wxyz");
        let bad = [0x03, 0xB0, 0x01, 0x00, 0x10];
        assert!(decompress(&bad, 100).is_err());
        assert!(decompress(&[0xff, 0xbf, 0x00], 100).is_err());
    }
}
