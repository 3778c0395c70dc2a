// The dashboard page: follows the node's live stream and keeps every panel current.
//
// The stream (GET ../v2.0/pktchain/dashboard/stream) is read with fetch, the API
// token in X-Auth-Token; a 401 shows the token form. The token is kept in this
// tab's sessionStorage. docs/dashboard.md describes the stream.

import { bytes, count, duration, el, rate, text } from "./format.js";
import { ChainGraph, NetworkView } from "./graph.js";
import { Unauthorized, readEvents } from "./stream.js";

const STREAM = new URL("../v2.0/pktchain/dashboard/stream", document.baseURI).href;
const TOKEN_KEY = "pktchain-api-token";
const MAX_EVENTS = 300;
const MAX_TABLE_ROWS = 200;

const $ = (id) => document.getElementById(id);

const state = {
  chains: new Map(), // chain id -> ChainGraph
  topologyKey: "",
  network: null,
  networkKey: "",
  previous: null, // the last live state, for rates
  dropsPrevious: new Map(),
  controller: null,
};

// -- the token ---------------------------------------------------------------

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

function askToken(problem) {
  $("token-panel").hidden = false;
  $("dashboard").hidden = true;
  $("token-error").textContent = problem;
  setConnection("token", "token needed");
  $("token-input").focus();
}

$("token-form").addEventListener("submit", (submitted) => {
  submitted.preventDefault();
  const value = $("token-input").value.trim();
  if (!value) return;
  sessionStorage.setItem(TOKEN_KEY, value);
  $("token-input").value = "";
  $("token-panel").hidden = true;
  $("dashboard").hidden = false;
  follow();
});

$("forget-token").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  state.controller?.abort();
  askToken("");
});

function setConnection(kind, label) {
  const node = $("connection");
  node.dataset.state = kind;
  node.textContent = label;
  $("forget-token").hidden = !token();
}

// -- the stream ----------------------------------------------------------------

let following = false;

async function follow() {
  if (following) return;
  following = true;
  let pause = 1000;
  try {
    for (;;) {
      state.controller = new AbortController();
      setConnection("connecting", "connecting");
      try {
        for await (const { type, data } of readEvents(STREAM, token(), state.controller.signal)) {
          pause = 1000;
          handle(type, data);
        }
        setConnection("lost", "stream ended; reconnecting");
      } catch (error) {
        if (error instanceof Unauthorized) {
          askToken(token() ? "The node refused this token." : "");
          return;
        }
        if (error.name === "AbortError") return;
        setConnection("lost", `no stream (${error.message}); retrying`);
      }
      await new Promise((resolve) => setTimeout(resolve, pause));
      pause = Math.min(pause * 2, 10000);
    }
  } finally {
    following = false;
  }
}

function handle(type, data) {
  if (type === "hello") {
    $("node-name").textContent = `node ${data.node}`;
    document.title = `pktchain ${data.node}`;
    setConnection("live", `live, every ${data.interval} s`);
  } else if (type === "topology") showChains(data);
  else if (type === "live") showLive(data);
  else if (type === "event") showEvent(data);
  else if (type === "dropped") showDropped(data);
}

// -- chains ----------------------------------------------------------------------

function showChains(chains) {
  const key = JSON.stringify(chains);
  if (key === state.topologyKey) return;
  state.topologyKey = key;
  const host = $("chains");
  host.replaceChildren();
  state.chains.clear();
  if (!chains.length) host.append(el("p", { class: "empty", text: "No port chain." }));
  for (const chain of chains) {
    const graph = new ChainGraph(chain);
    state.chains.set(chain.id, graph);
    const title = el(
      "h3",
      {},
      el("span", { class: "chain-name", text: chain.name }),
      el("span", {
        class: "detail",
        text: ` chain id ${chain.chain_id}${chain.symmetric ? " · symmetric" : ""} · ${chain.port_pair_groups.length} groups`,
      }),
      el("span", { class: "chain-counter", dataset: { chain: chain.name } }),
    );
    host.append(el("div", { class: "chain", dataset: { chain: chain.name } }, title, graph.element));
  }
  if (state.previous) updateChains(state.previous, 0);
}

function updateChains(live, seconds) {
  for (const graph of state.chains.values()) graph.update(live.steering, seconds);
  for (const chain of live.steering?.chains ?? []) {
    const counter = document.querySelector(`.chain-counter[data-chain="${CSS.escape(chain.name || chain.id)}"]`);
    if (counter) counter.textContent = ` · ${count(chain.packets)} packets · ${count(chain.flows)} flows into its first group`;
  }
}

// -- live state ------------------------------------------------------------------

function portRates(live, previous, seconds) {
  const rates = new Map();
  const before = new Map((previous?.ports ?? []).map((p) => [p.name, p]));
  for (const port of live.ports) {
    const old = before.get(port.name);
    rates.set(port.name, {
      rx: old && seconds > 0 ? (port.rx_packets - old.rx_packets) / seconds : null,
      tx: old && seconds > 0 ? (port.tx_packets - old.tx_packets) / seconds : null,
    });
  }
  return rates;
}

const sum = (values) => values.reduce((a, b) => a + b, 0);
const portDrops = (port) => sum(Object.values(port.drops ?? {}));

function showLive(live) {
  if (live.error) {
    setConnection("lost", `the node: ${live.error}`);
    return;
  }
  const previous = state.previous && state.previous.node === live.node ? state.previous : null;
  const seconds = previous ? live.now - previous.now : 0;
  state.previous = live;
  const rates = portRates(live, previous, seconds);
  const perSecond = (now, before) => (previous && seconds > 0 ? rate((now - before) / seconds) : "");

  const rx = sum(live.ports.map((p) => p.rx_packets));
  const tx = sum(live.ports.map((p) => p.tx_packets));
  const drops = sum(live.ports.map(portDrops));
  $("stat-rx").textContent = count(rx);
  $("stat-rx").dataset.value = String(rx);
  $("stat-tx").textContent = count(tx);
  $("stat-tx").dataset.value = String(tx);
  $("stat-rx-rate").textContent = previous ? perSecond(rx, sum(previous.ports.map((p) => p.rx_packets))) : "";
  $("stat-tx-rate").textContent = previous ? perSecond(tx, sum(previous.ports.map((p) => p.tx_packets))) : "";
  const fast = live.fast_path;
  $("stat-hits").textContent = count(fast.hits);
  const seen = fast.hits + fast.misses;
  $("stat-hit-ratio").textContent = seen ? `${Math.round((100 * fast.hits) / seen)}% of frames in` : "";
  $("stat-flows").textContent = count(live.steering?.flows ?? 0);
  $("stat-drops").textContent = count(drops);
  $("stat-drops-rate").textContent = previous ? perSecond(drops, sum(previous.ports.map(portDrops))) : "";
  $("stat-uptime").textContent = duration(live.uptime);

  showNetworks(live, rates);
  showPorts(live, rates);
  showFunctions(live);
  updateChains(live, seconds);
  showFlows(live);
  showDrops(live, seconds);
  showRouter(live.router);
}

function showNetworks(live, rates) {
  const key = JSON.stringify([live.networks.map((n) => [n.name, n.ports]), live.ports.map((p) => [p.name, p.kind, p.mac])]);
  if (key !== state.networkKey) {
    state.networkKey = key;
    state.network = new NetworkView(live.networks, live.ports);
    $("topology").replaceChildren(state.network.element);
  }
  state.network.update(rates);
}

function showPorts(live, rates) {
  const rows = live.ports.map((port) => {
    const r = rates.get(port.name) ?? {};
    return el(
      "tr",
      { dataset: { port: port.name } },
      el("td", { text: port.name, title: `${port.ifname}${port.netns ? ` in ${port.netns}` : ""}` }),
      el("td", { text: port.network ?? "" }),
      el("td", { text: port.kind }),
      el("td", { class: "num", text: r.rx === null || r.rx === undefined ? "" : rate(r.rx) }),
      el("td", { class: "num", text: r.tx === null || r.tx === undefined ? "" : rate(r.tx) }),
      el("td", { class: "num rx-packets", text: count(port.rx_packets), dataset: { value: port.rx_packets } }),
      el("td", { class: "num tx-packets", text: count(port.tx_packets), dataset: { value: port.tx_packets } }),
      el("td", { class: "num", text: bytes(port.rx_bytes) }),
      el("td", { class: "num", text: count(portDrops(port)) }),
    );
  });
  $("ports").tBodies[0].replaceChildren(...rows);
}

function showFunctions(live) {
  const host = $("functions");
  if (!live.functions.length) {
    host.replaceChildren(el("p", { class: "empty", text: "No native function." }));
    return;
  }
  const rows = live.functions.map((fn) => {
    const verdicts = Object.entries(fn.verdicts ?? {}).map(([k, v]) => `${k} ${count(v)}`).join(", ");
    const counters = Object.entries(fn.counters ?? {})
      .filter(([k]) => !(k in (fn.reasons ?? {})))
      .map(([k, v]) => `${k} ${count(v)}`)
      .join(", ");
    const errors = Object.entries(fn.errors ?? {}).map(([k, v]) => `${k} ${v}`).join(", ");
    return el(
      "tr",
      { dataset: { function: fn.name } },
      el("td", { text: fn.name }),
      el("td", { text: fn.kind }),
      el("td", { text: Object.values(fn.ports ?? {}).join(", ") }),
      el("td", { text: verdicts }),
      el("td", { text: counters }),
      el("td", { class: errors ? "error" : "", text: errors }),
    );
  });
  const head = el("thead", {}, el("tr", {}, ...["function", "kind", "ports", "verdicts", "counters", "errors"].map((h) => el("th", { text: h }))));
  host.replaceChildren(el("table", {}, head, el("tbody", {}, ...rows)));
}

function endpoint(address, port) {
  return port ? `${address}:${port}` : address;
}

const PROTOCOLS = { 1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6", 132: "sctp" };

function showFlows(live) {
  // The flows last seen first: those that carry traffic now.
  const flows = [...(live.flows ?? [])].sort((a, b) => a.idle - b.idle);
  const rows = flows.slice(0, MAX_TABLE_ROWS).map((flow) =>
    el(
      "tr",
      {},
      el("td", { text: endpoint(flow.src, flow.sport) }),
      el("td", { text: endpoint(flow.dst, flow.dport) }),
      el("td", { text: PROTOCOLS[flow.proto] ?? flow.proto }),
      el("td", { text: flow.chain ?? "–" }),
      el("td", { class: "path", text: flow.path.length ? flow.path.join(" → ") : "(switched)" }),
      el("td", { text: flow.translated.map((k) => `${endpoint(k.src, k.sport)} → ${endpoint(k.dst, k.dport)}`).join("; ") }),
      el("td", { class: "num", text: count(flow.packets) }),
      el("td", { class: "num", text: flow.idle }),
    ),
  );
  $("flows").tBodies[0].replaceChildren(...rows);
  const total = live.steering?.flows ?? flows.length;
  $("flows-note").textContent = total > flows.length ? `${flows.length} of ${total} flows shown.` : total ? "" : "No flow in the table.";
}

function dropTable(live) {
  const reasons = new Map(); // reason -> {total, where: Map}
  const add = (reason, where, n) => {
    if (!n) return;
    const entry = reasons.get(reason) ?? { total: 0, where: new Map() };
    entry.total += n;
    entry.where.set(where, (entry.where.get(where) ?? 0) + n);
    reasons.set(reason, entry);
  };
  for (const port of live.ports) for (const [reason, n] of Object.entries(port.drops ?? {})) add(reason, port.name, n);
  for (const fn of live.functions) {
    const dropped = fn.verdicts?.drop ?? 0;
    if (!dropped) continue;
    for (const [reason, n] of Object.entries(fn.reasons ?? {})) add(reason, `function ${fn.name}`, n);
  }
  for (const [reason, n] of Object.entries(live.underlay_drops ?? {})) add(reason, "underlay", n);
  return reasons;
}

function showDrops(live, seconds) {
  const reasons = dropTable(live);
  const ordered = [...reasons.entries()].sort((a, b) => b[1].total - a[1].total);
  const rows = ordered.map(([reason, entry]) => {
    const before = state.dropsPrevious.get(reason);
    const perSecond = before !== undefined && seconds > 0 ? rate((entry.total - before) / seconds) : "";
    const where = [...entry.where.entries()].sort((a, b) => b[1] - a[1]).slice(0, 4).map(([w, n]) => `${w} ${count(n)}`).join(", ");
    return el(
      "tr",
      { dataset: { reason } },
      el("td", { text: reason }),
      el("td", { class: "num", text: perSecond }),
      el("td", { class: "num", text: count(entry.total) }),
      el("td", { text: where }),
    );
  });
  state.dropsPrevious = new Map(ordered.map(([reason, entry]) => [reason, entry.total]));
  $("drops").tBodies[0].replaceChildren(...rows);
  $("drops-empty").hidden = rows.length > 0;
}

// A table of objects of any shape: a column per key seen.
function objectTable(rows, id) {
  if (!rows?.length) return el("p", { class: "empty", text: "None." });
  const keys = [...new Set(rows.slice(0, MAX_TABLE_ROWS).flatMap((r) => Object.keys(r)))];
  return el(
    "table",
    { id },
    el("thead", {}, el("tr", {}, ...keys.map((k) => el("th", { text: k })))),
    el("tbody", {}, ...rows.slice(0, MAX_TABLE_ROWS).map((r) => el("tr", {}, ...keys.map((k) => el("td", { text: text(r[k]) }))))),
  );
}

function showRouter(router) {
  const host = $("router");
  if (!router) {
    host.replaceChildren(el("p", { class: "empty", text: "This node runs no router." }));
    return;
  }
  const parts = [
    el("h3", { text: `Hosts (${router.hosts.length})` }),
    objectTable(router.hosts, "router-hosts"),
    el("h3", { text: `NAT: ${count(router.nat_mappings)} mappings, ${count(router.nat_sessions)} sessions` }),
    objectTable(router.nat, "router-nat"),
  ];
  if (router.vrrp?.length) parts.push(el("h3", { text: "VRRP" }), objectTable(router.vrrp, "router-vrrp"));
  if (router.ha) parts.push(el("h3", { text: "HA state sync" }), objectTable([router.ha], "router-ha"));
  host.replaceChildren(...parts);
}

// -- events ---------------------------------------------------------------------

const STANDARD = new Set(["time", "level", "logger", "message", "event"]);
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

// A field's value as the feed shows it: ids cut to their first 8 digits (the
// names come first; the whole line is the row's tooltip).
function short(value) {
  if (Array.isArray(value)) return `[${value.map(short).join(", ")}]`;
  if (typeof value === "string" && UUID.test(value)) return value.slice(0, 8);
  return text(value);
}

function showEvent(line) {
  const entries = Object.entries(line).filter(([k]) => !STANDARD.has(k));
  const named = entries.filter(([k]) => !k.endsWith("_id"));
  const ids = entries.filter(([k]) => k.endsWith("_id"));
  const fields = [...named, ...ids].map(([k, v]) => `${k}=${short(v)}`).join(" ");
  const when = new Date(line.time);
  const item = el(
    "li",
    {
      class: `level-${line.level}`,
      title: `${line.message}\n${entries.map(([k, v]) => `${k}=${text(v)}`).join("\n")}`,
      dataset: { event: line.event },
    },
    el("time", { datetime: line.time, text: Number.isNaN(when.getTime()) ? line.time : when.toLocaleTimeString() }),
    el("span", { class: "level", text: line.level }),
    el("span", { class: "event-name", text: line.event }),
    el("span", { class: "fields", text: fields }),
  );
  prependEvent(item);
}

function showDropped(lost) {
  prependEvent(
    el("li", { class: "dropped" }, el("span", { text: `${lost.dropped} events lost: this page fell behind (${lost.total} in all)` })),
  );
}

function prependEvent(item) {
  const list = $("events");
  list.prepend(item);
  while (list.children.length > MAX_EVENTS) list.lastElementChild.remove();
}

follow();
