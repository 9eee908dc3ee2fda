#!/bin/sh
# Time and peak memory of b0 inference (batch 1) at 128..2048 pixels a side, one process per size
# so each peak is its own. Prints a markdown table. Usage: tools/scaling.sh [THREADS]
set -eu
threads=${1:-2}
bin=${LEUKOSEG:-build/leukoseg}
echo "| input | forward GFLOP | time per image | achieved GFLOP/s | peak memory |"
echo "|---|---|---|---|---|"
for size in 128 256 512 1024 2048; do
    steps=10
    [ "$size" -ge 1024 ] && steps=2
    json=$("$bin" bench --variant b0 --size "$size" --batch 1 --threads "$threads" --steps "$steps" \
        --infer-only --json)
    echo "$json" | python3 -c '
import json, sys
d = json.load(sys.stdin)
size, ms = d["size"], 1000.0 / d["infer_img_s"]
gflop, rate, rss = d["gflop_per_image_forward"], d["infer_gflop_s"], d["peak_rss_mib"]
print("| %dx%d | %.1f | %.0f ms | %.0f | %.0f MiB |" % (size, size, gflop, ms, rate, rss))'
done
