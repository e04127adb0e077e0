#!/usr/bin/env bash
# Mount comparison (issue 8): `cp` of one big file out of a mounted
# streamOptimized VMDK (diskimage mount, release build) against
# `qemu-img convert -O raw` of the same image, both to tmpfs (/dev/shm),
# warm page cache, best of N runs. The copied file's sha256 is checked
# against the source file each run. Prints both times and the ratio
# (>1 = the mount is faster). A script, not a test: timings never gate.
#
#   benches/mount-compare.sh [FILE_MIB] [RUNS]      (defaults: 200 MiB, 3 runs)
#
# Needs qemu-img, mke2fs (e2fsprogs), python3, /dev/fuse and fusermount3.
set -euo pipefail
file_mib=${1:-200}
runs=${2:-3}
cd "$(dirname "$0")/.."
cargo build --release -q
bin=$(pwd)/target/release/diskimage
work=$(mktemp -d /dev/shm/diskimage-mount-compare.XXXXXX)
pid=
cleanup() {
  [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# Compressible, text-like content (seeded words), as benches/compare.sh.
mkdir "$work/tree"
python3 benches/text-data.py "$work/tree/big.bin" "$file_mib" "$file_mib"
want=$(sha256sum "$work/tree/big.bin" | cut -d' ' -f1)
fs_mib=$(( file_mib + file_mib / 8 + 16 ))
mke2fs -q -t ext4 -d "$work/tree" "$work/fs.raw" "${fs_mib}M"
rm -rf "$work/tree"
qemu-img convert -O vmdk -o subformat=streamOptimized "$work/fs.raw" "$work/fs.vmdk"
rm -f "$work/fs.raw"

best() { sort -n | head -1; }
secs() { local s; s=$(date +%s.%N); "$@" >/dev/null; echo "$(date +%s.%N) - $s" | bc; }

qemu=$(for _ in $(seq "$runs"); do
  secs qemu-img convert -O raw "$work/fs.vmdk" "$work/out.raw"; rm -f "$work/out.raw"
done | best)

mkdir "$work/mnt"
"$bin" mount "$work/fs.vmdk" "$work/mnt" 2>"$work/mount.log" &
pid=$!
for _ in $(seq 200); do grep -q " $work/mnt " /proc/mounts && break; sleep 0.05; done
grep -q " $work/mnt " /proc/mounts || { cat "$work/mount.log"; exit 1; }
mount_t=$(for _ in $(seq "$runs"); do
  # A fresh mount's page cache would make later runs free: drop it.
  echo 1 > /proc/sys/vm/drop_caches 2>/dev/null || true
  t=$(secs cp "$work/mnt/big.bin" "$work/out.bin")
  got=$(sha256sum "$work/out.bin" | cut -d' ' -f1)
  [ "$got" = "$want" ] || { echo "sha256 mismatch: $got != $want" >&2; exit 1; }
  rm -f "$work/out.bin"
  echo "$t"
done | best)

printf 'streamOptimized VMDK, %s MiB file, best of %s:\n' "$file_mib" "$runs"
printf '  qemu-img convert -O raw (whole disk): %6.3f s\n' "$qemu"
printf '  cp out of diskimage mount (one file): %6.3f s\n' "$mount_t"
printf '  ratio (qemu-img / mount):              %6.2f\n' "$(echo "$qemu / $mount_t" | bc -l)"
