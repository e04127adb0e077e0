#!/usr/bin/env bash
# The 10,000-file images of the file-system bench (benches/fs.rs) and of
# benches/compare-extract.sh: one seeded tree (100 folders of 100 files,
# 0 B to 64 KiB, text-like content) copied by the real tools into ext4
# (mke2fs -d), FAT32 (mkfs.fat + mcopy) and NTFS (mkntfs + ntfs-3g).
# Written to target/fs-bench/ (not committed: ~1 GiB of raw volumes);
# rerunnable, skips images that exist.
#   benches/make-fs-images.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/fs-bench}
mkdir -p "$out"
t=$(mktemp -d)
trap 'fusermount3 -u "$t/mnt" 2>/dev/null || true; rm -rf "$t"' EXIT
python3 - "$t/tree" <<'PY'
import os, random, sys
root = sys.argv[1]
r = random.Random(10000)
words = [bytes(r.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(r.randint(2, 9))) for _ in range(2000)]
blob = b" ".join(r.choice(words) for _ in range(200000))
for d in range(100):
    os.makedirs(os.path.join(root, "dir%03d" % d))
    for f in range(100):
        n = r.choice([0, 100, 1000, 4096, 5000, 20000, 65536])
        at = r.randrange(0, len(blob) - n)
        with open(os.path.join(root, "dir%03d" % d, "file%03d.txt" % f), "wb") as fh:
            fh.write(blob[at:at + n])
PY
size=$(( $(du -sm "$t/tree" | cut -f1) * 2 + 64 ))
[ -f "$out/ext4.img" ] || mke2fs -q -F -t ext4 -d "$t/tree" "$out/ext4.img" "${size}M"
if [ ! -f "$out/fat32.img" ]; then
    mkfs.fat -F 32 -C "$t/fat32.img" $((size * 1024)) > /dev/null
    mcopy -s -i "$t/fat32.img" "$t/tree"/* ::/
    mv "$t/fat32.img" "$out/fat32.img"
fi
if [ ! -f "$out/ntfs.img" ]; then
    truncate -s "${size}M" "$t/ntfs.img"
    mkntfs -q -F -Q "$t/ntfs.img"
    mkdir "$t/mnt"
    ntfs-3g "$t/ntfs.img" "$t/mnt"
    cp -r "$t/tree/." "$t/mnt/"
    fusermount3 -u "$t/mnt"
    mv "$t/ntfs.img" "$out/ntfs.img"
fi
ls -l "$out"
