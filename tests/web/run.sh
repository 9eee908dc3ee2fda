#!/bin/sh
# Browser and server tests of `leukoseg serve` and `leukoseg report`, on loopback only.
#
# usage: tests/web/run.sh [MODEL]
#   MODEL   model file (default: $LEUKOSEG_TEST_MODEL, else models/leukoseg-b0.safetensors)
# Environment: LEUKOSEG_DATA (dataset, default ../shared/data/segmentation_WBC beside the repo),
# CHROMIUM (default /usr/bin/chromium).
#
# Builds nothing: run `make` first. Prints SKIP and exits 0 when node, Chromium, the model or the
# dataset is missing, so CI can run it everywhere and install those where it should really run.
# Starts the server on a free port, runs both tests, and always stops the server.
set -u
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
model=${1:-${LEUKOSEG_TEST_MODEL:-$root/models/leukoseg-b0.safetensors}}
data=${LEUKOSEG_DATA:-$root/../shared/data/segmentation_WBC}
chromium=${CHROMIUM:-/usr/bin/chromium}
out=$here/out
image1="$data/Dataset 1/001.bmp"
image2="$data/Dataset 2/001.bmp"

skip() { echo "SKIP: tests/web: $*"; exit 0; }
command -v node >/dev/null 2>&1 || skip "node is not installed (apt-get install nodejs npm)"
[ -x "$chromium" ] || skip "no Chromium at $chromium (apt-get install chromium)"
[ -f "$model" ] || skip "no model at $model (give one: tests/web/run.sh MODEL)"
[ -f "$image1" ] || skip "no test image at $image1 (set LEUKOSEG_DATA)"
[ -x "$root/build/leukoseg" ] ||
    { echo "tests/web: build/leukoseg is missing: run make" >&2; exit 1; }
if [ ! -d "$here/node_modules/playwright-core" ]; then
    # playwright-core only: it drives the system Chromium and downloads no browser.
    (cd "$here" && npm install --no-audit --no-fund --silent) ||
        { echo "tests/web: npm install playwright-core failed" >&2; exit 1; }
fi
[ -f "$image2" ] || image2=$image1
mkdir -p "$out"

port=$(node -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => {
  console.log(s.address().port); s.close(); });')
"$root/build/leukoseg" serve --model "$model" --data "$data" --port "$port" \
    >"$out/server.log" 2>&1 &
pid=$!
# Stop the server however this script ends.
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null' EXIT INT TERM

# The server listens at once but answers only after computing the results pages (test split):
# wait up to 10 minutes for its health check.
url="http://127.0.0.1:$port/"
i=0
until node -e 'fetch(process.argv[1] + "api/health").then((r) => process.exit(r.ok ? 0 : 1),
  () => process.exit(1))' "$url"; do
    kill -0 "$pid" 2>/dev/null || { echo "tests/web: the server exited:" >&2;
                                    cat "$out/server.log" >&2; exit 1; }
    i=$((i + 1))
    [ "$i" -lt 600 ] || { echo "tests/web: the server did not answer in 10 minutes" >&2; exit 1; }
    sleep 1
done
echo "tests/web: server up at $url (pid $pid)"

status=0
echo "== server test"
timeout 300 node "$here/server.test.mjs" "$url" "$image1" "$image2" || status=1

echo "== static report"
rm -rf "$out/report"
"$root/build/leukoseg" report --model "$model" --data "$data" --out "$out/report" >/dev/null ||
    status=1

echo "== browser test"
timeout 300 node "$here/browser.test.mjs" "$url" "$image1" "$out" "$out/report/index.html" ||
    status=1

kill -0 "$pid" 2>/dev/null || { echo "tests/web: the server died during the tests" >&2; status=1; }
[ "$status" -eq 0 ] && echo "tests/web: all passed (screenshots in $out)" ||
    echo "tests/web: FAILED (server log: $out/server.log)"
exit "$status"
