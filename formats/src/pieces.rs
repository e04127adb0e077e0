//! A byte range cut at the multiples of a unit (a block, a grain, a
//! sector): the walk every read and write path does over its tables.

/// One piece of a range: the bytes of the range that lie in one unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Piece {
    /// Which unit (the piece's start divided by the unit).
    pub(crate) index: u64,
    /// Where the piece starts within its unit.
    pub(crate) within: u64,
    /// Where the piece starts within the range (an index into its buffer).
    pub(crate) done: usize,
    /// The piece's length in bytes.
    pub(crate) len: usize,
}

impl Piece {
    /// The piece's bytes in `buf`, the buffer of the whole range.
    pub(crate) fn of<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        buf.get(self.done..self.done + self.len).unwrap_or_default()
    }

    /// The piece's bytes in `buf`, to fill.
    pub(crate) fn of_mut<'a>(&self, buf: &'a mut [u8]) -> &'a mut [u8] {
        buf.get_mut(self.done..self.done + self.len)
            .unwrap_or_default()
    }
}

/// The pieces of the `len` bytes from `offset`, cut at each multiple of
/// `unit`, in order. A unit of 0 is taken as 1.
pub(crate) fn pieces(offset: u64, len: usize, unit: u64) -> impl Iterator<Item = Piece> {
    let unit = unit.max(1);
    let mut done = 0usize;
    std::iter::from_fn(move || {
        if done >= len {
            return None;
        }
        let pos = offset + done as u64;
        let within = pos % unit;
        let n = usize::try_from(unit - within)
            .unwrap_or(usize::MAX)
            .min(len - done);
        let piece = Piece {
            index: pos / unit,
            within,
            done,
            len: n,
        };
        done += n;
        Some(piece)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_is_cut_at_each_unit_boundary() {
        let got: Vec<_> = pieces(1000, 5000, 2048)
            .map(|p| (p.index, p.within, p.done, p.len))
            .collect();
        assert_eq!(
            got,
            [(0, 1000, 0, 1048), (1, 0, 1048, 2048), (2, 0, 3096, 1904)]
        );
        assert_eq!(pieces(4096, 4096, 4096).count(), 1);
        assert_eq!(pieces(7, 0, 512).count(), 0);
        // A unit of 0 does not divide by zero.
        assert_eq!(pieces(3, 2, 0).map(|p| p.len).sum::<usize>(), 2);
        let buf = [1u8, 2, 3, 4, 5];
        let p = pieces(3, 5, 4).nth(1).expect("second piece");
        assert_eq!(p.of(&buf), &[2, 3, 4, 5]);
    }
}
