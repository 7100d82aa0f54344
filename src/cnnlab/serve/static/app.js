// The page: pick a served model, draw or upload, and see inside it; switch parts off; compare every model;
// train a new one. Talks only to the server that served it (/api/...).

import { applyLanguage, currentLanguage, otherLanguage, percent, setLanguage, t } from "./i18n.js";
import { Pad } from "./pad.js";
import { clearInside, showBars, showInside, topClass } from "./inside.js";
import { TrainingPanel } from "./train.js";

const $ = id => document.getElementById(id);
const MIN_GAP_MS = 30;  // between two live requests while drawing: the answer keeps up, the server's cores stay shared

const state = {
  info: null,          // GET /api/model
  model: null,         // the chosen model's entry in info.models
  silence: new Set(),  // its parts switched off
  answer: null,        // the last /api/explain answer shown
  comparing: false,
  generation: 0,       // bumped by a clear or a model change: answers to older requests are dropped
  inFlight: false,
  dirty: false,        // the picture or the switches changed since the last request was sent
  speak: false,        // tell screen readers the next answer (a stroke ended, a switch was pressed)
};

const pad = new Pad($("pad"), {
  changed: () => { $("pad-hint").hidden = true; refresh(); },
  finished: () => { state.speak = true; refresh(); compareAll(); },
});

const training = new TrainingPanel({
  modelTrained: async id => {
    await loadModels(id);
    refresh();
    return state.model?.id === id ? state.model.model : id;
  },
});

async function postJSON(url, body) {
  const res = await fetch(url, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  let answer;
  try { answer = await res.json(); } catch { answer = {}; }
  if (!res.ok) throw new Error(answer.error || `HTTP ${res.status}`);  // the server's one line: shown as it is
  return answer;
}

function say(text, error = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", error);
}

// ---- models ------------------------------------------------------------------------------------------------

async function loadModels(select = null) {
  let info;
  try {
    const res = await fetch("/api/model");
    info = await res.json();
  } catch (err) {
    say(t("model.failed", { message: err.message }), true);
    return;
  }
  state.info = info;
  const models = info.models || [];
  const picker = $("model");
  picker.replaceChildren(...models.map(m => new Option(m.label || m.id, m.id)));
  const keep = state.model && models.some(m => m.id === state.model.id) ? state.model.id : null;
  const id = [select, keep, info.default, models[0]?.id].find(x => x && models.some(m => m.id === x));
  training.configure(info);
  for (const control of [picker, $("compare"), $("clear"), $("upload-button")]) control.disabled = !models.length;
  if (!models.length) {
    picker.append(new Option(t("model.none"), ""));
    chooseModel(null);
    showTab("train");  // nothing to explore yet: the page opens ready to train
    return;
  }
  picker.value = id;
  if (!state.model || state.model.id !== id) chooseModel(id);
  else if (state.comparing) { drawCompareCards(); compareAll(); }  // a new model joins the comparison
}

function chooseModel(id) {
  const models = state.info?.models || [];
  state.model = models.find(m => m.id === id) || null;
  state.silence.clear();
  state.answer = null;
  state.generation++;
  $("reset").disabled = true;
  clearInside($("inside"));
  showBars($("bars"), state.model?.classes || [], null);
  $("inside-title").textContent = state.model ? t("inside.title", { model: state.model.model }) : "";
  document.body.dataset.model = state.model?.id || "";
  hint();
  if (state.comparing) drawCompareCards();
  if (!pad.empty) { refresh(); compareAll(); }
}

function isDigits(classes) {
  return classes.length === 10 && classes.every((c, i) => String(c) === String(i));
}

function hint() {
  $("answer").textContent = "";
  $("confidence").textContent = pad.empty ? t(isDigits(state.model?.classes || []) ? "answer.none" : "answer.some") : "";
}

// ---- the live explanation --------------------------------------------------------------------------------

// One request at a time, and always for the latest picture: while one is out, changes only mark the picture
// dirty, and the next request leaves when the answer is in. So answers come as fast as the server gives them.
function refresh() {
  if (pad.empty || !state.model) return;
  state.dirty = true;
  pump();
}

async function pump() {
  if (state.inFlight || !state.dirty) return;
  state.dirty = false;
  state.inFlight = true;
  document.body.dataset.busy = "1";
  const generation = state.generation;
  const request = { image: pad.image(), model: state.model.id, silence: [...state.silence] };
  try {
    const answer = await postJSON("/api/explain", request);
    if (generation === state.generation) show(answer);
  } catch (err) {
    if (generation === state.generation) say(t("error", { message: err.message }), true);
  } finally {
    state.inFlight = false;
    if (state.dirty) setTimeout(pump, MIN_GAP_MS);
    else delete document.body.dataset.busy;
  }
}

function show(answer) {
  state.answer = answer;
  const classes = answer.classes || state.model.classes;
  showInside($("inside"), answer, togglePart, currentLanguage());
  showBars($("bars"), classes, answer);
  const probs = answer.probabilities;
  const best = topClass(answer);
  const name = String(classes[best] ?? best);
  $("answer").textContent = name;
  $("confidence").textContent = t("sure", { percent: percent(probs[best]) })
    + (answer.silenced.length ? ` · ${t("off.count", { names: answer.silenced.join(", ") })}` : "");
  say(`${state.model.model} · ${t("ms", { ms: answer.milliseconds ?? "?" })}`);
  document.body.dataset.prediction = String(best);
  document.body.dataset.explained = String(Number(document.body.dataset.explained || 0) + 1);
  if (state.speak) {
    $("spoken").textContent = t("answer.live", { model: state.model.model, answer: name, percent: percent(probs[best]) });
    state.speak = false;
  }
  if (state.comparing) updateCompareCard(state.model.id, answer);
}

function togglePart(part) {
  if (state.silence.has(part)) state.silence.delete(part);
  else state.silence.add(part);
  $("reset").disabled = state.silence.size === 0;
  state.speak = true;
  refresh();
}

// ---- every model side by side ----------------------------------------------------------------------------

function drawCompareCards() {
  const list = $("compare-list");
  list.replaceChildren(...(state.info?.models || []).map(m => {
    const card = document.createElement("div");
    card.className = "compare-card" + (m.id === state.model?.id ? " current" : "");
    card.dataset.model = m.id;
    card.innerHTML = '<span class="big" aria-hidden="true">·</span><span class="name"></span><span class="spark" aria-hidden="true"></span>';
    card.querySelector(".name").textContent = m.label || m.id;  // text, not HTML
    return card;
  }));
}

function updateCompareCard(id, answer) {
  const card = $("compare-list").querySelector(`[data-model="${CSS.escape(id)}"]`);
  if (!card) return;
  const probs = answer.probabilities;
  const best = topClass(answer);
  const classes = answer.classes || [];
  card.querySelector(".big").textContent = String(classes[best] ?? best);
  card.setAttribute("aria-label", `${card.querySelector(".name").textContent}: ${classes[best] ?? best}, ${percent(probs[best])}`);
  card.querySelector(".spark").replaceChildren(...probs.map((p, i) => {
    const bar = document.createElement("span");
    bar.style.height = `${Math.max(4, 100 * p)}%`;
    if (i === best) bar.className = "best";
    return bar;
  }));
}

// The other models answer once a stroke ends (not at every move: several models would crowd the server's cores).
async function compareAll() {
  if (!state.comparing || pad.empty) return;
  const generation = state.generation;
  const image = pad.image();
  await Promise.all((state.info?.models || []).filter(m => m.id !== state.model?.id).map(async m => {
    try {
      const answer = await postJSON("/api/predict", { image, model: m.id });
      if (generation === state.generation) updateCompareCard(m.id, answer);
    } catch (err) {
      say(t("error", { message: err.message }), true);
    }
  }));
}

// ---- tabs, buttons, language -----------------------------------------------------------------------------

function showTab(name) {
  for (const [tab, panel] of [["tab-explore", "explore"], ["tab-train", "train"]]) {
    const on = panel === name;
    $(tab).setAttribute("aria-selected", String(on));
    $(panel).hidden = !on;
  }
  if (name === "train") training.chart.draw();  // a hidden canvas had no size to draw at
}

$("tab-explore").addEventListener("click", () => showTab("explore"));
$("tab-train").addEventListener("click", () => showTab("train"));
// the arrow keys move between tabs, as in every tab list
document.querySelector('[role="tablist"]').addEventListener("keydown", ev => {
  if (ev.key !== "ArrowLeft" && ev.key !== "ArrowRight") return;
  const next = $("tab-explore").getAttribute("aria-selected") === "true" ? "train" : "explore";
  showTab(next);
  $(`tab-${next}`).focus();
});

$("model").addEventListener("change", ev => chooseModel(ev.target.value));

$("compare").addEventListener("click", () => {
  state.comparing = !state.comparing;
  $("compare").setAttribute("aria-pressed", String(state.comparing));
  $("compare-box").hidden = !state.comparing;
  if (state.comparing) {
    drawCompareCards();
    if (state.answer) updateCompareCard(state.model.id, state.answer);
    compareAll();
  }
});

$("clear").addEventListener("click", () => {
  pad.clear();
  state.generation++;
  state.answer = null;
  state.dirty = false;
  $("pad-hint").hidden = false;
  clearInside($("inside"));
  showBars($("bars"), state.model?.classes || [], null);
  hint();
  say("");
  $("spoken").textContent = "";
  delete document.body.dataset.prediction;
  if (state.comparing) drawCompareCards();
});

$("upload-button").addEventListener("click", () => $("upload").click());
$("upload").addEventListener("change", async ev => {
  const [file] = ev.target.files;
  ev.target.value = "";  // the same file chosen again is a change too
  if (!file) return;
  state.generation++;
  $("pad-hint").hidden = true;
  try {
    await pad.load(file);
  } catch (err) {
    say(t("error", { message: err.message }), true);
  }
});

$("reset").addEventListener("click", () => {
  state.silence.clear();
  $("reset").disabled = true;
  state.speak = true;
  refresh();
});

$("lang").addEventListener("click", () => {
  setLanguage(otherLanguage());
  relabel();
});

// Everything the scripts wrote in the old language, written again.
function relabel() {
  applyLanguage();
  $("inside-title").textContent = state.model ? t("inside.title", { model: state.model.model }) : "";
  training.relabel(state.info);
  if (state.answer) show(state.answer);  // rebuilds the cards: their signature names the language
  else { clearInside($("inside")); hint(); }
  if (!state.info?.models?.length && state.info) {
    $("model").replaceChildren(new Option(t("model.none"), ""));
  }
}

applyLanguage();
hint();
training.relabel(null);
loadModels();
