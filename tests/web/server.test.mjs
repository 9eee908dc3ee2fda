// Robustness test of `leukoseg serve` over loopback: status codes and JSON errors for oversized,
// undecodable and misplaced requests, no path traversal, 50 concurrent uploads all answered
// correctly, and the server still up at the end.
//
// usage: node server.test.mjs URL IMAGE [IMAGE2]
// A watchdog ends the test after 240 s whatever happens.
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import zlib from 'node:zlib';

const [base, image, image2] = process.argv.slice(2);
if (!base || !image) {
  console.error('usage: node server.test.mjs URL IMAGE [IMAGE2]');
  process.exit(2);
}
const watchdog = setTimeout(() => {
  console.error('FAIL: server test timed out after 240 s');
  process.exit(1);
}, 240_000);
const { hostname, port } = new URL(base);
if (hostname !== '127.0.0.1' && hostname !== 'localhost') {
  console.error('refusing to test a server that is not on loopback: ' + hostname);
  process.exit(2);
}
const agent = new http.Agent({ keepAlive: false, maxSockets: 64 });

let failures = 0;
function check(ok, what) {
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${what}`);
  if (!ok) failures++;
}

/* One request; resolves {status, type, body} (body: Buffer). chunked: send without a length. */
function request(method, path, body, { chunked = false, timeout = 120_000 } = {}) {
  return new Promise((resolve, reject) => {
    const headers = {};
    if (body && !chunked) headers['Content-Length'] = body.length;
    if (body) headers['Content-Type'] = 'application/octet-stream';
    const req = http.request({ host: hostname, port, method, path, headers, agent, timeout },
      (res) => {
        const parts = [];
        res.on('data', (d) => parts.push(d));
        res.on('end', () => resolve({ status: res.statusCode, type: res.headers['content-type'],
                                      body: Buffer.concat(parts) }));
      });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    if (body && chunked) {
      for (let i = 0; i < body.length; i += 1 << 20) req.write(body.subarray(i, i + (1 << 20)));
      req.end();
    } else {
      req.end(body);
    }
  });
}

/* A raw request line, sent as is: http clients normalise "/../" away, a raw socket does not. */
function raw(text) {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: hostname, port: +port }, () => s.end(text));
    const parts = [];
    s.setTimeout(30_000, () => s.destroy(new Error('timeout')));
    s.on('data', (d) => parts.push(d));
    s.on('end', () => resolve(Buffer.concat(parts).toString('latin1')));
    s.on('error', reject);
  });
}

const isJsonError = (r) => {
  try {
    return /application\/json/.test(r.type) && typeof JSON.parse(r.body).error === 'string';
  } catch {
    return false;
  }
};

function crc32(buf) {
  let c, crc = 0xffffffff;
  for (const b of buf) {
    c = (crc ^ b) & 0xff;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    crc = (crc >>> 8) ^ c;
  }
  return (crc ^ 0xffffffff) >>> 0;
}
/* A valid 8-bit grey PNG of w x h zeros: small on disk, large when decoded. */
function pngOf(w, h) {
  const chunk = (type, data) => {
    const len = Buffer.alloc(4); len.writeUInt32BE(data.length);
    const td = Buffer.concat([Buffer.from(type, 'latin1'), data]);
    const crc = Buffer.alloc(4); crc.writeUInt32BE(crc32(td));
    return Buffer.concat([len, td, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0); ihdr.writeUInt32BE(h, 4);
  ihdr[8] = 8; ihdr[9] = 0;
  const rows = Buffer.alloc((w + 1) * h);
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr), chunk('IDAT', zlib.deflateSync(rows)), chunk('IEND', Buffer.alloc(0))]);
}

const img = fs.readFileSync(image);
const img2 = image2 ? fs.readFileSync(image2) : img;

try {
  // ------------------------------------------------------------------ pages and 404
  let r = await request('GET', '/');
  check(r.status === 200 && /text\/html/.test(r.type), 'GET / serves the page');
  for (const p of ['/app.js', '/style.css', '/data/model.js', '/data/results.js'])
    check((await request('GET', p)).status === 200, `GET ${p} is 200`);
  r = await request('GET', '/no/such/page');
  check(r.status === 404 && isJsonError(r), 'unknown path: 404 with a JSON error');
  r = await request('GET', '/api/segment');
  check(r.status === 405 && isJsonError(r), 'GET on /api/segment: 405');

  // ------------------------------------------------------------------ traversal
  for (const p of ['/../../../../etc/passwd', '/%2e%2e/%2e%2e/%2e%2e/etc/passwd',
                   '/data/../index.html', '/data/gallery/../../../etc/passwd', '//etc/passwd',
                   '/..%2f..%2f..%2fetc%2fpasswd', '/index.html%00.png', '/./app.js',
                   '/data/gallery/', '/web/app.js', '/cli/serve.c']) {
    const text = await raw(`GET ${p} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`);
    const code = +(text.match(/^HTTP\/1\.[01] (\d{3})/) || [])[1];
    check((code === 404 || code === 400) && !/root:|#include/.test(text),
      `traversal ${p}: ${code}, nothing leaked`);
  }

  // ------------------------------------------------------------------ 413
  const lenOnly = await raw('POST /api/segment HTTP/1.1\r\nHost: 127.0.0.1\r\n' +
    'Content-Type: application/octet-stream\r\nContent-Length: 21000000\r\n' +
    'Connection: close\r\n\r\n');
  check(/^HTTP\/1\.[01] 413/.test(lenOnly) && /"error"/.test(lenOnly),
    '413 for a declared 21 MB body, answered before the body is sent');
  r = await request('POST', '/api/segment', Buffer.alloc(21_000_000, 7), { chunked: true });
  check(r.status === 413 && isJsonError(r), '413 for a 21 MB chunked upload');
  r = await request('POST', '/api/segment', pngOf(5000, 3));
  check(r.status === 413 && isJsonError(r),
    `413 for a valid 5000x3 PNG (${JSON.parse(r.body).error})`);
  const bmp = Buffer.from(img.subarray(0, 54));
  bmp.writeInt32LE(4097, 18);
  bmp.writeInt32LE(-4097, 22);
  r = await request('POST', '/api/segment', bmp);
  check(r.status === 413 && isJsonError(r), '413 for a BMP header declaring 4097x4097');

  // ------------------------------------------------------------------ 400
  r = await request('POST', '/api/segment', Buffer.from('this is not an image at all'));
  check(r.status === 400 && isJsonError(r), `400 for text (${JSON.parse(r.body).error})`);
  r = await request('POST', '/api/segment', img.subarray(0, 200));
  check(r.status === 400 && isJsonError(r), '400 for a truncated BMP');
  r = await request('POST', '/api/segment', Buffer.alloc(0));
  check(r.status === 400 && isJsonError(r), '400 for an empty body');
  r = await request('POST', '/api/attention', img);
  check(r.status === 400 && isJsonError(r), '400 for attention without ?x=&y=');
  r = await request('POST', '/api/attention?x=5000&y=1', img);
  check(r.status === 400 && isJsonError(r), '400 for attention outside the image');
  r = await request('POST', '/api/nothing', img);
  check(r.status === 404 && isJsonError(r), '404 for POST to an unknown endpoint');

  // ------------------------------------------------------------------ one upload, attention
  const one = await request('POST', '/api/segment', img);
  const ref = JSON.parse(one.body);
  check(one.status === 200 && ref.classes.length >= 2 && ref.classes.every((c) => c.pixels >= 0),
    `segment: ${ref.classes.map((c) => `${c.name} ${c.pixels}`).join(', ')}`);
  check(['image', 'mask', 'overlay'].every((k) => ref[k].startsWith('data:image/png;base64,')),
    'segment: image, mask, overlay as PNG data URLs');
  check(Array.isArray(ref.cells) && typeof ref.differential === 'object',
    'segment: cells and differential');
  check(Array.isArray(ref.warnings) && ref.warnings.length === 0,
    `segment: no field warnings for a dataset image (${ref.warnings})`);
  // ?window=W: a window at least as large as the image is the whole image; bad values are 400.
  r = await request('POST', `/api/segment?window=${Math.max(ref.width, ref.height)}`, img);
  check(r.status === 200 && JSON.parse(r.body).classes.map((c) => c.pixels).join('/') ===
    ref.classes.map((c) => c.pixels).join('/'), 'segment?window=image side: the same areas');
  r = await request('POST', `/api/segment?window=${ref.width >> 1}`, img);
  check(r.status === 200 && JSON.parse(r.body).width === ref.width,
    `segment?window=${ref.width >> 1}: 200, the image's own size`);
  for (const w of ['abc', '8', '-5', '99999'])
    check((r = await request('POST', `/api/segment?window=${w}`, img)).status === 400 &&
      isJsonError(r), `segment?window=${w}: 400 (${JSON.parse(r.body).error})`);
  r = await request('POST', `/api/attention?x=${ref.width >> 1}&y=${ref.height >> 1}`, img);
  const att = JSON.parse(r.body);
  const sums = (att.stages || []).map((s) => s.weights.reduce((a, v) => a + v, 0));
  check(r.status === 200 && att.stages.length === 4 && sums.every((s) => Math.abs(s - 1) < 1e-3),
    `attention: 4 stages, each a distribution (sums ${sums.map((s) => s.toFixed(4))})`);

  // ------------------------------------------------------------------ 50 concurrent uploads
  const ref2 = img2 === img ? ref : JSON.parse((await request('POST', '/api/segment', img2)).body);
  const key = (j) => j.classes.map((c) => c.pixels).join('/');
  const t0 = Date.now();
  const all = await Promise.allSettled(Array.from({ length: 50 }, (_, i) =>
    request('POST', '/api/segment', i % 2 ? img2 : img)));
  let good = 0;
  const bad = [];
  all.forEach((a, i) => {
    if (a.status !== 'fulfilled') return bad.push(`#${i}: ${a.reason.message}`);
    if (a.value.status !== 200) return bad.push(`#${i}: HTTP ${a.value.status}`);
    const j = JSON.parse(a.value.body);
    if (key(j) !== key(i % 2 ? ref2 : ref)) return bad.push(`#${i}: areas ${key(j)}`);
    good++;
  });
  check(good === 50, `50 concurrent uploads: ${good} correct in ${Date.now() - t0} ms` +
    (bad.length ? ` (${bad.slice(0, 5).join('; ')})` : ''));

  // A client that hangs up mid-upload must not hurt the server.
  await new Promise((resolve) => {
    const s = net.connect({ host: hostname, port: +port }, () => {
      s.write('POST /api/segment HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nBM');
      setTimeout(() => { s.destroy(); resolve(); }, 100);
    });
    s.on('error', resolve);
  });
  r = await request('GET', '/api/health');
  check(r.status === 200 && JSON.parse(r.body).ok === true, 'server still up and healthy');
} catch (e) {
  console.error('FAIL:', e.stack || e.message);
  failures++;
}
clearTimeout(watchdog);
agent.destroy();
console.log(failures ? `server test: ${failures} failure(s)` : 'server test: all passed');
process.exit(failures ? 1 : 0);
