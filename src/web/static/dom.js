// Small DOM helpers. Every value from the API reaches the page through
// textContent or attributes set here, never through HTML parsing, so a file
// name or an error message can never inject markup.

/**
 * Creates an element. `props`: `class`, `text`, `on<Event>` handlers,
 * `dataset` (object), boolean properties (`hidden`, `disabled`), anything
 * else as an attribute (`aria-*`, `href`, ...). Null/undefined/false skip.
 */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === 'class') el.className = value;
    else if (name === 'text') el.textContent = String(value);
    else if (name === 'dataset') Object.assign(el.dataset, value);
    else if (name.startsWith('on') && typeof value === 'function') el.addEventListener(name.slice(2).toLowerCase(), value);
    else if (value === true) el.setAttribute(name, '');
    else el.setAttribute(name, String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replaces every child of `el` with `children`. */
export function replaceChildren(el, ...children) {
  el.replaceChildren();
  append(el, children);
}

export function byId(id) {
  const el = document.getElementById(id);
  if (!el) throw new Error(`the page has no #${id}`);
  return el;
}

const announcer = () => byId('announcer');

/** Says `message` through the page's polite live region (screen readers read it once). */
export function announce(message) {
  const region = announcer();
  // Emptying first makes a repeated message a change that is read again.
  region.textContent = '';
  setTimeout(() => {
    region.textContent = message;
  }, 50);
}
