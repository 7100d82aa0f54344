// The inside view: one card per layer or block of an /api/explain answer, and the probability bars.
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

/**
 * The most probable class of an answer, as the server sent it: /api/explain's `top` (a label), /api/predict's first
 * `top` entry; -1 for none.
 */
export function topClass(answer) {
  const top = answer?.top;
  if (typeof top === "number") return top;
  return Array.isArray(top) && top.length ? top[0].class : -1;
}

// A grid of feature maps: the server's atlas PNG drawn at a whole multiple of its size, so each pixel of a
// 12 x 12 map stays a sharp square (image-rendering: pixelated), about `tile` px a map.
function mapsView(tile) {
  const img = el("img", { class: "maps", alt: "" });
  const grid = el("span", { class: "atlas" }, img);  // its ::after draws thin lines between the maps
  const note = el("span", { class: "maps-note" });
  const node = el("span", { class: "maps-box" }, grid, note);  // spans: a switch is a <button>, which holds phrasing content
  let scale = 1;
  img.addEventListener("load", () => { img.width = img.naturalWidth * scale; img.height = img.naturalHeight * scale; });
  node.hidden = true;  // no image element shows before there is a picture in it
  return {
    node,
    set(maps, name) {
      if (!maps) { node.hidden = true; return; }
      node.hidden = false;
      const [h, w] = maps.size, [rows, cols] = maps.grid;
      scale = Math.max(1, Math.floor(tile / Math.max(h, w)));
      grid.style.setProperty("--rows", rows);
      grid.style.setProperty("--cols", cols);
      if (!img.getAttribute("src")) { img.width = cols * w * scale; img.height = rows * h * scale; }  // until it loads
      if (img.getAttribute("src") !== maps.png) img.src = maps.png;
      img.alt = t("maps.alt", { name });
      note.textContent = maps.count < maps.channels
        ? t("maps.some", { count: maps.count, channels: maps.channels })
        : t("maps.all", { count: maps.count });
    },
  };
}

// A switchable part (an Inception branch, a residual block's skip or conv path): a toggle button whose
// aria-pressed says "switched off". Pressing it asks for the explanation without that part.
function partView(title, toggleLabel, partName, onToggle, tile) {
  const state = el("span", { class: "state" });
  const shape = el("span", { class: "shape" });
  const meterFill = el("span");
  const figure = el("span", { class: "figure" });
  const maps = mapsView(tile);
  const head = el("span", { class: "part-head" }, el("span", { text: title }), state);
  const node = el(partName ? "button" : "div", { class: partName ? "part" : "part sum" },
    head, shape, el("span", { class: "meter", "aria-hidden": "true" }, meterFill), figure, maps.node);
  if (partName) {
    node.type = "button";
    node.dataset.part = partName;
    node.setAttribute("aria-pressed", "false");
    node.addEventListener("click", () => onToggle(partName));
  }
  return {
    node,
    set({ shapeOf, fraction, figureText, silenced, mapsOf, name }) {
      shape.textContent = shapeText(shapeOf);
      meterFill.style.width = `${Math.max(0, Math.min(1, fraction || 0)) * 100}%`;
      figure.textContent = figureText;
      maps.set(mapsOf, name);
      if (partName) {
        node.setAttribute("aria-pressed", String(Boolean(silenced)));
        state.textContent = silenced ? t("part.off") : t("part.on");
        // the name read out: what pressing does, then what it shows now
        node.setAttribute("aria-label", `${toggleLabel}. ${figureText}`);
      }
    },
  };
}

function layerCard(layer, index, onToggle) {
  const head = el("div", { class: "layer-head" },
    el("span", { class: "name", text: layer.name }),
    el("span", { class: "kind", text: t(`kind.${layer.kind}`) === `kind.${layer.kind}` ? t("kind.other") : t(`kind.${layer.kind}`) }),
    el("span", { class: "shape" }));
  const card = el("article", { class: `layer ${layer.kind}`, "data-layer": layer.name, "aria-label": `${layer.name}: ${t(`kind.${layer.kind}`)}` }, head);
  const shapeNode = head.lastChild;
  const updates = [e => { shapeNode.textContent = shapeText(e.layers[index].shape); }];

  if (layer.branches) {
    const row = el("div", { class: "parts branches" });
    layer.branches.forEach((branch, b) => {
      const view = partView(t("branch", { name: branch.name }), t("branch.toggle", { name: branch.name, block: layer.name }),
        branch.part, onToggle, 24);
      row.append(view.node);
      updates.push(e => {
        const br = e.layers[index].branches[b];
        view.set({ shapeOf: br.shape, fraction: br.share, figureText: t("branch.share", { percent: percent(br.share || 0) }),
                   silenced: br.silenced, mapsOf: br.maps, name: `${layer.name}.${br.name}` });
      });
    });
    card.append(row);
  } else if (layer.paths) {
    const row = el("div", { class: "parts paths" });
    layer.paths.forEach((path, p) => {
      const title = t(`path.${path.name}`) === `path.${path.name}` ? path.name : t(`path.${path.name}`);
      const toggle = path.part ? t(`path.toggle.${path.name}`, { block: layer.name }) : "";
      const view = partView(title, toggle, path.part, onToggle, 24);
      row.append(view.node);
      updates.push(e => {
        const paths = e.layers[index].paths;
        const biggest = Math.max(...paths.map(q => q.norm || 0)) || 1;
        const pa = paths[p];
        view.set({ shapeOf: e.layers[index].shape, fraction: (pa.norm || 0) / biggest, figureText: t("path.norm", { norm: normText(pa.norm) }),
                   silenced: pa.silenced, mapsOf: pa.maps, name: `${layer.name}.${pa.name}` });
      });
    });
    card.append(row);
  } else if (layer.values) {
    const bars = el("div", { class: "logits", role: "img", "aria-label": t("logits") });
    card.append(bars, el("div", { class: "maps-note", text: t("logits") }));
    updates.push(e => {
      const values = e.layers[index].values || [];
      const biggest = Math.max(...values.map(Math.abs)) || 1;
      bars.replaceChildren(...values.map((v, i) => {
        const bar = el("span", { class: v < 0 ? "bar neg" : "bar" });
        bar.style.height = `${Math.max(2, 100 * Math.abs(v) / biggest)}%`;
        const name = String(e.classes[i] ?? i);
        return el("span", { class: "col", title: `${name}: ${v.toFixed(2)}` },
          el("span", { class: "well" }, bar), el("span", { class: "lab", text: name }));
      }));
    });
  } else {
    const maps = mapsView(36);
    card.append(maps.node);
    updates.push(e => maps.set(e.layers[index].maps, layer.name));
  }
  return { node: card, update: e => updates.forEach(u => u(e)) };
}

// A build is kept while the model, its layers and the language stay the same.
function signature(exp, language) {
  return JSON.stringify([language, exp.model, exp.layers.map(l => [l.name, (l.branches || l.paths || []).map(p => p.name)])]);
}

/**
 * Show an explanation in `box`. `onToggle(part)` is called when a branch or path is pressed.
 * Sets box.dataset.silenced (the parts off in what is shown) and box.dataset.layers (how many cards).
 */
export function showInside(box, exp, onToggle, language) {
  const sig = signature(exp, language);
  if (box.dataset.signature !== sig) {
    const seenImg = el("img", { alt: "" });
    const seen = el("figure", { class: "seen" }, seenImg, el("figcaption", { text: t("seen") }));
    const cards = exp.layers.map((layer, i) => layerCard(layer, i, onToggle));
    const focused = document.activeElement?.dataset?.part;
    box.replaceChildren(seen, ...cards.map(c => c.node));
    if (focused) box.querySelector(`[data-part="${CSS.escape(focused)}"]`)?.focus();
    box._update = e => {
      seenImg.src = e.input.png;
      seenImg.alt = t("seen.alt", { size: shapeText(e.input.shape) });
      cards.forEach(c => c.update(e));
    };
    box.dataset.signature = sig;
    box.dataset.layers = String(cards.length);
  }
  box._update(exp);
  box.dataset.silenced = [...exp.silenced].sort().join(",");
}

export function clearInside(box) {
  box.replaceChildren(el("p", { class: "empty", text: t("inside.empty") }));
  delete box.dataset.signature;
  delete box.dataset.silenced;
  delete box.dataset.layers;
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
