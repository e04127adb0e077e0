//! Adler-32 (RFC 1950 section 8.2), the checksum of every EWF structure:
//! section descriptors, volume, table and hash sections, and the four
//! bytes after each uncompressed chunk.

const MOD: u32 = 65_521;
/// The most bytes summed before the running sums must be reduced (zlib's NMAX).
const NMAX: usize = 5_552;

/// The Adler-32 of `data` (starting value 1).
pub fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for block in data.chunks(NMAX) {
        for &byte in block {
            a += u32::from(byte);
            b += a;
        }
        a %= MOD;
        b %= MOD;
    }
    (b << 16) | a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        // RFC 1950's example and the empty input.
        assert_eq!(adler32(b"Wikipedia"), 0x11E6_0398);
        assert_eq!(adler32(b""), 1);
        // A long run that needs the NMAX reduction.
        let big = vec![0xffu8; 100_000];
        let (mut a, mut b) = (1u64, 0u64);
        for &x in &big {
            a = (a + u64::from(x)) % 65_521;
            b = (b + a) % 65_521;
        }
        assert_eq!(u64::from(adler32(&big)), (b << 16) | a);
    }
}
