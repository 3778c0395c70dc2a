// The drawings: each chain as a left-to-right graph (classifiers, then its port pair
// groups in order, each a column of its port pairs), and the node's networks with
// their ports. Laid out by hand: chains are short pipelines.

import { count, rate, svg } from "./format.js";

const BOX_W = 180;
const BOX_H = 64;
const CLASSIFIER_W = 230;
const COL_GAP = 76;
const ROW_GAP = 16;
const PAD = 16;
const HEADER = 26;

function clip(value, length) {
  const s = String(value ?? "");
  return s.length > length ? `${s.slice(0, length - 1)}…` : s;
}

function box(x, y, w, h, cls, lines, title) {
  const group = svg("g", { class: cls, transform: `translate(${x},${y})` });
  group.append(svg("title", { text: title }));
  group.append(svg("rect", { width: w, height: h, rx: 6, ry: 6 }));
  const texts = lines.map(([textClass, value], i) =>
    svg("text", { x: 10, y: 19 + i * 16, class: textClass, text: value }),
  );
  group.append(...texts);
  return { group, texts };
}

function edge(x1, y1, x2, y2) {
  const dx = (x2 - x1) / 2;
  return svg("path", {
    class: "edge",
    d: `M${x1},${y1} C${x1 + dx},${y1} ${x2 - dx},${y2} ${x2},${y2}`,
  });
}

// One chain's drawing; `update(live)` then sets its counters from each tick.
export class ChainGraph {
  constructor(chain) {
    this.chain = chain;
    this.pairs = new Map(); // port pair id -> {texts, edges, packets}
    const groups = chain.port_pair_groups;
    const classifiers = chain.flow_classifiers.length
      ? chain.flow_classifiers
      : [{ id: "", name: "no classifier", match: "the chain classifies no traffic" }];
    const rows = Math.max(classifiers.length, ...groups.map((g) => g.port_pairs.length), 1);
    const innerH = rows * BOX_H + (rows - 1) * ROW_GAP;
    const width = PAD * 2 + CLASSIFIER_W + groups.length * (COL_GAP + BOX_W);
    const height = PAD * 2 + HEADER + innerH;
    const root = svg("svg", {
      class: "chain-graph",
      viewBox: `0 0 ${width} ${height}`,
      width,
      height,
      role: "img",
      "aria-label": `chain ${chain.name}`,
      "data-chain": chain.name,
    });
    const top = PAD + HEADER;
    const column = (n, i) => top + (innerH - (n * BOX_H + (n - 1) * ROW_GAP)) / 2 + i * (BOX_H + ROW_GAP);
    const edges = svg("g", { class: "edges" });
    const nodes = svg("g", { class: "nodes" });
    root.append(edges, nodes);

    // Column 0: the classifiers.
    let previous = [];
    nodes.append(svg("text", { x: PAD, y: PAD + 12, class: "column-label", text: "classifier" }));
    classifiers.forEach((fc, i) => {
      const y = column(classifiers.length, i);
      const { group } = box(
        PAD, y, CLASSIFIER_W, BOX_H, fc.id ? "classifier" : "classifier none",
        [["name", clip(fc.name, 28)], ["detail", clip(fc.match, 34)]],
        `${fc.name}: ${fc.match}`,
      );
      group.dataset.classifier = fc.name;
      nodes.append(group);
      previous.push({ x: PAD + CLASSIFIER_W, y: y + BOX_H / 2 });
    });

    // Then one column per group, edges from every box of the column before.
    groups.forEach((g, column_index) => {
      const x = PAD + CLASSIFIER_W + COL_GAP + column_index * (BOX_W + COL_GAP);
      const label = svg("text", { x, y: PAD + 12, class: "column-label group-label", text: g.name });
      label.dataset.group = g.name;
      nodes.append(label);
      const here = [];
      const groupNode = svg("g", { class: "group" });
      groupNode.dataset.group = g.name;
      if (!g.port_pairs.length) {
        groupNode.append(svg("text", { x, y: column(1, 0) + BOX_H / 2, class: "detail", text: "(no port pair)" }));
      }
      g.port_pairs.forEach((pair, i) => {
        const y = column(g.port_pairs.length, i);
        const { group, texts } = box(
          x, y, BOX_W, BOX_H, "pair",
          [["name", clip(pair.name, 22)], ["detail", clip(`${pair.ingress} → ${pair.egress}`, 30)], ["counter", "–"]],
          `${pair.name} (weight ${pair.weight}): in ${pair.ingress}, out ${pair.egress}`,
        );
        group.dataset.pair = pair.name;
        groupNode.append(group);
        const incoming = previous.map((p) => {
          const path = edge(p.x, p.y, x, y + BOX_H / 2);
          edges.append(path);
          return path;
        });
        this.pairs.set(pair.id, { group, counter: texts[2], incoming, packets: null });
        here.push({ x: x + BOX_W, y: y + BOX_H / 2 });
      });
      nodes.append(groupNode);
      if (here.length) previous = here;
    });
    this.element = root;
  }

  // Counters of each pair from the steering's hops of this chain; edges into a
  // pair that carried packets since the last tick are drawn as active.
  update(steering, seconds) {
    const totals = new Map();
    const chain = (steering?.chains ?? []).find((c) => c.id === this.chain.id);
    for (const hop of chain?.hops ?? []) {
      const t = totals.get(hop.port_pair) ?? { forward: 0, reverse: 0, flows: 0 };
      if (hop.direction === "reverse") t.reverse += hop.packets;
      else {
        t.forward += hop.packets;
        t.flows += hop.flows;
      }
      totals.set(hop.port_pair, t);
    }
    for (const [id, pair] of this.pairs) {
      const t = totals.get(id) ?? { forward: 0, reverse: 0, flows: 0 };
      const packets = t.forward + t.reverse;
      const delta = pair.packets === null ? 0 : packets - pair.packets;
      pair.packets = packets;
      const perSecond = seconds > 0 ? delta / seconds : 0;
      pair.counter.textContent = `→${count(t.forward)} ←${count(t.reverse)} · ${count(t.flows)} flows ${rate(perSecond)}`;
      pair.counter.dataset.packets = String(packets);
      pair.group.classList.toggle("busy", delta > 0);
      for (const path of pair.incoming) path.classList.toggle("active", delta > 0);
    }
  }
}

const PORT_W = 196;
const PORT_H = 58;
const PORT_GAP = 14;
const NET_HEADER = 30;
const NET_WIDTH = 1240;

function owner(port) {
  return port.host || port.netns || port.name.split(":")[0];
}

// The networks, each a bus with its ports hung below it (grouped by owner).
export class NetworkView {
  constructor(networks, ports) {
    const byName = new Map(ports.map((p) => [p.name, p]));
    const perRow = Math.max(1, Math.floor((NET_WIDTH - PAD * 2 + PORT_GAP) / (PORT_W + PORT_GAP)));
    this.ports = new Map(); // port name -> {rates text, rx, tx}
    let y = PAD;
    const root = svg("svg", { class: "network-view", role: "img", "aria-label": "networks and ports" });
    for (const network of networks) {
      const members = network.ports
        .map((name) => byName.get(name))
        .filter(Boolean)
        .sort((a, b) => owner(a).localeCompare(owner(b)) || a.name.localeCompare(b.name));
      const rows = Math.max(1, Math.ceil(members.length / perRow));
      const group = svg("g", { class: "network", transform: `translate(0,${y})` });
      group.dataset.network = network.name;
      const top = (row) => NET_HEADER + 8 + row * (PORT_H + PORT_GAP);
      const busY = (row) => top(row) - 7;
      group.append(
        svg("text", { x: PAD, y: 14, class: "network-label", text: `network ${network.name}` }),
        svg("text", {
          x: PAD + 200, y: 14, class: "detail",
          text: `${members.length} ports · ${network.mac_entries} MACs learned`,
        }),
      );
      // One bus a row of ports, the rows' buses joined at the left.
      for (let row = 0; row < rows; row += 1) {
        const inRow = Math.min(perRow, members.length - row * perRow);
        const end = PAD + Math.max(1, inRow) * (PORT_W + PORT_GAP) - PORT_GAP;
        group.append(svg("line", { x1: PAD / 2, y1: busY(row), x2: Math.max(end, PAD + 200), y2: busY(row), class: "bus" }));
      }
      if (rows > 1) group.append(svg("line", { x1: PAD / 2, y1: busY(0), x2: PAD / 2, y2: busY(rows - 1), class: "bus" }));
      members.forEach((port, i) => {
        const row = Math.floor(i / perRow);
        const x = PAD + (i % perRow) * (PORT_W + PORT_GAP);
        const py = top(row);
        group.append(svg("line", { x1: x + PORT_W / 2, y1: busY(row), x2: x + PORT_W / 2, y2: py, class: "drop-line" }));
        const { group: portBox, texts } = box(
          x, py, PORT_W, PORT_H, `port kind-${port.kind}`,
          [["name", clip(port.name, 24)], ["detail", clip(`${port.kind}${port.mac ? ` · ${port.mac}` : ""}`, 30)], ["counter", "–"]],
          `${port.name}: ${port.kind}, interface ${port.ifname}${port.netns ? ` in ${port.netns}` : ""}, MAC ${port.mac ?? "-"}${port.secured ? ", secured" : ""}`,
        );
        portBox.dataset.port = port.name;
        group.append(portBox);
        this.ports.set(port.name, { counter: texts[2] });
      });
      root.append(group);
      y += top(rows) - PORT_GAP + PAD;
    }
    root.setAttribute("viewBox", `0 0 ${NET_WIDTH} ${y}`);
    root.setAttribute("width", NET_WIDTH);
    root.setAttribute("height", y);
    this.element = root;
  }

  update(rates) {
    for (const [name, view] of this.ports) {
      const r = rates.get(name);
      view.counter.textContent = r ? `in ${rate(r.rx)}  out ${rate(r.tx)}` : "–";
    }
  }
}
