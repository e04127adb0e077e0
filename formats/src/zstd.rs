//! Zstandard (RFC 8878) decompression for the readers that meet it:
//! QCOW2 clusters with `compression_type=zstd` and Btrfs extents.
//!
//! One function, [`decompress`], over the pure-Rust `ruzstd` decoder (why
//! that crate: the formats crate's README, "Dependency notes"). It fills a
//! caller-sized output from one or more frames, as qemu and the Linux
//! kernel do: the compressed input may carry padding after the last frame
//! (QCOW2 rounds a compressed cluster up to 512-byte sectors), which is
//! ignored. Hostile input is bounded: a frame may not declare a window
//! larger than [`MAX_WINDOW_SIZE`] (the decoder reserves the window up
//! front), and a frame producing more than the output holds is an error,
//! never a larger allocation.

use ruzstd::decoding::errors::FrameDecoderError;
use ruzstd::decoding::{BlockDecodingStrategy, FrameDecoder};

/// The largest window a frame may declare, in bytes (8 MiB: the size the
/// zstd specification asks every decoder to support; QCOW2 clusters are at
/// most 2 MiB and Btrfs extents 128 KiB).
pub const MAX_WINDOW_SIZE: u64 = 8 << 20;

/// The magic number at the start of every zstd frame (little-endian).
const FRAME_MAGIC: u32 = 0xFD2F_B528;

/// Skippable frames carry magic numbers `0x184D2A50..=0x184D2A5F`.
const SKIPPABLE_MASK: u32 = 0xFFFF_FFF0;
const SKIPPABLE_MAGIC: u32 = 0x184D_2A50;

/// Why [`decompress`] failed; the caller adds the file and offset.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ZstdError {
    /// The input does not start with a zstd frame.
    #[error("no zstd frame: found magic {found:#010x}, expected {FRAME_MAGIC:#010x}")]
    NoFrame {
        /// The first four bytes of the input, little-endian (0 when fewer).
        found: u32,
    },
    /// A frame produced more bytes than the output holds.
    #[error("zstd data decompresses to more than the {capacity} bytes expected")]
    TooLarge {
        /// The size of the output buffer.
        capacity: usize,
    },
    /// The input ends inside a frame.
    #[error("zstd frame is cut short after {consumed} input bytes")]
    Truncated {
        /// Input bytes consumed before the end was reached.
        consumed: usize,
    },
    /// The decoder rejected the data (bad block, table, window or checksum).
    #[error("zstd data is corrupt: {0}")]
    Corrupt(String),
}

/// Decompresses the zstd frames at the start of `src` into `dst` and returns
/// how many bytes were written.
///
/// Decoding stops when `dst` is full, or when the bytes after a finished
/// frame do not start another frame (padding). A frame whose output would
/// not fit in `dst` is [`ZstdError::TooLarge`]; a frame cut short is
/// [`ZstdError::Truncated`]. Frames with a content checksum have it
/// checked. Callers that need every byte of `dst` compare the count.
pub fn decompress(src: &[u8], dst: &mut [u8]) -> Result<usize, ZstdError> {
    let mut decoder = FrameDecoder::new();
    decoder.set_max_window_size(MAX_WINDOW_SIZE);
    let mut input = src;
    let mut written = 0usize;
    let mut first = true;
    loop {
        let magic = match input.get(..4) {
            Some(m) => u32::from_le_bytes(m.try_into().unwrap_or_default()),
            None if first => return Err(ZstdError::NoFrame { found: 0 }),
            None => break,
        };
        if magic & SKIPPABLE_MASK == SKIPPABLE_MAGIC {
            let len = input
                .get(4..8)
                .map(|l| u32::from_le_bytes(l.try_into().unwrap_or_default()) as usize)
                .ok_or(ZstdError::Truncated {
                    consumed: src.len() - input.len(),
                })?;
            input = input
                .get(8usize.saturating_add(len)..)
                .ok_or(ZstdError::Truncated {
                    consumed: src.len() - input.len(),
                })?;
            first = false;
            continue;
        }
        if magic != FRAME_MAGIC {
            if first {
                return Err(ZstdError::NoFrame { found: magic });
            }
            break;
        }
        first = false;
        let start_len = input.len();
        decoder
            .reset(&mut input)
            .map_err(|e| frame_error(e, src.len() - input.len()))?;
        loop {
            let out = dst.get_mut(written..).unwrap_or_default();
            let before = input.len();
            // One block at most per round (a block decodes to at most
            // 128 KiB), so the decode buffer never holds much more than
            // the window plus what `dst` still takes.
            decoder
                .decode_blocks(&mut input, BlockDecodingStrategy::UptoBlocks(1))
                .map_err(|e| frame_error(e, src.len() - before))?;
            let n = std::io::Read::read(&mut decoder, out)
                .map_err(|e| ZstdError::Corrupt(e.to_string()))?;
            written += n;
            if decoder.is_finished() {
                // Drain what the finished frame still holds.
                let out = dst.get_mut(written..).unwrap_or_default();
                let n = std::io::Read::read(&mut decoder, out)
                    .map_err(|e| ZstdError::Corrupt(e.to_string()))?;
                written += n;
                if decoder.can_collect() != 0 {
                    return Err(ZstdError::TooLarge {
                        capacity: dst.len(),
                    });
                }
                if let (Some(stored), Some(computed)) = (
                    decoder.get_checksum_from_data(),
                    decoder.get_calculated_checksum(),
                ) {
                    if stored != computed {
                        return Err(ZstdError::Corrupt(format!(
                            "content checksum: stored {stored:#010x}, computed {computed:#010x}"
                        )));
                    }
                }
                break;
            }
            if written == dst.len() && decoder.can_collect() > 0 {
                return Err(ZstdError::TooLarge {
                    capacity: dst.len(),
                });
            }
            if input.len() == before {
                return Err(ZstdError::Truncated {
                    consumed: src.len() - input.len(),
                });
            }
        }
        debug_assert!(input.len() < start_len);
        if written == dst.len() {
            break;
        }
    }
    Ok(written)
}

fn frame_error(e: FrameDecoderError, consumed: usize) -> ZstdError {
    let text = e.to_string();
    // The decoder reports a short input as an I/O "unexpected end" inside
    // its header or block readers.
    if text.contains("failed to fill whole buffer") || text.to_lowercase().contains("eof") {
        return ZstdError::Truncated { consumed };
    }
    ZstdError::Corrupt(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `printf 'hello hello hello hello\n' | zstd -c | xxd -i` (the `zstd`
    /// tool: content size and checksum in the frame).
    const HELLO: &[u8] = &[
        0x28, 0xb5, 0x2f, 0xfd, 0x04, 0x58, 0x6d, 0x00, 0x00, 0x38, 0x68, 0x65, 0x6c, 0x6c, 0x6f,
        0x20, 0x0a, 0x01, 0x00, 0x99, 0x4b, 0x11, 0xa8, 0x7c, 0x2e, 0xa8,
    ];

    #[test]
    fn decodes_a_frame_and_ignores_padding() {
        let mut src = HELLO.to_vec();
        src.extend_from_slice(&[0; 37]);
        let mut out = [0u8; 24];
        let n = decompress(&src, &mut out).unwrap();
        assert_eq!(&out[..n], b"hello hello hello hello\n");
    }

    #[test]
    fn output_too_small_is_an_error() {
        let mut out = [0u8; 10];
        assert!(matches!(
            decompress(HELLO, &mut out),
            Err(ZstdError::TooLarge { capacity: 10 })
        ));
    }

    #[test]
    fn not_a_frame_and_cut_short() {
        let mut out = [0u8; 64];
        assert!(matches!(
            decompress(b"QFI\xfb....", &mut out),
            Err(ZstdError::NoFrame { .. })
        ));
        for cut in 4..HELLO.len() - 1 {
            assert!(decompress(&HELLO[..cut], &mut out).is_err(), "cut {cut}");
        }
    }
}
