//! Writes into a differencing block made whole groups of sectors: VHD and
//! VHDX readers (libvhdi, Hyper-V's 4 KiB I/O) take a sector bitmap a
//! group at a time, so a child writes each group it touches completely,
//! the bytes not written completed from what reads there now.

use crate::error::Result;

/// `buf`, to be written at `in_block` within a block of `block_size`
/// bytes, widened to whole groups of `group` bytes (the last group ends
/// at the block's end). Returns the widened bytes' start within the block
/// and the bytes: `buf` in place, its head and tail read with
/// `read(bytes, offset in block)`.
pub(crate) fn widen_to_groups(
    buf: &[u8],
    in_block: u64,
    group: u64,
    block_size: u64,
    mut read: impl FnMut(&mut [u8], u64) -> Result<()>,
) -> Result<(u64, Vec<u8>)> {
    let group = group.max(1);
    let start = in_block / group * group;
    let end = (in_block + buf.len() as u64)
        .div_ceil(group)
        .saturating_mul(group)
        .min(block_size)
        .max(in_block + buf.len() as u64);
    let mut whole = vec![0u8; usize::try_from(end - start).unwrap_or(0)];
    let head = usize::try_from(in_block - start).unwrap_or(0);
    let tail_at = head + buf.len();
    if head != 0 {
        read(whole.get_mut(..head).unwrap_or_default(), start)?;
    }
    if tail_at < whole.len() {
        read(
            whole.get_mut(tail_at..).unwrap_or_default(),
            start + tail_at as u64,
        )?;
    }
    if let Some(d) = whole.get_mut(head..tail_at) {
        d.copy_from_slice(buf);
    }
    Ok((start, whole))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_and_tail_are_read_and_the_write_kept_in_place() {
        let mut reads = Vec::new();
        let (start, whole) = widen_to_groups(&[7; 100], 4100, 4096, 1 << 20, |b, at| {
            reads.push((at, b.len()));
            b.fill(1);
            Ok(())
        })
        .unwrap();
        assert_eq!(start, 4096);
        assert_eq!(whole.len(), 4096);
        assert_eq!(reads, [(4096, 4), (4200, 3992)]);
        assert_eq!(&whole[..4], &[1; 4]);
        assert_eq!(&whole[4..104], &[7; 100][..]);
        assert!(whole[104..].iter().all(|&b| b == 1));
        // Aligned whole groups read nothing; the block's end cuts the
        // last group.
        let (start, whole) =
            widen_to_groups(&[3; 8192], 0, 4096, 1 << 20, |_, _| panic!("read")).unwrap();
        assert_eq!((start, whole.len()), (0, 8192));
        let mut reads = Vec::new();
        let (start, whole) = widen_to_groups(&[3; 10], 6000, 4096, 6144, |b, at| {
            reads.push((at, b.len()));
            Ok(())
        })
        .unwrap();
        assert_eq!((start, whole.len()), (4096, 2048));
        assert_eq!(reads, [(4096, 1904), (6010, 134)]);
    }
}
