// The only module that knows the server's URLs. Every call returns parsed JSON or throws an ApiError
// carrying the server's own message ({"error": ...}).

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function request(url, options = {}) {
  let response;
  try {
    response = await fetch(url, { cache: 'no-store', ...options });
  } catch (err) {
    throw new ApiError(0, `server unreachable (${err.message})`);
  }
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    throw new ApiError(response.status, body?.error ?? `${response.status} ${response.statusText}`);
  }
  return body;
}

const query = (params) => new URLSearchParams(
  Object.entries(params).filter(([, value]) => value !== undefined && value !== null)).toString();

const postBytes = (url, blob) => request(url, {
  method: 'POST', body: blob, headers: { 'Content-Type': 'application/octet-stream' },
});

/** The model, its layers, the image list, modes and filters. */
export const info = () => request('/api/info');

/** The index-th image of the server's list: {input, name, forward_ms, predictions}. */
export const fileInput = (index, resize) =>
  request(`/api/inputs/file/${index}?${query({ resize })}`, { method: 'POST' });

/** An image file from this computer (raw bytes). */
export const uploadInput = (blob, name, resize) => postBytes(`/api/inputs/upload?${query({ name, resize })}`, blob);

/** One webcam frame (JPEG); the server drops this tab's previous frame. */
export const frameInput = (blob, tab, resize) => postBytes(`/api/inputs/frame?${query({ tab, resize })}`, blob);

/** The input as the network sees it (fitted to its size). */
export const inputImageUrl = (inputId) => `/api/inputs/${encodeURIComponent(inputId)}/image.png`;

/** Every pane for one view state (see ViewRequest in session.py). */
export const view = (viewRequest) => request('/api/view', {
  method: 'POST', body: JSON.stringify(viewRequest), headers: { 'Content-Type': 'application/json' },
});

/** The store's precomputed images of one unit ({images: {kind: url}, hint}). */
export const unitImages = (layer, channel) => request(`/api/unit?${query({ layer, channel })}`);

// A layer's folder name in the store, as the server writes it: quote(layer, safe="._-").
const storeFolder = (layer) => Array.from(new TextEncoder().encode(layer), (byte) => {
  const c = String.fromCharCode(byte);
  return /[A-Za-z0-9._~-]/.test(c) ? c : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
}).join('');

/** The store's sprite of a layer (all channels of one kind in a square grid), for pattern mode. */
export const spriteUrl = (layer, kind = 'optimized') =>
  `/store/${encodeURIComponent(storeFolder(layer))}/sprite_${kind}.jpg`;
