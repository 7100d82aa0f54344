// The designer: a block of the student's own (an Inception block's branches and their widths, or a residual block's
// width with or without its skip), what the network built from it costs, asked of the server (/api/design) at every
// change and shown beside the lecture's own network, and trained as the model the server names for designs.
// A design travels as one spec string, the server's own format (models/designed.py): "inception:1x1=16,5x5=4>24",
// "residual:16,noskip".

import { Problem, currentLanguage, t } from "./i18n.js";

// The lecture's branches in concatenation order, each with the lecture's widths, which the form starts from. A branch
// with a reduction has a 1x1 convolution first, which a design may leave out; the double 3x3's two convolutions
// share one width here.
const BRANCHES = [
  { name: "1x1", width: 16 },
  { name: "5x5", reduce: 16, width: 24 },
  { name: "3x3dbl", reduce: 16, width: 24, double: true },
  { name: "pool", width: 24 },
];
const RESIDUAL = { width: 16, skip: true };  // the lecture's residual block (resnet: 16, then 32 channels)
const WIDTH = { min: 1, max: 64 };  // what the server accepts (models/designed.WIDTHS); it checks them itself
const MIN_GAP_MS = 40;  // between two requests while a number is being typed or spun

export class Designer {
  /** @param {HTMLElement} root  @param {{train: () => void}} on  called by "Train this design" */
  constructor(root, on) {
    this.root = root;
    this.on = on;
    this.model = null;     // the registered model a design is trained as, from the server's answer
    this.answer = null;    // the last /api/design answer shown
    this.problem = null;   // or the Problem shown instead
    this.inFlight = false;
    this.dirty = false;
    this.generation = 0;   // answers to requests older than the last change are dropped
    this.$ = id => root.querySelector(`#${id}`);
    this.build();
    this.ask();
  }

  // ---- the form ------------------------------------------------------------------------------------------------

  build() {
    const form = this.$("design-form");
    const kinds = document.createElement("div");
    kinds.className = "design-kinds";
    kinds.setAttribute("role", "radiogroup");
    kinds.setAttribute("data-i18n-label", "design.kind");
    for (const kind of ["inception", "residual"]) {
      const label = document.createElement("label");
      const radio = input("radio", `design-kind-${kind}`);
      radio.name = "design-kind";
      radio.value = kind;
      radio.checked = kind === "inception";
      label.append(radio, text("span", `design.kind.${kind}`));
      kinds.append(label);
    }

    const branches = document.createElement("table");
    branches.id = "design-inception";
    branches.className = "design-branches";
    const head = branches.createTHead().insertRow();
    for (const key of ["design.branch", "design.reduce", "design.width"]) head.append(text("th", key));
    const body = branches.createTBody();
    for (const b of BRANCHES) {
      const row = body.insertRow();
      row.dataset.branch = b.name;
      const use = input("checkbox", `design-use-${b.name}`);
      use.checked = true;
      const name = document.createElement("label");
      name.append(use, text("span", `design.branch.${b.name}`));
      row.insertCell().append(name);
      const reduce = row.insertCell();
      if (b.reduce) {
        const on = input("checkbox", `design-reduce-on-${b.name}`);
        on.checked = true;
        on.dataset.designLabel = "design.reduce.on";
        on.dataset.branch = b.name;
        reduce.append(on, number(`design-reduce-${b.name}`, b.reduce, "design.reduce.label", b.name));
      } else {
        reduce.append(text("span", "design.reduce.none"));
      }
      row.insertCell().append(number(`design-width-${b.name}`, b.width, "design.width.label", b.name));
    }

    const residual = document.createElement("div");
    residual.id = "design-residual";
    residual.className = "design-residual";
    residual.hidden = true;
    const width = document.createElement("label");
    width.append(text("span", "design.res.width"), number("design-res-width", RESIDUAL.width));
    const skip = document.createElement("label");
    const box = input("checkbox", "design-res-skip");
    box.checked = RESIDUAL.skip;
    skip.append(box, text("span", "design.res.skip"));
    residual.append(width, skip);

    form.replaceChildren(kinds, branches, residual);
    form.addEventListener("input", () => this.changed());
    form.addEventListener("change", () => this.changed());
    this.$("design-train").addEventListener("click", () => this.on.train());
    this.labels();
  }

  // The labels of the inputs that name their branch, in the current language.
  labels() {
    for (const el of this.root.querySelectorAll("[data-design-label]")) {
      el.setAttribute("aria-label", t(el.dataset.designLabel, { name: el.dataset.branch }));
    }
  }

  get kind() {
    return this.$("design-kind-residual").checked ? "residual" : "inception";
  }

  /** The design as the server reads it, from the form as it is (the server says what is wrong with it). */
  get spec() {
    const value = id => this.$(id).value.trim();
    if (this.kind === "residual") {
      return `residual:${value("design-res-width")},${this.$("design-res-skip").checked ? "skip" : "noskip"}`;
    }
    const used = BRANCHES.filter(b => this.$(`design-use-${b.name}`).checked).map(b => {
      const width = value(`design-width-${b.name}`);
      const widths = b.reduce && this.$(`design-reduce-on-${b.name}`).checked ? [value(`design-reduce-${b.name}`)] : [];
      widths.push(...(b.double ? [width, width] : [width]));
      return `${b.name}=${widths.join(">")}`;
    });
    return `inception:${used.join(",")}`;
  }

  changed() {
    const inception = this.kind === "inception";
    this.$("design-inception").hidden = !inception;
    this.$("design-residual").hidden = inception;
    for (const b of BRANCHES) {
      const use = this.$(`design-use-${b.name}`).checked;
      this.$(`design-width-${b.name}`).disabled = !use;
      if (b.reduce) {
        this.$(`design-reduce-on-${b.name}`).disabled = !use;
        this.$(`design-reduce-${b.name}`).disabled = !use || !this.$(`design-reduce-on-${b.name}`).checked;
      }
    }
    this.ask();
  }

  /** Whether "Train this design" may be pressed (no training runs, training is on, the design is valid). */
  buttons(free) {
    this.free = free;
    this.$("design-train").disabled = !free || !this.answer || Boolean(this.problem) || !this.model;
  }

  // ---- the cost, asked at every change ---------------------------------------------------------------------------

  // One request at a time, always for the latest form: while one is out, a change only marks the form dirty.
  ask() {
    this.generation++;
    this.dirty = true;
    this.$("design-spec").textContent = this.spec;
    this.pump();
  }

  async pump() {
    if (this.inFlight || !this.dirty) return;
    this.dirty = false;
    this.inFlight = true;
    this.root.dataset.busy = "1";
    const generation = this.generation;
    try {
      const res = await fetch("/api/design", { method: "POST", headers: { "Content-Type": "application/json" },
                                               body: JSON.stringify({ design: this.spec }) });
      let answer = null;
      try { answer = await res.json(); } catch { /* not JSON: a Problem below */ }
      if (generation === this.generation) {
        if (res.ok && answer) this.show(answer);
        else this.fail(Problem.from(answer, res.status));
      }
    } catch (err) {
      if (generation === this.generation) this.fail(Problem.thrown(err));
    } finally {
      this.inFlight = false;
      if (this.dirty) setTimeout(() => this.pump(), MIN_GAP_MS);
      else delete this.root.dataset.busy;
    }
  }

  show(answer) {
    this.answer = answer;
    this.problem = null;
    this.model = answer.model;
    this.root.dataset.spec = answer.design;
    this.root.dataset.state = "ok";
    this.$("design-error").hidden = true;
    this.draw();
    this.buttons(this.free);
  }

  fail(problem) {
    this.problem = problem;
    this.root.dataset.state = "error";
    const line = this.$("design-error");
    line.hidden = false;
    line.textContent = String(problem);  // in the current language, from the server's code
    this.draw();
    this.buttons(this.free);
  }

  // The figures: the whole network's, then each branch's (both blocks together) or each block's, beside the lecture's.
  draw() {
    const a = this.answer;
    const cost = this.$("design-cost");
    cost.classList.toggle("stale", Boolean(this.problem));
    if (!a) return;
    const lecture = a.lecture;
    this.$("design-yours").textContent = t("design.cost.yours");
    this.$("design-lecture").textContent = t("design.cost.lecture", { model: lecture.model });
    for (const [id, value] of [["design-params", a.parameters], ["design-macs", a.macs],
                               ["design-lecture-params", lecture.parameters], ["design-lecture-macs", lecture.macs]]) {
      this.$(id).textContent = figure(value);
      this.$(id).dataset.value = String(value);
    }
    this.$("design-ratio").textContent = t("design.cost.ratio", {
      params: ratio(a.parameters, lecture.parameters), macs: ratio(a.macs, lecture.macs),
    });

    const branched = a.kind === "inception";
    this.$("design-parts-title").textContent = t(branched ? "design.parts.branches" : "design.parts.blocks");
    const rows = branched ? byBranch(a.per_branch, lecture.per_branch) : byBlock(a.per_block, lecture.per_block);
    const most = Math.max(1, ...rows.flatMap(r => [r.yours?.macs ?? 0, r.lecture?.macs ?? 0]));
    const body = this.$("design-parts").tBodies[0];
    body.replaceChildren(...rows.map(r => {
      const row = document.createElement("tr");
      row.dataset.part = r.name;
      const name = document.createElement("th");
      name.scope = "row";
      name.textContent = branched ? r.name : t("design.block", { n: r.name });
      row.append(name);
      for (const side of [r.yours, r.lecture]) {
        const cell = row.insertCell();
        cell.className = "num";
        cell.textContent = side ? figure(side.macs) : "–";
        if (side) cell.dataset.value = String(side.macs);
      }
      const bars = row.insertCell();
      bars.className = "bars-cell";
      bars.setAttribute("aria-hidden", "true");
      for (const [side, kind] of [[r.yours, "yours"], [r.lecture, "lecture"]]) {
        const bar = document.createElement("span");
        bar.className = `cost-bar ${kind}`;
        bar.style.width = `${100 * (side?.macs ?? 0) / most}%`;
        bars.append(bar);
      }
      return row;
    }));
  }

  // The texts in the new language; figures stay.
  relabel() {
    this.labels();
    this.draw();
    if (this.problem) this.$("design-error").textContent = String(this.problem);
  }
}

// ---- small helpers -------------------------------------------------------------------------------------------------

function input(type, id) {
  const el = document.createElement("input");
  el.type = type;
  el.id = id;
  return el;
}

function number(id, value, label = null, branch = null) {
  const el = input("number", id);
  Object.assign(el, { min: WIDTH.min, max: WIDTH.max, step: 1, value });
  el.inputMode = "numeric";
  if (label) {  // a label naming the branch: not data-i18n-label, which applyLanguage would write without the name
    el.dataset.designLabel = label;
    el.dataset.branch = branch;
  }
  return el;
}

// An element whose text is a key of the string tables (written again by applyLanguage on a language switch).
function text(tag, key) {
  const el = document.createElement(tag);
  el.dataset.i18n = key;
  el.textContent = t(key);
  return el;
}

function figure(n) {
  return Number(n).toLocaleString(currentLanguage() === "zh" ? "zh-CN" : "en-US");
}

function ratio(mine, theirs) {
  return theirs ? `${(mine / theirs).toFixed(2)}×` : "–";
}

// Each branch's cost summed over the blocks it is in (incep1 and incep2), yours beside the lecture's, in branch order.
function byBranch(yours, lecture) {
  const sum = rows => {
    const out = {};
    for (const r of rows) {
      const s = (out[r.branch] ??= { macs: 0, parameters: 0 });
      s.macs += r.macs;
      s.parameters += r.parameters;
    }
    return out;
  };
  const mine = sum(yours), theirs = sum(lecture);
  return BRANCHES.filter(b => mine[b.name] || theirs[b.name])
    .map(b => ({ name: b.name, yours: mine[b.name], lecture: theirs[b.name] }));
}

// Each block's cost, the first block beside the lecture's first.
function byBlock(yours, lecture) {
  return Array.from({ length: Math.max(yours.length, lecture.length) }, (_, i) => ({
    name: String(i + 1), yours: yours[i], lecture: lecture[i],
  }));
}
