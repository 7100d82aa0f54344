// The page: pick a served model, draw or upload, and see inside it; switch parts off; compare every model;
// train a new one. Talks only to the server that served it (/api/...).

import { Problem, applyLanguage, currentLanguage, otherLanguage, percent, setLanguage, t } from "./i18n.js";
import { Pad } from "./pad.js";
import { clearInside, showBars, showInside, showValue, topClass } from "./inside.js";
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
  scale: "stage",      // what one colour scale of the maps spans: "stage", "map" or "global"
  error: null,         // the Problem the status line shows, written again in a new language
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
  return askJSON(url, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
}

// The server's JSON answer, or a Problem: its error answer (a code the page words in its language), the server out of
// reach, or an answer that is not JSON.
async function askJSON(url, options = {}) {
  let res;
  try {
    res = await fetch(url, options);
  } catch (err) {
    throw Problem.thrown(err);
  }
  let answer = null;
  try { answer = await res.json(); } catch { /* not JSON: said below */ }
  if (!res.ok || answer === null) throw Problem.from(answer, res.status);
  return answer;
}

function say(text, error = false) {
  state.error = null;
  $("status").textContent = text;
  $("status").classList.toggle("error", error);
}

function sayError(err) {
  const problem = Problem.thrown(err);
  say(t("error", { message: problem }), true);
  state.error = problem;
}

// ---- models ------------------------------------------------------------------------------------------------

async function loadModels(select = null) {
  let info;
  try {
    info = await askJSON("/api/model");
  } catch (err) {
    sayError(err);
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
  noteNewer();
  hint();
  if (state.comparing) drawCompareCards();
  if (!pad.empty) { refresh(); compareAll(); }
}

// A newer finished run of the chosen model than the one served, which `cnnlab serve` passed over for the run with
// the best validation accuracy: said, so that a student who just trained one knows where it went.
function noteNewer() {
  const newer = state.model?.newer_run;
  $("model-note").hidden = !newer;
  if (!newer) return;
  const shown = v => (v == null ? "-" : percent(v, 2));
  $("model-note").textContent = t("model.newer", {
    run: newer.id, val: shown(newer.val_accuracy), when: localTime(newer.finished), mine: shown(state.model.val_accuracy),
  });
}

// Unix seconds as "2026-12-06 21:10", the server's labels' form, in the reader's time zone.
function localTime(seconds) {
  const d = new Date(seconds * 1000);
  const two = n => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())} ${two(d.getHours())}:${two(d.getMinutes())}`;
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
  const request = { image: pad.image(), model: state.model.id, silence: [...state.silence], scale: state.scale };
  try {
    const answer = await postJSON("/api/explain", request);
    if (generation === state.generation) show(answer);
  } catch (err) {
    if (generation === state.generation) sayError(err);
  } finally {
    state.inFlight = false;
    if (state.dirty) setTimeout(pump, MIN_GAP_MS);
    else delete document.body.dataset.busy;
  }
}

function show(answer) {
  state.answer = answer;
  const classes = answer.classes || state.model.classes;
  showInside($("inside"), answer, togglePart, currentLanguage(), { onValue: askValue, onScale: chooseScale });
  showBars($("bars"), classes, answer);
  const probs = answer.probabilities;
  const best = topClass(answer);
  const name = String(classes[best] ?? best);
  $("answer").textContent = name;
  $("confidence").textContent = t("sure", { percent: percent(probs[best]) })
    + (answer.silenced.length ? ` · ${t("off.count", { names: answer.silenced.join(", ") })}` : "");
  const smoothing = answer.label_smoothing || 0;
  $("confidence").title = smoothing > 0
    ? t("sure.smoothing", { ls: smoothing, most: percent(1 - smoothing + smoothing / classes.length) }) : "";
  $("confidence").dataset.smoothing = String(smoothing);
  if (smoothing > 0) $("confidence").textContent += ` · ${t("sure.cap", { ls: smoothing, most: percent(1 - smoothing + smoothing / classes.length) })}`;
  say(`${state.model.model} · ${t("ms", { ms: answer.milliseconds ?? "?" })}`);
  document.body.dataset.prediction = String(best);
  document.body.dataset.explained = String(Number(document.body.dataset.explained || 0) + 1);
  if (state.speak) {
    $("spoken").textContent = t("answer.live", { model: state.model.model, answer: name, percent: percent(probs[best]) });
    state.speak = false;
  }
  if (state.comparing) updateCompareCard(state.model.id, answer);
}

// ---- one value's arithmetic, and the colour scale --------------------------------------------------------

const valuePanel = Object.assign(document.createElement("section"), { className: "value-panel", id: "value", hidden: true });
valuePanel.setAttribute("aria-live", "polite");

// A value of a map was clicked: ask the server how it was computed for the picture and switches shown now.
async function askValue({ stage, channel, y, x, anchor }) {
  if (pad.empty || !state.model) return;
  const generation = state.generation;
  const anchorNode = anchor || valuePanel.previousElementSibling;
  try {
    const answer = await postJSON("/api/value", { image: pad.image(), model: state.model.id, silence: [...state.silence], stage, channel, y, x });
    if (generation === state.generation) showValue(valuePanel, answer, anchorNode, askValue);
  } catch (err) {
    if (generation === state.generation) sayError(err);
  }
}

function chooseScale(scale) {
  state.scale = scale;
  refresh();
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
      sayError(err);
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
    // the cards are below the pad and the bars, often below the fold: brought into view, or the click seems lost
    const still = matchMedia("(prefers-reduced-motion: reduce)").matches;
    $("compare-box").scrollIntoView({ behavior: still ? "auto" : "smooth", block: "nearest" });
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
    sayError(err);
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
  const error = state.error;
  applyLanguage();
  $("inside-title").textContent = state.model ? t("inside.title", { model: state.model.model }) : "";
  training.relabel(state.info);
  if (state.answer) show(state.answer);  // rebuilds the cards: their signature names the language
  else { clearInside($("inside")); hint(); }
  if (!state.info?.models?.length && state.info) {
    $("model").replaceChildren(new Option(t("model.none"), ""));
  }
  noteNewer();
  if (error) sayError(error);
}

applyLanguage();
hint();
training.relabel(null);
loadModels();
