#!/usr/bin/env bash
# EWF: `diskimage dump -o` against `ewfexport` (libewf, Debian ewf-tools)
# on the same E01, both writing the raw media to tmpfs (/dev/shm), warm
# page cache, median of N runs; and `diskimage hash --verify` against
# `ewfverify` (both recompute the stored MD5). Prints wall and CPU (user +
# sys) seconds and how many times faster diskimage is (>1 = faster).
# Every dump is compared with the source bytes.
#
#   benches/compare-ewf.sh [SIZE_MIB] [RUNS] [LEVEL]   (defaults: 1024, 3, fast)
#
# The disk is benches/text-data.py's (text-like data in the first half,
# zeros after), acquired by `ewfacquire -c deflate:LEVEL` in one segment.
# Needs ewf-tools, python3 and /usr/bin/time; builds diskimage in release mode.
set -euo pipefail
size_mib=${1:-1024}
runs=${2:-3}
level=${3:-fast}
cd "$(dirname "$0")/.."
cargo build --release -q --bin diskimage
bin=$(pwd)/target/release/diskimage
work=$(mktemp -d /dev/shm/diskimage-ewf.XXXXXX)
trap 'rm -rf "$work"' EXIT

python3 benches/text-data.py "$work/src.raw" "$size_mib" "$((size_mib / 2))"
ewfacquire -u -q -c "deflate:$level" -S 7GiB -t "$work/disk" "$work/src.raw" >/dev/null
src_sha=$(sha256sum < "$work/src.raw" | cut -d' ' -f1)
rm -f "$work/src.raw"

# time_it OUTVAR CMD...: "wall cpu" seconds of one run.
time_it() {
  local out=$1; shift
  /usr/bin/time -f '%e %U %S' -o "$work/t" "$@" >/dev/null 2>&1
  read -r w u s < "$work/t"
  printf -v "$out" '%s %s' "$w" "$(echo "$u + $s" | bc)"
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

declare -a pw pc dw dc vw vc hw hc
for ((i = 0; i < runs; i++)); do
  rm -f "$work/peer.raw" "$work/ours.raw"
  time_it r ewfexport -u -q -t "$work/peer" "$work/disk.E01"; pw+=("${r% *}"); pc+=("${r#* }")
  time_it r "$bin" dump "$work/disk.E01" -o "$work/ours.raw"; dw+=("${r% *}"); dc+=("${r#* }")
  [ "$(sha256sum < "$work/ours.raw" | cut -d' ' -f1)" = "$src_sha" ] || { echo "dump differs from the source" >&2; exit 1; }
  [ "$(sha256sum < "$work/peer.raw" | cut -d' ' -f1)" = "$src_sha" ] || { echo "ewfexport differs from the source" >&2; exit 1; }
  rm -f "$work/peer.raw" "$work/ours.raw"
  time_it r ewfverify -q "$work/disk.E01"; vw+=("${r% *}"); vc+=("${r#* }")
  time_it r "$bin" hash --verify "$work/disk.E01"; hw+=("${r% *}"); hc+=("${r#* }")
done
m() { printf '%s\n' "$@" | median; }
row() { # name peer peer-wall peer-cpu ours-wall ours-cpu
  printf '%-22s %-10s %6.2fs/%6.2fs  %6.2fs/%6.2fs  %5.2fx  %5.2fx\n' "$1" "$2" "$3" "$4" "$5" "$6" \
    "$(echo "$3 / $5" | bc -l)" "$(echo "$4 / $6" | bc -l)"
}
echo "$(nproc) cores, $size_mib MiB, deflate:$level, median of $runs runs ($(stat -c %s "$work/disk.E01") bytes of E01)"
echo "what                   peer          peer wall/cpu     diskimage w/c     wall    cpu"
row "dump (raw to tmpfs)" ewfexport "$(m "${pw[@]}")" "$(m "${pc[@]}")" "$(m "${dw[@]}")" "$(m "${dc[@]}")"
row "hash --verify (MD5)" ewfverify "$(m "${vw[@]}")" "$(m "${vc[@]}")" "$(m "${hw[@]}")" "$(m "${hc[@]}")"
