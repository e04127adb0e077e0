//! Walking a device's allocation map in bounded chunks, and reading its
//! bytes run by run: the shared engine of `map`, `dump` and `hash`.

use std::sync::mpsc::{channel, sync_channel};

use diskimage::buffer::AlignedBuf;
use diskimage::{BlockDevice, Extent};

/// The map is asked for this many bytes at a time, so that a huge sparse
/// disk never needs its whole map in memory.
pub const MAP_CHUNK: u64 = 1 << 30;
/// Bytes read per `read_at` while copying or hashing.
pub const READ_CHUNK: usize = 4 << 20;

/// Calls `f` with each extent of the whole device, coalesced across chunks.
pub fn for_each_extent(
    device: &dyn BlockDevice,
    mut f: impl FnMut(Extent) -> Result<(), super::CliError>,
) -> Result<(), super::CliError> {
    let size = device.size();
    let mut pending: Option<Extent> = None;
    let mut offset = 0;
    while offset < size {
        let len = MAP_CHUNK.min(size - offset);
        for e in device.map(offset, len)? {
            match &mut pending {
                Some(p) if p.kind == e.kind && p.end() == e.offset => p.len += e.len,
                _ => {
                    if let Some(p) = pending.replace(e) {
                        f(p)?;
                    }
                }
            }
        }
        offset += len;
    }
    if let Some(p) = pending {
        f(p)?;
    }
    Ok(())
}

/// A piece of the disk handed to a consumer.
pub enum Piece<'a> {
    /// Bytes read from the device (pieces come in disk order).
    Data(&'a [u8]),
    /// This many zero bytes (the map said Zero or Unallocated).
    Zeros(u64),
    /// `len` bytes from disk offset `offset`, not read: the device said
    /// they are stored verbatim in its files
    /// ([`BlockDevice::verbatim_range`]), so the consumer can have the
    /// kernel copy them. Only for a consumer that asked for them.
    Stored {
        /// Disk offset of the first byte.
        offset: u64,
        /// Length in bytes.
        len: u64,
    },
}

enum Owned {
    Data(AlignedBuf, usize),
    Zeros(u64),
    Stored(u64, u64),
}

/// At most this many bytes of verbatim-stored disk go into one
/// [`Piece::Stored`], so that one hand-off covers many blocks of a sparse
/// format without the walk running far ahead of the consumer.
const STORED_MAX: u64 = 64 << 20;

/// How many bytes from `offset` (up to `end`, at most [`STORED_MAX`]) the
/// device stores verbatim: 0 when the byte at `offset` is not so stored.
pub fn stored_run(device: &dyn BlockDevice, offset: u64, end: u64) -> u64 {
    let limit = end.min(offset.saturating_add(STORED_MAX));
    let mut at = offset;
    while at < limit {
        match device.verbatim_range(at, limit - at) {
            Some(r) if r.len > 0 => at += r.len.min(limit - at),
            _ => break,
        }
    }
    at - offset
}

/// Reads the whole device in order, calling `f` with each piece. A reader
/// thread stays up to two chunks ahead, so reading (and inflating, for
/// compressed formats) overlaps with what `f` does (writing, hashing). With
/// `stored`, runs the device stores verbatim come as [`Piece::Stored`]
/// instead of being read. Read buffers are page-aligned
/// ([`AlignedBuf`]) and reused: no allocation or zero-fill per chunk.
pub fn for_each_piece(
    device: &dyn BlockDevice,
    stored: bool,
    mut f: impl FnMut(Piece<'_>) -> Result<(), super::CliError>,
) -> Result<(), super::CliError> {
    const BUFFERS: usize = 3;
    std::thread::scope(|s| {
        let (tx, rx) = sync_channel::<Result<Owned, super::CliError>>(BUFFERS - 1);
        let (back_tx, back_rx) = channel::<AlignedBuf>();
        for _ in 0..BUFFERS {
            let _ = back_tx.send(AlignedBuf::new());
        }
        s.spawn(move || {
            let stopped = || super::CliError::Usage("output stopped".into());
            let result = for_each_extent(device, |e| {
                if e.kind.reads_as_zero() {
                    return tx.send(Ok(Owned::Zeros(e.len))).map_err(|_| stopped());
                }
                let mut off = e.offset;
                while off < e.end() {
                    if stored {
                        let n = stored_run(device, off, e.end());
                        if n > 0 {
                            tx.send(Ok(Owned::Stored(off, n))).map_err(|_| stopped())?;
                            off += n;
                            continue;
                        }
                    }
                    let n = usize::try_from(e.end() - off)
                        .unwrap_or(READ_CHUNK)
                        .min(READ_CHUNK);
                    let mut buf = back_rx.recv().map_err(|_| stopped())?;
                    device.read_at(buf.get(n), off)?;
                    tx.send(Ok(Owned::Data(buf, n))).map_err(|_| stopped())?;
                    off += n as u64;
                }
                Ok(())
            });
            if let Err(e) = result {
                let _ = tx.send(Err(e));
            }
        });
        for msg in rx {
            match msg? {
                Owned::Data(mut buf, n) => {
                    f(Piece::Data(buf.get(n)))?;
                    let _ = back_tx.send(buf);
                }
                Owned::Zeros(n) => f(Piece::Zeros(n))?,
                Owned::Stored(offset, len) => f(Piece::Stored { offset, len })?,
            }
        }
        Ok(())
    })
}
