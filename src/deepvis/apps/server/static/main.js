// The toolbox in the browser: state, key and mouse handling, inputs, and the latest-wins request loop.

import * as api from './api.js';
import { bindingFor } from './keymap.js';
import { Camera } from './camera.js';
import { LatestWins } from './loop.js';
import { snapshot } from './snapshot.js';
import * as view from './view.js';

const GAMMAS = [1, 0.7, 0.5, 0.3];
const INDIVS = [0, 0.3, 0.5, 0.8, 1];
const EASY_BACK = [['gradient', 'raw'], ['gradient', 'norm'], ['deconv', 'raw'], ['guided', 'raw']];
const MODES = ['gradient', 'deconv', 'guided'];
const FAST = 3;
const ATTENTION = ['rollout', 'attention']; // overlays that follow the token under the mouse
const LOCAL = 'local'; // an action that needs no new /api/view
const TAB = crypto.randomUUID?.() ?? `${Date.now()}-${Math.random()}`;
const $ = (id) => document.getElementById(id);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const initialState = () => ({
  layer: 0, channel: 0, cursor: 'layers', zoom: 0, pattern: false, showBack: false,
  back: { enabled: false, mode: 'gradient', filter: 'raw' }, frozen: null, // frozen: {layer, channel} of the origin
  boostGamma: GAMMAS[0], boostIndiv: INDIVS[0], showPredictions: true, showUnitPane: true, timing: 0,
  help: false, message: 'h for help',
  overlay: { on: false, method: 'gradcam', alpha: 0.5, head: 0 },
});

// Everything view.js draws from. input.source: 'file' (input.index), 'upload' (input.upload) or the camera.
const model = {
  info: null, state: initialState(), result: null, units: null, sprites: null, sprite: null, gridMessage: null,
  fps: 0, busy: false,
  input: { mode: 'files', source: 'file', index: 0, upload: null, resize: 'crop', id: null, name: null,
    predictions: [], imageUrl: null, frozen: false },
};
const state = () => model.state;
const layerName = (index = state().layer) => model.info.layers[index].name;
const channels = (index = state().layer) => model.info.layers[index].shape[0];
const originName = () => (state().frozen ? `${state().frozen.layer}:${state().frozen.channel}`
  : `${layerName()}:${state().channel}`);

let activity = 0; // requests in progress (inputs, views)
let spriteFailed = null;
let hoverEvent = null; // the last mouse move over the grid, while the mouse is there
let hoverToken = null; // [y, x] of the token layer's grid position under the mouse (attention overlays)

function refresh() {
  model.busy = activity > 0 || views.pending;
  // the store's own choice (optimized, else find-max crops, else the original toolbox's whole_layer.jpg)
  const sprites = model.sprites && model.sprites.layer === layerName() ? model.sprites : null;
  model.sprite = state().pattern && sprites ? sprites.sprite : null;
  model.gridMessage = state().pattern && sprites && (!sprites.sprite || spriteFailed === sprites.sprite)
    ? `no sprite for ${layerName()} in the store: run deepvis optimize --out STORE --layers ${layerName()} ` +
      `(or deepvis crops STORE --layers ${layerName()})` : null;
  view.render(model);
  view.showHover(hoverEvent, model, hoverEvent && view.gridHit(hoverEvent, model)); // the grid may have changed
}

function showError(err) {
  state().message = err.message;
  refresh();
}

async function tracked(promise) {
  activity += 1;
  refresh();
  try {
    return await promise;
  } finally {
    activity -= 1;
    refresh();
  }
}

// ------------------------------------------------------------------ the view requests (latest wins)
function viewRequest() {
  const s = state();
  return {
    input: model.input.id, layer: layerName(), channel: s.channel, cursor: s.cursor,
    boost_indiv: s.boostIndiv, boost_gamma: s.boostGamma, show_back: s.showBack && s.back.enabled,
    back_enabled: s.back.enabled, back_mode: s.back.mode, back_filter: s.back.filter,
    back_layer: s.frozen?.layer ?? null, back_channel: s.frozen?.channel ?? null, back_frozen: Boolean(s.frozen),
    overlay: s.overlay.on ? s.overlay.method : null, overlay_alpha: s.overlay.alpha, overlay_head: s.overlay.head,
    overlay_token: s.overlay.on && ATTENTION.includes(s.overlay.method) ? hoverToken : null,
  };
}

/** The panes for the current state. The grid picture comes only when it differs from the one shown (a cursor move
 *  keeps it: the page draws the rings); views go out one at a time, so the one shown is the one named. */
async function fetchView() {
  const shown = model.result?.grid;
  const result = await api.view({ ...viewRequest(), grid_key: shown?.png ? shown.key : null });
  if (result.grid.png === null) {
    if (shown?.key !== result.grid.key) return api.view(viewRequest());
    result.grid.png = shown.png;
  }
  return result;
}

const views = new LatestWins(async () => {
  activity += 1;
  try {
    if (model.input.id) model.result = await fetchView();
  } catch (err) {
    if (err.status === 404 && model.input.source !== 'camera') reloadInput(); // dropped from the server's cache
    else state().message = err.message;
  } finally {
    activity -= 1;
    refresh();
  }
});
const requestView = () => views.request();

// ------------------------------------------------------------------ inputs
let inputSeq = 0;
let inputError = null; // the message of the last input that failed: cleared when the next one loads

async function loadInput(fetchInput, name) {
  const seq = ++inputSeq;
  activity += 1;
  refresh();
  try {
    const item = await fetchInput();
    if (seq === inputSeq) { // else a newer input was asked for meanwhile
      setInput(item, name);
      if (inputError !== null && state().message === inputError) state().message = null;
      inputError = null;
      requestView(); // before the finally below, so the page never looks idle in between
    }
  } catch (err) {
    state().message = inputError = err.message;
  } finally {
    activity -= 1;
    refresh();
  }
}

/** name: what to call the input (the server names a picture it already had by its first name). */
function setInput(item, name = item.name) {
  Object.assign(model.input, {
    id: item.input, name, predictions: item.predictions, imageUrl: api.inputImageUrl(item.input),
  });
}

function loadFile(index) {
  const count = model.info.images.length;
  if (!count) return showError(new Error('the server has no image list: open an image or drop one here'));
  Object.assign(model.input, { source: 'file', index: ((index % count) + count) % count });
  return loadInput(() => api.fileInput(model.input.index, model.input.resize));
}

function uploadFile(file) {
  if (model.input.mode === 'camera') stopCamera();
  Object.assign(model.input, { source: 'upload', upload: file });
  return loadInput(() => api.uploadInput(file, file.name, model.input.resize), file.name);
}

function reloadInput() {
  if (model.input.source === 'upload') return uploadFile(model.input.upload);
  if (model.input.source === 'file') return loadFile(model.input.index);
  return undefined; // the camera sends a new frame anyway
}

// ------------------------------------------------------------------ camera: next frame when the last one's panes came
let camera = null;
let cameraToken = 0;

async function startCamera() {
  camera ??= new Camera($('video'), model.info.input_size);
  try {
    await camera.start();
  } catch (err) {
    camera.stop();
    return showError(new Error(`no camera: ${err.message}`));
  }
  Object.assign(model.input, { mode: 'camera', source: 'camera', frozen: false });
  model.fps = 0;
  refresh();
  return cameraLoop(++cameraToken);
}

function stopCamera() {
  cameraToken += 1;
  camera?.stop();
  Object.assign(model.input, { mode: 'files', frozen: false });
  model.fps = 0;
}

async function cameraLoop(token) {
  let last = performance.now();
  while (token === cameraToken) {
    if (model.input.frozen || document.hidden) {
      await sleep(100);
      last = performance.now();
      continue;
    }
    try {
      const blob = await camera.frame(model.input.resize);
      // the server drops this tab's previous frame when the new one arrives: no view may be out meanwhile
      const item = await views.hold(() => tracked(api.frameInput(blob, TAB, model.input.resize)));
      if (token !== cameraToken) {
        views.flush(); // views asked for while the last frame was on its way
        break;
      }
      setInput(item);
      await requestView();
      const now = performance.now();
      const rate = 1000 / Math.max(1, now - last);
      last = now;
      model.fps = model.fps ? 0.8 * model.fps + 0.2 * rate : rate;
      refresh();
    } catch (err) {
      showError(err);
      views.flush(); // the views held back meanwhile
      await sleep(1000);
      last = performance.now();
    }
  }
}

// ------------------------------------------------------------------ actions (named in keymap.js)
function download(blob, name) {
  const link = $('download');
  link.href = URL.createObjectURL(blob);
  link.download = name.replace(/[^\w.-]+/g, '_');
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 30000);
}

const base64Blob = (base64) => new Blob([Uint8Array.from(atob(base64), (c) => c.charCodeAt(0))], { type: 'image/png' });

function move(direction, distance) {
  const s = state();
  const cols = model.result?.layer === layerName() ? model.result.grid.cols : Math.ceil(Math.sqrt(channels()));
  if (direction === 'left' || direction === 'right') {
    const step = direction === 'left' ? -distance : distance;
    if (s.cursor === 'layers') s.layer = Math.min(Math.max(s.layer + step, 0), model.info.layers.length - 1);
    else s.channel += step;
  } else if (direction === 'down') {
    if (s.cursor === 'layers') s.cursor = 'grid';
    else s.channel += cols * distance;
  } else if (s.cursor === 'grid') {
    if (s.channel - cols * distance < 0) s.cursor = 'layers';
    else s.channel -= cols * distance;
  }
}

function setBack(enabled, mode = state().back.mode, filter = state().back.filter) {
  const s = state();
  s.back = { enabled, mode, filter };
  if (!enabled) {
    s.showBack = false;
    if (s.zoom === 2) s.zoom = 0;
  }
}

const cycle = (list, value) => list[(list.indexOf(value) + 1) % list.length];

const ACTIONS = {
  left: () => move('left', 1),
  right: () => move('right', 1),
  up: () => move('up', 1),
  down: () => move('down', 1),
  left_fast: () => move('left', FAST),
  right_fast: () => move('right', FAST),
  up_fast: () => move('up', FAST),
  down_fast: () => move('down', FAST),
  layer_prev: () => { state().layer = Math.max(state().layer - 1, 0); },
  layer_next: () => { state().layer = Math.min(state().layer + 1, model.info.layers.length - 1); },
  zoom: () => {
    const s = state();
    s.zoom = (s.zoom + 1) % 3;
    if (s.zoom === 2 && !s.back.enabled) s.zoom = 0;
  },
  pattern: () => {
    const s = state();
    if (!model.info.store && !s.pattern) {
      s.message = 'pattern mode needs a store: make one (deepvis find-max, optimize), then deepvis serve --store STORE';
      return LOCAL;
    }
    s.pattern = !s.pattern;
    return LOCAL;
  },
  show_back: () => {
    const s = state();
    if (s.pattern) s.pattern = false;
    else if (s.showBack) s.showBack = false;
    else {
      setBack(true);
      s.showBack = true;
    }
  },
  back_easy: () => {
    const { enabled, mode, filter } = state().back;
    const at = enabled ? EASY_BACK.findIndex(([m, f]) => m === mode && f === filter) : -1;
    if (!enabled) setBack(true, ...EASY_BACK[0]);
    else if (at >= 0 && at < EASY_BACK.length - 1) setBack(true, ...EASY_BACK[at + 1]);
    else setBack(false);
  },
  back_mode: () => {
    const { enabled, mode } = state().back;
    if (!enabled) setBack(true, MODES[0]);
    else if (mode === MODES[MODES.length - 1]) setBack(false);
    else setBack(true, cycle(MODES, mode));
  },
  back_filter: () => setBack(state().back.enabled, state().back.mode, cycle(model.info.filters, state().back.filter)),
  freeze_back: () => {
    const s = state();
    s.frozen = s.frozen ? null : { layer: layerName(), channel: s.channel };
    s.message = s.frozen ? `backward origin frozen at ${layerName()}:${s.channel}`
      : 'backward origin follows the selection';
  },
  boost_gamma: () => { state().boostGamma = cycle(GAMMAS, state().boostGamma); },
  boost_indiv: () => { state().boostIndiv = cycle(INDIVS, state().boostIndiv); },
  toggle_predictions: () => { state().showPredictions = !state().showPredictions; return LOCAL; },
  toggle_unit_pane: () => { state().showUnitPane = !state().showUnitPane; return LOCAL; },
  timing: () => { state().timing = (state().timing + 1) % 3; return LOCAL; },
  help: () => { state().help = !state().help; return LOCAL; },
  reset: () => {
    if (state().help) state().help = false;
    else model.state = initialState();
  },
  next_image: () => stepImage(1),
  prev_image: () => stepImage(-1),
  stretch: () => {
    model.input.resize = model.input.resize === 'crop' ? 'stretch' : 'crop';
    state().message = model.input.resize === 'crop' ? 'centre-crop to the input size' : 'stretch to the input size';
    reloadInput();
    return LOCAL;
  },
  camera: () => {
    if (model.input.mode === 'camera') {
      stopCamera();
      loadFile(model.input.index);
    } else startCamera();
    return LOCAL;
  },
  freeze_camera: () => {
    if (model.input.mode !== 'camera') state().message = 'f freezes the camera: press c to start it';
    else camera.freeze((model.input.frozen = !model.input.frozen));
    return LOCAL;
  },
  save_back: () => {
    const back = model.result?.back;
    if (back) download(base64Blob(back.png), `deepvis-back-${back.origin}-${back.mode}-${back.filter}.png`);
    else state().message = 'the backward pane is off: nothing to save (b turns it on, ↓ selects a unit)';
    return LOCAL;
  },
  overlay: () => {
    const o = state().overlay;
    o.on = !o.on;
    state().message = o.on ? `overlay: ${o.method}` : 'overlay off';
  },
  overlay_method: () => {
    const o = state().overlay;
    if (o.on) o.method = cycle(model.info.overlays.methods, o.method);
    o.on = true;
    state().message = `overlay: ${o.method}`;
  },
  overlay_head: () => {
    const o = state().overlay;
    o.head += 1;
    if (!ATTENTION.includes(o.method)) state().message = 'y cycles attention heads: g selects the attention overlay';
  },
  alpha_down: () => { state().overlay.alpha = Math.max(0, Math.round(state().overlay.alpha * 10 - 1) / 10); },
  alpha_up: () => { state().overlay.alpha = Math.min(1, Math.round(state().overlay.alpha * 10 + 1) / 10); },
  save_overlay: () => {
    const overlay = model.result?.overlay;
    if (overlay?.png) download(base64Blob(overlay.png), `deepvis-overlay-${overlay.method}-${originName()}.png`);
    else state().message = 'no overlay to save: v turns it on';
    return LOCAL;
  },
  save_view: () => {
    snapshot($('app')).then((blob) => download(blob, `deepvis-view-${layerName()}-${state().channel}.png`), showError);
    return LOCAL;
  },
};

function stepImage(step) {
  if (model.input.mode === 'camera') { // like the original: leave camera mode, stay at the current file
    stopCamera();
    loadFile(model.input.index);
  } else loadFile(model.input.index + (model.input.source === 'upload' ? 0 : step)); // from an upload: back to the list
  return LOCAL;
}

// ------------------------------------------------------------------ after every change
let unitsKey = null;

async function refreshUnits() {
  const key = `${layerName()}:${state().channel}`;
  if (!state().showUnitPane || key === unitsKey) return;
  unitsKey = key;
  model.units = null;
  try {
    const units = await api.unitImages(layerName(), state().channel);
    if (key === unitsKey) model.units = units;
  } catch (err) {
    model.units = { images: {}, hint: err.message };
  }
  refresh();
}

let spritesKey = null;

async function refreshSprites() {
  const layer = layerName();
  if (!state().pattern || layer === spritesKey) return;
  spritesKey = layer;
  try {
    const sprites = await tracked(api.layerSprites(layer)); // counted busy, like views
    if (layer === spritesKey) model.sprites = sprites;
  } catch (err) {
    model.sprites = { layer, sprite: null, sprites: {} };
    state().message = err.message;
  }
  refresh();
}

function run(action) {
  const s = state();
  s.message = null;
  const effect = ACTIONS[action]();
  const now = state(); // reset replaces the state
  now.channel = Math.min(Math.max(now.channel, 0), channels() - 1);
  if (effect !== LOCAL) requestView();
  refreshUnits();
  refreshSprites();
  refresh();
}

function selectLayer(index) {
  Object.assign(state(), { layer: index, cursor: 'layers', message: null });
  state().channel = Math.min(state().channel, channels() - 1);
  requestView();
  refreshUnits();
  refreshSprites();
  refresh();
}

function selectUnit(channel) {
  Object.assign(state(), { channel, cursor: 'grid', message: null });
  requestView();
  refreshUnits();
  refreshSprites();
  refresh();
}

/** The token under the mouse (a grid position of a token layer) drives the attention overlay: a new view when it moves. */
function followToken(position) {
  const token = position && model.info.layers[state().layer].tokens ? [position.y, position.x] : null;
  if (String(token) === String(hoverToken)) return;
  hoverToken = token;
  const o = state().overlay;
  if (o.on && ATTENTION.includes(o.method)) {
    requestView();
    refresh(); // busy until the answer came
  }
}

function wire() {
  window.addEventListener('keydown', (event) => {
    if (event.target instanceof HTMLInputElement) return;
    const binding = bindingFor(event);
    if (!binding) return;
    event.preventDefault();
    run(binding.action);
  });
  const grid = $('grid-img');
  grid.addEventListener('click', (event) => {
    const channel = view.gridHit(event, model);
    if (channel !== null) selectUnit(channel);
  });
  grid.addEventListener('mousemove', (event) => {
    hoverEvent = event;
    view.showHover(event, model, view.gridHit(event, model));
    followToken(view.gridPosition(event, model));
  });
  grid.addEventListener('mouseleave', () => {
    hoverEvent = null;
    view.showHover(null, model, null);
    followToken(null);
  });
  grid.addEventListener('load', refresh);
  grid.addEventListener('error', () => {
    if (state().pattern) spriteFailed = grid.getAttribute('src');
    refresh();
  });
  $('back-img').addEventListener('load', refresh);
  new ResizeObserver(refresh).observe($('grid-pane'));
  const buttons = {
    'btn-prev': 'prev_image', 'btn-next': 'next_image', 'btn-camera': 'camera',
    'btn-save-back': 'save_back', 'btn-save-view': 'save_view', 'btn-help': 'help',
  };
  for (const [id, action] of Object.entries(buttons)) $(id).addEventListener('click', () => run(action));
  $('help').addEventListener('click', () => run('help'));
  $('file-input').addEventListener('change', (event) => {
    if (event.target.files[0]) uploadFile(event.target.files[0]);
    event.target.value = '';
  });
  document.addEventListener('dragover', (event) => {
    event.preventDefault();
    document.body.classList.add('dragging');
  });
  document.addEventListener('dragleave', () => document.body.classList.remove('dragging'));
  document.addEventListener('drop', (event) => {
    event.preventDefault();
    document.body.classList.remove('dragging');
    const file = event.dataTransfer.files[0];
    if (file) uploadFile(file);
    else showError(new Error('drop an image file'));
  });
}

async function start() {
  try {
    model.info = await api.info();
  } catch (err) {
    $('status-text').textContent = `cannot start: ${err.message}`;
    return;
  }
  model.input.resize = model.info.resize;
  if (model.info.random_weights) { // plainly: nothing this model shows was learned
    const banner = document.createElement('div');
    banner.id = 'random-weights';
    banner.setAttribute('role', 'alert');
    banner.textContent = `${model.info.model} runs with random weights (no weights file given): its pictures show `
      + 'the structure of the network, not what it learned';
    Object.assign(banner.style, { position: 'fixed', top: '0', left: '50%', transform: 'translateX(-50%)',
      zIndex: '1000', background: '#b00020', color: '#fff', padding: '4px 8px', fontWeight: 'bold' });
    document.body.prepend(banner);
  }
  view.setup(model.info, selectLayer);
  wire();
  refreshUnits();
  if (model.info.images.length) loadFile(0);
  else showError(new Error('the server has no image list: open an image or drop one here'));
}

start();
