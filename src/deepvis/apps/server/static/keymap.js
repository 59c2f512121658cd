// Every key binding of the toolbox, as data: which keys run which action, and the help text shown by 'h'.
// Keys are KeyboardEvent.key values; "Shift+X" is used only for non-character keys (arrows).

export const KEYMAP = [
  { group: 'Navigate', keys: ['ArrowLeft', 'j'], action: 'left', help: 'previous layer (in the list) / previous unit (in the grid)' },
  { group: 'Navigate', keys: ['ArrowRight', 'l'], action: 'right', help: 'next layer (in the list) / next unit (in the grid)' },
  { group: 'Navigate', keys: ['ArrowDown', 'k'], action: 'down', help: 'from the layer list into the grid / one row down' },
  { group: 'Navigate', keys: ['ArrowUp', 'i'], action: 'up', help: 'one row up; from the top row back to the layer list' },
  { group: 'Navigate', keys: ['Shift+ArrowLeft', 'J'], action: 'left_fast', help: 'move left 3 times as far' },
  { group: 'Navigate', keys: ['Shift+ArrowRight', 'L'], action: 'right_fast', help: 'move right 3 times as far' },
  { group: 'Navigate', keys: ['Shift+ArrowDown', 'K'], action: 'down_fast', help: 'move down 3 times as far' },
  { group: 'Navigate', keys: ['Shift+ArrowUp', 'I'], action: 'up_fast', help: 'move up 3 times as far' },
  { group: 'Navigate', keys: ['u', 'U'], action: 'layer_prev', help: 'previous layer, cursor stays where it is' },
  { group: 'Navigate', keys: ['o', 'O'], action: 'layer_next', help: 'next layer, cursor stays where it is' },
  { group: 'Grid', keys: ['z'], action: 'zoom', help: 'zoom: grid → selected unit → backward image (skipped when back is off)' },
  { group: 'Grid', keys: ['s'], action: 'pattern', help: 'pattern mode: show the store\'s optimized images instead of activations' },
  { group: 'Grid', keys: ['a'], action: 'show_back', help: 'grid shows backward diffs (red −, green +) instead of activations' },
  { group: 'Grid', keys: ['t'], action: 'boost_gamma', help: 'boost gamma: 1 → 0.7 → 0.5 → 0.3' },
  { group: 'Grid', keys: ['T'], action: 'boost_indiv', help: 'boost each unit individually: 0 → 0.3 → 0.5 → 0.8 → 1' },
  { group: 'Backward', keys: ['b'], action: 'back_easy', help: 'backward: off → gradient/raw → gradient/norm → deconv/raw → guided/raw → off' },
  { group: 'Backward', keys: ['n'], action: 'back_mode', help: 'backward mode: off → gradient → deconv → guided → off' },
  { group: 'Backward', keys: ['m'], action: 'back_filter', help: 'backward filter: raw → gray → norm → normblur' },
  { group: 'Backward', keys: ['d'], action: 'freeze_back', help: 'freeze / unfreeze the backward origin at the selected unit' },
  { group: 'Backward', keys: ['p'], action: 'save_back', help: 'save the backward image as PNG' },
  { group: 'Overlay', keys: ['v'], action: 'overlay', help: 'overlay on the input: off ⟷ on (attribution or attention of the selected unit)' },
  { group: 'Overlay', keys: ['g'], action: 'overlay_method', help: 'overlay method: gradcam → gradcam++ → guided-gradcam → input-x-gradient → smoothgrad → integrated-gradients (→ rollout → attention on ViTs)' },
  { group: 'Overlay', keys: ['y'], action: 'overlay_head', help: 'attention head: mean of heads → head 0 → head 1 → …' },
  { group: 'Overlay', keys: ['-'], action: 'alpha_down', help: 'overlay more transparent' },
  { group: 'Overlay', keys: ['='], action: 'alpha_up', help: 'overlay more opaque' },
  { group: 'Overlay', keys: ['V'], action: 'save_overlay', help: 'save the overlay as PNG (attention: the token under the mouse on a token layer\'s grid)' },
  { group: 'Panes', keys: ['8'], action: 'toggle_predictions', help: 'show / hide the top-5 predictions' },
  { group: 'Panes', keys: ['9'], action: 'toggle_unit_pane', help: 'show / hide the per-unit pane (store images)' },
  { group: 'Panes', keys: ['5'], action: 'timing', help: 'timing: off → total ms → forward / backward / render ms' },
  { group: 'Panes', keys: ['P'], action: 'save_view', help: 'save the whole view as PNG' },
  { group: 'Panes', keys: ['h'], action: 'help', help: 'show / hide this help' },
  { group: 'Panes', keys: ['Escape'], action: 'reset', help: 'reset the view (layer, unit, modes, boosts); closes the help' },
  { group: 'Input', keys: ['e', 'PageDown'], action: 'next_image', help: 'next image (leaves camera mode)' },
  { group: 'Input', keys: ['w', 'PageUp'], action: 'prev_image', help: 'previous image (leaves camera mode)' },
  { group: 'Input', keys: ['0'], action: 'stretch', help: 'centre-crop ⟷ stretch the image to the network\'s input' },
  { group: 'Input', keys: ['c'], action: 'camera', help: 'camera ⟷ image files' },
  { group: 'Input', keys: ['f'], action: 'freeze_camera', help: 'freeze / unfreeze the camera' },
];

const BY_KEY = new Map(KEYMAP.flatMap((binding) => binding.keys.map((key) => [key, binding])));

/** The binding for a keydown event, or undefined. Modifier chords (Ctrl, Alt, Meta) are left to the browser. */
export function bindingFor(event) {
  if (event.ctrlKey || event.altKey || event.metaKey) return undefined;
  const named = event.key.length > 1;
  return BY_KEY.get(named && event.shiftKey ? `Shift+${event.key}` : event.key) ?? BY_KEY.get(event.key);
}

const NAMES = {
  ArrowLeft: '←', ArrowRight: '→', ArrowUp: '↑', ArrowDown: '↓', Escape: 'Esc', PageUp: 'PgUp', PageDown: 'PgDn',
};

/** How a key is written in the help: "Shift+ArrowUp" -> "Shift+↑". */
export function keyLabel(key) {
  return key.split('+').map((part) => NAMES[part] ?? part).join('+');
}
