#!/usr/bin/env bash
# VMDK read performance against plain pread and qemu-img (issue 3 targets).
# Run from the repo root after `cargo build --release --bin diskimage` and
# `cargo build --release -p diskimage-formats --example seqread`.
# Makes a 1 GiB disk of seeded text-like data (compressible) in $DIR
# (default /dev/shm), converts it with qemu-img, and prints each ratio.
# Warm page cache: every input is read once before it is timed.
set -euo pipefail
DIR=${DIR:-/dev/shm/vmdk-perf}
BIN=target/release/diskimage
SEQ=target/release/examples/seqread
mkdir -p "$DIR"; trap 'rm -rf "$DIR"' EXIT
python3 -c "
import random,sys
r=random.Random(3); w=['disk','grain','table','extent','sector','vmware','stream','delta','alpha','omega']
blk=(' '.join(r.choice(w) for _ in range(200000))).encode()[:1<<20]
for i in range(1024): sys.stdout.buffer.write(blk[i:]+blk[:i])" > "$DIR/disk.raw"
for f in monolithicSparse monolithicFlat streamOptimized; do
  qemu-img convert -f raw -O vmdk -o subformat=$f "$DIR/disk.raw" "$DIR/$f.vmdk"
done
now() { date +%s.%N; }
rate() { "$SEQ" "$@" | awk '{print $1}'; }
cat "$DIR"/* > /dev/null
raw=$(rate "$DIR/disk.raw" --format raw)
for f in monolithicSparse monolithicFlat; do
  r=$(rate "$DIR/$f.vmdk")
  echo "$f sequential 1 MiB reads: $r MiB/s vs pread of raw $raw MiB/s: ratio $(echo "$r / $raw" | bc -l | cut -c1-5) (target >= 0.8)"
done
t0=$(now); qemu-img convert -O raw "$DIR/streamOptimized.vmdk" "$DIR/q.raw"; t1=$(now); rm -f "$DIR/q.raw"
s=$(rate "$DIR/streamOptimized.vmdk")
q=$(echo "1024 / ($t1 - $t0)" | bc -l)
echo "streamOptimized sequential 1 MiB reads: $s MiB/s vs qemu-img convert -O raw ${q:0:7} MiB/s: ratio $(echo "$s / $q" | bc -l | cut -c1-5) (target >= 4)"
t0=$(now); qemu-img convert -O raw "$DIR/monolithicSparse.vmdk" "$DIR/q.raw"; t1=$(now); rm -f "$DIR/q.raw"
t2=$(now); "$BIN" dump "$DIR/monolithicSparse.vmdk" -o "$DIR/d.raw"; t3=$(now); rm -f "$DIR/d.raw"
echo "dump of monolithicSparse to tmpfs: $(echo "$t3 - $t2" | bc -l | cut -c1-5) s vs qemu-img convert $(echo "$t1 - $t0" | bc -l | cut -c1-5) s: speed-up $(echo "($t1 - $t0) / ($t3 - $t2)" | bc -l | cut -c1-5) (target >= 2)"
