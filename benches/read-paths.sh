#!/usr/bin/env bash
# Every whole-disk read path against the tool that does the same job on the
# raw bytes: a 1 GiB random-data disk in every uncompressed container
# (raw, split raw, VMDK flat and sparse, VHD, VHDX, QCOW2), warm page cache,
# runs alternating peer and diskimage, medians.
#
#   benches/read-paths.sh [SIZE_MIB] [RUNS]      (defaults: 1024 MiB, 5 runs)
#   READ_PATHS_JOBS="mount" benches/read-paths.sh ...   only the jobs named
#
# Jobs (peer -> diskimage):
#   null   dd if=RAW of=/dev/null bs=1M          -> dump IMG -o /dev/null
#   pipe   dd if=RAW bs=1M | cat >/dev/null      -> dump IMG | cat >/dev/null
#   file   cp --sparse=always RAW OUT            -> dump IMG -o OUT (tmpfs)
#   file   qemu-img convert -O raw IMG OUT       -> dump IMG -o OUT (tmpfs)
#   hash   sha256sum RAW                         -> hash IMG
#   mount  dd if=RAW of=/dev/null bs=1M          -> dd of MNT/disk0 of a fresh
#                                                   `mount --raw` (dd + mount CPU)
#   lib    pyvmdk / pyvhdi, 1 MiB reads          -> 1 MiB read_at (examples/seqread)
# Printed per job: wall and CPU (user + sys, children included) seconds,
# page faults and context switches per GiB for both, and peer/diskimage
# ratios (>1: diskimage faster or cheaper). Every output file and digest is
# checked against the raw disk.
#
# Images are made once in READ_PATHS_DIR (default /tmp/diskimage-read-paths,
# 8x SIZE_MIB) and kept; outputs go to /dev/shm. Needs qemu-img, python3,
# /usr/bin/time, bc; pyvmdk/pyvhdi (pip install libvmdk-python
# libvhdi-python) and FUSE (/dev/fuse, fusermount3) where present.
set -euo pipefail
size_mib=${1:-1024}
runs=${2:-5}
cd "$(dirname "$0")/.."
cargo build --release -q --bin diskimage
cargo build --release -q -p diskimage-formats --example seqread
target=${CARGO_TARGET_DIR:-target}
bin=$(realpath "$target/release/diskimage")
seqread=$(realpath "$target/release/examples/seqread")
dir=${READ_PATHS_DIR:-/tmp/diskimage-read-paths}
mkdir -p "$dir"
out=$(mktemp -d /dev/shm/diskimage-read-paths.XXXXXX)
mnt=$(mktemp -d /tmp/diskimage-read-paths-mnt.XXXXXX)
trap 'fusermount3 -u "$mnt" 2>/dev/null || true; rm -rf "$out"; rmdir "$mnt" 2>/dev/null || true' EXIT

raw=$dir/disk.raw
if [ ! -f "$raw" ] || [ "$(stat -c %s "$raw")" != $((size_mib << 20)) ]; then
  rm -f "$dir"/disk.* "$dir"/*.vmdk "$dir"/*.vhd "$dir"/*.vhdx "$dir"/*.qcow2
  head -c $((size_mib << 20)) /dev/urandom > "$raw"
  split -b $((size_mib << 18)) -d -a 3 --numeric-suffixes=1 "$raw" "$dir/disk.split."
  qemu-img convert -f raw -O vmdk -o subformat=monolithicFlat "$raw" "$dir/flat.vmdk"
  qemu-img convert -f raw -O vmdk -o subformat=monolithicSparse "$raw" "$dir/sparse.vmdk"
  qemu-img convert -f raw -O vpc -o subformat=dynamic,force_size=on "$raw" "$dir/dynamic.vhd"
  qemu-img convert -f raw -O vhdx -o subformat=dynamic "$raw" "$dir/dynamic.vhdx"
  qemu-img convert -f raw -O qcow2 "$raw" "$dir/disk.qcow2"
fi
cat "$dir"/* > /dev/null # warm the page cache
want=$(sha256sum "$raw" | cut -d' ' -f1)

# time_of CMD...: "WALL CPU FAULTS CSWITCHES" of one run (children included).
time_of() {
  /usr/bin/time -o "$out/time" -f '%e %U %S %R %F %c %w' "$@" >/dev/null 2>"$out/stderr" ||
    { cat "$out/stderr" >&2; echo "FAILED: $*" >&2; exit 1; }
  awk '{print $1, $2 + $3, $4 + $5, $6 + $7}' "$out/time"
}

# mount_of IMG: a fresh raw mount, dd of disk0; "WALL CPU FAULTS CSWITCHES"
# of dd plus the CPU, faults and context switches of the mount process.
mount_of() {
  "$bin" mount --raw "$1" "$mnt" 2>/dev/null &
  local pid=$! i
  for i in $(seq 100); do [ -e "$mnt/disk0" ] && break; sleep 0.05; done
  local before after
  before=$(proc_counts "$pid")
  local d
  d=$(time_of dd if="$mnt/disk0" of=/dev/null bs=1M)
  after=$(proc_counts "$pid")
  fusermount3 -u "$mnt"
  wait "$pid" || true
  echo "$d $before $after" | awk -v hz="$(getconf CLK_TCK)" \
    '{print $1, $2 + ($8 - $5) / hz, $3 + ($9 - $6), $4 + ($10 - $7)}'
}
# proc_counts PID: "CPU_TICKS FAULTS CSWITCHES" of every thread of PID.
proc_counts() {
  local ticks faults cs
  read -r ticks faults < <(awk '{print $14 + $15, $10 + $12}' "/proc/$1/stat")
  cs=$(cat /proc/"$1"/task/*/status 2>/dev/null | awk '/ctxt_switches/ {s += $2} END {print s + 0}')
  echo "$ticks $faults $cs"
}

# median of a column of numbers on stdin
median() { sort -n | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
col() { awk -v c="$1" '{print $c}' | median; }

gib=$(echo "$size_mib / 1024" | bc -l)
ratio() { echo "$1 $2" | awk '{ if ($2 > 0) printf "%.2fx", $1 / $2; else print "-" }'; }
per_gib() { echo "$1" | awk -v g="$gib" '{printf "%d", $1 / g}'; }

# compare NAME JOB PEER_LABEL PEER_CMD -- OURS_CMD (either may be a
# function name): alternating runs, one line of medians.
compare() {
  local name=$1 job=$2 peer=$3; shift 3
  local pcmd=() ocmd=()
  while [ "$1" != -- ]; do pcmd+=("$1"); shift; done
  shift
  ocmd=("$@")
  : > "$out/p"; : > "$out/o"
  # Each side starts with no output file: writing over the other's
  # output would time the freeing of its 1 GiB of tmpfs pages too.
  for _ in $(seq "$runs"); do
    rm -f "$out/out.raw"
    "${pcmd[@]}" >> "$out/p"
    rm -f "$out/out.raw"
    "${ocmd[@]}" >> "$out/o"
  done
  rm -f "$out/out.raw"
  local pw pc pf ps ow oc of os
  pw=$(col 1 < "$out/p"); pc=$(col 2 < "$out/p"); pf=$(col 3 < "$out/p"); ps=$(col 4 < "$out/p")
  ow=$(col 1 < "$out/o"); oc=$(col 2 < "$out/o"); of=$(col 3 < "$out/o"); os=$(col 4 < "$out/o")
  printf '%-13s %-5s %-10s %6.2f %6.2f %7s %7s  %6.2f %6.2f %7s %7s  %6s %6s\n' \
    "$name" "$job" "$peer" "$pw" "$pc" "$(per_gib "$pf")" "$(per_gib "$ps")" \
    "$ow" "$oc" "$(per_gib "$of")" "$(per_gib "$os")" "$(ratio "$pw" "$ow")" "$(ratio "$pc" "$oc")"
}

# The diskimage side of each job, checked where it writes.
dump_file() { time_of "$bin" dump "$1" -o "$out/out.raw"; cmp -s "$out/out.raw" "$raw" || { echo "dump -o $1 DIFFERS" >&2; exit 1; }; }
cp_file() { time_of cp --sparse=always "$raw" "$out/out.raw"; }
qemu_file() { time_of qemu-img convert -O raw "$1" "$out/out.raw"; }
pipe_dd() { time_of sh -c "dd if='$raw' bs=1M 2>/dev/null | cat > /dev/null"; }
pipe_dump() { time_of sh -c "'$bin' dump '$1' | cat > /dev/null"; }
hash_ours() {
  time_of "$bin" hash "$1"
  [ "$("$bin" hash "$1" | cut -d' ' -f1)" = "$want" ] || { echo "hash $1 DIFFERS" >&2; exit 1; }
}
py_read() { time_of python3 "$out/pyread.py" "$1" "$2"; }
cat > "$out/pyread.py" <<'PY'
import sys
kind, path = sys.argv[1], sys.argv[2]
if kind == "vmdk":
    import pyvmdk
    f = pyvmdk.handle(); f.open(path); f.open_extent_data_files()
else:
    import pyvhdi
    f = pyvhdi.file(); f.open(path)
n = f.get_media_size(); off = 0
while off < n:
    off += len(f.read_buffer_at_offset(min(1 << 20, n - off), off))
PY
python3 -c 'import pyvmdk' 2>/dev/null && have_pyvmdk=1 || have_pyvmdk=0
python3 -c 'import pyvhdi' 2>/dev/null && have_pyvhdi=1 || have_pyvhdi=0
jobs=" ${READ_PATHS_JOBS:-null pipe file hash mount lib} "
want() { [[ $jobs == *" $1 "* ]]; }
[ -e /dev/fuse ] && command -v fusermount3 >/dev/null && have_fuse=1 || have_fuse=0

echo "$(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg) at the start, ${size_mib} MiB, median of $runs alternating runs"
printf '%-13s %-5s %-10s %6s %6s %7s %7s  %6s %6s %7s %7s  %6s %6s\n' \
  image job peer "wall" "cpu" "flt/GiB" "cs/GiB" "wall" "cpu" "flt/GiB" "cs/GiB" "wall" "cpu"
printf '%-13s %-5s %-10s %29s  %29s  %13s\n' "" "" "" "------------ peer -----------" "--------- diskimage ---------" "peer/diskimage"
for name in raw split-raw vmdk-flat vmdk-sparse vhd vhdx qcow2; do
  case $name in
    raw) img=$raw ;;
    split-raw) img=$dir/disk.split.001 ;;
    vmdk-flat) img=$dir/flat.vmdk ;;
    vmdk-sparse) img=$dir/sparse.vmdk ;;
    vhd) img=$dir/dynamic.vhd ;;
    vhdx) img=$dir/dynamic.vhdx ;;
    qcow2) img=$dir/disk.qcow2 ;;
  esac
  want null && compare "$name" null dd time_of dd if="$raw" of=/dev/null bs=1M -- time_of "$bin" dump "$img" -o /dev/null
  want pipe && compare "$name" pipe "dd|cat" pipe_dd -- pipe_dump "$img"
  want file && compare "$name" file cp cp_file -- dump_file "$img"
  want file && [ "$name" != split-raw ] && compare "$name" file qemu-img qemu_file "$img" -- dump_file "$img"
  want hash && compare "$name" hash sha256sum time_of sha256sum "$raw" -- hash_ours "$img"
  want mount && [ "$have_fuse" = 1 ] && compare "$name" mount dd time_of dd if="$raw" of=/dev/null bs=1M -- mount_of "$img"
  if want lib; then
    case $name in
      vmdk-*) [ "$have_pyvmdk" = 1 ] && compare "$name" lib pyvmdk py_read vmdk "$img" -- time_of "$seqread" "$img" ;;
      vhd|vhdx) [ "$have_pyvhdi" = 1 ] && compare "$name" lib pyvhdi py_read vhdi "$img" -- time_of "$seqread" "$img" ;;
    esac
  fi
done
echo "load average $(cut -d' ' -f1-3 /proc/loadavg) at the end"
