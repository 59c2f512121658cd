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

/** The store's precomputed images of one unit ({images: {kind: url}, sprite, sprites, hint}); URLs come ready. */
export const unitImages = (layer, channel) => request(`/api/unit?${query({ layer, channel })}`);

/** The store's sprites of a layer for pattern mode ({sprite: url or null, sprites: {kind: url}}). */
export const layerSprites = (layer) => request(`/api/layer?${query({ layer })}`);
