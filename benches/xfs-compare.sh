#!/usr/bin/env bash
# XFS read speed: `diskimage extract` of a 10,000-file XFS volume against
# `cp -a` out of a read-only kernel loop mount of the same image (warm page
# cache, output to tmpfs), and `diskimage ls` of directories of 1,000,
# 10,000 and 100,000 entries (per-entry time: listing is linear in size).
# The tree is the one benches/make-fs-images.sh builds (100 folders of 100
# files, 0 B to 64 KiB, 128 MiB), written into the volume by the kernel.
#
#   benches/xfs-compare.sh [RUNS]     (default 5 rounds; as root: loop mounts)
#
# Per tool the median wall time over the rounds; the two run in turn in
# each round. Images in target/fs-bench/ (not committed). Needs xfsprogs,
# python3; builds diskimage in release mode.
set -euo pipefail
runs=${1:-5}
cd "$(dirname "$0")/.."
out=target/fs-bench
mkdir -p "$out"
t=$(mktemp -d)
trap 'umount "$t/mnt" 2>/dev/null || true; rm -rf "$t"' EXIT
mkdir "$t/mnt"
if [ ! -f "$out/xfs.img" ]; then
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
    truncate -s 512M "$t/xfs.img"
    mkfs.xfs -q -f "$t/xfs.img"
    mount -o loop "$t/xfs.img" "$t/mnt"
    cp -a "$t/tree/." "$t/mnt/"
    umount "$t/mnt"
    mv "$t/xfs.img" "$out/xfs.img"
fi
if [ ! -f "$out/xfs-dirs.img" ]; then
    truncate -s 512M "$t/dirs.img"
    mkfs.xfs -q -f "$t/dirs.img"
    mount -o loop "$t/dirs.img" "$t/mnt"
    python3 - "$t/mnt" <<'PY'
import os, sys
m = sys.argv[1]
open(m + "/target", "w").close()
for n in (1000, 10000, 100000):
    d = f"{m}/d{n}"
    os.mkdir(d)
    for i in range(n):
        os.link(m + "/target", f"{d}/entry_with_a_name_of_some_length_{i:06d}")
PY
    umount "$t/mnt"
    mv "$t/dirs.img" "$out/xfs-dirs.img"
fi
cargo build --release -q
bin=$(pwd)/target/release/diskimage
work=$(mktemp -d /dev/shm/diskimage-xfs.XXXXXX)
trap 'umount "$t/mnt" 2>/dev/null || true; rm -rf "$t" "$work"' EXIT
mount -o loop,ro "$out/xfs.img" "$t/mnt"

# wall CMD...: prints the wall time of CMD in seconds (monotonic clock)
# and its CPU time (user + sys of the child, from wait4's rusage).
wall() {
    python3 - "$@" <<'PY'
import resource, subprocess, sys, time
t = time.monotonic()
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
w = time.monotonic() - t
r = resource.getrusage(resource.RUSAGE_CHILDREN)
print(f"{w:.4f} {r.ru_utime + r.ru_stime:.4f}")
PY
}
# median COLUMN < rows
median() { awk -v c="$1" '{print $c}' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# Warm both paths once.
cp -a "$t/mnt/." "$work/warm-cp"; rm -rf "$work/warm-cp"
"$bin" extract --output "$work/warm-di" "$out/xfs.img" / > /dev/null 2>&1
rm -rf "$work/warm-di"
: > "$work/cp"; : > "$work/di"
for _ in $(seq "$runs"); do
    wall cp -a "$t/mnt/." "$work/o-cp" >> "$work/cp"; rm -rf "$work/o-cp"
    wall "$bin" extract --output "$work/o-di" "$out/xfs.img" / >> "$work/di"; rm -rf "$work/o-di"
done
umount "$t/mnt"
cp_t=$(median 1 < "$work/cp"); di_t=$(median 1 < "$work/di")
cp_c=$(median 2 < "$work/cp"); di_c=$(median 2 < "$work/di")
printf 'extract of 10,000 files (median of %s): cp -a from loop mount %ss wall %ss cpu, diskimage extract %ss wall %ss cpu; ratio wall %s\n' \
    "$runs" "$cp_t" "$cp_c" "$di_t" "$di_c" "$(python3 -c "print(f'{$cp_t/$di_t:.2f}x')")"
for n in 1000 10000 100000; do
    : > "$work/ls"
    for _ in $(seq "$runs"); do wall "$bin" ls "$out/xfs-dirs.img" "/d$n" >> "$work/ls"; done
    s=$(median 1 < "$work/ls"); c=$(median 2 < "$work/ls")
    printf 'ls of %6d entries: %ss wall, %ss cpu, %s us cpu per entry\n' "$n" "$s" "$c" "$(python3 -c "print(f'{$c/$n*1e6:.2f}')")"
done
