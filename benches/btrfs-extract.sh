#!/usr/bin/env bash
# extract of the 10,000-file Btrfs fixture (fixtures/btrfs/many.img.gz)
# against `cp -a` from a read-only kernel loop mount of the same image,
# each run twice (the second, warm, is the figure). Needs root (loop
# mount) and a release build: cargo build --release
# usage: bash benches/btrfs-extract.sh [OUTDIR-PARENT]   (default /dev/shm)
set -euo pipefail
bin=$(pwd)/target/release/diskimage
w=$(mktemp -d "${1:-/dev/shm}/btrfs-bench.XXXXXX")
trap 'umount "$w/m" 2>/dev/null || true; rm -rf "$w"' EXIT
mkdir "$w/m"
gunzip -c fixtures/btrfs/many.img.gz > "$w/many.img"
mount -o loop,ro "$w/many.img" "$w/m"
for i in 1 2; do
  /usr/bin/time -f "cp -a from the loop mount: %e s" cp -a "$w/m" "$w/cp$i"
  /usr/bin/time -f "diskimage extract: %e s" "$bin" extract "$w/many.img" -o "$w/ex$i" > /dev/null
done
