#!/usr/bin/env bash
# Whole-volume extraction compared: `diskimage extract` against The Sleuth
# Kit's `tsk_recover -e` and 7-Zip's `7z x` (p7zip-full; it reads NTFS, FAT
# and ext raw volumes) on the same raw volumes of 10,000 files
# (benches/make-fs-images.sh), output to tmpfs (/dev/shm), warm page cache.
# The three tools run in turn within each of N rounds (so a busy moment of
# this shared machine hits them alike); per tool the median wall time and
# the median CPU time (user + sys, children included) over the rounds.
# Ratios > 1: diskimage is faster. Also prints what each tree holds (file
# count and total bytes; tsk_recover skips empty files, 7z adds ext's
# lost+found-like entries).
#
#   benches/compare-extract.sh [RUNS [FS...]]   (default: 3 rounds; ext4 fat32 ntfs)
#
# One file system at a time keeps each run short (e.g. under /tmp/quiet.sh).
# EXTRACT_ARGS adds options to `diskimage extract` (e.g. "--threads 1",
# "--no-kernel-copy").
#
# Times are taken by python3 (monotonic clock; the child's own rusage
# from wait4).
# Needs sleuthkit, p7zip-full and python3; builds diskimage
# in release mode.
set -euo pipefail
runs=${1:-3}
shift || true
filesystems=${*:-ext4 fat32 ntfs}
cd "$(dirname "$0")/.."
bash benches/make-fs-images.sh target/fs-bench > /dev/null
cargo build --release -q
bin=$(pwd)/target/release/diskimage
work=$(mktemp -d /dev/shm/diskimage-extract.XXXXXX)
trap 'rm -rf "$work"' EXIT

# timed TOOL CMD...: runs CMD into a fresh $work/out, appends "WALL CPU" to $work/TOOL.
timed() {
    local tool=$1; shift
    rm -rf "$work/out"; mkdir "$work/out"
    python3 - "$work/$tool" "$@" <<'PY' > /dev/null 2>&1 || { echo "failed: $*" >&2; return 1; }
import os, sys, time
quiet = [(os.POSIX_SPAWN_OPEN, fd, os.devnull, os.O_WRONLY, 0) for fd in (1, 2)]
t = time.monotonic()
pid = os.posix_spawnp(sys.argv[2], sys.argv[2:], os.environ, file_actions=quiet)
_, status, ru = os.wait4(pid, 0)
wall = time.monotonic() - t
with open(sys.argv[1], "a") as f:
    f.write("%.4f %.4f\n" % (wall, ru.ru_utime + ru.ru_stime))
sys.exit(os.waitstatus_to_exitcode(status))
PY
}
# median TOOL: "WALL CPU", each the median of its column.
median() {
    python3 - "$work/$1" <<'PY'
import statistics, sys
rows = [tuple(map(float, l.split())) for l in open(sys.argv[1]) if l.strip()]
print("%.4f %.4f" % (statistics.median(r[0] for r in rows), statistics.median(r[1] for r in rows)))
PY
}
summary() { # files and bytes of regular files under $work/out, system files aside
    find "$work/out" -type f ! -path '*/$*' ! -name '$*' ! -path '*/lost+found/*' -printf '%s\n' | awk '{n++; s+=$1} END {printf "%d files, %d bytes", n, s}'
}
ratio() { python3 -c "print('%.2fx' % ($1 / max($2, 0.005)))"; }

echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), median of $runs rounds${EXTRACT_ARGS:+, extract $EXTRACT_ARGS}"
printf '%-6s %-12s %19s %19s %7s %7s\n' fs peer "peer wall/cpu" "diskimage w/c" wall cpu
have7z=$(command -v 7z > /dev/null && echo 1 || true)
for fs in $filesystems; do
    img=target/fs-bench/$fs.img
    rm -f "$work/diskimage" "$work/tsk" "$work/7z"
    for _ in $(seq "$runs"); do
        # shellcheck disable=SC2086 # EXTRACT_ARGS is a list of options
        timed diskimage "$bin" extract ${EXTRACT_ARGS:-} -o "$work/out" "$img"; ds=$(summary)
        timed tsk tsk_recover -e "$img" "$work/out"; ts=$(summary)
        if [ -n "$have7z" ]; then
            timed 7z 7z x -y -o"$work/out" "$img"; zs=$(summary)
        else
            zs="7z not installed"
        fi
    done
    read -r dw dc < <(median diskimage)
    read -r tw tc < <(median tsk)
    printf '%-6s %-12s %8.4fs/%7.4fs %8.4fs/%7.4fs %7s %7s\n' "$fs" tsk_recover "$tw" "$tc" "$dw" "$dc" "$(ratio "$tw" "$dw")" "$(ratio "$tc" "$dc")"
    if [ -n "$have7z" ]; then
        read -r zw zc < <(median 7z)
        printf '%-6s %-12s %8.4fs/%7.4fs %8.4fs/%7.4fs %7s %7s\n' "$fs" 7z "$zw" "$zc" "$dw" "$dc" "$(ratio "$zw" "$dw")" "$(ratio "$zc" "$dc")"
    fi
    printf '       trees: diskimage %s; tsk_recover %s; 7z %s\n' "$ds" "$ts" "$zs"
done
