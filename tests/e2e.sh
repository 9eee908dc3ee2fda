#!/bin/bash
# End-to-end checks of the leukoseg command line on the real dataset:
#  1. the shipped model meets the floors on each dataset's test split (mIoU >= 0.88,
#     whole-cell Dice >= 0.96) through `leukoseg eval --json`, and its cell types theirs
#     (count --eval, and train-cells --cv on train+val);
#  2. `segment` on real images writes masks and overlays of exactly the input size;
#  3. a short training run on a few real images lowers the loss, and --resume continues;
#  4. bad input (corrupt and truncated images, mismatched sizes, unknown mask levels, a damaged
#     model) gives a clear error and a non-zero exit, and leaves no partial output.
# Usage: tests/e2e.sh [path/to/leukoseg]   (data: $LEUKOSEG_DATA or ../shared/data/segmentation_WBC)
set -u
bin=${1:-build/leukoseg}
data=${LEUKOSEG_DATA:-$(cd "$(dirname "$0")/../.." && pwd)/shared/data/segmentation_WBC}
model=${LEUKOSEG_MODEL:-models/leukoseg-b0.safetensors}
tmp=$(mktemp -d /tmp/leukoseg-e2e.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }
pass() { echo "ok: $*"; }

[ -x "$bin" ] || { echo "e2e: $bin not built (run make)" >&2; exit 1; }
[ -d "$data/Dataset 1" ] || { echo "e2e: dataset not found at $data" >&2; exit 1; }
[ -f "$model" ] || { echo "e2e: model $model not found" >&2; exit 1; }

# PNG width and height from the IHDR chunk (bytes 16..23, big-endian).
png_size() {
    od -An -tu1 -j16 -N8 "$1" |
        awk '{printf "%dx%d", $1*16777216+$2*65536+$3*256+$4, $5*16777216+$6*65536+$7*256+$8}'
}
bmp_size() { od -An -td4 -j18 -N8 "$1" | awk '{h=$2<0?-$2:$2; printf "%dx%d", $1, h}'; }
json_get() {
    python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval('d' + sys.argv[2]))" \
        "$@"
}

# 1. Floors of the shipped model, each dataset's test split.
for set in "Dataset 1" "Dataset 2"; do
    if "$bin" eval --model "$model" --data "$data/$set" --split test --json > "$tmp/eval.json"; then
        miou=$(json_get "$tmp/eval.json" "['miou']")
        wcd=$(json_get "$tmp/eval.json" "['whole_cell_dice']")
        n=$(json_get "$tmp/eval.json" "['images']")
        if python3 -c "import sys; sys.exit(not (float('$miou') >= 0.88 and float('$wcd') >= 0.96))"
        then pass "$set test split ($n images): mIoU $miou, whole-cell Dice $wcd"
        else fail "$set test split: mIoU $miou (floor 0.88), whole-cell Dice $wcd (floor 0.96)"; fi
    else
        fail "eval on $set exited non-zero"
    fi
done

# Cell types: the shipped classifier's test-split accuracy stays at the README's figures (floors
# one cell below them), and cross-validation of the training recipe on train+val (one view,
# one repeat: quick) keeps its floors.
for pair in "Dataset 1:0.93" "Dataset 2:0.75"; do
    set=${pair%%:*} floor=${pair##*:}
    if "$bin" count --eval --json --model "$model" --data "$data/$set" --split test \
            > "$tmp/types.json" 2> /dev/null; then
        acc=$(json_get "$tmp/types.json" "['accuracy']")
        if python3 -c "import sys; sys.exit(not float('$acc') >= $floor)"
        then pass "$set cell types, test split: accuracy $acc (floor $floor)"
        else fail "$set cell types, test split: accuracy $acc below $floor"; fi
    else
        fail "count --eval on $set exited non-zero"
    fi
done
model_sum=$(md5sum < "$model")
if "$bin" train-cells --model "$model" --data "$data" --views 1 --cv 5 --cv-repeats 1 \
        > "$tmp/cv.out" 2> "$tmp/cv.err"; then
    if [ "$(md5sum < "$model")" = "$model_sum" ]
    then pass "train-cells --cv without --out writes nothing"
    else fail "train-cells --cv without --out changed $model"; fi
    for pair in "Dataset 1:0.88" "Dataset 2:0.65"; do
        set=${pair%%:*} floor=${pair##*:}
        acc=$(awk -v s="$set:" 'index($0, s) == 1 {print $4}' "$tmp/cv.out")
        if [ -n "$acc" ] && python3 -c "import sys; sys.exit(not float('$acc') >= $floor)"
        then pass "$set cell types, 5-fold CV on train+val: accuracy $acc (floor $floor)"
        else fail "$set cell types, 5-fold CV: accuracy '$acc' below $floor"; fi
    done
    # An image listed twice (train twice) is used once: the same folds, the same accuracies.
    "$bin" train-cells --model "$model" --data "$data" --views 1 --cv 5 --cv-repeats 1 \
        --split train,val,train > "$tmp/cv2.out" 2> /dev/null
    if [ "$(grep ": accuracy" "$tmp/cv.out")" = "$(grep ": accuracy" "$tmp/cv2.out")" ]
    then pass "train-cells --cv: images listed twice are used once"
    else fail "train-cells --cv, train listed twice: $(grep ": accuracy" "$tmp/cv2.out")"; fi
else
    fail "train-cells --cv exited non-zero: $(head -c 300 "$tmp/cv.err")"
fi

# A split list file picks exactly the images it names.
printf 'Dataset 2/041\nDataset 1/007\n' > "$tmp/list.txt"
if "$bin" eval --model "$model" --data "$data" --split-file "$tmp/list.txt" --json \
        > "$tmp/list.json" &&
        [ "$(json_get "$tmp/list.json" "['images']")" = 2 ]; then
    pass "eval --split-file: the 2 listed images"
else
    fail "eval --split-file did not evaluate exactly the 2 listed images"
fi

# 2. segment: outputs have exactly the input size (a 120x120 and a smaller Dataset 1 image, and
#    a 300x300 Dataset 2 image).
small=$(for f in "$data/Dataset 1/"*.bmp; do
    [ "$(bmp_size "$f")" != 120x120 ] && { echo "$f"; break; }
done)
for img in "$data/Dataset 1/001.bmp" "$small" "$data/Dataset 2/001.bmp"; do
    [ -n "$img" ] || continue
    stem=$(basename "$img" .bmp)
    rm -rf "$tmp/seg"
    if "$bin" segment --model "$model" --levels --out "$tmp/seg" "$img" > "$tmp/seg.out"; then
        want=$(bmp_size "$img")
        for kind in mask levels overlay; do
            got=$(png_size "$tmp/seg/${stem}_$kind.png")
            [ "$got" = "$want" ] || fail "segment $img: ${kind} is $got, image is $want"
        done
        json_get "$tmp/seg/$stem.json" "['classes'][2]['pixels']" > /dev/null ||
            fail "segment $img: areas JSON unreadable"
        pass "segment $(basename "$(dirname "$img")")/$stem.bmp: outputs $want"
    else
        fail "segment $img exited non-zero"
    fi
done

# count on odd inputs: an image with no white cell (plain pink, black) counts none; a file named
# twice counts once; a window at least as large as the image changes nothing; a greyscale image
# is warned about; a window under 16 pixels is a usage error.
mkdir -p "$tmp/cnt"
python3 - "$tmp/cnt" "$data/Dataset 1/001.bmp" <<'PY'
import struct, sys
def bmp(path, w, h, pixel):  # 24-bit bottom-up BMP; pixel(x, y) -> (r, g, b)
    row = (w * 3 + 3) & ~3
    data = b"".join(b"".join(bytes(pixel(x, y)[::-1]) for x in range(w)).ljust(row, b"\0")
                    for y in reversed(range(h)))
    head = struct.pack("<2sIHHI", b"BM", 54 + len(data), 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 24, 0, len(data), 2835, 2835, 0, 0)
    open(path, "wb").write(head + info + data)
bmp(sys.argv[1] + "/pink.bmp", 120, 120, lambda x, y: (230, 180, 200))
bmp(sys.argv[1] + "/black.bmp", 64, 64, lambda x, y: (0, 0, 0))
src = open(sys.argv[2], "rb").read()  # Dataset 1 BMPs are 24-bit 120x120 bottom-up
off, w, h = struct.unpack_from("<I", src, 10)[0], 120, 120
row = (w * 3 + 3) & ~3
def grey(x, y):
    b, g, r = src[off + (h - 1 - y) * row + 3 * x: off + (h - 1 - y) * row + 3 * x + 3]
    v = (r * 299 + g * 587 + b * 114) // 1000
    return (v, v, v)
bmp(sys.argv[1] + "/grey.bmp", w, h, grey)
PY
if "$bin" count --json --model "$model" "$tmp/cnt/pink.bmp" "$tmp/cnt/black.bmp" \
        > "$tmp/cnt/none.json" 2> /dev/null &&
        [ "$(json_get "$tmp/cnt/none.json" "['summary']['total']")" = 0 ]
then pass "count: plain pink and black images hold no white cell"
else fail "count on plain images: $(head -c 300 "$tmp/cnt/none.json")"; fi
"$bin" count --json --model "$model" "$data/Dataset 1/001.bmp" "$data/Dataset 1/./001.bmp" \
    > "$tmp/cnt/twice.json" 2> "$tmp/cnt/twice.err"
if [ "$(json_get "$tmp/cnt/twice.json" "['summary']['images']")" = 1 ] &&
        grep -q "counted once" "$tmp/cnt/twice.err"
then pass "count: a file named twice is counted once, with a note"
else fail "count, one file twice: $(cat "$tmp/cnt/twice.err")"; fi
"$bin" count --model "$model" "$data/Dataset 1/001.bmp" > "$tmp/cnt/a.csv" 2> /dev/null
"$bin" count --model "$model" --window 120 "$data/Dataset 1/001.bmp" > "$tmp/cnt/b.csv" 2> /dev/null
if [ -s "$tmp/cnt/a.csv" ] && cmp -s "$tmp/cnt/a.csv" "$tmp/cnt/b.csv"
then pass "count --window as large as the image: the same table"
else fail "count --window 120 on a 120x120 image differs"; fi
"$bin" count --json --model "$model" "$tmp/cnt/grey.bmp" > "$tmp/cnt/grey.json" 2> /dev/null
if grep -q "greyscale" "$tmp/cnt/grey.json"
then pass "count: a greyscale image is warned about"
else fail "count on a greyscale image: no warning: $(head -c 300 "$tmp/cnt/grey.json")"; fi
"$bin" count --model "$model" --window 8 "$tmp/cnt/grey.bmp" > /dev/null 2> "$tmp/cnt/w.err"
if [ $? -eq 2 ] && grep -q -- "--window" "$tmp/cnt/w.err"
then pass "count --window 8: usage error"
else fail "count --window 8: $(cat "$tmp/cnt/w.err")"; fi

# 3. Short training on 8 real images: the loss falls. Then the same run split in two by
#    --stop-at-step and --resume (options restored from the checkpoint) must log exactly the same
#    step losses (same seed and threads).
train_small() { OMP_NUM_THREADS=2 "$bin" train --data "$data/Dataset 1" --limit 8 --batch 4 \
    --size 64 --epochs 6 --warmup 2 --lr 1e-3 --threads 2 "$@"; }
step_losses() {
    python3 -c "import json,sys
for d in map(json.loads, open(sys.argv[1])):
    if d['type'] == 'step': print(d['step'], d['loss'])" "$1"
}
if train_small --out "$tmp/t/m.safetensors" 2> "$tmp/train.err"; then
    if python3 - "$tmp/t/m.safetensors.log.jsonl" <<'EOF'
import json, sys
steps = [d["loss"] for d in map(json.loads, open(sys.argv[1])) if d["type"] == "step"]
first, last = sum(steps[:2]) / 2, sum(steps[-2:]) / 2
print(f"   loss {first:.4f} -> {last:.4f} over {len(steps)} steps")
sys.exit(0 if last < 0.8 * first else 1)
EOF
    then pass "short training: loss falls"
    else fail "short training: loss did not fall"; fi
    "$bin" info "$tmp/t/m.safetensors" | grep -q "provenance" || fail "info shows no provenance"
    train_small --out "$tmp/r/m.safetensors" --stop-at-step 5 2> "$tmp/stop.err" &&
        OMP_NUM_THREADS=2 "$bin" train --resume "$tmp/r/m.safetensors.ckpt" --threads 2 \
            2> "$tmp/resume.err" ||
        fail "stop/resume run exited non-zero: $(tail -1 "$tmp/resume.err")"
    if grep -q "resuming from" "$tmp/resume.err" &&
            cmp -s <(step_losses "$tmp/t/m.safetensors.log.jsonl") \
                   <(step_losses "$tmp/r/m.safetensors.log.jsonl"); then
        pass "stop at step 5 + resume logs the same step losses as an uninterrupted run"
    else
        fail "resumed run differs from the uninterrupted one"
    fi
else
    fail "short training exited non-zero: $(tail -1 "$tmp/train.err")"
fi

# 4. Bad input: non-zero exit, a message naming the file, no partial output.
expect_error() { # expect_error NAME PATTERN CMD...
    local name=$1 pattern=$2
    shift 2
    if "$@" > "$tmp/bad.out" 2> "$tmp/bad.err"; then
        fail "$name: exited 0"
    elif ! grep -q -- "$pattern" "$tmp/bad.err"; then
        fail "$name: message lacks '$pattern': $(cat "$tmp/bad.err")"
    elif grep -qiE "sanitizer|segmentation fault|core dumped" "$tmp/bad.err"; then
        fail "$name: crashed"
    else
        pass "$name: $(head -c 160 "$tmp/bad.err" | tr '\n' ' ')"
    fi
}
mkdir -p "$tmp/bad"
head -c 3000 "$data/Dataset 1/001.bmp" > "$tmp/bad/truncated.bmp"
printf 'this is not an image' > "$tmp/bad/corrupt.png"
head -c 100 "$model" > "$tmp/bad/damaged.safetensors"
expect_error "truncated BMP" "truncated.bmp" \
    "$bin" segment --model "$model" --out "$tmp/bad/o1" "$tmp/bad/truncated.bmp"
expect_error "corrupt PNG" "corrupt.png" \
    "$bin" segment --model "$model" --out "$tmp/bad/o2" "$tmp/bad/corrupt.png"
left=$(find "$tmp/bad/o1" "$tmp/bad/o2" -type f 2>/dev/null)
[ -z "$left" ] && pass "no partial outputs" || fail "partial outputs left: $left"
expect_error "damaged model" "damaged.safetensors" "$bin" segment \
    --model "$tmp/bad/damaged.safetensors" --out "$tmp/bad/o3" "$data/Dataset 1/001.bmp"
expect_error "missing image" "nope.bmp" \
    "$bin" segment --model "$model" --out "$tmp/bad/o4" "$tmp/nope.bmp"

# Mismatched image and mask sizes in an images/ + masks/ folder.
mkdir -p "$tmp/mm/images" "$tmp/mm/masks"
cp "$data/Dataset 1/001.bmp" "$tmp/mm/images/001.bmp"
cp "$data/Dataset 2/001.png" "$tmp/mm/masks/001.png"
expect_error "mismatched sizes" "001.png" "$bin" eval --model "$model" --data "$tmp/mm" --split all
# count --eval on a label CSV that gives one image two types: the CSV's own error, by line.
mkdir -p "$tmp/lab/Dataset 1"
cp "$data/Dataset 1/001."* "$data/Dataset 1/006."* "$tmp/lab/Dataset 1/"
printf 'image ID,class\n1,1\n1,2\n6,1\n' > "$tmp/lab/Class Labels of Dataset 1.csv"
expect_error "count --eval, conflicting label rows" "Dataset 1.csv:3: image ID 1 has type 2" \
    "$bin" count --eval --model "$model" --data "$tmp/lab/Dataset 1" --split all
# Unknown mask levels: the folder declares 0 and 255 without snapping; a mask has 128.
mkdir -p "$tmp/lv/images" "$tmp/lv/masks"
cp "$data/Dataset 1/001.bmp" "$tmp/lv/images/001.bmp"
cp "$data/Dataset 1/001.png" "$tmp/lv/masks/001.png"
printf '0 background\n255 cell\n' > "$tmp/lv/classes.txt"
expect_error "unknown mask level" "128" "$bin" train --data "$tmp/lv" --train-split all \
    --val-split all --out "$tmp/lv/m.safetensors" --epochs 1
[ ! -e "$tmp/lv/m.safetensors" ] && pass "no model written on bad data" ||
    fail "model written despite bad data"
expect_error "bad option value" "--size" "$bin" train --size 0
expect_error "bad thread count" "--threads" "$bin" count --threads 0 "$data/Dataset 1/001.bmp"
expect_error "unknown split" "split" "$bin" eval --model "$model" --split nonsense

# 5. Robustness of the command line: a write error on stdout fails the command; undefined
#    metrics print n/a; a model holding NaN is refused; serve checks --data and its port first.
expect_write_error() { # expect_write_error NAME CMD...: stdout on a full disk must fail the run
    local name=$1 rc
    shift
    "$@" > /dev/full 2> "$tmp/full.err"
    rc=$?
    if [ "$rc" -ne 0 ] && grep -q "cannot write the output (stdout): No space" "$tmp/full.err"
    then pass "$name > /dev/full: exit $rc, $(head -c 100 "$tmp/full.err")"
    else fail "$name > /dev/full: exit $rc, stderr: $(cat "$tmp/full.err")"; fi
}
printf 'Dataset 1/001\n' > "$tmp/one.txt"
if [ -w /dev/full ]; then
    expect_write_error "info" "$bin" info "$model"
    expect_write_error "eval --json" "$bin" eval --model "$model" --data "$data" \
        --split-file "$tmp/one.txt" --json
fi
# One image whose mask is all background: cytoplasm and nucleus have no recall (0/0). Its
# classes.txt declares the levels, as a folder whose masks lack a class must.
mkdir -p "$tmp/bgonly/images" "$tmp/bgonly/masks"
cp "$data/Dataset 1/001.bmp" "$tmp/bgonly/images/001.bmp"
printf '0 background\n128 cytoplasm\n255 nucleus\n' > "$tmp/bgonly/classes.txt"
python3 - "$tmp/bgonly/masks/001.png" "$(bmp_size "$data/Dataset 1/001.bmp")" <<'PY'
import struct, sys, zlib
w, h = map(int, sys.argv[2].split("x"))
def chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
raw = b"".join(b"\0" + bytes(w) for _ in range(h))
open(sys.argv[1], "wb").write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h,
    8, 0, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
PY
if "$bin" eval --model "$model" --data "$tmp/bgonly" --split all > "$tmp/na.txt" &&
        "$bin" eval --model "$model" --data "$tmp/bgonly" --split all --json > "$tmp/na.json"; then
    recall=$(awk '$1 == "cytoplasm" || $1 == "nucleus" {printf "%s ", $5}' "$tmp/na.txt")
    null="$(json_get "$tmp/na.json" "['classes'][1]['recall']")"
    null="$null $(json_get "$tmp/na.json" "['classes'][2]['recall']")"
    if [ "$recall" = "n/a n/a " ] && ! grep -qi "nan" "$tmp/na.txt" && [ "$null" = "None None" ]
    then pass "eval, classes absent from the truth: recall n/a (text), null (JSON)"
    else fail "eval, absent classes: text recall '$recall', JSON $null: $(cat "$tmp/na.txt")"; fi
else
    fail "eval on an all-background mask exited non-zero"
fi
# A model file with one NaN (the cell classifier, then a SegFormer weight) is refused by name.
poison() { # poison OUT TENSOR: a copy of the model with element 3 of TENSOR set to NaN
    python3 - "$model" "$1" "$2" <<'PY'
import json, struct, sys
data = bytearray(open(sys.argv[1], "rb").read())
n = struct.unpack("<Q", data[:8])[0]
at = json.loads(data[8:8 + n])[sys.argv[3]]["data_offsets"][0] + 8 + n + 4 * 3
data[at:at + 4] = struct.pack("<f", float("nan"))
open(sys.argv[2], "wb").write(data)
PY
}
mkdir -p "$tmp/nan"
poison "$tmp/nan/cells.safetensors" cell_classifier.weight
poison "$tmp/nan/head.safetensors" decode_head.classifier.weight
expect_error "NaN in cell_classifier.weight" \
    "cells.safetensors: tensor cell_classifier.weight holds NaN at element 3" \
    "$bin" count --model "$tmp/nan/cells.safetensors" "$data/Dataset 1/001.bmp"
expect_error "NaN in a SegFormer weight" "decode_head.classifier.weight holds NaN at element 3" \
    "$bin" segment --model "$tmp/nan/head.safetensors" --out "$tmp/nan/o" "$data/Dataset 1/001.bmp"
# serve and report: a --data folder that does not exist is an error (the timeout stops a server
# that starts anyway); a port in use is reported at once, alone, before the results pages.
expect_error "serve --data missing" "no-such-folder: No such file or directory" \
    timeout 30 "$bin" serve --model "$model" --data "$tmp/no-such-folder" --port 0
expect_error "report --data missing" "no-such-folder: No such file or directory" \
    "$bin" report --model "$model" --data "$tmp/no-such-folder" --out "$tmp/rep"
python3 - "$bin" "$model" "$data/Dataset 2" "$tmp/port.err" > "$tmp/port.out" <<'PY'
import socket, subprocess, sys
with socket.socket() as s:  # holds a loopback port while serve tries it
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    port = s.getsockname()[1]
    r = subprocess.run([sys.argv[1], "serve", "--model", sys.argv[2], "--data", sys.argv[3],
                        "--port", str(port)], stdout=subprocess.DEVNULL,
                       stderr=open(sys.argv[4], "w"), timeout=120)
    print(port, r.returncode)
PY
read -r port rc < "$tmp/port.out"
if [ "${rc:-0}" -ne 0 ] && grep -q "127.0.0.1:$port: Address already in use" "$tmp/port.err" &&
        grep -q -- "--port" "$tmp/port.err" && [ "$(wc -l < "$tmp/port.err")" -eq 1 ]; then
    pass "serve on a port in use: $(head -c 120 "$tmp/port.err")"
else
    fail "serve on a port in use (port '${port:-}', exit '${rc:-}'): $(cat "$tmp/port.err")"
fi

if [ "$failures" -ne 0 ]; then
    echo "e2e: $failures check(s) failed" >&2
    exit 1
fi
echo "e2e: all checks passed"
