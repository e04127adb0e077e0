#!/usr/bin/env bash
# Comparison with qemu-img: the same virtual disk in several containers,
# read whole by `qemu-img convert -O raw` and by `diskimage dump -o`, both to
# tmpfs (/dev/shm), warm page cache, median of N runs. Prints, per image,
# wall and CPU (user + sys) seconds and how many times faster diskimage is
# (>1 = faster); VHD and VHDX also against libvhdi (pyvhdi, whole disk in
# 1 MiB reads). Every dump is compared with the source bytes.
#
#   benches/compare.sh [SIZE_MIB] [RUNS]        (defaults: 1024 MiB, 3 runs)
#
# Needs qemu-img, python3 and /usr/bin/time; builds diskimage in release mode. VHD images
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
python3 benches/text-data.py "$work/src.raw" "$size_mib" "$((size_mib / 2))"

declare -A images=()
qemu-img convert -f raw -O vmdk -o subformat=monolithicSparse "$work/src.raw" "$work/sparse.vmdk" && images[vmdk-monolithicSparse]="$work/sparse.vmdk"
qemu-img convert -f raw -O vmdk -o subformat=streamOptimized "$work/src.raw" "$work/stream.vmdk" && images[vmdk-streamOptimized]="$work/stream.vmdk"
qemu-img convert -f raw -O vpc -o subformat=dynamic,force_size=on "$work/src.raw" "$work/dynamic.vhd" && images[vhd-dynamic]="$work/dynamic.vhd"
qemu-img convert -f raw -O vhdx -o subformat=dynamic "$work/src.raw" "$work/dynamic.vhdx" && images[vhdx-dynamic]="$work/dynamic.vhdx"
qemu-img convert -f raw -O qcow2 "$work/src.raw" "$work/plain.qcow2" && images[qcow2]="$work/plain.qcow2"
qemu-img convert -f raw -O qcow2 -c "$work/src.raw" "$work/zlib.qcow2" && images[qcow2-zlib]="$work/zlib.qcow2"
qemu-img convert -f raw -O vdi "$work/src.raw" "$work/dynamic.vdi" && images[vdi-dynamic]="$work/dynamic.vdi"

# median() of "$@" over $runs runs: prints "WALL CPU" in seconds (CPU =
# user + sys, which a machine shared with other work disturbs less than
# wall time).
median() {
  local runs_out=()
  for _ in $(seq "$runs"); do
    /usr/bin/time -o "$work/time" -f '%e %U %S' "$@" >/dev/null 2>&1
    runs_out+=("$(tail -1 "$work/time")")
  done
  printf '%s\n' "${runs_out[@]}" | awk '{print $1, $2 + $3}' | sort -n | awk -v n="$runs" 'NR == int((n + 1) / 2)'
}

# libvhdi's Python binding as a second peer for VHD and VHDX, where it is
# installed (PYVHDI_PYTHON names a python with pyvhdi, e.g. a venv's).
pyvhdi_py=${PYVHDI_PYTHON:-python3}
"$pyvhdi_py" -c 'import pyvhdi' 2>/dev/null && have_pyvhdi=1 || have_pyvhdi=0
# pyvhdi_dump.py IMAGE OUT: the whole virtual disk to OUT in 1 MiB reads.
cat > "$work/pyvhdi_dump.py" <<'PY'
import sys, pyvhdi
f = pyvhdi.file(); f.open(sys.argv[1]); n = f.get_media_size(); off = 0
with open(sys.argv[2], "wb") as out:
    while off < n:
        b = f.read_buffer_at_offset(min(1 << 20, n - off), off); out.write(b); off += len(b)
PY

ratio() { echo "$1 / $2" | bc -l | awk '{printf "%.2fx", $1}'; }
echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), ${size_mib} MiB, median of $runs runs"
printf '%-24s %-9s %17s %17s %7s %7s\n' image peer "peer wall/cpu" "diskimage w/c" "wall" "cpu"
for name in vmdk-monolithicSparse vmdk-streamOptimized vhd-dynamic vhdx-dynamic qcow2 qcow2-zlib vdi-dynamic; do
  img=${images[$name]:-}
  if [ -z "$img" ]; then
    printf '%-24s %s\n' "$name" "qemu-img could not make it"
    continue
  fi
  if ! "$bin" info "$img" >/dev/null 2>&1; then
    printf '%-24s %s\n' "$name" "not read by diskimage yet: $("$bin" info "$img" 2>&1 | head -1)"
    continue
  fi
  [ "$("$bin" hash "$img" | cut -d' ' -f1)" = "$(sha256sum "$work/src.raw" | cut -d' ' -f1)" ] || { echo "$name: CONTENT MISMATCH"; exit 1; }
  read -r dw dc < <(median "$bin" dump "$img" -o "$work/out-d.raw")
  cmp -s "$work/out-d.raw" "$work/src.raw" || { echo "$name: DUMP DIFFERS FROM THE SOURCE"; exit 1; }
  read -r qw qc < <(median qemu-img convert -O raw "$img" "$work/out-q.raw")
  printf '%-24s %-9s %8.3fs/%6.3fs %8.3fs/%6.3fs %7s %7s\n' "$name" qemu-img "$qw" "$qc" "$dw" "$dc" "$(ratio "$qw" "$dw")" "$(ratio "$qc" "$dc")"
  if [[ $name == vhd* && $have_pyvhdi == 1 ]]; then
    read -r pw pc < <(median "$pyvhdi_py" "$work/pyvhdi_dump.py" "$img" "$work/out-p.raw")
    printf '%-24s %-9s %8.3fs/%6.3fs %8.3fs/%6.3fs %7s %7s\n' "$name" pyvhdi "$pw" "$pc" "$dw" "$dc" "$(ratio "$pw" "$dw")" "$(ratio "$pc" "$dc")"
  fi
  rm -f "$work/out-q.raw" "$work/out-d.raw" "$work/out-p.raw"
done

# The floor for every container: the same disk copied from a raw file to
# tmpfs by cp (copy_file_range, holes kept). No reader writes the output
# faster than this; a peer already near it leaves little room for a ratio.
read -r fw fc < <(median cp --sparse=always "$work/src.raw" "$work/out-f.raw")
cmp -s "$work/out-f.raw" "$work/src.raw" || { echo "cp: COPY DIFFERS"; exit 1; }
printf '%-24s %-9s %8.3fs/%6.3fs   (floor: writing these bytes to tmpfs at all)\n' raw-copy cp "$fw" "$fc"
rm -f "$work/out-f.raw"

