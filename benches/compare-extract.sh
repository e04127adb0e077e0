#!/usr/bin/env bash
# Whole-volume extraction compared: `diskimage extract` against The Sleuth
# Kit's `tsk_recover -e` and 7-Zip's `7z x` (p7zip-full; it reads NTFS, FAT
# and ext raw volumes) on the same raw volumes of 10,000 files
# (benches/make-fs-images.sh), output to tmpfs (/dev/shm), warm page cache,
# best of N runs. Prints seconds and ratios (>1: diskimage is faster); all
# figures are measured in the one run. Also prints what each tree holds
# (file count and total bytes; tsk_recover skips empty files, 7z adds
# ext's lost+found-like entries).
#
#   benches/compare-extract.sh [RUNS]        (default: 3)
set -euo pipefail
runs=${1:-3}
cd "$(dirname "$0")/.."
bash benches/make-fs-images.sh target/fs-bench > /dev/null
cargo build --release -q
bin=$(pwd)/target/release/diskimage
work=$(mktemp -d /dev/shm/diskimage-extract.XXXXXX)
trap 'rm -rf "$work"' EXIT

# best SECONDS of running "$@" into a fresh $work/out, $runs times.
best() {
    local b=
    for _ in $(seq "$runs"); do
        rm -rf "$work/out"; mkdir "$work/out"
        local s e
        s=$(date +%s.%N)
        "$@" > /dev/null 2>&1 || { echo "failed: $*" >&2; return 1; }
        e=$(date +%s.%N)
        b=$(python3 -c "t=$e-$s; b='$b'; print(t if not b else min(t, float(b)))")
    done
    echo "$b"
}
summary() { # files and bytes of regular files under $work/out, system files aside
    find "$work/out" -type f ! -path '*/$*' ! -name '$*' ! -path '*/lost+found/*' -printf '%s\n' | awk '{n++; s+=$1} END {printf "%d files, %d bytes", n, s}'
}

printf '%-6s %10s %12s %10s %12s %12s\n' fs diskimage tsk_recover 7z "vs tsk" "vs 7z"
for fs in ext4 fat32 ntfs; do
    img=target/fs-bench/$fs.img
    d=$(best "$bin" extract -o "$work/out" "$img"); ds=$(summary)
    t=$(best tsk_recover -e "$img" "$work/out"); ts=$(summary)
    if command -v 7z > /dev/null; then
        z=$(best 7z x -y -o"$work/out" "$img"); zs=$(summary)
    else
        z=; zs="7z not installed"
    fi
    ratio() { [ -n "$2" ] && python3 -c "print('%.2fx' % ($2 / $1))" || echo -; }
    printf '%-6s %9.2fs %11.2fs %9.2fs %12s %12s\n' "$fs" "$d" "$t" "${z:-0}" "$(ratio "$d" "$t")" "$(ratio "$d" "$z")"
    printf '       trees: diskimage %s; tsk_recover %s; 7z %s\n' "$ds" "$ts" "$zs"
done
