// The inside view: one card per stage of an /api/explain answer (every convolution, pooling, ReLU, block, flatten
// and linear layer, with its shape and the arithmetic that gives it), a colour scale on every map, the probability
// bars, and the panel that shows how one clicked value was computed (/api/value).
//
// While the user draws, answers arrive many times a second. The cards are built once per model (and language)
// and then only updated in place, so the thumbnails do not flicker and a focused switch keeps its focus.

import { t, percent } from "./i18n.js";

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  node.append(...children);
  return node;
}

const shapeText = shape => (shape || []).join(" × ");
const normText = norm => (norm == null ? "-" : Number(norm).toPrecision(3));
const num = v => (v == null ? "·" : Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 10 ? v.toFixed(1) : v.toFixed(2));
const word = (key, fallback) => { const s = t(key); return s === key ? fallback : s; };

/**
 * The most probable class of an answer, as the server sent it: /api/explain's `top` (a label), /api/predict's first
 * `top` entry; -1 for none.
 */
export function topClass(answer) {
  const top = answer?.top;
  if (typeof top === "number") return top;
  return Array.isArray(top) && top.length ? top[0].class : -1;
}

// ---- the colour scale --------------------------------------------------------------------------------------

// The server colours each value v by v / limit through these three stops (cnnlab.plotting.DIVERGING); the legend
// is a CSS gradient through the same stops, and a hover reads a value back from its colour.
let COLOURS = ["#2166ac", "#f7f7f7", "#b2182b"];
let LUT = null;

function lut() {
  if (LUT) return LUT;
  const rgb = COLOURS.map(c => [1, 3, 5].map(i => parseInt(c.slice(i, i + 2), 16)));
  LUT = [];
  for (let i = 0; i < 256; i++) {
    const f = i / 255, [a, b, u] = f <= 0.5 ? [rgb[0], rgb[1], f / 0.5] : [rgb[1], rgb[2], (f - 0.5) / 0.5];
    LUT.push(a.map((v, k) => v + (b[k] - v) * u));
  }
  return LUT;
}

function valueOfColour([r, g, b], limit) {
  let best = 0, dist = Infinity;
  lut().forEach((c, i) => {
    const d = (c[0] - r) ** 2 + (c[1] - g) ** 2 + (c[2] - b) ** 2;
    if (d < dist) { dist = d; best = i; }
  });
  return (best / 127.5 - 1) * limit;
}

function legendView() {
  const lo = el("span", { class: "lo" }), hi = el("span", { class: "hi" });
  const bar = el("span", { class: "ramp", "aria-hidden": "true" });
  const text = el("span", { class: "scope" });
  const node = el("span", { class: "maps-legend" }, lo, bar, hi, text);
  return {
    node,
    set(maps) {
      if (!maps) { node.hidden = true; return; }
      node.hidden = false;
      bar.style.background = `linear-gradient(to right, ${COLOURS.join(", ")})`;
      const limits = maps.limits || [];
      if (maps.scope === "map") {
        const m = Math.max(...limits, 0);
        lo.textContent = "−"; hi.textContent = "+";
        text.textContent = t("scale.each", { max: num(m) });
      } else {
        const m = limits[0] || 0;
        lo.textContent = num(-m); hi.textContent = num(m);
        text.textContent = "";
      }
      text.hidden = !text.textContent;
    },
  };
}

// ---- feature maps ------------------------------------------------------------------------------------------

// Where a pointer is on an atlas: its map (channel) and pixel, or null on a gap or an empty slot.
function pointed(img, maps, ev) {
  const rect = img.getBoundingClientRect();
  if (!rect.width || !img.naturalWidth) return null;
  const px = Math.floor((ev.clientX - rect.left) * img.naturalWidth / rect.width);
  const py = Math.floor((ev.clientY - rect.top) * img.naturalHeight / rect.height);
  const [h, w] = maps.size, gap = maps.gap ?? 0;
  const col = Math.floor(px / (w + gap)), row = Math.floor(py / (h + gap));
  const x = px - col * (w + gap), y = py - row * (h + gap);
  const channel = row * maps.grid[1] + col;
  if (x < 0 || y < 0 || x >= w || y >= h || col >= maps.grid[1] || channel >= maps.count) return null;
  return { channel, y, x, px, py };
}

// A grid of feature maps: the server's atlas PNG drawn at a whole multiple of its size, so each pixel of a
// 12 x 12 map stays a sharp square (image-rendering: pixelated), about `tile` px a map. Hovering names the map,
// the pixel and its value (read back from its colour); clicking asks how that value was computed.
function mapsView(tile, onValue) {
  const img = el("img", { class: "maps", alt: "" });
  const note = el("span", { class: "maps-note" });
  const hover = el("span", { class: "maps-hover", "aria-live": "off" });
  const legend = legendView();
  const node = el("span", { class: "maps-box" }, img, legend.node, note, hover);  // spans: a switch is a <button>
  let scale = 1, current = null, stage = null, pixels = null;
  img.addEventListener("load", () => {
    img.width = img.naturalWidth * scale; img.height = img.naturalHeight * scale;
    pixels = null;
  });
  const read = () => {
    if (pixels || !img.naturalWidth) return pixels;
    const canvas = document.createElement("canvas");
    canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
    const ctx = canvas.getContext("2d");
    ctx.drawImage(img, 0, 0);
    pixels = ctx.getImageData(0, 0, canvas.width, canvas.height);
    return pixels;
  };
  img.addEventListener("mousemove", ev => {
    const at = current && pointed(img, current, ev);
    if (!at) { hover.textContent = ""; return; }
    const data = read(), i = 4 * (at.py * data.width + at.px);
    const v = valueOfColour([data.data[i], data.data[i + 1], data.data[i + 2]], current.limits[at.channel] || 0);
    hover.textContent = t("maps.hover", { map: at.channel + 1, row: at.y, col: at.x, value: num(v) });
  });
  img.addEventListener("mouseleave", () => { hover.textContent = ""; });
  img.addEventListener("click", ev => {
    const at = current && pointed(img, current, ev);
    if (!at || stage == null || !onValue) return;
    ev.stopPropagation();  // a map inside a switch button is not a press of the switch
    ev.preventDefault();
    onValue({ stage, channel: at.channel, y: at.y, x: at.x, anchor: node.closest(".layer") });
  });
  node.hidden = true;  // no image element shows before there is a picture in it
  return {
    node,
    set(maps, name, stageIndex) {
      current = maps; stage = stageIndex;
      legend.set(maps);
      if (!maps) { node.hidden = true; return; }
      node.hidden = false;
      const [h, w] = maps.size, [rows, cols] = maps.grid, gap = maps.gap ?? 0;
      scale = Math.max(1, Math.floor(tile / Math.max(h, w)));
      if (!img.getAttribute("src")) { img.width = (cols * (w + gap) - gap) * scale; img.height = (rows * (h + gap) - gap) * scale; }
      if (img.getAttribute("src") !== maps.png) img.src = maps.png;
      img.alt = t("maps.alt", { name });
      img.dataset.stage = String(stageIndex);
      img.title = onValue ? t("maps.click") : "";
      note.textContent = maps.count < maps.channels
        ? t("maps.some", { count: maps.count, channels: maps.channels })
        : t("maps.all", { count: maps.count });
    },
  };
}

// ---- stages ------------------------------------------------------------------------------------------------

function opName(op, settings) {
  const k = settings?.kernel;
  const base = word(`op.${op}`, op);
  if (k && (op === "conv" || op === "maxpool" || op === "avgpool")) {
    const extra = [];
    if (settings.stride && settings.stride[0] !== (op === "conv" ? 1 : k[0])) extra.push(t("op.stride", { n: settings.stride[0] }));
    if (settings.padding && settings.padding[0]) extra.push(t("op.padding", { n: settings.padding[0] }));
    return `${k[0]}×${k[1]} ${base}${extra.length ? ` (${extra.join(", ")})` : ""}`;
  }
  return base;
}

// A chain of stages inside a branch or path, one line each: what it does, its shape, its arithmetic.
function chainView(stages, identityShape) {
  const list = el("ol", { class: "chain" });
  if (!stages.length) {
    list.append(el("li", {}, el("span", { class: "what", text: t("chain.identity") }),
      el("span", { class: "out", text: shapeText(identityShape) })));
    return list;
  }
  for (const s of stages) {
    list.append(el("li", { "data-stage": String(s.stage), "data-op": s.op },
      el("span", { class: "what", text: opName(s.op, s.settings) }),
      el("span", { class: "out", text: shapeText(s.shape) }),
      el("span", { class: "rule", text: s.op === "conv" || s.op === "maxpool" || s.op === "avgpool" ? s.arithmetic.split(";")[0] : "" })));
  }
  return list;
}

// A switchable part (an Inception branch, a residual block's skip or conv path): a toggle button whose
// aria-pressed says "switched off". Pressing it asks for the explanation without that part. A part that is off
// shows what it does but no maps and no share: it gives nothing.
function partView(title, toggleLabel, partName, onToggle, onValue, stages, identityShape) {
  const state = el("span", { class: "state" });
  const shape = el("span", { class: "shape" });
  const meterFill = el("span");
  const meter = el("span", { class: "meter", "aria-hidden": "true" }, meterFill);
  const figure = el("span", { class: "figure" });
  const maps = mapsView(32, onValue);
  const head = el("span", { class: "part-head" }, el("span", { text: title }), state);
  const inner = el(partName ? "button" : "div", { class: "part-switch" }, head, shape, chainView(stages, identityShape), meter, figure);
  const node = el("div", { class: partName ? "part" : "part sum" }, inner, maps.node);
  if (partName) {
    inner.type = "button";
    inner.dataset.part = partName;
    node.dataset.partBox = partName;
    inner.setAttribute("aria-pressed", "false");
    inner.addEventListener("click", () => onToggle(partName));
  }
  return {
    node,
    set({ shapeOf, fraction, figureText, silenced, mapsOf, name, stage }) {
      shape.textContent = shapeText(shapeOf);
      meter.hidden = Boolean(silenced);
      meterFill.style.width = `${Math.max(0, Math.min(1, fraction || 0)) * 100}%`;
      figure.textContent = silenced ? t("part.gives.nothing") : figureText;
      maps.set(silenced ? null : mapsOf, name, stage);
      node.classList.toggle("off", Boolean(silenced));
      if (partName) {
        inner.setAttribute("aria-pressed", String(Boolean(silenced)));
        state.textContent = silenced ? t("part.off") : t("part.on");
        inner.setAttribute("aria-label", `${toggleLabel}. ${silenced ? t("part.gives.nothing") : figureText}`);
      }
    },
  };
}

function kindText(layer) {
  if (layer.kind === "inception" || layer.kind === "residual") return word(`kind.${layer.title || layer.kind}`, layer.kind);
  return opName(layer.op, layer.settings);
}

function layerCard(layer, index, onToggle, onValue) {
  const shapeNode = el("span", { class: "shape" });
  const head = el("div", { class: "layer-head" },
    el("span", { class: "name", text: layer.name }),
    el("span", { class: "kind", text: kindText(layer) }),
    shapeNode);
  const rule = el("div", { class: "rule" });
  const card = el("article", { class: `layer ${layer.kind}`, "data-layer": layer.name, "data-stage": String(layer.stage),
                               "aria-label": `${layer.name}: ${kindText(layer)}` }, head, rule);
  const updates = [e => {
    const l = e.layers[index];
    shapeNode.textContent = l.in_shape?.length ? `${shapeText(l.in_shape)} → ${shapeText(l.shape)}` : shapeText(l.shape);
    shapeNode.dataset.shape = shapeText(l.shape);
    rule.textContent = l.arithmetic ? ruleText(l) : "";
    rule.hidden = !l.arithmetic;
  }];

  if (layer.branches) {
    card.append(el("p", { class: "explain-line", text: t("explain.share") }));
    const row = el("div", { class: "parts branches" });
    layer.branches.forEach((branch, b) => {
      const view = partView(t("branch", { name: branch.name }), t("branch.toggle", { name: branch.name, block: layer.name }),
        branch.part, onToggle, onValue, branch.stages || [], layer.in_shape);
      row.append(view.node);
      updates.push(e => {
        const br = e.layers[index].branches[b];
        view.set({ shapeOf: br.shape, fraction: br.share, figureText: t("branch.share", { percent: percent(br.share || 0) }),
                   silenced: br.silenced, mapsOf: br.maps, name: `${layer.name}.${br.name}`, stage: br.stage });
      });
    });
    const join = mapsView(32, onValue);
    const joined = el("div", { class: "join" }, el("span", { class: "join-head", text: t("join.concat", { rule: (layer.join?.[0]?.arithmetic) || "" }) }), join.node);
    card.append(row, joined);
    updates.push(e => join.set(e.layers[index].maps, layer.name, e.layers[index].stage));
  } else if (layer.paths) {
    const formula = outputFormula(layer);
    const rectified = formula.startsWith("relu(");
    card.append(el("p", { class: "explain-line", text: t(rectified ? "explain.paths" : "explain.paths.plain", { formula }) }));
    const row = el("div", { class: "parts paths" });
    layer.paths.forEach((path, p) => {
      const title = path.name === "sum" ? t("path.sum", { formula }) : word(`path.${path.name}`, path.name);
      const toggle = path.part ? t(`path.toggle.${path.name}`, { block: layer.name }) : "";
      const view = partView(title, toggle, path.part, onToggle, onValue, path.stages || [], layer.in_shape);
      row.append(view.node);
      updates.push(e => {
        const paths = e.layers[index].paths;
        const biggest = Math.max(...paths.map(q => q.norm || 0)) || 1;
        const pa = paths[p];
        view.set({ shapeOf: e.layers[index].shape, fraction: (pa.norm || 0) / biggest, figureText: t("path.norm", { norm: normText(pa.norm) }),
                   silenced: pa.silenced, mapsOf: pa.maps, name: `${layer.name}.${pa.name}`, stage: pa.stage });
      });
    });
    card.append(row);
  } else if (layer.values) {
    card.append(logitsView(index, updates));
  } else if (layer.maps) {  // a vector with no values to show (the flatten) is its shape and arithmetic alone
    const maps = mapsView(48, onValue);
    card.append(maps.node);
    updates.push(e => maps.set(e.layers[index].maps, layer.name, e.layers[index].stage));
  }
  return { node: card, update: e => updates.forEach(u => u(e)) };
}

// What a residual block outputs, read off the stages that follow its sum: relu(F(x) + x) in the lecture's block,
// relu(BN(F(x) + x)) with batch norm after the addition, F(x) + x itself in a pre-activation unit.
function outputFormula(layer) {
  let formula = "F(x) + x";
  for (const stage of (layer.join || []).slice(1)) {
    if (stage.op === "relu") formula = `relu(${formula})`;
    else if (stage.op === "bn") formula = `BN(${formula})`;
  }
  return formula;
}

function ruleText(layer) {
  if (layer.op === "relu") return t("rule.relu");
  if (layer.op === "bn") return t("rule.bn");
  if (layer.op === "globalpool") return t("rule.globalpool", { rule: layer.arithmetic.split(" (")[0] });
  if (layer.op === "conv") {
    const [side, kernels] = layer.arithmetic.split("; ");
    return `${side}   ·   ${kernels ? t("rule.kernels", { n: layer.settings.out_channels, c: layer.settings.in_channels, k: `${layer.settings.kernel[0]}×${layer.settings.kernel[1]}` }) : ""}`;
  }
  return layer.arithmetic;
}

// The logits of the last layer, drawn around zero: a positive score rises from the middle line, a negative one
// hangs below it, so a large negative score cannot pass for a runner-up.
function logitsView(index, updates) {
  const bars = el("div", { class: "logits", role: "img", "aria-label": t("logits") });
  const box = el("div", {}, bars, el("div", { class: "maps-note", text: t("logits.note") }));
  updates.push(e => {
    const values = e.layers[index].values || [];
    const biggest = Math.max(...values.map(Math.abs)) || 1;
    bars.replaceChildren(...values.map((v, i) => {
      const bar = el("span", { class: v < 0 ? "bar neg" : "bar pos" });
      bar.style.height = `${Math.max(1, 50 * Math.abs(v) / biggest)}%`;
      const name = String(e.classes[i] ?? i);
      return el("span", { class: "col", title: `${name}: ${v.toFixed(2)}`, "data-value": String(v) },
        el("span", { class: "well" }, bar), el("span", { class: "lab", text: name }));
    }));
  });
  return box;
}

// A build is kept while the model, its stages and the language stay the same.
function signature(exp, language) {
  return JSON.stringify([language, exp.model, exp.layers.map(l => [l.name, l.stage, (l.branches || l.paths || []).map(p => p.name)])]);
}

/**
 * Show an explanation in `box`. `onToggle(part)` is called when a branch or path is pressed; `onValue({stage,
 * channel, y, x, anchor})` when a value of a map is clicked; `onScale(scope)` when the colour scale is changed.
 * Sets box.dataset.silenced (the parts off in what is shown) and box.dataset.layers (how many cards).
 */
export function showInside(box, exp, onToggle, language, { onValue = null, onScale = null } = {}) {
  if (Array.isArray(exp.colours) && exp.colours.length === 3 && exp.colours.join() !== COLOURS.join()) {
    COLOURS = exp.colours; LUT = null;
  }
  const sig = signature(exp, language);
  if (box.dataset.signature !== sig) {
    const seenImg = el("img", { alt: "" });
    const seen = el("figure", { class: "seen" }, seenImg, el("figcaption", { text: t("seen") }));
    const scale = el("select", { id: "scale", "aria-label": t("scale.label") },
      ...["stage", "map", "global"].map(s => new Option(t(`scale.${s}`), s)));
    scale.addEventListener("change", () => onScale?.(scale.value));
    const scaleNote = el("p", { class: "scale-note" });
    const tools = el("div", { class: "inside-tools" }, seen,
      el("div", {}, el("label", { class: "scale-pick" }, el("span", { text: t("scale.label") }), scale), scaleNote));
    const cards = exp.layers.map((layer, i) => layerCard(layer, i, onToggle, onValue));
    const focused = document.activeElement?.dataset?.part;
    box.replaceChildren(tools, ...cards.map(c => c.node));
    if (focused) box.querySelector(`[data-part="${CSS.escape(focused)}"]`)?.focus();
    box._update = e => {
      seenImg.src = e.input.png;
      seenImg.alt = t("seen.alt", { size: shapeText(e.input.shape) });
      scale.value = e.scale || "stage";
      scaleNote.replaceChildren(el("span", { class: "ramp", "aria-hidden": "true", style: `background: linear-gradient(to right, ${COLOURS.join(", ")})` }),
        ` ${t(`scale.note.${scale.value}`)}`);
      cards.forEach(c => c.update(e));
    };
    box.dataset.signature = sig;
    box.dataset.layers = String(cards.length);
  }
  box._update(exp);
  box.dataset.silenced = [...exp.silenced].sort().join(",");
  box.dataset.scale = exp.scale || "stage";
}

export function clearInside(box) {
  box.replaceChildren(el("p", { class: "empty", text: t("inside.empty") }));
  delete box.dataset.signature;
  delete box.dataset.silenced;
  delete box.dataset.layers;
}

// ---- one value's arithmetic --------------------------------------------------------------------------------

function grid(rows, limit, cls, picked = null) {
  const m = limit || Math.max(...rows.flat().filter(v => v != null).map(Math.abs), 0) || 1;
  const table = el("table", { class: `grid ${cls}` });
  rows.forEach((row, r) => table.append(el("tr", {}, ...row.map((v, c) => {
    const td = el("td", { text: num(v) });
    if (v == null) td.className = "pad";
    else {
      const colour = lut()[Math.max(0, Math.min(255, Math.round((v / m + 1) * 127.5)))];
      td.style.background = `rgb(${colour.map(Math.round).join(",")})`;
    }
    if (picked && picked[0] === r && picked[1] === c) td.classList.add("picked");
    return td;
  }))));
  return table;
}

const SHOWN_CHANNELS = 3;  // input channels drawn as window and kernel grids; the rest as their partial sums

function convStep(s) {
  const box = el("div", { class: "step conv", "data-op": "conv" });
  const cin = s.window.length, [kh, kw] = [s.kernel[0].length, s.kernel[0][0].length];
  box.append(el("h4", { text: t("value.conv.title", { name: s.name, k: `${kh}×${kw}`, c: cin }) }));
  box.append(el("p", { class: "how", text: kh * kw === 1 ? t("value.conv.mix", { c: cin }) : t("value.conv.window", { c: cin, k: `${kh}×${kw}`, y: s.origin[0], x: s.origin[1] }) }));
  const grids = el("div", { class: "grids" });
  for (let i = 0; i < Math.min(cin, SHOWN_CHANNELS); i++) {
    if (kh * kw === 1) break;
    grids.append(el("figure", { class: "pair" },
      grid(s.window[i], 0, "window"), el("span", { class: "times", text: "×" }), grid(s.kernel[i], 0, "kernel"),
      el("figcaption", { text: t("value.conv.channel", { i: i + 1, sum: num(s.by_channel[i]) }) })));
  }
  if (kh * kw === 1) {
    const rows = s.window.map((w, i) => [w[0][0], s.kernel[i][0][0], s.by_channel[i]]);
    const table = el("table", { class: "mix" }, el("tr", {}, ...["value.mix.channel", "value.mix.input", "value.mix.weight", "value.mix.product"].map(k => el("th", { text: t(k) }))));
    rows.forEach(([x, w, p], i) => table.append(el("tr", {}, el("td", { text: String(i + 1) }), el("td", { text: num(x) }), el("td", { text: num(w) }), el("td", { text: num(p) }))));
    grids.append(table);
  } else if (cin > SHOWN_CHANNELS) {
    grids.append(el("p", { class: "more", text: t("value.conv.more", { n: cin - SHOWN_CHANNELS, sums: s.by_channel.slice(SHOWN_CHANNELS).map(num).join(" + ") }) }));
  }
  box.append(grids);
  const eq = el("p", { class: "equation" });
  eq.textContent = t(s.bias == null ? "value.conv.sum.nobias" : "value.conv.sum",
    { n: cin * kh * kw, sum: s.sum.toFixed(5), bias: s.bias == null ? "" : s.bias.toFixed(5), value: s.computed.toFixed(5) });
  box.append(eq);
  box.dataset.computed = String(s.computed);
  box.dataset.value = String(s.value);
  box.append(el("p", { class: "cost", text: kh * kw === 1
    ? t("value.conv.cost1x1", { n: s.macs.value, n5: s.macs.value_5x5, layer: s.macs.layer.toLocaleString(), layer5: (s.macs.layer * 25).toLocaleString() })
    : t("value.conv.cost", { n: s.macs.value, layer: s.macs.layer.toLocaleString() }) }));
  return box;
}

function stepView(s, onSource) {
  if (s.op === "conv" && s.window) return convStep(s);
  const box = el("div", { class: `step ${s.op}`, "data-op": s.op, "data-value": String(s.value) });
  if (s.computed != null) box.dataset.computed = String(s.computed);
  const head = el("h4", { text: `${s.name}: ${word(`op.${s.op}`, s.op)}` });
  box.append(head);
  if ((s.op === "maxpool" || s.op === "avgpool") && s.window) {
    box.append(el("div", { class: "grids" }, grid(s.window, 0, "window", s.picked || null)));
    box.append(el("p", { class: "equation", text: t(`value.${s.op}`, { value: num(s.computed), y: s.at[1], x: s.at[2] }) }));
  } else if (s.op === "relu") {
    box.append(el("p", { class: "equation", text: t("value.relu", { input: s.input.toFixed(4), value: s.computed.toFixed(4) }) }));
  } else if (s.op === "bn") {
    box.append(el("p", { class: "equation", text: t("value.bn", { input: s.input.toFixed(4), mean: s.mean.toFixed(4), sd: Math.sqrt(s.var + s.eps).toFixed(4), gamma: s.gamma.toFixed(4), beta: s.beta.toFixed(4), value: s.computed.toFixed(4) }) }));
  } else if (s.op === "sum") {
    box.append(el("p", { class: "equation", text: t("value.sum", { conv: s.terms[0].toFixed(4), skip: s.terms[1].toFixed(4), value: s.computed.toFixed(4) }) }));
  } else if (s.op === "concat") {
    box.append(el("p", { class: "equation", text: t("value.concat", { c: s.at[0] + 1, branch: s.branch, i: s.channel + 1, value: s.computed.toFixed(4) }) }));
    const go = el("button", { type: "button", class: "source", text: t("value.concat.go", { branch: s.branch }) });
    go.addEventListener("click", () => onSource({ stage: s.source, channel: s.channel, y: s.at[1], x: s.at[2] }));
    box.append(go);
  } else if (s.op === "switched") {
    box.append(el("p", { class: "equation", text: t("value.switched", { value: s.value.toFixed(4) }) }));
  } else {
    box.append(el("p", { class: "equation", text: `= ${s.value.toFixed(4)}` }));
  }
  return box;
}

/**
 * Show how one value was computed (an /api/value answer) in the panel `panel`, placed after `anchor` (the clicked
 * card). `onSource(where)` asks for another value (a concatenation's source branch).
 */
export function showValue(panel, answer, anchor, onSource) {
  const close = el("button", { type: "button", class: "close", text: "×", "aria-label": t("value.close") });
  close.addEventListener("click", () => { panel.hidden = true; });
  panel.replaceChildren(
    el("div", { class: "value-head" },
      el("h3", { text: t("value.title", { name: answer.name, map: answer.at[0] + 1, y: answer.at[1], x: answer.at[2], value: answer.value.toFixed(5) }) }),
      close),
    ...answer.steps.map(s => stepView(s, onSource)));
  panel.dataset.stage = String(answer.stage);
  panel.dataset.value = String(answer.value);
  panel.hidden = false;
  if (anchor && anchor.parentNode && panel.previousElementSibling !== anchor) anchor.after(panel);
  panel.scrollIntoView({ block: "nearest", behavior: matchMedia("(prefers-reduced-motion: reduce)").matches ? "auto" : "smooth" });
}

/**
 * The probability bars: one per class. With parts switched off, a dashed ghost bar shows the probability with
 * every part on, and the change in percentage points is written beside it.
 */
export function showBars(list, classes, answer) {
  if (list.dataset.classes !== JSON.stringify(classes)) {
    list.replaceChildren(...classes.map((name, i) => el("li", { class: "bar", "data-class": String(i) },
      el("span", { class: "label", title: name, text: name }),  // text, not HTML: class names can come from a user's folders
      el("span", { class: "track", "aria-hidden": "true" }, el("span", { class: "ghost" }), el("span", { class: "fill" })),
      el("span", { class: "value", text: "-" }),
      el("span", { class: "delta", title: t("prob.delta") }))));
    list.dataset.classes = JSON.stringify(classes);
  }
  const probs = answer?.probabilities;
  const full = answer?.probabilities_full;
  const moved = Boolean(full && answer.silenced && answer.silenced.length);
  const best = probs ? topClass(answer) : -1;
  [...list.children].forEach((bar, i) => {
    const p = probs ? probs[i] : null;
    bar.classList.toggle("best", i === best);
    bar.querySelector(".fill").style.width = p == null ? "0" : `${100 * p}%`;
    bar.querySelector(".value").textContent = p == null ? "-" : percent(p);
    const ghost = bar.querySelector(".ghost");
    const delta = bar.querySelector(".delta");
    ghost.style.width = moved ? `${100 * full[i]}%` : "0";
    ghost.hidden = !moved;
    if (p == null) {
      delete bar.dataset.p;
      delta.textContent = "";
      bar.removeAttribute("aria-label");
      return;
    }
    bar.dataset.p = String(p);
    const change = moved ? 100 * (p - full[i]) : 0;
    const shown = Math.abs(change).toFixed(1);
    delta.textContent = !moved ? "" : shown === "0.0" ? "0.0" : `${change > 0 ? "+" : "−"}${shown}`;
    delta.className = `delta ${change > 0.05 ? "up" : change < -0.05 ? "down" : ""}`;
    bar.setAttribute("aria-label", moved
      ? t("prob.item.moved", { name: classes[i], percent: percent(p), before: percent(full[i]) })
      : t("prob.item", { name: classes[i], percent: percent(p) }));
  });
}
