// deepvis export: keyboard navigation, search and kind switching. No requests: the search index is a script
// (search-index.js, the global DEEPVIS_SEARCH) loaded before this one, so pages work from file:// too.
(function () {
  'use strict';
  const body = document.body;
  const root = body.dataset.root || '';
  const index = window.DEEPVIS_SEARCH || { layers: [], labels: [] };
  const input = document.getElementById('search');
  const list = document.getElementById('search-results');

  const unitHref = (li, channel) => `${root}${index.layers[li].dir}/${channel}.html`;

  /** Matches of a query: "layer:channel", a layer name, or a label (substring, any case). */
  function find(query) {
    const q = query.trim();
    if (!q) return [];
    const found = [];
    const colon = q.lastIndexOf(':');
    if (colon > 0) {
      const name = q.slice(0, colon);
      const channel = q.slice(colon + 1);
      const li = index.layers.findIndex((l) => l.name === name);
      if (li >= 0 && /^\d+$/.test(channel) && index.layers[li].channels.includes(Number(channel))) {
        found.push({ href: unitHref(li, Number(channel)), text: `${name}:${Number(channel)}` });
      }
    }
    const lower = q.toLowerCase();
    index.layers.forEach((l) => {
      if (l.name.toLowerCase() === lower) found.push({ href: `${root}${l.dir}/index.html`, text: `layer ${l.name}` });
    });
    for (const [li, channel, label] of index.labels) {
      if (found.length >= 50) break;
      if (label.toLowerCase().includes(lower)) {
        found.push({ href: unitHref(li, channel), text: `${index.layers[li].name}:${channel} ${label}` });
      }
    }
    return found;
  }

  function showResults() {
    const found = find(input.value);
    list.replaceChildren(...found.map((hit) => {
      const item = document.createElement('li');
      const link = document.createElement('a');
      link.href = hit.href;
      link.textContent = hit.text;
      item.append(link);
      return item;
    }));
    if (!found.length && input.value.trim()) {
      const item = document.createElement('li');
      item.className = 'none';
      item.textContent = 'no unit matches (layer:channel, or a label)';
      list.append(item);
    }
    list.hidden = !input.value.trim();
  }

  if (input) {
    input.addEventListener('input', showResults);
    input.form.addEventListener('submit', (event) => {
      event.preventDefault();
      const found = find(input.value);
      if (found.length) window.location.href = found[0].href;
      else showResults();
    });
  }

  // kind switching on layer pages: every tile carries its pictures by kind in data-pics
  const buttons = Array.from(document.querySelectorAll('.kinds button'));
  function showKind(kind) {
    buttons.forEach((b) => b.classList.toggle('on', b.dataset.kind === kind));
    body.dataset.kind = kind;
    document.querySelectorAll('.grid .tile').forEach((tile) => {
      const src = JSON.parse(tile.dataset.pics)[kind];
      const img = tile.querySelector('img');
      tile.classList.toggle('empty', !src);
      img.hidden = !src;
      if (src) img.src = src;
      else img.removeAttribute('src');
    });
  }
  buttons.forEach((b) => b.addEventListener('click', () => showKind(b.dataset.kind)));
  if (buttons.length) body.dataset.kind = buttons[0].dataset.kind;

  const go = (key) => { if (body.dataset[key]) window.location.href = body.dataset[key]; };
  document.addEventListener('keydown', (event) => {
    if (event.altKey || event.ctrlKey || event.metaKey) return;
    if (event.target === input) {
      if (event.key === 'Escape') { input.value = ''; showResults(); input.blur(); }
      return;
    }
    if (event.key === 'ArrowLeft') go('prev');
    else if (event.key === 'ArrowRight') go('next');
    else if (event.key === 'ArrowUp' && !event.shiftKey) go('up');
    else if (event.key === 'ArrowDown' && !event.shiftKey) go('down');
    else if (event.key === '/') { event.preventDefault(); input.focus(); }
    else if (event.key === 'k' && buttons.length) {
      const at = buttons.findIndex((b) => b.dataset.kind === body.dataset.kind);
      showKind(buttons[(at + 1) % buttons.length].dataset.kind);
    } else return;
    event.preventDefault();
  });
}());
