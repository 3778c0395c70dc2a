// Small helpers: building elements from text only (never HTML), and numbers for people.

const SVG = "http://www.w3.org/2000/svg";

// An HTML element with attributes and children (strings become text nodes).
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  setAttributes(node, attributes);
  node.append(...children.flat().filter((c) => c !== null && c !== undefined));
  return node;
}

// An SVG element with attributes and children.
export function svg(tag, attributes = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  setAttributes(node, attributes);
  node.append(...children.flat().filter((c) => c !== null && c !== undefined));
  return node;
}

function setAttributes(node, attributes) {
  for (const [key, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "text") node.textContent = String(value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
}

// 1234567 -> "1.23M"; below 10 000 the number itself.
export function count(n) {
  if (n === null || n === undefined || Number.isNaN(n)) return "–";
  const value = Number(n);
  if (Math.abs(value) < 10000) return String(Math.round(value));
  const units = ["k", "M", "G", "T"];
  let scaled = value;
  let unit = "";
  for (const u of units) {
    if (Math.abs(scaled) < 1000) break;
    scaled /= 1000;
    unit = u;
  }
  return `${scaled.toFixed(scaled < 10 ? 2 : scaled < 100 ? 1 : 0)}${unit}`;
}

export function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = Number(n);
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${unit ? value.toFixed(1) : value} ${units[unit]}`;
}

export function rate(n) {
  if (n === null || n === undefined || Number.isNaN(n)) return "";
  return `${count(n < 10 ? Math.round(n * 10) / 10 : n)}/s`;
}

export function duration(seconds) {
  const s = Math.floor(seconds);
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  if (d) return `${d}d ${h}h`;
  if (h) return `${h}h ${m}m`;
  if (m) return `${m}m ${s % 60}s`;
  return `${s}s`;
}

// A value of any shape as one short line.
export function text(value) {
  if (value === null || value === undefined) return "";
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}
