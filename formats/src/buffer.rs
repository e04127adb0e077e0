//! A reusable read buffer whose first byte sits on a page boundary.
//!
//! The kernel copies file data into a user buffer (`pread`, `read` from a
//! pipe or FUSE) several times slower when the buffer's address is not
//! cache-line aligned: a `Vec<u8>` from `malloc` starts 16 bytes past a
//! page, and reading a page-cached file into it at 1 MiB a call costs
//! 2-3x the CPU of the same reads into a page-aligned buffer on the
//! machines `benches/README.md` describes. Whole-disk copies and hashes
//! read gigabytes this way, so their buffers start on a page.

/// Alignment of [`AlignedBuf::get`]'s slice: one page.
pub const ALIGN: usize = 4096;

/// A byte buffer reused across reads: allocated (zero-filled, once) for the
/// largest length asked so far and handed out from its first page-aligned
/// byte. Its bytes are whatever the last user left there.
#[derive(Debug, Default)]
pub struct AlignedBuf {
    storage: Vec<u8>,
    start: usize,
}

impl AlignedBuf {
    /// An empty buffer; the first [`get`](Self::get) allocates.
    pub fn new() -> Self {
        Self::default()
    }

    /// A buffer ready for `len` bytes.
    pub fn with_len(len: usize) -> Self {
        let mut b = Self::new();
        b.get(len);
        b
    }

    /// `len` bytes starting on a page boundary, holding what the last user
    /// left (zeros when newly allocated). Grows the buffer when it is
    /// smaller than `len`; never shrinks it.
    pub fn get(&mut self, len: usize) -> &mut [u8] {
        let fits = self
            .start
            .checked_add(len)
            .is_some_and(|end| end <= self.storage.len());
        if !fits {
            // `vec![0; n]` asks the allocator for zeroed memory, which a
            // large allocation gets as fresh pages: no zero-fill pass here.
            self.storage = vec![0u8; len.saturating_add(ALIGN)];
            let offset = self.storage.as_ptr().align_offset(ALIGN);
            // `align_offset` may decline (usize::MAX); unaligned is still correct.
            self.start = if offset < ALIGN { offset } else { 0 };
        }
        let end = self.start.saturating_add(len).min(self.storage.len());
        self.storage.get_mut(self.start..end).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_start_on_a_page_and_keep_their_bytes() {
        let mut b = AlignedBuf::new();
        let s = b.get(100_000);
        assert_eq!(s.len(), 100_000);
        assert_eq!(s.as_ptr() as usize % ALIGN, 0);
        s[5] = 7;
        let s = b.get(10);
        assert_eq!((s.len(), s[5]), (10, 7));
        let s = b.get(1 << 20);
        assert_eq!(s.len(), 1 << 20);
        assert_eq!(s.as_ptr() as usize % ALIGN, 0);
        assert!(b.get(0).is_empty());
    }
}
