#!/usr/bin/env python3
"""Writes compressible, text-like bench data (seeded words) to PATH:
DATA_MIB MiB of it, then zeros up to TOTAL_MIB MiB (a hole).

Usage: text-data.py PATH TOTAL_MIB DATA_MIB
Used by benches/compare.sh and benches/mount-compare.sh, so both measure
the same bytes."""
import random
import sys

path, total, data = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
r = random.Random(2026)
words = [bytes(r.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(r.randint(2, 9))) for _ in range(5000)]
chunk = bytearray()
while len(chunk) < (1 << 20):
    chunk += r.choice(words) + b" "
chunk = bytes(chunk[: 1 << 20])
with open(path, "wb") as f:
    for i in range(data):
        f.write(chunk[i % 7 :] + chunk[: i % 7])
    f.truncate(total << 20)
