#!/usr/bin/env bash
# Compare leukoseg with its performance peers on the same shapes, in one interleaved run.
# A tool for people (see tools/BENCH.md), not a CI test: it builds nothing and takes minutes.
set -u -o pipefail

usage() {
    cat <<'EOF'
usage: tools/bench_peers.sh [--threads T] [--rounds R] [--steps N] [--cases "LIST"] [--keep]

Runs leukoseg (build/leukoseg bench), the PyTorch SegFormer of the golden tests
(tools/bench_torch.py) and ONNX Runtime (tools/bench_ort.mjs, model exported from that PyTorch
SegFormer) as separate processes with the same thread count, interleaved round by round
(A B C A B C ...), and prints a markdown table of median img/s and the ratios
leukoseg/PyTorch and leukoseg/ORT, plus peak resident memory for training.

  --threads T   threads for every peer (default 2; also sets OMP/OpenBLAS/MKL_NUM_THREADS)
  --rounds R    interleaved rounds per case; the table shows the median (default 3)
  --steps N     timed steps per run for every case (default: 5 for train, 10 for infer);
                every peer first runs 2 untimed warm-up steps
  --cases LIST  space-separated MODE:SIZE:BATCH, MODE train or infer
                (default "train:128:8 infer:128:8 infer:512:1"; model b0, 3 classes)
  --keep        keep the temporary directory (ONNX models, raw JSON lines)

Environment: LEUKOSEG (default build/leukoseg), PYTHON (default /usr/bin/python3).

Needs build/leukoseg (make), /usr/bin/python3 with torch (Debian python3-torch + libopenblas0),
node + npm (onnxruntime-node 1.30.0 is installed into tools/node_modules on first use with
'npm install --ignore-scripts'). A missing peer is skipped with a message. ORT has no training.
EOF
}

threads=2 rounds=3 steps="" keep=0
cases="train:128:8 infer:128:8 infer:512:1"
while [ $# -gt 0 ]; do
    case "$1" in
        --threads) threads="${2:-}"; shift 2 ;;
        --rounds) rounds="${2:-}"; shift 2 ;;
        --steps) steps="${2:-}"; shift 2 ;;
        --cases) cases="${2:-}"; shift 2 ;;
        --keep) keep=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "bench_peers.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
    esac
done
for v in "$threads" "$rounds" ${steps:+"$steps"}; do
    case "$v" in ''|*[!0-9]*|0) echo "bench_peers.sh: expected a positive integer, got '$v'" >&2; exit 2 ;; esac
done
for c in $cases; do
    case "$c" in
        train:[0-9]*:[0-9]*|infer:[0-9]*:[0-9]*) ;;
        *) echo "bench_peers.sh: bad case '$c' (want train|infer:SIZE:BATCH)" >&2; exit 2 ;;
    esac
done

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root" || exit 1
LEUKOSEG="${LEUKOSEG:-$root/build/leukoseg}"
PYTHON="${PYTHON:-/usr/bin/python3}"
export OMP_NUM_THREADS="$threads" OPENBLAS_NUM_THREADS="$threads" MKL_NUM_THREADS="$threads"

tmp="$(mktemp -d "${TMPDIR:-/tmp}/bench_peers.XXXXXX")" || exit 1
if [ "$keep" = 1 ]; then
    trap 'echo "kept $tmp" >&2' EXIT
else
    trap 'rm -rf "$tmp"' EXIT
fi
log() { echo "[bench_peers] $*" >&2; }

# ---- which peers can run ----------------------------------------------------------------------
have_ls=1 have_torch=1 have_ort=1
if [ ! -x "$LEUKOSEG" ]; then
    log "SKIP leukoseg: $LEUKOSEG not found (build it first: make)"; have_ls=0
fi
if ! torch_version="$("$PYTHON" -c 'import torch; print(torch.__version__)' 2>/dev/null)"; then
    log "SKIP PyTorch: '$PYTHON -c \"import torch\"' failed (apt-get install python3-torch libopenblas0)"
    have_torch=0
fi
ort_version=""
if ! command -v node >/dev/null 2>&1; then
    log "SKIP ONNX Runtime: node not found"; have_ort=0
elif [ "$have_torch" = 0 ]; then
    log "SKIP ONNX Runtime: the ONNX models are exported with PyTorch, which is missing"; have_ort=0
else
    if [ ! -f tools/node_modules/onnxruntime-node/package.json ]; then
        if command -v npm >/dev/null 2>&1; then
            log "installing onnxruntime-node into tools/node_modules (npm install --ignore-scripts)"
            (cd tools && npm install --ignore-scripts --no-audit --no-fund >&2) || true
        fi
    fi
    if ! ort_version="$(cd tools && node -e 'console.log(require("onnxruntime-node/package.json").version); require("onnxruntime-node")' 2>/dev/null)"; then
        log "SKIP ONNX Runtime: onnxruntime-node not loadable (cd tools && npm install --ignore-scripts)"
        have_ort=0; ort_version=""
    fi
fi
if [ $((have_ls + have_torch + have_ort)) = 0 ]; then log "no peer can run"; exit 1; fi
# OpenMP peers (PyTorch above all) slow down by 10x or more when other processes compete for
# the cores, so a busy machine gives meaningless ratios.
load1="$(cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo 0)"
if awk -v l="$load1" 'BEGIN {exit !(l > 0.5)}'; then
    log "WARNING: 1-minute load average is $load1; results are only meaningful on an idle machine"
fi

# ---- helpers ----------------------------------------------------------------------------------
# jnum KEY < lines: the number stored under "KEY" in each flat one-line JSON object.
jnum() { grep -o "\"$1\": *[-0-9.eE+]*" | sed 's/.*: *//'; }
# median of the numbers on stdin (one per line); prints nothing for no input.
median() { sort -g | awk '{v[NR]=$1} END {if (NR) printf "%.6g\n", NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }
# run_peer NAME OUTFILE CMD...: runs one peer, appends its JSON line to OUTFILE, logs failures.
run_peer() {
    local name="$1" out="$2"; shift 2
    local line err="$tmp/stderr.txt"
    if line="$("$@" 2>"$err" | tail -n1)" && [ "${line:0:1}" = "{" ]; then
        echo "$line" >>"$out"
        log "  $name: $line"
    else
        log "  $name FAILED: $*"
        tail -n5 "$err" | sed 's/^/      /' >&2
    fi
}
fmt() { if [ -n "$1" ]; then printf "%.3g" "$1"; else printf -- "-"; fi; }
ratio() { if [ -n "$1" ] && [ -n "$2" ]; then awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2fx", a / b}'; else printf -- "-"; fi; }

# ---- ONNX export, one model per inference shape (static shapes) -------------------------------
declare -A onnx_ok
if [ "$have_ort" = 1 ]; then
    for c in $cases; do
        IFS=: read -r mode size batch <<<"$c"
        [ "$mode" = infer ] || continue
        m="$tmp/b0_${size}_${batch}.onnx"
        [ -f "$m" ] && continue
        log "exporting $m"
        if ! "$PYTHON" tools/bench_torch.py export --size "$size" --batch "$batch" --threads "$threads" \
                --out "$m" >/dev/null 2>"$tmp/export.err"; then
            log "SKIP ONNX Runtime for $c: export failed"; tail -n5 "$tmp/export.err" | sed 's/^/      /' >&2
            continue
        fi
        chk="$(cd tools && node bench_ort.mjs --model "$m" --batch "$batch" --threads "$threads" --check 2>&1 | tail -n1)"
        d="$(echo "$chk" | jnum max_abs_diff)" ref="$(echo "$chk" | jnum max_abs_ref)"
        if [ -z "$d" ] || ! awk -v d="$d" -v r="${ref:-0}" 'BEGIN {exit !(d < 1e-3 * (r > 1 ? r : 1))}'; then
            log "SKIP ONNX Runtime for $c: ORT logits differ from PyTorch's: $chk"; continue
        fi
        log "  ORT vs PyTorch logits on the exported model: max abs diff $d"
        onnx_ok[$c]=1
    done
fi

# ---- interleaved rounds -----------------------------------------------------------------------
for c in $cases; do
    IFS=: read -r mode size batch <<<"$c"
    n="${steps:-$([ "$mode" = train ] && echo 5 || echo 10)}"
    for r in $(seq 1 "$rounds"); do
        log "$c round $r/$rounds ($n timed steps)"
        if [ "$have_ls" = 1 ]; then
            extra=(); [ "$mode" = infer ] && extra=(--infer-only)
            run_peer leukoseg "$tmp/$c.leukoseg" "$LEUKOSEG" bench --variant b0 --size "$size" \
                --batch "$batch" --threads "$threads" --steps "$n" --json "${extra[@]}"
        fi
        if [ "$have_torch" = 1 ]; then
            run_peer pytorch "$tmp/$c.torch" "$PYTHON" tools/bench_torch.py "$mode" --size "$size" \
                --batch "$batch" --threads "$threads" --steps "$n"
        fi
        if [ "$mode" = infer ] && [ -n "${onnx_ok[$c]:-}" ]; then
            run_peer ort "$tmp/$c.ort" node tools/bench_ort.mjs --model "$tmp/b0_${size}_${batch}.onnx" \
                --size "$size" --batch "$batch" --threads "$threads" --steps "$n"
        fi
    done
done

# ---- report -----------------------------------------------------------------------------------
col() { [ -f "$1" ] && jnum "$2" <"$1" | median; }   # col FILE KEY: median over rounds
cpu="$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | sed 's/.*: //')"
echo "## leukoseg vs peers, SegFormer-b0, 3 classes, $threads threads, median of $rounds rounds"
echo
echo "$(date -u '+%Y-%m-%d %H:%M UTC'), ${cpu:-unknown CPU}, $(nproc) cores." \
     "PyTorch ${torch_version:-n/a}, ONNX Runtime ${ort_version:-n/a} (onnxruntime-node)." \
     "1-minute load average at start: $load1."
echo
echo "| case | leukoseg img/s | PyTorch img/s | ORT img/s | leukoseg/PyTorch | leukoseg/ORT |"
echo "|---|---|---|---|---|---|"
mem_rows=""
for c in $cases; do
    IFS=: read -r mode size batch <<<"$c"
    key=infer_img_s; [ "$mode" = train ] && key=train_img_s
    ls_v="$(col "$tmp/$c.leukoseg" "$key")"
    pt_v="$(col "$tmp/$c.torch" img_s)"
    ort_v="$(col "$tmp/$c.ort" img_s)"
    label="$mode ${size}x${size} batch $batch"
    [ "$mode" = train ] && label="$label (AdamW step)"
    if [ "$mode" = train ]; then ort_cell="n/a"; ort_ratio="n/a"; else ort_cell="$(fmt "$ort_v")"; ort_ratio="$(ratio "$ls_v" "$ort_v")"; fi
    echo "| $label | $(fmt "$ls_v") | $(fmt "$pt_v") | $ort_cell | $(ratio "$ls_v" "$pt_v") | $ort_ratio |"
    if [ "$mode" = train ]; then
        ls_m="$(col "$tmp/$c.leukoseg" peak_rss_mib)"; pt_m="$(col "$tmp/$c.torch" peak_rss_mib)"
        mem_rows+="| $label | $(fmt "$ls_m") | $(fmt "$pt_m") | $(ratio "$ls_m" "$pt_m") |"$'\n'
    fi
done
if [ -n "$mem_rows" ]; then
    echo
    echo "| peak RSS (MiB) | leukoseg | PyTorch | leukoseg/PyTorch |"
    echo "|---|---|---|---|"
    printf "%s" "$mem_rows"
fi
echo
echo "Ratios above 1x favour leukoseg for img/s and PyTorch for memory. Peak RSS is each process's"
echo "ru_maxrss (PyTorch's includes the Python + torch runtime). Per-round values:"
echo
for c in $cases; do
    for p in leukoseg torch ort; do
        f="$tmp/$c.$p"; [ -f "$f" ] || continue
        key=img_s; [ "$p" = leukoseg ] && { key=infer_img_s; [ "${c%%:*}" = train ] && key=train_img_s; }
        echo "- $c $p: $(jnum "$key" <"$f" | awk '{printf "%s%.3g", (NR > 1 ? ", " : ""), $1}')"
    done
done
