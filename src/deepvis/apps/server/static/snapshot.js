// "Save view": paint what is on screen (pane backgrounds, borders, images, video, text) onto one canvas.
// A small DOM painter, enough for this page: no CSS transforms except the mirrored video, no gradients;
// text is placed line by line where the browser laid it out.

const visible = (el) => el.getClientRects().length > 0 && getComputedStyle(el).visibility !== 'hidden';

const opacityOf = (el) => {
  let alpha = 1;
  for (let node = el; node instanceof Element; node = node.parentElement) {
    alpha *= Number(getComputedStyle(node).opacity);
  }
  return alpha;
};

const transparent = (color) => color === 'transparent' || /rgba\(.*,\s*0\)$/.test(color);

/** Where object-fit 'contain' / 'fill' puts a picture of natural size nw x nh inside rect r. */
function contentRect(r, nw, nh, fit) {
  if (fit !== 'contain' || !nw || !nh) return r;
  const scale = Math.min(r.width / nw, r.height / nh);
  const [w, h] = [nw * scale, nh * scale];
  return { left: r.left + (r.width - w) / 2, top: r.top + (r.height - h) / 2, width: w, height: h };
}

function paintPicture(ctx, el, r, style) {
  const [nw, nh] = el.tagName === 'VIDEO' ? [el.videoWidth, el.videoHeight]
    : el.tagName === 'IMG' ? [el.naturalWidth, el.naturalHeight] : [el.width, el.height];
  if (!nw || !nh || (el.tagName === 'IMG' && !el.complete)) return;
  const c = contentRect(r, nw, nh, style.objectFit);
  ctx.save();
  ctx.beginPath();
  ctx.rect(r.left, r.top, r.width, r.height);
  ctx.clip();
  ctx.imageSmoothingEnabled = style.imageRendering !== 'pixelated';
  if (style.transform !== 'none') { // the mirrored video
    ctx.translate(c.left + c.width, c.top);
    ctx.scale(-1, 1);
    ctx.drawImage(el, 0, 0, c.width, c.height);
  } else {
    ctx.drawImage(el, c.left, c.top, c.width, c.height);
  }
  ctx.restore();
}

function paintText(ctx, el, r, style, origin) {
  ctx.save();
  ctx.beginPath();
  ctx.rect(r.left, r.top, r.width, r.height);
  ctx.clip();
  ctx.font = style.font;
  ctx.fillStyle = style.color;
  ctx.textBaseline = 'middle';
  const range = document.createRange();
  for (const node of el.childNodes) {
    if (node.nodeType !== Node.TEXT_NODE) continue;
    let run = null; // characters on one line, drawn together from where the first one sits
    const flush = () => run && run.text.trim() && ctx.fillText(run.text, run.left, run.middle);
    for (let i = 0; i < node.textContent.length; i += 1) {
      range.setStart(node, i);
      range.setEnd(node, i + 1);
      const c = range.getBoundingClientRect();
      if (!c.width && !c.height) continue; // collapsed white space
      const middle = c.top - origin.top + c.height / 2;
      if (run && Math.abs(run.middle - middle) < 1) run.text += node.textContent[i];
      else {
        flush();
        run = { text: node.textContent[i], left: c.left - origin.left, middle };
      }
    }
    flush();
  }
  ctx.restore();
}

/** A PNG blob of root as displayed; elements with data-snap="skip" (and their children) are left out. */
export function snapshot(root) {
  const box = root.getBoundingClientRect();
  const dpr = window.devicePixelRatio || 1;
  const canvas = document.createElement('canvas');
  canvas.width = Math.round(box.width * dpr);
  canvas.height = Math.round(box.height * dpr);
  const ctx = canvas.getContext('2d');
  ctx.scale(dpr, dpr);
  ctx.fillStyle = getComputedStyle(document.body).backgroundColor;
  ctx.fillRect(0, 0, box.width, box.height);
  for (const el of root.querySelectorAll('*')) {
    if (el.closest('[data-snap="skip"]') || !visible(el)) continue;
    const style = getComputedStyle(el);
    const b = el.getBoundingClientRect();
    const r = { left: b.left - box.left, top: b.top - box.top, width: b.width, height: b.height };
    ctx.globalAlpha = opacityOf(el);
    if (!transparent(style.backgroundColor)) {
      ctx.fillStyle = style.backgroundColor;
      ctx.fillRect(r.left, r.top, r.width, r.height);
    }
    if (parseFloat(style.borderTopWidth) > 0 && !transparent(style.borderTopColor)) {
      ctx.strokeStyle = style.borderTopColor;
      ctx.strokeRect(r.left + 0.5, r.top + 0.5, r.width - 1, r.height - 1);
    }
    const outline = parseFloat(style.outlineWidth);
    if (style.outlineStyle !== 'none' && outline > 0) { // the grid's cursor ring
      ctx.lineWidth = outline;
      ctx.strokeStyle = style.outlineColor;
      ctx.strokeRect(r.left - outline / 2, r.top - outline / 2, r.width + outline, r.height + outline);
      ctx.lineWidth = 1;
    }
    if (['IMG', 'CANVAS', 'VIDEO'].includes(el.tagName)) paintPicture(ctx, el, r, style);
    else paintText(ctx, el, r, style, box);
  }
  return new Promise((resolve, reject) => canvas.toBlob(
    (blob) => (blob ? resolve(blob) : reject(new Error('could not encode the view'))), 'image/png'));
}
