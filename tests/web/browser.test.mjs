// Browser test of the leukoseg pages, in Debian's Chromium driven by playwright-core.
//
// usage: node browser.test.mjs URL IMAGE OUTDIR [REPORT_INDEX_HTML]
//   URL      a running `leukoseg serve` (loopback)
//   IMAGE    a real slide to upload (e.g. segmentation_WBC/Dataset 1/001.bmp)
//   OUTDIR   screenshots go here
//   REPORT_INDEX_HTML  optional: a `leukoseg report` folder's index.html, opened from file://
//
// Uploads the image, waits for the overlay, checks the class areas and the cells readout, the
// view toggle and opacity slider, the attention view, the results and model sections; then the
// static report. Exits non-zero on the first failure; a watchdog ends it after 150 s whatever
// happens, so CI never hangs on a stuck browser.
import { chromium } from 'playwright-core';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const [url, image, outDir, reportIndex] = process.argv.slice(2);
if (!url || !image || !outDir) {
  console.error('usage: node browser.test.mjs URL IMAGE OUTDIR [REPORT_INDEX_HTML]');
  process.exit(2);
}
const watchdog = setTimeout(() => {
  console.error('FAIL: browser test timed out after 150 s');
  process.exit(1);
}, 150_000);

const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
// Flags that keep Chromium off the network (this machine's network is closed) and quiet.
const args = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

let failures = 0;
function check(ok, what) {
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${what}`);
  if (!ok) failures++;
}

fs.mkdirSync(outDir, { recursive: true });
const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'leukoseg-chromium-'));
const ctx = await chromium.launchPersistentContext(profile, {
  executablePath, headless: true, args, viewport: { width: 1400, height: 1000 },
});
try {
  const page = ctx.pages()[0] || await ctx.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });

  // ---------------------------------------------------------------- live server
  await page.goto(url, { timeout: 30_000 });
  await page.waitForSelector('body[data-ready="1"]', { timeout: 30_000 });
  check(await page.isVisible('#drop'), 'slide tray shown by the live server');

  await page.setInputFiles('#file', image);
  await page.waitForSelector('body[data-state="segmented"], body[data-state="error"]',
    { timeout: 60_000 });
  const status = await page.textContent('#status');
  check(await page.getAttribute('body', 'data-state') === 'segmented', `segmented: ${status}`);

  const rows = await page.$$eval('#areas tbody tr', (trs) => trs.map((tr) => ({
    name: tr.dataset.class, text: tr.textContent })));
  check(rows.length === 3, `class areas table has 3 rows (${rows.map((r) => r.name)})`);
  check(rows.some((r) => r.name === 'nucleus' && /[1-9][\d,]* px/.test(r.text)),
    'nucleus area is a positive pixel count');
  const cellRows = await page.$$('#cells .cell-row');
  const noCells = await page.$('#no-cells');
  check(cellRows.length > 0 || noCells !== null,
    `cells readout shown (${cellRows.length} cells${noCells ? ', with an explanation' : ''})`);
  check(await page.$$eval('#differential svg rect', (r) => r.length) >= 10,
    'differential count chart drawn');

  // The overlay: coloured pixels over the image on the eyepiece canvas.
  const px = () => page.$eval('#view', (cv) => {
    const d = cv.getContext('2d').getImageData(0, 0, cv.width, cv.height).data;
    let black = 0;
    for (let i = 0; i < d.length; i += 4) if (d[i] + d[i + 1] + d[i + 2] === 0) black++;
    return { w: cv.width, h: cv.height, black, n: d.length / 4,
             sum: d.reduce((a, v) => a + v, 0) };
  });
  const overlay = await px();
  check(overlay.w === 120 && overlay.h === 120,
    `overlay canvas is the image size (${overlay.w}x${overlay.h})`);
  await page.click('.view-toggle button[data-view="mask"]');
  const mask = await px();
  check(mask.black > mask.n / 2, `mask view: background black (${mask.black}/${mask.n})`);
  await page.click('.view-toggle button[data-view="overlay"]');
  await page.fill('#opacity', '100');
  const full = await px();
  check(full.sum !== overlay.sum, 'opacity slider changes the overlay');
  await page.fill('#opacity', '55');

  // The field window box: a value segments the slide again, over windows (half the image).
  const before = await page.textContent('#status');
  await page.fill('#window', '60');
  await page.dispatchEvent('#window', 'change');
  await page.waitForFunction((s) => document.querySelector('#status').textContent !== s &&
    ['segmented', 'error'].includes(document.body.dataset.state), before, { timeout: 60_000 });
  check(await page.getAttribute('body', 'data-state') === 'segmented' &&
    (await page.$$('#areas tbody tr')).length === 3,
    `field window 60: segmented again (${await page.textContent('#status')})`);
  await page.fill('#window', '');
  await page.dispatchEvent('#window', 'change');
  await page.waitForSelector('body[data-state="segmented"]', { timeout: 60_000 });

  // Attention: click the middle of the eyepiece.
  const box = await page.$('#view').then((e) => e.boundingBox());
  await page.mouse.click(box.x + box.width / 2, box.y + box.height / 2);
  await page.waitForSelector('body[data-attention="shown"]', { timeout: 30_000 });
  check(await page.$$eval('.att-card canvas', (c) => c.length) === 4, 'attention view: 4 stages');

  // Results and model sections.
  check(await page.$$eval('#metric-cards .card', (c) => c.length) >= 1, 'metric cards shown');
  const resultsError = await page.isVisible('#results-error');
  check(!resultsError, 'results computed on the test split');
  check(await page.$$eval('#gallery img', (i) => i.length) > 0, 'gallery shown');
  check(await page.$$eval('#curves svg path', (p) => p.length) === 2, 'training curves drawn');
  check(await page.$$eval('#arch .blk', (b) => b.length) === 7, 'architecture: 7 blocks');
  const galleryOk = await page.$eval('#gallery img', (i) => i.decode().then(() =>
    i.naturalWidth > 0, () => false));
  check(galleryOk, 'gallery images load');

  await page.screenshot({ path: path.join(outDir, 'serve.png'), fullPage: true });
  await page.locator('#try').screenshot({ path: path.join(outDir, 'serve-try.png') });
  const top = await page.$eval('#results', (e) => e.getBoundingClientRect().top + scrollY);
  const gal = await page.$eval('#gallery', (e) => e.getBoundingClientRect().top + scrollY);
  await page.screenshot({ path: path.join(outDir, 'serve-results.png'), fullPage: true,
    clip: { x: 0, y: top, width: 1400, height: Math.min(1400, gal - top + 300) } });
  const inside = await page.$eval('#inside', (e) => {
    const r = e.getBoundingClientRect();
    return { x: 0, y: r.top + scrollY, width: 1400, height: r.height };
  });
  await page.screenshot({ path: path.join(outDir, 'serve-inside.png'), fullPage: true,
                          clip: inside });
  check(errors.length === 0, `no page errors${errors.length ? ': ' + errors.join(' | ') : ''}`);

  // ---------------------------------------------------------------- static report
  if (reportIndex) {
    const p2 = await ctx.newPage();
    const errs2 = [];
    p2.on('pageerror', (e) => errs2.push(String(e)));
    await p2.goto('file://' + path.resolve(reportIndex), { timeout: 30_000 });
    await p2.waitForSelector('body[data-ready="1"]', { timeout: 30_000 });
    check(await p2.isVisible('#static-note'), 'report: says the upload needs the server');
    check(!(await p2.isVisible('#drop')), 'report: no slide tray');
    check(await p2.$$eval('#metric-cards .card', (c) => c.length) >= 1, 'report: metric cards');
    check(await p2.$eval('#gallery img', (i) => i.decode().then(() => i.naturalWidth > 0,
      () => false)), 'report: gallery images load from files');
    check(await p2.$$eval('#curves svg path', (p) => p.length) === 2, 'report: training curves');
    await p2.screenshot({ path: path.join(outDir, 'report.png'), fullPage: true });
    check(errs2.length === 0,
      `report: no page errors${errs2.length ? ': ' + errs2.join(' | ') : ''}`);
  }
} catch (e) {
  console.error('FAIL:', e.message);
  failures++;
} finally {
  await ctx.close();
  fs.rmSync(profile, { recursive: true, force: true });
  clearTimeout(watchdog);
}
console.log(failures ? `browser test: ${failures} failure(s)` : 'browser test: all passed');
process.exit(failures ? 1 : 0);
