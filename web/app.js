/* leukoseg pages: plain DOM, SVG and canvas; no framework, so the page works from file:// in a
 * static report and from the binary in `leukoseg serve`.
 * Data: window.LS_MODEL (data/model.js) and window.LS_RESULTS (data/results.js). */
'use strict';
(function () {
  const M = window.LS_MODEL || null;
  const R = window.LS_RESULTS || null;
  const live = !!(M && M.live && location.protocol !== 'file:');
  const $ = (id) => document.getElementById(id);
  const SVGNS = 'http://www.w3.org/2000/svg';
  const CELL_TYPES = ['neutrophil', 'lymphocyte', 'monocyte', 'eosinophil', 'basophil'];
  const TYPE_COLORS = ['#7fb3ff', '#ffc800', '#79d98b', '#ff7a6b', '#c800ff'];

  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === 'text') e.textContent = v;
      else if (k === 'class') e.className = v;
      else e.setAttribute(k, v);
    }
    for (const k of kids) if (k != null) e.append(k);
    return e;
  }
  function svg(tag, attrs, ...kids) {
    const e = document.createElementNS(SVGNS, tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === 'text') e.textContent = v;
      else e.setAttribute(k, v);
    }
    for (const k of kids) if (k != null) e.append(k);
    return e;
  }
  const pct = (v, d = 2) => (v == null || isNaN(v) ? '—' : (100 * v).toFixed(d) + '%');
  const fmtInt = (n) => Math.round(n).toLocaleString('en-US');
  const classColor = (i) => (M && M.classes[i] ? M.classes[i].color : '#888');

  /* ------------------------------------------------------------------ header */
  if (M) {
    const hist = Array.isArray(M.training_history) ? M.training_history : [];
    $('model-line').textContent = `${M.variant} · ${fmtInt(M.parameters)} parameters · input ` +
      `${M.input.width}×${M.input.height} · ${M.classes.map((c) => c.name).join(' / ')}` +
      (hist.length ? ` · ${hist.length} epochs trained` : '') + ` · ${M.file}`;
  } else {
    $('model-line').textContent = 'model data missing (data/model.js did not load)';
  }

  /* ------------------------------------------------------------------ try it */
  document.querySelectorAll('.live-only').forEach((e) => { if (!live) e.hidden = true; });
  if (!live) $('static-note').hidden = false;

  const state = { bytes: null, result: null, image: null, maskLayer: null, view: 'overlay',
                  opacity: 0.55, point: null, label: null };

  function setStatus(text, kind) {
    $('status').textContent = text;
    document.body.dataset.state = kind;
  }

  function loadImage(src) {
    return new Promise((resolve, reject) => {
      const im = new Image();
      im.onload = () => resolve(im);
      im.onerror = () => reject(new Error('the browser could not show a returned image'));
      im.src = src;
    });
  }

  /* The mask PNG has black background; make that transparent so opacity blends only cells. */
  function maskLayer(im) {
    const c = document.createElement('canvas');
    c.width = im.naturalWidth; c.height = im.naturalHeight;
    const g = c.getContext('2d');
    g.drawImage(im, 0, 0);
    const d = g.getImageData(0, 0, c.width, c.height);
    for (let i = 0; i < d.data.length; i += 4)
      if (d.data[i] === 0 && d.data[i + 1] === 0 && d.data[i + 2] === 0) d.data[i + 3] = 0;
    g.putImageData(d, 0, 0);
    return c;
  }

  function draw() {
    const cv = $('view');
    if (!state.image) return;
    const g = cv.getContext('2d');
    cv.width = state.image.naturalWidth; cv.height = state.image.naturalHeight;
    g.clearRect(0, 0, cv.width, cv.height);
    if (state.view === 'mask') {
      g.fillStyle = '#000'; g.fillRect(0, 0, cv.width, cv.height);
      g.drawImage(state.maskLayer, 0, 0);
    } else {
      g.drawImage(state.image, 0, 0);
      if (state.view === 'overlay') {
        g.globalAlpha = state.opacity;
        g.drawImage(state.maskLayer, 0, 0);
        g.globalAlpha = 1;
      }
    }
    const cells = state.result && Array.isArray(state.result.cells) ? state.result.cells : [];
    if (state.view !== 'image' && cells.length) { /* numbered boxes, as in the cells table */
      g.lineWidth = Math.max(1, cv.width / 300);
      g.font = `${Math.max(9, cv.width / 28) | 0}px monospace`;
      cells.forEach((c, i) => {
        const b = c.bbox;
        g.strokeStyle = '#ffffffb0';
        g.strokeRect(b.x + 0.5, b.y + 0.5, b.w - 1, b.h - 1);
        g.fillStyle = '#fff';
        g.fillText(String(i + 1), b.x + 2, b.y + Math.max(9, cv.width / 28));
      });
    }
    if (state.point) {
      const r = Math.max(3, cv.width / 40);
      g.strokeStyle = '#fff'; g.lineWidth = Math.max(1, cv.width / 200);
      g.beginPath(); g.arc(state.point.x + 0.5, state.point.y + 0.5, r, 0, 2 * Math.PI); g.stroke();
    }
  }

  function renderAreas(res) {
    const tb = $('areas').querySelector('tbody');
    tb.replaceChildren();
    res.classes.forEach((c, i) => {
      const bar = el('div', { class: 'bar' });
      bar.style.width = (100 * c.fraction).toFixed(1) + '%';
      bar.style.background = i === 0 ? '#4a5166' : classColor(i);
      const sw = el('span', { class: 'swatch' });
      sw.style.background = i === 0 ? '#4a5166' : classColor(i);
      tb.append(el('tr', { 'data-class': c.name },
        el('td', {}, sw, c.name),
        el('td', { class: 'num', text: fmtInt(c.pixels) + ' px' }),
        el('td', { class: 'num', text: pct(c.fraction, 1) }),
        el('td', { style: 'width:40%' }, bar)));
    });
  }

  function renderCells(res) {
    const box = $('cells');
    box.replaceChildren();
    const cells = Array.isArray(res.cells) ? res.cells : [];
    if (!cells.length) {
      box.append(el('p', { class: 'muted', id: 'no-cells',
        text: 'No cells found in this image (none above the minimum cell area).' }));
    } else {
      if (!res.cells_classified)
        box.append(el('p', { class: 'muted', id: 'unclassified', text: 'This model carries no ' +
          'cell-type classifier (leukoseg train-cells adds one): cells are found and measured ' +
          'but not typed.' }));
      const t = el('table', { class: 'cells-table' },
        el('thead', {}, el('tr', {}, ...['#', 'type', 'confidence', 'area', 'box']
          .map((h) => el('th', { text: h })))));
      const tb = el('tbody');
      cells.forEach((c, i) => {
        const b = c.bbox || {};
        const box4 = Array.isArray(b) ? b.join(', ') : [b.x, b.y, b.w ?? b.width, b.h ?? b.height]
          .filter((v) => v != null).join(', ');
        const conf = res.cells_classified ? pct(c.confidence, 1) +
          (c.type === 'unidentified' ? ` (${c.predicted}?)` : '') : '—';
        tb.append(el('tr', { class: 'cell-row' }, el('td', { text: String(i + 1) }),
          el('td', { text: (c.type || '?') + (c.border ? ' ✂' : '') }), el('td', { text: conf }),
          el('td', { text: c.area != null ? fmtInt(c.area) + ' px' : '—' }),
          el('td', { text: box4 || '—' })));
      });
      t.append(tb);
      box.append(t);
    }
    barChart($('differential'), differential(res));
  }

  function differential(res) {
    const d = res.differential || {};
    const names = Object.keys(d).length ? Object.keys(d) : CELL_TYPES;
    return names.map((n, i) => ({ label: n, value: +d[n] || 0,
      color: n === 'unidentified' ? 'var(--muted)'
        : TYPE_COLORS[CELL_TYPES.indexOf(n)] || TYPE_COLORS[i % 5] }));
  }

  /* Horizontal bars with counts and percentages of the total. */
  function barChart(box, rows) {
    const total = rows.reduce((s, r) => s + r.value, 0);
    const W = 360, row = 22, H = rows.length * row + 8, left = 90, right = 70;
    const s = svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img',
                            'aria-label': 'differential count' });
    rows.forEach((r, i) => {
      const y = 4 + i * row, w = total ? (W - left - right) * r.value / total : 0;
      s.append(svg('text', { x: left - 6, y: y + 14, 'text-anchor': 'end', text: r.label }));
      s.append(svg('rect', { x: left, y: y + 3, width: W - left - right, height: 14, rx: 7,
                             fill: '#2a3042' }));
      s.append(svg('rect', { x: left, y: y + 3, width: Math.max(w, 0), height: 14, rx: 7,
                             fill: r.color }));
      s.append(svg('text', { x: W - right + 6, y: y + 14,
        text: `${r.value}${total ? ' · ' + (100 * r.value / total).toFixed(0) + '%' : ''}` }));
    });
    box.replaceChildren(s);
  }

  async function segment(bytes, label) {
    state.bytes = bytes;
    state.label = label;
    state.point = null;
    $('attention-box').hidden = true;
    setStatus(`Focusing on ${label}…`, 'busy');
    let res;
    try {
      const win = parseInt($('window').value, 10);
      const url = win > 0 ? `api/segment?window=${win}` : 'api/segment';
      const r = await fetch(url, { method: 'POST', body: bytes,
        headers: { 'Content-Type': 'application/octet-stream' } });
      res = await r.json().catch(() => ({ error: `HTTP ${r.status}` }));
      if (!r.ok) throw new Error(res.error || `HTTP ${r.status}`);
      const [im, mk] = await Promise.all([loadImage(res.image), loadImage(res.mask)]);
      state.image = im;
      state.maskLayer = maskLayer(mk);
    } catch (e) {
      setStatus(`Could not segment ${label}: ${e.message}`, 'error');
      return;
    }
    state.result = res;
    document.body.classList.add('has-image');
    draw();
    renderAreas(res);
    renderCells(res);
    $('dl-mask').href = res.mask;
    $('dl-overlay').href = res.overlay;
    const lean = Object.assign({}, res, { image: undefined, mask: undefined, overlay: undefined });
    $('dl-json').href = URL.createObjectURL(new Blob([JSON.stringify(lean, null, 1)],
                                                     { type: 'application/json' }));
    $('downloads').hidden = false;
    const over = res.window ? ` over ${res.window} px windows` : '';
    const warn = (res.warnings || []).map((w) => ` Note: ${w}.`).join('');
    setStatus(`${label}: ${res.width}×${res.height} px, segmented${over} in ` +
              `${res.ms.toFixed(0)} ms.${warn}`, 'segmented');
  }

  async function fromFile(file) {
    if (!file) return;
    segment(new Uint8Array(await file.arrayBuffer()), file.name);
  }

  if (live) {
    $('file').addEventListener('change', (e) => fromFile(e.target.files[0]));
    const drop = $('drop');
    ['dragenter', 'dragover'].forEach((t) => drop.addEventListener(t, (e) => {
      e.preventDefault(); drop.classList.add('drag');
    }));
    ['dragleave', 'drop'].forEach((t) => drop.addEventListener(t,
      () => drop.classList.remove('drag')));
    drop.addEventListener('drop', (e) => {
      e.preventDefault();
      fromFile(e.dataTransfer.files[0]);
    });
    const toggles = document.querySelectorAll('.view-toggle button');
    toggles.forEach((b) => b.addEventListener('click', () => {
      state.view = b.dataset.view;
      document.querySelectorAll('.view-toggle button').forEach((o) => {
        o.classList.toggle('on', o === b); o.setAttribute('aria-pressed', String(o === b));
      });
      draw();
    }));
    $('window').addEventListener('change', () => {
      if (state.bytes) segment(state.bytes, state.label);
    });
    $('opacity').addEventListener('input', (e) => {
      state.opacity = e.target.value / 100;
      $('opacity-out').textContent = e.target.value + '%';
      draw();
    });
    $('view').addEventListener('click', (e) => {
      const cv = e.currentTarget;
      const x = Math.floor(e.offsetX * cv.width / cv.clientWidth);
      const y = Math.floor(e.offsetY * cv.height / cv.clientHeight);
      attention(Math.min(Math.max(x, 0), cv.width - 1), Math.min(Math.max(y, 0), cv.height - 1));
    });
    /* A test slide from the gallery: the first panel of its strip is the image itself. */
    const gal = R && Array.isArray(R.gallery) ? R.gallery : [];
    if (gal.length) {
      const btn = $('sample-btn');
      btn.hidden = false;
      let next = 0;
      btn.addEventListener('click', async () => {
        const g = gal[next++ % gal.length];
        const im = await loadImage(g.file);
        const c = document.createElement('canvas');
        c.width = im.naturalWidth / 4; c.height = im.naturalHeight;
        c.getContext('2d').drawImage(im, 0, 0);
        const blob = await new Promise((r) => c.toBlob(r, 'image/png'));
        segment(new Uint8Array(await blob.arrayBuffer()), `${g.folder}/${g.stem} (test slide)`);
      });
    }
  }

  function heat(t) { /* black-body-ish: dark blue -> orange -> white */
    const r = Math.min(255, 40 + 400 * t), g = Math.min(255, 20 + 300 * Math.max(0, t - 0.3)),
          b = Math.min(255, 90 + 200 * Math.max(0, t - 0.7) - 60 * t);
    return [r, g, Math.max(0, b)];
  }

  async function attention(x, y) {
    if (!state.bytes) return;
    state.point = { x, y };
    draw();
    $('att-point').textContent = `pixel (${x}, ${y})`;
    let res;
    try {
      const r = await fetch(`api/attention?x=${x}&y=${y}`, { method: 'POST', body: state.bytes,
        headers: { 'Content-Type': 'application/octet-stream' } });
      res = await r.json();
      if (!r.ok) throw new Error(res.error || `HTTP ${r.status}`);
    } catch (e) {
      setStatus(`Attention view failed: ${e.message}`, 'error');
      return;
    }
    const grid = $('att-grid');
    grid.replaceChildren();
    for (const st of res.stages) {
      const S = 192, cv = el('canvas', { width: S, height: S, class: 'att-canvas' });
      const g = cv.getContext('2d');
      g.globalAlpha = 0.35;
      g.drawImage(state.image, 0, 0, S, S);
      g.globalAlpha = 1;
      const kw = st.keys_width, kh = st.keys_height, cw = S / kw, ch = S / kh;
      for (let i = 0; i < kh; i++) for (let j = 0; j < kw; j++) {
        const t = st.max > 0 ? st.weights[i * kw + j] / st.max : 0;
        const [r, gg, b] = heat(t);
        g.fillStyle = `rgba(${r | 0},${gg | 0},${b | 0},${(0.15 + 0.7 * t).toFixed(3)})`;
        g.fillRect(j * cw, i * ch, cw + 0.5, ch + 0.5);
      }
      const px = (x + 0.5) / res.width * S, py = (y + 0.5) / res.height * S;
      g.strokeStyle = '#fff'; g.lineWidth = 2;
      g.beginPath(); g.arc(px, py, 6, 0, 2 * Math.PI); g.stroke();
      g.beginPath(); g.moveTo(px - 10, py); g.lineTo(px + 10, py); g.moveTo(px, py - 10);
      g.lineTo(px, py + 10); g.stroke();
      grid.append(el('div', { class: 'att-card' }, cv,
        el('p', { text: `stage ${st.stage}, block ${st.block}: query ${st.grid_width}×` +
          `${st.grid_height} → keys ${kw}×${kh}, ${st.heads} head${st.heads > 1 ? 's' : ''}, ` +
          `peak ${(100 * st.max).toFixed(1)}% (even spread: ${(100 / (kw * kh)).toFixed(1)}%)` })));
    }
    $('attention-box').hidden = false;
    document.body.dataset.attention = 'shown';
  }

  /* ------------------------------------------------------------------ results */
  function renderResults() {
    if (!R) {
      $('results-error').hidden = false;
      $('results-error').textContent = 'No results data (data/results.js did not load).';
      return;
    }
    if (R.error) {
      $('results-error').hidden = false;
      $('results-error').textContent = `No test metrics: ${R.error}`;
    }
    $('published-note').textContent = `Split: ${R.split} of ${R.data}. ${R.published_note} ` +
      'Bars start at 50%.';
    const pub = R.published || [];
    const cards = $('metric-cards');
    const groups = (R.folders || []).concat(R.pooled ? [R.pooled] : []);
    const metrics = [['whole_cell_dice', 'whole-cell Dice'], ['nucleus_dice', 'nucleus Dice'],
                     ['miou', 'mIoU'], ['pixel_accuracy', 'pixel accuracy']];
    for (const gr of groups) {
      const card = el('div', { class: 'card', 'data-folder': gr.name },
        el('h4', { text: `${gr.name === 'pooled' ? 'All folders pooled' : gr.name} · ` +
                          `${gr.images} test images` }));
      for (const [key, label] of metrics) {
        const ours = gr[key];
        const p = pub.find((q) => q.metric === key && q.folder === gr.name);
        const pair = el('div', { class: 'pair' });
        const bar = (cls, v, text) => {
          const i = el('i');
          i.style.width = Math.max(0, Math.min(100, (v * 100 - 50) * 2)) + '%';
          pair.append(el('div', { class: 'b ' + cls }, i), el('span', { text }));
        };
        bar('ours', ours, `${pct(ours)} leukoseg`);
        if (p) bar('pub', p.percent / 100, `${p.percent.toFixed(2)}% ${p.method}`);
        card.append(el('div', { class: 'metric' }, el('span', { class: 'lab', text: label }),
                       pair));
      }
      cards.append(card);
    }
    renderConfusion();
    renderGallery();
  }

  function renderConfusion() {
    const box = $('celltype-confusion');
    const cm = R.cell_type_confusion;
    if (!cm || !Array.isArray(cm.matrix)) {
      box.append(el('p', { class: 'muted', text: 'Not available: this build does not classify ' +
        'cell types yet. The dataset\u2019s labels (neutrophil, lymphocyte, monocyte, ' +
        'eosinophil, ' +
        'basophil) are shown per slide in the gallery.' }));
      return;
    }
    const rows = cm.rows || CELL_TYPES, cols = cm.columns || rows;
    const max = Math.max(1, ...cm.matrix.flat());
    const t = el('table', { class: 'cm', id: 'type-cm' });
    t.append(el('tr', {}, el('th', { text: 'label \\ found' }),
      ...cols.map((l) => el('th', { text: l.length > 6 ? l.slice(0, 5) + '.' : l, title: l }))));
    cm.matrix.forEach((row, i) => {
      t.append(el('tr', {}, el('th', { text: rows[i] }), ...row.map((v) => {
        const td = el('td', { text: String(v) });
        td.style.background = `rgba(201,165,90,${(v / max).toFixed(3)})`;
        return td;
      })));
    });
    box.append(t);
    box.append(el('p', { class: 'muted', text: `${cm.images} labelled test images, largest ` +
      `cell found in each; accuracy ${pct(cm.accuracy, 1)}. Labels are the dataset\u2019s ` +
      '(partly unverified, see its README).' }));
  }

  function renderGallery() {
    const all = Array.isArray(R.gallery) ? R.gallery : [];
    const sel = $('gal-folder');
    [...new Set(all.map((g) => g.folder))]
      .forEach((f) => sel.append(el('option', { value: f, text: f })));
    const show = () => {
      const f = sel.value, order = $('gal-sort').value;
      let list = all.filter((g) => !f || g.folder === f);
      if (order !== 'stem') {
        const k = (g) => (g.whole_cell_dice == null ? 2 : g.whole_cell_dice);
        list = list.slice().sort((a, b) => (order === 'worst' ? k(a) - k(b) : k(b) - k(a)));
      }
      $('gallery').replaceChildren(...list.map((g) => el('figure', { class: 'strip' },
        el('img', { src: g.file, loading: 'lazy', alt: `${g.folder} ${g.stem}: image, truth, ` +
                    'prediction, errors' }),
        el('figcaption', {}, el('span', { text: `${g.folder} / ${g.stem} · ${g.cell_type}` +
          (g.predicted_type ? ` → ${g.predicted_type}` : '') }),
          el('span', { text: `cell Dice ${pct(g.whole_cell_dice, 1)} · nucleus ` +
                             `${pct(g.nucleus_dice, 1)}` })))));
    };
    sel.addEventListener('change', show);
    $('gal-sort').addEventListener('change', show);
    show();
  }

  /* Training curves: train loss (left axis) and validation mIoU (right axis) per epoch. */
  function renderCurves() {
    const box = $('curves');
    const h = M && Array.isArray(M.training_history) ?
      M.training_history.filter((e) => e.epoch != null) : [];
    if (!h.length) {
      box.append(el('p', { class: 'muted', text: 'No training history in this model file.' }));
      return;
    }
    const W = 520, H = 240, L = 46, Rm = 46, T = 14, B = 30;
    const xs = h.map((e) => e.epoch), loss = h.map((e) => e.train_loss),
          miou = h.map((e) => e.val_miou);
    const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1);
    const lmax = Math.max(...loss.filter((v) => v != null), 1e-6);
    const X = (v) => L + (W - L - Rm) * (v - x0) / (x1 - x0);
    const YL = (v) => T + (H - T - B) * (1 - v / lmax), YM = (v) => T + (H - T - B) * (1 - v);
    const s = svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img',
                           'aria-label': 'training curves' });
    for (let k = 0; k <= 4; k++) {
      const y = T + (H - T - B) * k / 4;
      s.append(svg('line', { x1: L, x2: W - Rm, y1: y, y2: y, stroke: '#2a3042' }));
      s.append(svg('text', { x: L - 4, y: y + 4, 'text-anchor': 'end',
                             text: (lmax * (1 - k / 4)).toFixed(2) }));
      s.append(svg('text', { x: W - Rm + 4, y: y + 4, text: (1 - k / 4).toFixed(2) }));
    }
    const path = (vals, Y) => vals.map((v, i) => (v == null ? '' :
      `${i ? 'L' : 'M'}${X(xs[i]).toFixed(1)},${Y(v).toFixed(1)}`)).join('');
    const line = (d, stroke) => svg('path', { d, fill: 'none', stroke, 'stroke-width': 2 });
    s.append(line(path(loss, YL), '#7fb3ff'), line(path(miou, YM), '#c9a55a'));
    h.forEach((e, i) => {
      if (e.best) s.append(svg('circle', { cx: X(xs[i]), cy: YM(miou[i]), r: 3, fill: '#c9a55a' }));
    });
    s.append(svg('text', { x: L, y: H - 8, text: `epoch ${x0}` }));
    s.append(svg('text', { x: W - Rm, y: H - 8, 'text-anchor': 'end', text: `epoch ${x1}` }));
    s.append(svg('text', { x: L + 8, y: T + 12, fill: '#7fb3ff', text: 'train loss (left)' }));
    s.append(svg('text', { x: W - Rm - 8, y: T + 12, 'text-anchor': 'end',
                           text: 'val mIoU (right), dots = best' }));
    box.append(s);
  }

  /* ------------------------------------------------------------------ inside */
  function renderArch() {
    if (!M) return;
    const arch = $('arch');
    const blk = (title, rows, side) => {
      const d = el('div', { class: 'blk' }, el('h4', { text: title }));
      if (side) {
        const t = el('div', { class: 'tok' });
        const px = Math.max(10, Math.min(120, side));
        t.style.width = px + 'px'; t.style.height = px + 'px';
        d.append(t);
      }
      const dl = el('dl');
      for (const [k, v] of rows) dl.append(el('dt', { text: k }), el('dd', { text: String(v) }));
      d.append(dl);
      return d;
    };
    const arrow = () => el('span', { class: 'arrow', text: '→' });
    arch.append(blk('input', [['shape', `3×${M.input.height}×${M.input.width}`]], 120));
    const maxSide = M.stages[0].width;
    for (const s of M.stages) {
      arch.append(arrow(), blk(`stage ${s.stage}`, [
        ['tokens', `${s.channels}×${s.height}×${s.width}`],
        ['patch', `${s.patch}×${s.patch} /${s.stride}`],
        ['blocks', s.depth], ['heads', s.heads],
        ['keys', `${s.reduced_height}×${s.reduced_width} (sr ${s.sr})`],
        ['MLP', s.mlp_hidden], ['params', fmtInt(s.parameters)]], 110 * s.width / maxSide));
    }
    const hd = M.head;
    arch.append(arrow(), blk('all-MLP head', [
      ['fused', `${4 * hd.channels}→${hd.channels}`],
      ['output', `${hd.classes}×${hd.height}×${hd.width}`],
      ['params', fmtInt(hd.parameters)]], 110));
    arch.append(arrow(), blk('upsample', [['to', 'image size'], ['then', 'argmax']]));
    $('arch-summary').textContent = `${M.variant}: a Mix Transformer encoder of four stages ` +
      '(overlapping patch embedding, efficient self-attention with sequence reduction, Mix-FFN ' +
      'with a 3×3 depth-wise conv) and an all-MLP decoder fusing the four stages at 1/4 ' +
      `resolution. ${fmtInt(M.parameters)} parameters; shapes for a ${M.input.width}×` +
      `${M.input.height} input.`;
    const parts = M.stages.map((s, i) => ({ label: `stage ${s.stage}`, v: s.parameters,
      c: ['#7fb3ff', '#79d98b', '#ffc800', '#ff7a6b'][i] }))
      .concat([{ label: 'head', v: hd.parameters, c: '#c800ff' }]);
    const tot = parts.reduce((a, p) => a + p.v, 0) || 1;
    $('param-bar').replaceChildren(...parts.map((p) => {
      const d = el('div', { title: `${p.label}: ${fmtInt(p.v)} parameters`,
        text: p.v / tot > 0.08 ? `${p.label} ${(100 * p.v / tot).toFixed(0)}%` : '' });
      d.style.width = (100 * p.v / tot) + '%';
      d.style.background = p.c;
      return d;
    }));
  }

  renderCurves();
  renderResults();
  renderArch();
  document.body.dataset.ready = '1';
})();
