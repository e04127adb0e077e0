//! Read-ahead for an open file of a mounted volume.
//!
//! The kernel hands a FUSE file system reads of at most a few hundred KiB
//! (its page-cache read-ahead window), so a compressed image would inflate
//! only a handful of grains per request, one request after another. When an
//! open file is read sequentially, [`ReadAhead`] instead reads it in chunks
//! of up to [`CHUNK_MAX`] bytes, each with one read of the file-system file
//! (which becomes one large device read, so a streamOptimized VMDK inflates
//! the chunk's grains in parallel), answers the kernel's requests from the
//! current chunk, and has the next chunk fetched in the background while it
//! does.
//!
//! Memory is bounded: at most two chunks per open file (the current one and
//! the one being fetched), and at most [`BUDGET`] bytes of chunks across a
//! whole mount; past that, reads go straight to the file as before.
//! A read that is not sequential costs what it costs without read-ahead.

use std::io::{self, Read, Seek, SeekFrom};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;

use diskimage_fs::FileReader;

/// First chunk of a sequential run; each next chunk doubles, up to [`CHUNK_MAX`].
pub const CHUNK_MIN: usize = 1 << 20;
/// Largest chunk read at once.
pub const CHUNK_MAX: usize = 8 << 20;
/// Bytes of chunks all open files of one mount may hold together.
pub const BUDGET: usize = 64 << 20;

/// An open file's data and where its stream stands (a seek is made only
/// when a read starts elsewhere).
pub struct Cursor<'a> {
    file: Box<dyn FileReader + 'a>,
    pos: u64,
}

impl<'a> Cursor<'a> {
    /// A cursor at the start of `file`.
    pub fn new(file: Box<dyn FileReader + 'a>) -> Self {
        Cursor { file, pos: 0 }
    }

    /// Reads up to `len` bytes at `offset`: short only at the end of the
    /// file. After an error the position is unknown and the next read seeks.
    pub fn read_at(&mut self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        let filled = self.fill_at(offset, &mut buf).inspect_err(|_| {
            self.pos = u64::MAX;
        })?;
        buf.truncate(filled);
        Ok(buf)
    }

    fn fill_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos != offset {
            self.file.seek(SeekFrom::Start(offset))?;
            self.pos = offset;
        }
        let mut filled = 0;
        while let Some(rest) = buf.get_mut(filled..).filter(|r| !r.is_empty()) {
            match self.file.read(rest) {
                Ok(0) => break,
                Ok(n) => {
                    filled += n;
                    self.pos += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(filled)
    }
}

/// The read-ahead memory of one mount: bytes held by chunks, bounded by a
/// limit.
#[derive(Debug)]
pub struct Budget {
    held: AtomicUsize,
    limit: usize,
}

impl Budget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Arc<Budget> {
        Arc::new(Budget {
            held: AtomicUsize::new(0),
            limit,
        })
    }

    /// `len` bytes of the budget, or `None` when they would exceed it.
    pub fn take(self: &Arc<Self>, len: usize) -> Option<Grant> {
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(len).filter(|&n| n <= self.limit)
            })
            .ok()?;
        Some(Grant {
            budget: Arc::clone(self),
            len,
        })
    }

    /// Bytes held now.
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }
}

/// Bytes taken from a [`Budget`]; given back when dropped.
#[derive(Debug)]
pub struct Grant {
    budget: Arc<Budget>,
    len: usize,
}

impl Drop for Grant {
    fn drop(&mut self) {
        self.budget.held.fetch_sub(self.len, Ordering::AcqRel);
    }
}

/// Bytes of a file from `start`, and the budget they hold.
#[derive(Debug)]
pub struct Chunk {
    start: u64,
    data: Vec<u8>,
    /// Whether the file ended inside this chunk (it is shorter than asked).
    last: bool,
    _grant: Grant,
}

impl Chunk {
    /// `data` read at `start` for a request of `asked` bytes.
    pub fn new(start: u64, asked: usize, data: Vec<u8>, grant: Grant) -> Chunk {
        Chunk {
            start,
            last: data.len() < asked,
            data,
            _grant: grant,
        }
    }

    fn end(&self) -> u64 {
        self.start + self.data.len() as u64
    }

    fn holds(&self, offset: u64) -> bool {
        self.start <= offset && offset < self.end()
    }
}

/// A chunk being fetched in the background.
struct Pending {
    start: u64,
    rx: Receiver<io::Result<Chunk>>,
}

/// Starts fetching `len` bytes at `start` in the background (holding
/// `grant`); the chunk (or the error) arrives on the returned channel.
pub type Fetch<'f> = dyn FnMut(u64, usize, Grant) -> Receiver<io::Result<Chunk>> + 'f;

/// The read-ahead state of one open file.
pub struct ReadAhead {
    budget: Arc<Budget>,
    window: Option<Chunk>,
    pending: Option<Pending>,
    /// Where a sequential read continues.
    next_seq: u64,
    /// Size of the next chunk to fetch.
    next_len: usize,
}

impl ReadAhead {
    /// No read-ahead yet; chunks come out of `budget`.
    pub fn new(budget: Arc<Budget>) -> Self {
        ReadAhead {
            budget,
            window: None,
            pending: None,
            next_seq: 0,
            next_len: CHUNK_MIN,
        }
    }

    /// Answers a read of `size` bytes at `offset` of `file` (short only at
    /// its end): from the read-ahead chunks when the file is being read
    /// sequentially (`fetch` starts a background fetch), else straight
    /// from the file.
    pub fn read(
        &mut self,
        file: &mut Cursor<'_>,
        offset: u64,
        size: usize,
        fetch: &mut Fetch<'_>,
    ) -> io::Result<Vec<u8>> {
        let sequential = offset == self.next_seq
            || self.window.as_ref().is_some_and(|w| w.holds(offset))
            || self.pending.as_ref().is_some_and(|p| p.start == offset);
        let out = if sequential {
            self.read_sequential(file, offset, size, fetch)?
        } else {
            // Somewhere else: keep what is buffered (a reader may come
            // back), start again from a small chunk if it goes on here.
            self.next_len = CHUNK_MIN;
            file.read_at(offset, size)?
        };
        self.next_seq = offset + out.len() as u64;
        Ok(out)
    }

    fn read_sequential(
        &mut self,
        file: &mut Cursor<'_>,
        offset: u64,
        size: usize,
        fetch: &mut Fetch<'_>,
    ) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(size);
        let mut at = offset;
        while out.len() < size {
            if !self.window.as_ref().is_some_and(|w| w.holds(at)) {
                if self
                    .window
                    .as_ref()
                    .is_some_and(|w| w.last && w.end() <= at)
                {
                    break; // the end of the file
                }
                if !self.advance(file, at, fetch)? {
                    // No budget: the rest straight from the file.
                    let rest = file.read_at(at, size - out.len())?;
                    out.extend_from_slice(&rest);
                    break;
                }
            }
            let Some(w) = &self.window else { break };
            let from = usize::try_from(at - w.start).unwrap_or(usize::MAX);
            let take = (size - out.len()).min(w.data.len().saturating_sub(from));
            let Some(part) = w.data.get(from..from + take) else {
                break;
            };
            out.extend_from_slice(part);
            at += take as u64;
            if take == 0 || (w.last && at >= w.end()) {
                break;
            }
        }
        Ok(out)
    }

    /// Makes the chunk starting at `at` the window: the one fetched in the
    /// background when it starts there, else read now. Then starts
    /// fetching the chunk after it. False when the budget has no room.
    fn advance(
        &mut self,
        file: &mut Cursor<'_>,
        at: u64,
        fetch: &mut Fetch<'_>,
    ) -> io::Result<bool> {
        // The old window goes first: its memory is the next one's.
        self.window = None;
        let fetched = match self.pending.take() {
            Some(p) if p.start == at => p.rx.recv().ok().and_then(Result::ok),
            _ => None,
        };
        let chunk = match fetched {
            Some(c) => c,
            None => {
                // Not fetched (or the fetch failed: read it here, where an
                // error is reported for this request).
                let len = self.next_len;
                let Some(grant) = self.budget.take(len) else {
                    return Ok(false);
                };
                Chunk::new(at, len, file.read_at(at, len)?, grant)
            }
        };
        self.next_len = (chunk.data.len().max(self.next_len) * 2).min(CHUNK_MAX);
        if !chunk.last {
            let len = self.next_len;
            if let Some(grant) = self.budget.take(len) {
                self.pending = Some(Pending {
                    start: chunk.end(),
                    rx: fetch(chunk.end(), len, grant),
                });
            }
        }
        self.window = Some(chunk);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;
    use std::sync::Mutex;

    /// A file that counts the reads that reach it and their sizes.
    struct Counted {
        data: io::Cursor<Vec<u8>>,
        reads: Arc<Mutex<Vec<usize>>>,
    }

    impl Read for Counted {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.data.read(buf)?;
            if n > 0 {
                self.reads.lock().unwrap().push(n);
            }
            Ok(n)
        }
    }

    impl Seek for Counted {
        fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
            self.data.seek(to)
        }
    }

    fn content(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 4093) as u8).collect()
    }

    /// Reads `file_len` bytes in requests of `req`, returning what came back
    /// and the sizes of the reads that reached the file (in the foreground
    /// and in the background).
    fn run(
        file_len: usize,
        budget: usize,
        requests: &[(u64, usize)],
    ) -> (Vec<Vec<u8>>, Vec<usize>, Vec<usize>) {
        let data = content(file_len);
        let fg = Arc::new(Mutex::new(Vec::new()));
        let mut cursor = Cursor::new(Box::new(Counted {
            data: io::Cursor::new(data.clone()),
            reads: Arc::clone(&fg),
        }));
        let bg = Arc::new(Mutex::new(Vec::new()));
        let mut bg_cursor = Cursor::new(Box::new(Counted {
            data: io::Cursor::new(data),
            reads: Arc::clone(&bg),
        }));
        let mut fetch = |start: u64, len: usize, grant: Grant| {
            let (tx, rx) = channel();
            let got = bg_cursor
                .read_at(start, len)
                .map(|d| Chunk::new(start, len, d, grant));
            tx.send(got).unwrap();
            rx
        };
        let b = Budget::new(budget);
        let mut ra = ReadAhead::new(Arc::clone(&b));
        let out = requests
            .iter()
            .map(|&(o, n)| ra.read(&mut cursor, o, n, &mut fetch).unwrap())
            .collect();
        assert!(b.held() <= 2 * CHUNK_MAX && b.held() <= budget);
        drop(ra);
        assert_eq!(b.held(), 0, "every chunk gives its budget back");
        let fg = fg.lock().unwrap().clone();
        let bg = bg.lock().unwrap().clone();
        (out, fg, bg)
    }

    fn expect(file_len: usize, requests: &[(u64, usize)], got: &[Vec<u8>]) {
        let data = content(file_len);
        for (&(o, n), g) in requests.iter().zip(got) {
            let o = usize::try_from(o).unwrap();
            let want = data.get(o.min(file_len)..(o + n).min(file_len)).unwrap();
            assert!(g == want, "request at {o} of {n} bytes");
        }
    }

    #[test]
    fn sequential_reads_become_large_reads_of_the_file() {
        let len = 40 << 20;
        let req: Vec<(u64, usize)> = (0..len / (128 << 10) + 1)
            .map(|i| ((i * (128 << 10)) as u64, 128 << 10))
            .collect();
        let (got, fg, bg) = run(len, BUDGET, &req);
        expect(len, &req, &got);
        // 320 requests of 128 KiB; the file saw chunks of 1, 2, 4, 8 MiB ...
        let reads = fg.len() + bg.len();
        assert!(reads <= 10, "{fg:?} {bg:?}");
        assert_eq!(
            fg,
            vec![CHUNK_MIN],
            "only the first chunk in the foreground"
        );
        let (tail, full) = bg.split_last().unwrap();
        assert!(full.iter().all(|&n| n >= 2 * CHUNK_MIN), "{bg:?}");
        assert_eq!(full.iter().rev().take(4).sum::<usize>(), 4 * CHUNK_MAX);
        assert_eq!(*tail, CHUNK_MIN, "the rest of the file");
        assert_eq!(fg.iter().chain(&bg).sum::<usize>(), len);
    }

    #[test]
    fn requests_across_chunks_at_the_end_and_past_it() {
        let len = (3 << 20) + 12_345;
        // Odd sizes straddle chunk boundaries; the last ones reach the end
        // and go past it.
        let mut req = Vec::new();
        let mut at = 0u64;
        while at < len as u64 + 300_000 {
            req.push((at, 300_001));
            at += 300_001;
        }
        let (got, _, _) = run(len, BUDGET, &req);
        expect(len, &req, &got);
        assert!(got.last().unwrap().is_empty());
    }

    #[test]
    fn random_reads_go_straight_to_the_file_and_cost_what_they_ask() {
        let len = 20 << 20;
        let req = [
            (5 << 20, 4096),
            (17 << 20, 4096),
            (1 << 20, 100),
            (9_999_999, 1),
        ];
        let (got, fg, bg) = run(len, BUDGET, &req);
        expect(len, &req, &got);
        assert_eq!(fg, vec![4096, 4096, 100, 1]);
        assert!(bg.is_empty());
    }

    #[test]
    fn a_random_read_keeps_the_window_and_sequential_reads_resume() {
        let len = 20 << 20;
        let k = 64 << 10;
        let req = [(0, k), (k as u64, k), (15 << 20, 10), (2 * k as u64, k)];
        let (got, fg, _) = run(len, BUDGET, &req);
        expect(len, &req, &got);
        assert_eq!(fg, vec![CHUNK_MIN, 10]);
    }

    #[test]
    fn without_budget_reads_go_straight_to_the_file() {
        let len = 4 << 20;
        let req: Vec<(u64, usize)> = (0..32).map(|i| (i * (128 << 10), 128 << 10)).collect();
        let (got, fg, bg) = run(len, CHUNK_MIN - 1, &req);
        expect(len, &req, &got);
        assert_eq!(fg.len(), 32);
        assert!(bg.is_empty());
        // Room for one chunk: it is read, the background fetch is not.
        let (got, fg, bg) = run(len, CHUNK_MIN, &req);
        expect(len, &req, &got);
        assert_eq!(fg.first(), Some(&CHUNK_MIN));
        assert!(bg.is_empty());
    }

    #[test]
    fn a_failed_background_fetch_is_read_again_in_the_foreground() {
        let data = content(3 << 20);
        let mut cursor = Cursor::new(Box::new(io::Cursor::new(data.clone())));
        let mut fetch = |_: u64, _: usize, _: Grant| {
            let (tx, rx) = channel();
            tx.send(Err(io::Error::other("lost"))).unwrap();
            rx
        };
        let mut ra = ReadAhead::new(Budget::new(BUDGET));
        let mut got = Vec::new();
        for i in 0..24u64 {
            got.extend(ra.read(&mut cursor, i << 17, 1 << 17, &mut fetch).unwrap());
        }
        assert!(got == data);
    }
}
