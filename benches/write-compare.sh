#!/usr/bin/env bash
# The write side against qemu-img, side by side in one run:
#
# 1. `create --parent` on a 2 TiB parent (VMDK monolithicSparse and
#    twoGbMaxExtentSparse against `qemu-img create -b`; VHDX dynamic and
#    VHD dynamic at its 2040 GiB limit alone, as qemu-img makes no child
#    of either), in a folder on disk (CHILD_DIR,
#    default /var/tmp, where the syncs of a crash-safe create cost what
#    they cost on a real disk) and on tmpfs (/dev/shm). Median wall time of
#    RUNS creates, each child removed before the next.
# 2. `convert` to streamOptimized VMDK against `qemu-img convert -O vmdk
#    -o subformat=streamOptimized`, on a 1 GiB text-like disk (every byte
#    data, benches/text-data.py) and a 1 GiB random disk, source and output
#    on tmpfs, alternating: median wall, CPU (user + sys) and peak memory
#    (maximum resident set). Every output is compared with its source by
#    `qemu-img compare`.
# 3. `convert` of the text-like disk and of a 2 TiB sparse disk (64 MiB of
#    data) to monolithicSparse VMDK, dynamic VHD and dynamic VHDX, the same
#    way (the 2 TiB VHDX checked region by region, see same_as_source).
#
#   benches/write-compare.sh [RUNS] [CONVERT_RUNS]   (defaults: 5 creates, 3 converts)
#
# Needs qemu-img, python3 and /usr/bin/time; builds diskimage in release
# mode. Prints the load average before and after: on a shared machine the
# ratios mean little when it is above the number of cores.
set -euo pipefail
runs=${1:-5}
convert_runs=${2:-3}
cd "$(dirname "$0")/.."
cargo build --release -q --bin diskimage
bin=$(pwd)/target/release/diskimage
work=$(mktemp -d /dev/shm/diskimage-write.XXXXXX)
disk=$(mktemp -d "${CHILD_DIR:-/var/tmp}/diskimage-write.XXXXXX")
trap 'rm -rf "$work" "$disk"' EXIT

echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), median of $runs creates, $convert_runs converts"

# ms CMD...: wall milliseconds of one run of CMD.
ms() {
  local t0 t1
  t0=$(date +%s%N)
  "$@" >/dev/null 2>&1
  t1=$(date +%s%N)
  echo $(((t1 - t0) / 1000))
}
# med VALUES...: the median of the values (ms, printed with one decimal).
med() {
  printf '%s\n' "$@" | sort -n | awk -v n="$#" 'NR == int((n + 1) / 2) {printf "%.1f", $1 / 1000}'
}

echo
echo "create --parent on a 2 TiB parent (median wall ms)"
printf '%-28s %-10s %10s %10s\n' parent where qemu-img diskimage
for spec in "vmdk monolithicSparse 2T" "vmdk twoGbMaxExtentSparse 2T" "vhdx dynamic 2T" "vhd dynamic 2040G"; do
  read -r fmt layout size <<<"$spec"
  qfmt=$fmt
  [ "$fmt" = vhd ] && qfmt=vpc
  for where in "$disk" "$work"; do
    rm -rf "$where/p"
    mkdir "$where/p"
    "$bin" create "$where/p/base.$fmt" --size "$size" --subformat "$layout" >/dev/null
    # Alternating, each child removed before the next create. qemu-img
    # makes no VHD or VHDX child (its vpc and vhdx drivers take no backing
    # file), so those have no peer.
    qs=() ds=()
    for _ in $(seq "$runs"); do
      rm -f "$where/p/"qchild* "$where/p/"dchild*
      [ "$fmt" = vmdk ] && qs+=("$(ms qemu-img create -q -f "$qfmt" -b base."$fmt" -F "$qfmt" "$where/p/qchild.$fmt")")
      ds+=("$(ms "$bin" create "$where/p/dchild.$fmt" --parent "$where/p/base.$fmt")")
    done
    q=-
    [ "$fmt" = vmdk ] && q=$(med "${qs[@]}")
    d=$(med "${ds[@]}")
    if [ "$fmt" = vmdk ]; then
      qemu-img check -q "$where/p/dchild.$fmt"
    else
      "$bin" info "$where/p/dchild.$fmt" >/dev/null
    fi
    label=disk
    [ "$where" = "$work" ] && label=tmpfs
    printf '%-28s %-10s %10s %10s\n' "$fmt $layout $size" "$label" "$q" "$d"
    rm -rf "$where/p"
  done
done

# run3 OUT CMD...: one run of CMD writing OUT: "WALL CPU MAXRSS_MIB".
run3() {
  local out=$1
  shift
  rm -f "$out"
  /usr/bin/time -o "$work/time" -f '%e %U %S %M' "$@" >/dev/null 2>&1
  tail -1 "$work/time" | awk '{print $1, $2 + $3, $4 / 1024}'
}
# med3 LINES...: the line of median wall time.
med3() {
  printf '%s\n' "$@" | sort -n | awk -v n="$#" 'NR == int((n + 1) / 2)'
}

echo
echo "convert to streamOptimized VMDK, 1 GiB, tmpfs (median wall s, CPU s, peak MiB)"
printf '%-10s %-10s %8s %8s %8s %10s\n' disk tool wall cpu peak "size MiB"
python3 benches/text-data.py "$work/text.raw" 1024 1024
python3 -c "import random, sys; r = random.Random(2026); f = open(sys.argv[1], 'wb'); [f.write(r.randbytes(1 << 20)) for _ in range(1024)]" "$work/random.raw"
for src in text random; do
  # Alternating, each output compared with its source.
  qs=() ds=()
  for _ in $(seq "$convert_runs"); do
    qs+=("$(run3 "$work/q.vmdk" qemu-img convert -f raw -O vmdk -o subformat=streamOptimized "$work/$src.raw" "$work/q.vmdk")")
    ds+=("$(run3 "$work/d.vmdk" "$bin" convert "$work/$src.raw" "$work/d.vmdk" --subformat streamOptimized)")
  done
  for tool in qemu-img diskimage; do
    if [ "$tool" = qemu-img ]; then out=$work/q.vmdk line=$(med3 "${qs[@]}"); else out=$work/d.vmdk line=$(med3 "${ds[@]}"); fi
    qemu-img compare -q -f raw "$work/$src.raw" "$out" || { echo "$tool $src: OUTPUT DIFFERS FROM THE SOURCE"; exit 1; }
    read -r w c m <<<"$line"
    printf '%-10s %-10s %8.2f %8.2f %8.0f %10d\n' "$src" "$tool" "$w" "$c" "$m" "$(($(stat -c %s "$out") >> 20))"
  done
  rm -f "$work/q.vmdk" "$work/d.vmdk"
done
# same_as_source SRC OUT QFMT: OUT reads as SRC in qemu-img. A VHDX of a
# 2 TiB sparse disk is not given to `qemu-img compare`: qemu's VHDX driver
# reports absent blocks as neither data nor zeros, so the compare reads
# 2 TiB of zeros (over 20 minutes here). Its 16 data regions and a 4 MiB
# piece of each hole after them are read by qemu-img (a raw window over
# the VHDX) and compared with the source's bytes instead, and `qemu-img
# check` checks its tables.
same_as_source() {
  local src=$1 out=$2 qfmt=$3 i at mib
  mib=$(($(stat -c %s "$src") >> 20))
  if [ "$qfmt" != vhdx ] || [ "$mib" -lt $((64 << 10)) ]; then
    qemu-img compare -q -f raw "$src" "$out"
    return
  fi
  qemu-img check -q -f vhdx "$out" || return 1
  for i in $(seq 0 31); do
    # Data at the (i/2)th sixteenth (even i), a hole 64 MiB past it (odd i).
    at=$(( ((i / 2) * mib / 16 + (i % 2) * 64) << 20 ))
    rm -f "$work/piece"
    qemu-img convert -O raw --image-opts \
      "driver=raw,offset=$at,size=$((4 << 20)),file.driver=vhdx,file.file.driver=file,file.file.filename=$out" \
      "$work/piece" || return 1
    cmp -s "$work/piece" <(dd if="$src" bs=1M skip=$((at >> 20)) count=4 status=none) || return 1
  done
  rm -f "$work/piece"
}
# convert_pair LABEL SRC QFMT QOPTS EXT SUB: qemu-img and diskimage
# converting SRC to the same container, alternating; medians, every output
# compared with its source by qemu-img.
convert_pair() {
  local label=$1 src=$2 qfmt=$3 qopts=$4 ext=$5 sub=$6
  local qs=() ds=()
  for _ in $(seq "$convert_runs"); do
    qs+=("$(run3 "$work/q.$ext" qemu-img convert -f raw -O "$qfmt" -o "$qopts" "$src" "$work/q.$ext")")
    ds+=("$(run3 "$work/d.$ext" "$bin" convert "$src" "$work/d.$ext" --subformat "$sub")")
  done
  for tool in qemu-img diskimage; do
    if [ "$tool" = qemu-img ]; then out=$work/q.$ext line=$(med3 "${qs[@]}"); else out=$work/d.$ext line=$(med3 "${ds[@]}"); fi
    same_as_source "$src" "$out" "$qfmt" || { echo "$tool $label: OUTPUT DIFFERS FROM THE SOURCE"; exit 1; }
    read -r w c m <<<"$line"
    printf '%-24s %-10s %8.2f %8.2f %8.0f %10d\n' "$label" "$tool" "$w" "$c" "$m" "$(($(du -k "$out" | cut -f1) >> 10))"
  done
  rm -f "$work/q.$ext" "$work/d.$ext"
}

echo
echo "convert to sparse containers, tmpfs (median wall s, CPU s, peak MiB, MiB allocated)"
printf '%-24s %-10s %8s %8s %8s %10s\n' "disk -> container" tool wall cpu peak "MiB"
# The 1 GiB text-like disk, and a 2 TiB sparse one (2040 GiB for VHD,
# its limit) with 64 MiB of data in 16 places: memory must not grow with
# the destination's size.
for big in 2048 2040; do
  truncate -s "${big}G" "$work/sparse$big.raw"
  for i in $(seq 0 15); do
    head -c 4M "$work/text.raw" | dd of="$work/sparse$big.raw" bs=1M seek=$((i * big * 1024 / 16)) conv=notrunc status=none
  done
done
convert_pair "text -> vmdk sparse" "$work/text.raw" vmdk subformat=monolithicSparse vmdk monolithicSparse
convert_pair "text -> vhd dynamic" "$work/text.raw" vpc subformat=dynamic,force_size=on vhd dynamic
convert_pair "text -> vhdx dynamic" "$work/text.raw" vhdx subformat=dynamic vhdx dynamic
convert_pair "2 TiB -> vmdk sparse" "$work/sparse2048.raw" vmdk subformat=monolithicSparse vmdk monolithicSparse
convert_pair "2040 GiB -> vhd dynamic" "$work/sparse2040.raw" vpc subformat=dynamic,force_size=on vhd dynamic
convert_pair "2 TiB -> vhdx dynamic" "$work/sparse2048.raw" vhdx subformat=dynamic vhdx dynamic

echo
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
