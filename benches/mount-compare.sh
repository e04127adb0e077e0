#!/usr/bin/env bash
# Mount comparison (issue 8): `cp` of one big file out of a mounted
# streamOptimized VMDK (diskimage mount, release build) against
# `qemu-img convert -O raw` of the same image, both to tmpfs (/dev/shm).
# The two alternate, run after run, in the same invocation; each mount run
# is a fresh mount (no page cache from the last run). The copied file's
# sha256 is checked every run. Prints the median wall time and CPU time
# (user+sys: of qemu-img; of the mount process during the cp, plus cp's
# own) of each, their ratios (>1 = the mount is faster) and the load
# average. A script, not a test: timings never gate.
#
#   benches/mount-compare.sh [FILE_MIB] [RUNS]      (defaults: 200 MiB, 5 runs)
#
# Needs qemu-img, mke2fs (e2fsprogs), python3, /dev/fuse and fusermount3.
set -euo pipefail
file_mib=${1:-200}
runs=${2:-5}
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

median() { sort -n | awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }
now() { date +%s.%N; }
# CPU seconds (user+sys) of process $1 so far.
cpu_of() { awk -v t="$(getconf CLK_TCK)" '{print ($14+$15)/t}' "/proc/$1/stat"; }

mkdir "$work/mnt"
: > "$work/qemu.tsv"; : > "$work/mount.tsv"
for _ in $(seq "$runs"); do
  # qemu-img: wall and CPU from GNU time's format.
  /usr/bin/time -f '%e\t%U\t%S' -o "$work/t" qemu-img convert -O raw "$work/fs.vmdk" "$work/out.raw"
  rm -f "$work/out.raw"
  awk -F'\t' '{printf "%s\t%s\n", $1, $2+$3}' "$work/t" >> "$work/qemu.tsv"

  "$bin" mount "$work/fs.vmdk" "$work/mnt" 2>"$work/mount.log" &
  pid=$!
  for _ in $(seq 200); do grep -q " $work/mnt " /proc/mounts && break; sleep 0.05; done
  grep -q " $work/mnt " /proc/mounts || { cat "$work/mount.log"; exit 1; }
  c0=$(cpu_of "$pid"); t0=$(now)
  /usr/bin/time -f '%U\t%S' -o "$work/t" cp "$work/mnt/big.bin" "$work/out.bin"
  t1=$(now); c1=$(cpu_of "$pid")
  awk -F'\t' -v w="$(echo "$t1 - $t0" | bc)" -v m="$(echo "$c1 - $c0" | bc)" \
    '{printf "%s\t%s\n", w, m+$1+$2}' "$work/t" >> "$work/mount.tsv"
  kill -TERM "$pid"; wait "$pid" || true; pid=
  got=$(sha256sum "$work/out.bin" | cut -d' ' -f1)
  [ "$got" = "$want" ] || { echo "sha256 mismatch: $got != $want" >&2; exit 1; }
  rm -f "$work/out.bin"
done

qw=$(cut -f1 "$work/qemu.tsv" | median); qc=$(cut -f2 "$work/qemu.tsv" | median)
mw=$(cut -f1 "$work/mount.tsv" | median); mc=$(cut -f2 "$work/mount.tsv" | median)
printf 'streamOptimized VMDK, %s MiB file, median of %s alternating runs (%s CPUs, load %s):\n' \
  "$file_mib" "$runs" "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)"
printf '                                         wall s   CPU s\n'
printf '  qemu-img convert -O raw (whole disk): %7.3f %7.3f\n' "$qw" "$qc"
printf '  cp out of diskimage mount (one file): %7.3f %7.3f\n' "$mw" "$mc"
printf '  ratio (qemu-img / mount):              %6.2f  %6.2f\n' \
  "$(echo "$qw / $mw" | bc -l)" "$(echo "$qc / $mc" | bc -l)"
