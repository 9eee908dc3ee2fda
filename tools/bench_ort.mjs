#!/usr/bin/env node
// ONNX Runtime peer for tools/bench_peers.sh.
//
//   node tools/bench_ort.mjs --model M.onnx --size S --batch B --threads T --steps N [--warmup W]
//   node tools/bench_ort.mjs --model M.onnx --check      (compare against M.onnx.{in,out}.f32)
//
// Runs the exported eval-mode SegFormer (tools/bench_torch.py export) on the CPU execution provider
// with intraOpNumThreads T, interOpNumThreads 1, sequential execution, all graph optimizations.
// Timed mode prints one JSON line {"peer":"ort", ..., "img_s", "peak_rss_mib"}; --check runs the
// sample input written at export time and prints the max abs difference to PyTorch's logits.
// Needs `npm install --ignore-scripts` in tools/ (onnxruntime-node 1.30.0, CPU library included).
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import process from 'node:process';

const require = createRequire(import.meta.url);

function parseArgs(argv) {
  const o = { model: null, size: 128, batch: 8, threads: 2, steps: 10, warmup: 2, check: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const num = () => {
      const v = Number(argv[++i]);
      if (!Number.isInteger(v) || v < 0) fail(`bad value for ${a}`);
      return v;
    };
    if (a === '--model') o.model = argv[++i];
    else if (a === '--size') o.size = num();
    else if (a === '--batch') o.batch = num();
    else if (a === '--threads') o.threads = num();
    else if (a === '--steps') o.steps = num();
    else if (a === '--warmup') o.warmup = num();
    else if (a === '--check') o.check = true;
    else if (a === '--help' || a === '-h') {
      process.stdout.write(readFileSync(new URL(import.meta.url)).toString()
        .split('\n').filter((l) => l.startsWith('//')).map((l) => l.slice(3)).join('\n') + '\n');
      process.exit(0);
    } else fail(`unknown option '${a}'`);
  }
  if (!o.model) fail('--model is required');
  return o;
}

function fail(msg) {
  process.stderr.write(`bench_ort.mjs: ${msg}\n`);
  process.exit(2);
}

function readF32(path) {
  const b = readFileSync(path);
  return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
}

// Deterministic pseudo-normal input (inputs do not change the cost of this model).
function randomInput(n) {
  const x = new Float32Array(n);
  let s = 0x9e3779b9 >>> 0;
  for (let i = 0; i < n; i++) {
    s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
    x[i] = (s / 4294967296 - 0.5) * 3.4;
  }
  return x;
}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  let ort;
  try {
    ort = require('onnxruntime-node');
  } catch (e) {
    fail(`cannot load onnxruntime-node (run 'npm install --ignore-scripts' in tools/): ${e.message}`);
  }
  const session = await ort.InferenceSession.create(o.model, {
    executionProviders: ['cpu'],
    intraOpNumThreads: o.threads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
  });
  const inName = session.inputNames[0];
  const outName = session.outputNames[0];

  if (o.check) {
    const x = readF32(`${o.model}.in.f32`);
    const want = readF32(`${o.model}.out.f32`);
    const side = Math.round(Math.sqrt(x.length / 3 / o.batch));
    const feeds = { [inName]: new ort.Tensor('float32', x, [o.batch, 3, side, side]) };
    if (o.batch * 3 * side * side !== x.length) fail('--check: pass the --batch used at export');
    const got = (await session.run(feeds))[outName].data;
    if (got.length !== want.length) fail(`--check: ${got.length} logits, PyTorch has ${want.length}`);
    let maxDiff = 0, maxRef = 0;
    for (let i = 0; i < got.length; i++) {
      maxDiff = Math.max(maxDiff, Math.abs(got[i] - want[i]));
      maxRef = Math.max(maxRef, Math.abs(want[i]));
    }
    console.log(JSON.stringify({ peer: 'ort', check: true, max_abs_diff: maxDiff, max_abs_ref: maxRef }));
    return;
  }

  const x = randomInput(o.batch * 3 * o.size * o.size);
  const feeds = { [inName]: new ort.Tensor('float32', x, [o.batch, 3, o.size, o.size]) };
  for (let i = 0; i < o.warmup; i++) await session.run(feeds);
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < o.steps; i++) await session.run(feeds);
  const dt = Number(process.hrtime.bigint() - t0) * 1e-9;
  console.log(JSON.stringify({
    peer: 'ort', ort: require('onnxruntime-node/package.json').version, mode: 'infer',
    size: o.size, batch: o.batch, threads: o.threads, steps: o.steps,
    img_s: (o.batch * o.steps) / dt,
    peak_rss_mib: Math.round((process.resourceUsage().maxRSS / 1024) * 10) / 10,
  }));
}

main().catch((e) => fail(e && e.stack ? e.stack : String(e)));
