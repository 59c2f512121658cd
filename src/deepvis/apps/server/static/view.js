// Renders the toolbox's state and the server's answers into the page. Reads the model, never changes it.
//
// model = { info, state, input, result, units, sprite, fps, busy }: see main.js for what each holds.

import { KEYMAP, keyLabel } from './keymap.js';

const $ = (id) => document.getElementById(id);
const png = (base64) => `data:image/png;base64,${base64}`;
const fmt = (x) => String(Number(x.toFixed(3)));

function setSrc(img, src) {
  if (src && img.getAttribute('src') !== src) img.src = src;
  img.hidden = !src;
}

function el(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
}

/** The layer list and the help table, once: onLayer(index) is called when a layer name is clicked. */
export function setup(info, onLayer) {
  $('model').textContent = info.model;
  $('layers').replaceChildren(...info.layers.map((layer, index) => {
    const button = el('button', {
      type: 'button', className: 'layer', textContent: layer.pretty,
      title: `${layer.name} · ${layer.type} · ${layer.shape.join('×')}`,
    });
    button.dataset.layer = layer.name;
    button.addEventListener('click', () => onLayer(index));
    return button;
  }));
  const groups = new Map();
  for (const binding of KEYMAP) {
    if (!groups.has(binding.group)) {
      groups.set(binding.group, [el('tr', {}, el('th', { colSpan: 2, textContent: binding.group }))]);
    }
    const keys = binding.keys.map((key) => {
      const kbd = el('kbd', { textContent: keyLabel(key) });
      kbd.dataset.key = key;
      return kbd;
    });
    groups.get(binding.group).push(el('tr', {}, el('td', {}, ...keys), el('td', { textContent: binding.help })));
  }
  $('help-keys').replaceChildren(...[...groups.values()].map((rows) => el('table', {}, ...rows)));
}

/** The unit address "layer:channel" of the selection. */
export const unitName = (model) => `${model.info.layers[model.state.layer].name}:${model.state.channel}`;

/** The backward origin: the frozen unit, or the selection. */
export const originName = (model) => (model.state.frozen
  ? `${model.state.frozen.layer}:${model.state.frozen.channel}` : unitName(model));

export function statusText(model) {
  const { state, result, fps, input } = model;
  const grid = state.pattern ? 'pattern' : state.showBack ? 'back' : 'fwd';
  const back = state.back.enabled
    ? `Back: ${state.back.mode} (from ${originName(model)}, ${state.back.filter}${state.frozen ? ', frozen' : ''})`
    : 'Back: off';
  const parts = [`${grid} ${unitName(model)}`, back, `Boost: ${fmt(state.boostIndiv)}/${fmt(state.boostGamma)}`];
  if (state.overlay.on) {
    parts.push(`Overlay: ${state.overlay.method} α ${fmt(state.overlay.alpha)}`);
  }
  if (input.mode === 'camera') parts.push(`FPS: ${fps.toFixed(1)}${input.frozen ? ' (frozen)' : ''}`);
  const t = result?.timing;
  if (t && state.timing === 1) parts.push(`${t.total_ms.toFixed(0)} ms`);
  if (t && state.timing === 2) {
    const ms = (x) => x.toFixed(0);
    parts.push(`fwd ${ms(t.forward_ms)} / back ${ms(t.backward_ms)} / render ${ms(t.render_ms)} ms`);
  }
  if (state.message) parts.push(state.message);
  return parts.join(' | ');
}

function renderInput({ input, state, result }) {
  const camera = input.mode === 'camera';
  // the overlay: the server's picture of the input (the frame the network saw) with the colour map over it
  const overlay = state.overlay.on && result?.overlay?.png ? result.overlay : null;
  $('video').hidden = !camera || Boolean(overlay);
  $('video').classList.toggle('stretch', input.resize === 'stretch');
  setSrc($('input-img'), camera || overlay ? null : input.imageUrl);
  setSrc($('overlay-img'), overlay ? png(overlay.png) : null);
  const caption = camera ? `camera${input.frozen ? ' (frozen)' : ''}` : `${input.name ?? ''} · ${input.resize}`;
  const error = state.overlay.on && result?.overlay?.error;
  $('input-caption').textContent = overlay ? `${overlay.caption} · α ${fmt(overlay.alpha)}`
    : error ? `${caption} · overlay: ${error}` : caption;
}

function renderLayers({ info, state }) {
  for (const [index, button] of [...$('layers').children].entries()) {
    const current = index === state.layer;
    button.classList.toggle('cursor', current && state.cursor === 'layers');
    button.classList.toggle('selected', current && state.cursor === 'grid');
    button.classList.toggle('frozen', state.frozen?.layer === info.layers[index].name);
  }
}

function renderAux(model) {
  const { state, result, input } = model;
  const inGrid = state.cursor === 'grid' && result?.unit;
  $('aux-unit').hidden = !inGrid;
  $('predictions').hidden = inGrid;
  if (inGrid) {
    setSrc($('aux-unit-img'), png(result.unit.png));
    const value = `${result.unit.unit} · max ${fmt(result.unit.value)}`;
    $('aux-caption').textContent = result.unit.label ? `${value} · ${result.unit.label}` : value;
    return;
  }
  const predictions = state.showPredictions ? input.predictions : [];
  $('predictions').replaceChildren(...predictions.map((p) => {
    const bar = el('span', { className: 'bar' });
    bar.style.width = `${(100 * p.prob).toFixed(1)}%`;
    bar.style.backgroundColor = `rgb(${128 * (1 - p.prob)}, ${128 + 127 * p.prob}, ${128 * (1 - p.prob)})`;
    return el('li', { title: `class ${p.index}` }, bar,
      el('span', { className: 'prob', textContent: p.prob.toFixed(2) }),
      el('span', { className: 'label', textContent: p.label ?? `class ${p.index}` }));
  }));
  $('predictions').classList.toggle('off', !state.showPredictions);
}

function renderBack({ state, result }) {
  const back = result?.back;
  $('back-pane').classList.toggle('off', !back);
  setSrc($('back-img'), back ? png(back.png) : null);
  $('back-off').hidden = Boolean(back);
  $('back-off').textContent = 'off';
  $('back-caption').classList.toggle('frozen', Boolean(back && state.frozen));
  $('back-caption').textContent = back
    ? `${back.mode} · ${back.filter} · from ${back.origin}` +
      (back.mode !== 'gradient' && back.rectifiers_modified === 0 ? ' · = gradient (no ReLU before it)' : '')
    : state.back.enabled ? 'select a unit (↓) to see its backward pass' : 'b or n turns the backward pass on';
}

/** How the grid image is laid out in its pane: the scale, and the cell geometry of the picture shown. */
function gridGeometry(model) {
  const img = $('grid-img');
  const { state, result, info } = model;
  if (state.pattern) {
    const count = info.layers[state.layer].shape[0];
    const cols = Math.ceil(Math.sqrt(count));
    const cell = img.naturalWidth / cols;
    return { cols, cellW: cell, cellH: cell, pad: 0, count };
  }
  if (!result) return null;
  const g = result.grid;
  const [cellW, cellH] = [g.tile_w + 2 * g.pad, g.tile_h + 2 * g.pad];
  return { cols: g.cols, cellW, cellH, pad: g.pad, count: result.values.length };
}

function fitImage(img, pane) {
  const [nw, nh] = [img.naturalWidth, img.naturalHeight];
  if (!nw || !nh) return;
  let scale = Math.min(pane.clientWidth / nw, pane.clientHeight / nh);
  if (scale >= 3) scale = Math.floor(scale); // whole-pixel enlargement keeps the 1-pixel rings even
  img.style.width = `${Math.floor(nw * scale)}px`;
  img.style.height = `${Math.floor(nh * scale)}px`;
  img.classList.toggle('shrunk', scale < 1);
}

/** Draw a picture (or part of it) as large as fits into the zoom canvas, crisp. */
function drawZoom(source, sx, sy, sw, sh) {
  const canvas = $('grid-zoom');
  const pane = $('grid-pane');
  const scale = Math.min(pane.clientWidth / sw, pane.clientHeight / sh);
  canvas.width = Math.max(1, Math.floor(sw * scale));
  canvas.height = Math.max(1, Math.floor(sh * scale));
  const ctx = canvas.getContext('2d');
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(source, sx, sy, sw, sh, 0, 0, canvas.width, canvas.height);
}

/** The selected tile's ring and the frozen backward origin's, drawn over the grid in its own pixels, as the
 *  original drew them into the picture: the server sends the grid without rings, so a cursor move needs no new grid. */
function drawRings({ state, result, info }, img, geo, shown) {
  const canvas = $('grid-rings');
  const layer = info.layers[state.layer].name;
  let rings = [];
  if (shown && geo && result?.layer === layer) {
    if (state.cursor === 'grid') rings.push([state.channel, info.rings.selected]);
    if (state.frozen?.layer === layer) rings.push([state.frozen.channel, info.rings.frozen]); // drawn last: on top
    rings = rings.filter(([channel]) => channel < geo.count);
  }
  canvas.hidden = !rings.length;
  if (canvas.hidden) return;
  if (canvas.width !== img.naturalWidth || canvas.height !== img.naturalHeight) {
    [canvas.width, canvas.height] = [img.naturalWidth, img.naturalHeight];
  }
  Object.assign(canvas.style, {
    left: `${img.offsetLeft}px`, top: `${img.offsetTop}px`, width: img.style.width, height: img.style.height,
  });
  canvas.classList.toggle('shrunk', img.classList.contains('shrunk'));
  const ctx = canvas.getContext('2d');
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  for (const [channel, color] of rings) {
    const [x, y] = [(channel % geo.cols) * geo.cellW, Math.floor(channel / geo.cols) * geo.cellH];
    ctx.fillStyle = color;
    ctx.fillRect(x, y, geo.cellW, geo.cellH);
    ctx.clearRect(x + geo.pad, y + geo.pad, geo.cellW - 2 * geo.pad, geo.cellH - 2 * geo.pad);
  }
}

function renderGrid(model) {
  const { state, result, sprite } = model;
  const img = $('grid-img');
  const zoomUnit = state.zoom === 1;
  const zoomBack = state.zoom === 2 && result?.back;
  setSrc(img, state.pattern ? sprite : result ? png(result.grid.png) : null);
  img.classList.toggle('hidden', Boolean(zoomUnit || zoomBack));
  $('grid-zoom').hidden = !(zoomUnit || zoomBack);
  $('grid-message').hidden = !model.gridMessage;
  $('grid-message').textContent = model.gridMessage ?? '';
  if (!img.complete || !img.naturalWidth) { // laid out again on load
    $('grid-rings').hidden = true;
    return;
  }
  fitImage(img, $('grid-pane'));
  const geo = gridGeometry(model);
  if (zoomBack) {
    const back = $('back-img');
    if (back.complete && back.naturalWidth) drawZoom(back, 0, 0, back.naturalWidth, back.naturalHeight);
  } else if (zoomUnit && geo) {
    const [row, col] = [Math.floor(state.channel / geo.cols), state.channel % geo.cols];
    const [w, h] = [geo.cellW - 2 * geo.pad, geo.cellH - 2 * geo.pad];
    drawZoom(img, col * geo.cellW + geo.pad, row * geo.cellH + geo.pad, w, h);
  }
  drawRings(model, img, geo, !zoomUnit && !zoomBack && !state.pattern);
  // the rings above are one pixel of the picture: when that is thin on screen (or the picture is a sprite, which
  // has no rings), a wider ring is drawn around the selected tile
  const ring = $('grid-ring');
  const s = img.clientWidth / img.naturalWidth;
  ring.hidden = !(geo && !zoomUnit && !zoomBack && state.cursor === 'grid' && (state.pattern || s < 2.5));
  if (!ring.hidden) {
    Object.assign(ring.style, {
      left: `${img.offsetLeft + (state.channel % geo.cols) * geo.cellW * s}px`,
      top: `${img.offsetTop + Math.floor(state.channel / geo.cols) * geo.cellH * s}px`,
      width: `${geo.cellW * s}px`, height: `${geo.cellH * s}px`,
    });
  }
}

/** The channel under a mouse event on the grid image, or null. */
export function gridHit(event, model) {
  const img = $('grid-img');
  const geo = gridGeometry(model);
  if (!geo || !img.clientWidth || img.classList.contains('hidden')) return null;
  const box = img.getBoundingClientRect(); // not offsetX: the event may be older than the picture
  const x = ((event.clientX - box.left) * img.naturalWidth) / box.width;
  const y = ((event.clientY - box.top) * img.naturalHeight) / box.height;
  const channel = Math.floor(y / geo.cellH) * geo.cols + Math.floor(x / geo.cellW);
  const inside = x >= 0 && y >= 0 && x < img.naturalWidth && y < img.naturalHeight;
  return inside && Math.floor(x / geo.cellW) < geo.cols && channel < geo.count ? channel : null;
}

/** The position (y, x) in the selected layer's (C, H, W) view under a mouse event on the grid, or null. */
export function gridPosition(event, model) {
  const channel = gridHit(event, model);
  const geo = gridGeometry(model);
  const shape = model.info.layers[model.state.layer].shape;
  if (channel === null || !geo || model.state.pattern || shape.length !== 3) return null;
  const img = $('grid-img');
  const box = img.getBoundingClientRect();
  const x = ((event.clientX - box.left) * img.naturalWidth) / box.width;
  const y = ((event.clientY - box.top) * img.naturalHeight) / box.height;
  const [tileW, tileH] = [geo.cellW - 2 * geo.pad, geo.cellH - 2 * geo.pad];
  const tx = x - (channel % geo.cols) * geo.cellW - geo.pad;
  const ty = y - Math.floor(channel / geo.cols) * geo.cellH - geo.pad;
  if (tx < 0 || ty < 0 || tx >= tileW || ty >= tileH) return null; // on the padding
  return { channel, y: Math.floor((ty * shape[1]) / tileH), x: Math.floor((tx * shape[2]) / tileW) };
}

/** The hover label "layer:channel = value" next to the mouse, or hidden when channel is null. */
export function showHover(event, model, channel) {
  const hover = $('hover');
  const values = model.result?.layer === model.info.layers[model.state.layer].name ? model.result.values : null;
  hover.hidden = channel === null || channel === undefined || !values;
  if (hover.hidden) return;
  hover.textContent = `${model.result.layer}:${channel} = ${fmt(values[channel])}`;
  const pane = $('grid-pane').getBoundingClientRect();
  hover.style.left = `${Math.min(event.clientX - pane.left + 14, pane.width - hover.offsetWidth - 4)}px`;
  hover.style.top = `${Math.max(event.clientY - pane.top - 28, 4)}px`;
}

function renderUnits({ state, units, info }) {
  $('app').classList.toggle('no-units', !state.showUnitPane);
  if (!state.showUnitPane) return;
  $('units-title').textContent = `unit ${info.layers[state.layer].name}:${state.channel}`;
  if (!units) return;
  const figures = Object.entries(units.images).map(([kind, url]) => el('figure', {},
    el('img', { src: url, alt: kind }), el('figcaption', { textContent: kind })));
  // the hint names commands in `backticks`: show those as code
  const hint = () => el('p', { className: 'hint' }, ...(units.hint ?? '').split('`').map(
    (part, i) => (i % 2 ? el('code', { textContent: part }) : part)));
  // the unit's page in the store's exported site (deepvis export), when there is one: the URL comes ready
  const page = units.export ? [el('p', { className: 'export-link' },
    el('a', { href: units.export, target: '_blank', rel: 'noopener', textContent: 'exported page ↗' }))] : [];
  $('units-body').replaceChildren(...page, ...(figures.length ? figures : [hint()]));
}

/** Bring the whole page in line with the model. */
export function render(model) {
  document.body.dataset.busy = model.busy ? '1' : '0';
  $('back-pane').classList.toggle('stale', model.busy && model.input.mode !== 'camera');
  renderInput(model);
  renderLayers(model);
  renderAux(model);
  renderBack(model);
  renderGrid(model);
  renderUnits(model);
  $('status-text').textContent = statusText(model);
  $('help').hidden = !model.state.help;
  $('btn-camera').classList.toggle('on', model.input.mode === 'camera');
}
