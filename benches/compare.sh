#!/usr/bin/env bash
# Comparison with qemu-img: the same virtual disk in several containers,
# read whole by `qemu-img convert -O raw` and by `diskimage dump -o`, both to
# tmpfs (/dev/shm), warm page cache, best of N runs. Prints one ratio per
# image: how many times faster diskimage is (>1 = faster). Formats that
# diskimage does not read yet are listed as such.
#
#   benches/compare.sh [SIZE_MIB] [RUNS]        (defaults: 1024 MiB, 3 runs)
#
# Needs qemu-img and python3; builds diskimage in release mode. VHD images
# are also read by libvhdi (pyvhdi) where it is installed.
set -euo pipefail
size_mib=${1:-1024}
runs=${2:-3}
cd "$(dirname "$0")/.."
cargo build --release -q
bin=$(pwd)/target/release/diskimage
work=$(mktemp -d /dev/shm/diskimage-compare.XXXXXX)
trap 'rm -rf "$work"' EXIT

# Text-like, compressible content (seeded words) on the first half, zeros after:
# a realistic mix of data and holes.
python3 - "$work/src.raw" "$size_mib" <<'PY'
import random, sys
path, mib = sys.argv[1], int(sys.argv[2])
r = random.Random(2026)
words = [bytes(r.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(r.randint(2, 9))) for _ in range(5000)]
chunk = bytearray()
while len(chunk) < (1 << 20):
    chunk += r.choice(words) + b" "
chunk = bytes(chunk[: 1 << 20])
with open(path, "wb") as f:
    for i in range(mib // 2):
        f.write(chunk[i % 7 :] + chunk[: i % 7])
    f.truncate(mib << 20)
PY

declare -A images=(
  [raw]="$work/src.raw"
)
qemu-img convert -f raw -O vmdk -o subformat=monolithicSparse "$work/src.raw" "$work/sparse.vmdk" && images[vmdk-monolithicSparse]="$work/sparse.vmdk"
qemu-img convert -f raw -O vmdk -o subformat=streamOptimized "$work/src.raw" "$work/stream.vmdk" && images[vmdk-streamOptimized]="$work/stream.vmdk"
qemu-img convert -f raw -O vpc -o subformat=dynamic,force_size=on "$work/src.raw" "$work/dynamic.vhd" && images[vhd-dynamic]="$work/dynamic.vhd"
qemu-img convert -f raw -O vhdx -o subformat=dynamic "$work/src.raw" "$work/dynamic.vhdx" && images[vhdx-dynamic]="$work/dynamic.vhdx"

best() { # best wall time in seconds of "$@" over $runs runs
  local b=999999 t0 t1 t
  for _ in $(seq "$runs"); do
    t0=$(date +%s.%N); "$@" >/dev/null 2>&1; t1=$(date +%s.%N)
    t=$(echo "$t1 - $t0" | bc -l); if (( $(echo "$t < $b" | bc -l) )); then b=$t; fi
  done
  echo "$b"
}

# libvhdi's Python binding as a second peer for VHD, where it is installed
# (PYVHDI_PYTHON names a python with pyvhdi, e.g. a venv's).
pyvhdi_py=${PYVHDI_PYTHON:-python3}
"$pyvhdi_py" -c 'import pyvhdi' 2>/dev/null && have_pyvhdi=1 || have_pyvhdi=0
pyvhdi_dump() { # pyvhdi_dump IMAGE OUT: whole virtual disk to OUT, 1 MiB reads
  "$pyvhdi_py" - "$1" "$2" <<'PY'
import sys, pyvhdi
f = pyvhdi.file(); f.open(sys.argv[1]); n = f.get_media_size(); off = 0
with open(sys.argv[2], "wb") as out:
    while off < n:
        b = f.read_buffer_at_offset(min(1 << 20, n - off), off); out.write(b); off += len(b)
PY
}

printf '%-24s %10s %10s %8s\n' image qemu-img diskimage ratio
for name in $(echo "${!images[@]}" | tr ' ' '\n' | sort); do
  img=${images[$name]}
  if ! "$bin" info "$img" >/dev/null 2>&1; then
    printf '%-24s %s\n' "$name" "not read by diskimage yet: $("$bin" info "$img" 2>&1 | head -1)"
    continue
  fi
  [ "$("$bin" hash "$img" | cut -d' ' -f1)" = "$(sha256sum "$work/src.raw" | cut -d' ' -f1)" ] || { echo "$name: CONTENT MISMATCH"; exit 1; }
  q=$(best qemu-img convert -O raw "$img" "$work/out-q.raw")
  d=$(best "$bin" dump "$img" -o "$work/out-d.raw")
  printf '%-24s %9.3fs %9.3fs %7.2fx\n' "$name" "$q" "$d" "$(echo "$q / $d" | bc -l)"
  if [[ $name == vhd-* && $have_pyvhdi == 1 ]]; then
    p=$(best pyvhdi_dump "$img" "$work/out-p.raw")
    printf '%-24s %9.3fs %9.3fs %7.2fx  (pyvhdi instead of qemu-img)\n' "$name/pyvhdi" "$p" "$d" "$(echo "$p / $d" | bc -l)"
  fi
  rm -f "$work/out-q.raw" "$work/out-d.raw" "$work/out-p.raw"
done
