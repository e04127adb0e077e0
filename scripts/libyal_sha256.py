#!/usr/bin/env python3
"""Prints `SIZE SHA256` of a virtual disk as libyal's readers see it.

Usage: libyal_sha256.py vhdi|vmdk IMAGE [PARENT ...]   (child first)

vhdi: libvhdi (pip libvhdi-python, module pyvhdi) for VHD and VHDX;
vmdk: libvmdk (pip libvmdk-python, module pyvmdk). Parents are opened and
set in order, so a chain is read as libyal resolves it. Reads in 1 MiB
pieces. Used by tests/differential.rs as an independent reader, and
imported by the fixture generators (`read_chain`).

libvhdi 20260901 returns zeros for present sectors of a grandchild's
partial block when one read spans blocks of several chain levels: read
such chains with `piece=512`."""

import hashlib
import sys

CHUNK = 1 << 20


def open_vhdi(path):
    import pyvhdi
    f = pyvhdi.file()
    f.open(path)
    return f


def open_vmdk(path):
    import pyvmdk
    h = pyvmdk.handle()
    h.open(path)
    h.open_extent_data_files()
    return h


def pieces(reader, paths, piece=CHUNK):
    """Yields the virtual disk of `paths` (child first, parents set in
    order) in `piece`-byte reads. `reader` is "vhdi" or "vmdk"."""
    opener = open_vhdi if reader == "vhdi" else open_vmdk
    chain = [opener(p) for p in paths]
    for child, parent in zip(chain, chain[1:]):
        child.set_parent(parent)
    top = chain[0]
    size = top.get_media_size()
    off = 0
    while off < size:
        n = min(piece, size - off)
        data = top.read_buffer_at_offset(n, off)
        if len(data) != n:
            sys.exit(f"short read at {off}: {len(data)} of {n}")
        yield data
        off += n
    for f in chain:
        f.close()


def read_chain(reader, paths, piece=CHUNK):
    """The whole virtual disk of `paths` as bytes (see `pieces`)."""
    return b"".join(pieces(reader, paths, piece))


def main():
    if len(sys.argv) < 3 or sys.argv[1] not in ("vhdi", "vmdk"):
        sys.exit(__doc__)
    h = hashlib.sha256()
    size = 0
    for data in pieces(sys.argv[1], sys.argv[2:]):
        h.update(data)
        size += len(data)
    print(size, h.hexdigest())


if __name__ == "__main__":
    main()
