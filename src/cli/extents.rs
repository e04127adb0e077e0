//! Walking a device's allocation map in bounded chunks, and reading its
//! bytes run by run: the shared engine of `map`, `dump` and `hash`.

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
    /// Bytes read from the device at this offset.
    Data(u64, &'a [u8]),
    /// This many zero bytes (the map said Zero or Unallocated).
    Zeros(u64),
}

/// Reads the whole device in order, calling `f` with each piece.
pub fn for_each_piece(
    device: &dyn BlockDevice,
    mut f: impl FnMut(Piece<'_>) -> Result<(), super::CliError>,
) -> Result<(), super::CliError> {
    let mut buf = vec![0u8; READ_CHUNK];
    for_each_extent(device, |e| {
        if e.kind.reads_as_zero() {
            return f(Piece::Zeros(e.len));
        }
        let mut off = e.offset;
        while off < e.end() {
            let n = usize::try_from(e.end() - off)
                .unwrap_or(READ_CHUNK)
                .min(READ_CHUNK);
            let chunk = &mut buf[..n];
            device.read_at(chunk, off)?;
            f(Piece::Data(off, chunk))?;
            off += n as u64;
        }
        Ok(())
    })
}
