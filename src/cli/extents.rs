//! Walking a device's allocation map in bounded chunks, and reading its
//! bytes run by run: the shared engine of `map`, `dump` and `hash`.

use std::sync::mpsc::{channel, sync_channel};

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

/// A piece of the disk handed to a consumer: bytes read, or a run of zeros
/// that needed no read.
pub enum Piece<'a> {
    /// Bytes read from the device (pieces come in disk order).
    Data(&'a [u8]),
    /// This many zero bytes (the map said Zero or Unallocated).
    Zeros(u64),
}

enum Owned {
    Data(Vec<u8>),
    Zeros(u64),
}

/// Reads the whole device in order, calling `f` with each piece. A reader
/// thread stays up to two chunks ahead, so reading (and inflating, for
/// compressed formats) overlaps with what `f` does (writing, hashing).
pub fn for_each_piece(
    device: &dyn BlockDevice,
    mut f: impl FnMut(Piece<'_>) -> Result<(), super::CliError>,
) -> Result<(), super::CliError> {
    const BUFFERS: usize = 3;
    std::thread::scope(|s| {
        let (tx, rx) = sync_channel::<Result<Owned, super::CliError>>(BUFFERS - 1);
        let (back_tx, back_rx) = channel::<Vec<u8>>();
        for _ in 0..BUFFERS {
            let _ = back_tx.send(Vec::with_capacity(READ_CHUNK));
        }
        s.spawn(move || {
            let stopped = || super::CliError::Usage("output stopped".into());
            let result = for_each_extent(device, |e| {
                if e.kind.reads_as_zero() {
                    return tx.send(Ok(Owned::Zeros(e.len))).map_err(|_| stopped());
                }
                let mut off = e.offset;
                while off < e.end() {
                    let n = usize::try_from(e.end() - off)
                        .unwrap_or(READ_CHUNK)
                        .min(READ_CHUNK);
                    let mut buf = back_rx.recv().map_err(|_| stopped())?;
                    buf.resize(n, 0);
                    device.read_at(&mut buf, off)?;
                    tx.send(Ok(Owned::Data(buf))).map_err(|_| stopped())?;
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
                Owned::Data(buf) => {
                    f(Piece::Data(&buf))?;
                    let _ = back_tx.send(buf);
                }
                Owned::Zeros(n) => f(Piece::Zeros(n))?,
            }
        }
        Ok(())
    })
}
