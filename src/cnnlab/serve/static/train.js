// The training panel: start a run with a time budget (of a registered model, or of a block designed in the
// designer, design.js), follow it live over Server-Sent Events (/api/train/events), draw its curves beside the
// earlier ones of this page, stop it keeping what was trained.

import { Problem, t, percent } from "./i18n.js";
import { Designer } from "./design.js";

const FOLLOWED = ["status", "started", "step", "epoch", "done", "error"];

// "Nice" ticks for an axis from `low` to `high`: about `count` steps of 1, 2 or 5 times a power of ten, from the
// last multiple of the step at or below `low` to the first at or above `high` (the axis's ends, returned too).
export function niceTicks(low, high, count = 5) {
  const raw = Math.max(high - low, 1e-9) / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map(m => m * power).find(s => s >= raw * (1 - 1e-9));
  const digits = Math.max(0, -Math.floor(Math.log10(step) + 1e-9));  // decimals the step needs
  const first = Math.floor(low / step + 1e-9), last = Math.ceil(high / step - 1e-9);
  const ticks = [];
  for (let i = first; i <= Math.max(last, first + 1); i++) ticks.push(Number((i * step).toFixed(digits)));
  return { ticks, step, digits, low: ticks[0], high: ticks[ticks.length - 1] };
}

const COLOURS = ["#3b6fc4", "#d9822b", "#1a7f37", "#8250df", "#cf222e", "#0a7ea4", "#9a6700"];

// The curves of this page's trainings on one canvas, each run in its colour (named in the legend below it): the loss
// every few steps (solid, left axis), the validation (dashed) and test accuracy (dots) after each epoch (right axis),
// against the step count. A new training adds its curves beside the earlier ones, so that a design is seen against
// the lecture's network trained before it.
class Chart {
  constructor(canvas, legend) {
    this.canvas = canvas;
    this.legend = legend;
    this.runs = [];
    this.begin();
    new ResizeObserver(() => this.draw()).observe(canvas);
  }

  // A new run's curves, beside the earlier ones (a run that drew nothing yet is taken over).
  begin() {
    if (!this.current || this.current.losses.length || this.current.epochs.length) {
      this.runs.push({ label: "", losses: [], epochs: [], totalSteps: 0, colour: COLOURS[this.runs.length % COLOURS.length] });
    }
    this.reset();
  }

  get current() { return this.runs[this.runs.length - 1]; }
  get losses() { return this.current.losses; }   // [step, loss]
  get epochs() { return this.current.epochs; }   // {step, val, test}
  get totalSteps() { return this.current.totalSteps; }
  set totalSteps(n) { this.current.totalSteps = n; }

  // The current run's curves start again (its events are replayed from the start).
  reset() {
    Object.assign(this.current, { losses: [], epochs: [], totalSteps: 0 });
    this.draw();
  }

  label(text) {
    this.current.label = text;
    this.draw();
  }

  draw() {
    const canvas = this.canvas;
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth || 600, height = canvas.clientHeight || 300;
    if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
      canvas.width = Math.round(width * ratio);
      canvas.height = Math.round(height * ratio);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    ctx.font = "12px system-ui, sans-serif";
    const drawn = this.runs.filter(r => r.losses.length || r.epochs.length);
    canvas.dataset.points = String(this.losses.length);
    canvas.dataset.epochs = String(this.epochs.length);
    canvas.dataset.curves = String(drawn.length);
    this.drawLegend(drawn);
    if (!drawn.length) {
      ctx.fillStyle = "#57606a";
      ctx.textAlign = "center";
      ctx.fillText(t("chart.empty"), width / 2, height / 2);
      return;
    }
    const pad = { left: 62, right: 66, top: 12, bottom: 46 };
    const w = width - pad.left - pad.right, h = height - pad.top - pad.bottom;
    const steps = niceTicks(0, Math.max(1, ...drawn.flatMap(r => [r.totalSteps, ...r.losses.map(d => d[0]), ...r.epochs.map(d => d.step)])));
    const loss = niceTicks(0, Math.max(0.1, ...drawn.flatMap(r => r.losses.map(d => d[1]))));
    const accs = drawn.flatMap(r => r.epochs.flatMap(d => [d.val, d.test])).filter(v => v != null);
    // the accuracy axis starts just below the lowest accuracy seen and ends at 100%, so 98% and 99% differ
    const acc = niceTicks(accs.length ? Math.max(0, Math.min(...accs) - 0.005) : 0.9, 1, 4);
    const x = s => pad.left + w * s / steps.high;
    const yLoss = v => pad.top + h * (1 - v / loss.high);
    const yAcc = v => pad.top + h * (1 - (v - acc.low) / (acc.high - acc.low));

    ctx.lineWidth = 1;
    ctx.strokeStyle = "#d0d7de";
    ctx.fillStyle = "#57606a";
    ctx.textAlign = "right";
    for (const v of loss.ticks) {  // the grid follows the loss axis; the accuracy axis has its own ticks
      ctx.beginPath(); ctx.moveTo(pad.left, yLoss(v)); ctx.lineTo(pad.left + w, yLoss(v)); ctx.stroke();
      ctx.fillText(v.toFixed(loss.digits), pad.left - 6, yLoss(v) + 4);
    }
    ctx.textAlign = "left";
    for (const v of acc.ticks) {
      ctx.beginPath(); ctx.moveTo(pad.left + w, yAcc(v)); ctx.lineTo(pad.left + w + 4, yAcc(v)); ctx.stroke();
      ctx.fillText(percent(v, Math.max(0, acc.digits - 2)), pad.left + w + 6, yAcc(v) + 4);
    }
    ctx.textAlign = "center";
    for (const s of steps.ticks) {
      ctx.beginPath(); ctx.moveTo(x(s), pad.top + h); ctx.lineTo(x(s), pad.top + h + 4); ctx.stroke();
      ctx.fillText(String(s), x(s), pad.top + h + 16);
    }
    ctx.strokeStyle = "#8c959f";
    ctx.strokeRect(pad.left, pad.top, w, h);
    ctx.fillStyle = "#1f2328";
    ctx.fillText(t("chart.steps"), pad.left + w / 2, height - 8);
    for (const [title, xx, turn] of [[t("chart.loss"), 14, -1], [t("chart.accuracy"), width - 14, 1]]) {
      ctx.save();
      ctx.translate(xx, pad.top + h / 2);
      ctx.rotate(turn * Math.PI / 2);
      ctx.fillText(title, 0, 0);
      ctx.restore();
    }

    for (const run of drawn) {
      ctx.strokeStyle = ctx.fillStyle = run.colour;
      ctx.lineWidth = 2;
      ctx.setLineDash([]);
      line(ctx, run.losses.map(([s, v]) => [x(s), yLoss(v)]));
      for (const [key, dash, filled] of [["val", [6, 4], false], ["test", [1.5, 3], true]]) {
        const points = run.epochs.filter(d => d[key] != null).map(d => [x(d.step), yAcc(d[key])]);
        ctx.setLineDash(dash);
        line(ctx, points);
        ctx.setLineDash([]);
        for (const [px, py] of points) {
          ctx.beginPath();
          ctx.arc(px, py, 3.5, 0, 2 * Math.PI);
          if (filled) ctx.fill();
          else { ctx.fillStyle = "#fff"; ctx.fill(); ctx.stroke(); ctx.fillStyle = run.colour; }
        }
      }
    }
  }

  // Each run's name in its colour, under the chart (text, so that it wraps and is read out).
  drawLegend(runs) {
    if (!this.legend) return;
    this.legend.replaceChildren(...runs.map(run => {
      const item = document.createElement("li");
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = run.colour;
      item.append(swatch, document.createTextNode(run.label || "…"));
      return item;
    }));
  }
}

function line(ctx, points) {
  ctx.beginPath();
  points.forEach(([px, py], i) => (i ? ctx.lineTo(px, py) : ctx.moveTo(px, py)));
  ctx.stroke();
}

export class TrainingPanel {
  /** @param {{modelTrained: (id: string) => Promise<string>}} on  called once a finished run is served: its label */
  constructor(on) {
    this.on = on;
    this.$ = id => document.getElementById(id);
    this.chart = new Chart(this.$("train-chart"), this.$("train-legend"));
    this.designer = new Designer(this.$("designer"), { train: () => this.start(this.designer.model) });
    this.source = null;
    this.said = ["train.state.idle", {}, false];  // the status line, kept as a key so a language switch redraws it
    this.budget = { min: 15, max: 300 };
    const range = this.$("train-budget-range"), number = this.$("train-budget");
    range.addEventListener("input", () => { number.value = range.value; });
    number.addEventListener("input", () => { range.value = number.value; });
    this.$("train-start").addEventListener("click", () => this.start(this.$("train-model").value));
    this.$("train-stop").addEventListener("click", () => this.stop());
  }

  /** Fill the form from /api/model; follow a training that is already under way (another visitor's). */
  configure(info) {
    const select = this.$("train-model");
    const before = select.value;
    select.replaceChildren(...(info.trainable || []).map(name => new Option(name, name)));
    if ((info.trainable || []).includes(before)) select.value = before;
    if (info.budget) {
      this.budget = info.budget;
      for (const id of ["train-budget", "train-budget-range"]) {
        this.$(id).min = info.budget.min;
        this.$(id).max = info.budget.max;
      }
    }
    const enabled = info.training ? info.training.enabled !== false : true;
    this.enabled = enabled;
    if (!enabled) this.note(t("train.disabled"));
    else if (!(info.models || []).length) this.note(t("train.none"));
    else this.note(null);
    const state = info.training?.state;
    if (enabled && (state === "starting" || state === "running") && !this.source) this.follow();
    this.buttons(Boolean(this.source));
  }

  // The line above the form: why there is nothing to explore yet, why training is off, why a start was refused.
  note(text, error = false) {
    const note = this.$("train-note");
    note.hidden = !text;
    note.textContent = text || "";
    note.classList.toggle("error", error);
  }

  buttons(running) {
    this.$("train-start").disabled = running || !this.enabled;
    this.$("train-stop").disabled = !running;
    this.$("train-model").disabled = running;
    this.designer.buttons(!running && this.enabled);
  }

  say(key, vars = {}, error = false) {
    this.said = [key, vars, error];
    const line = this.$("train-status");
    line.textContent = t(key, vars);
    line.classList.toggle("error", error);
  }

  // the texts in the new language; figures stay
  relabel(info) {
    this.say(...this.said);
    if (info) this.configure(info);
    this.designer.relabel();
    this.chart.draw();
    this.count();
  }

  count() {
    this.$("train-points").textContent = t("train.points", { steps: this.chart.losses.length, epochs: this.chart.epochs.length });
  }

  // Start a training of `model`, with the designer's block when `model` is the one designs are trained as.
  async start(model) {
    const budget = Number(this.$("train-budget").value);
    const body = { model, budget };
    if (model === this.designer.model) {
      body.block = this.designer.spec;
      this.$("train-model").value = model;
    }
    let res, answer;
    try {
      res = await fetch("/api/train", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
      answer = await res.json();
    } catch (err) {
      this.say("train.failed", { message: Problem.thrown(err) }, true);  // a Problem: reworded by a language switch
      return;
    }
    if (res.status === 409) {
      // another visitor's training runs (one at a time): say so, from the server's code, and watch that one
      this.note(String(Problem.from(answer, res.status)), true);
      this.follow();
      return;
    }
    if (!res.ok) {
      this.say("error", { message: Problem.from(answer, res.status) }, true);
      return;
    }
    this.note(null);
    this.follow();
  }

  async stop() {
    try {
      // JSON, as every order: the server reads no other kind, which another origin's page cannot send it unasked
      const res = await fetch("/api/train/stop", { method: "POST", headers: { "Content-Type": "application/json" }, body: "{}" });
      const answer = await res.json();
      if (!res.ok) this.say("error", { message: Problem.from(answer, res.status) }, true);
      else this.say("train.state.stopping");
    } catch (err) {
      this.say("error", { message: Problem.thrown(err) }, true);
    }
  }

  // The stream replays the job's events so far, then follows it; the server closes it after done or error, and
  // the page closes its side then too (an EventSource would otherwise reconnect and replay the job again).
  follow() {
    this.close();
    this.chart.begin();
    this.$("train-progress").value = 0;
    this.job = {};
    this.$("train").dataset.state = "running";
    this.buttons(true);
    const source = new EventSource("/api/train/events");
    this.source = source;
    for (const name of FOLLOWED) {
      source.addEventListener(name, ev => {
        let data;
        try { data = JSON.parse(ev.data); } catch { return; }
        this[`on_${name}`](data);
      });
    }
    source.onerror = () => {
      if (this.source !== source) return;
      this.close();
      this.say("train.lost", {}, true);
    };
  }

  close() {
    if (this.source) this.source.close();
    this.source = null;
    this.buttons(false);
  }

  on_status(d) {
    if (d.model && !this.job.model) this.chart.label(d.model);
    if (d.model) this.job.model = d.model;
    if (d.budget) this.job.budget = d.budget;
    if (d.state === "idle") { this.close(); this.say("train.state.idle"); return; }
    if (d.state === "starting") this.say("train.state.starting", { model: d.model });
    else if (d.state === "running") this.running(d.elapsed);
  }

  on_started(d) {
    this.chart.reset();
    this.chart.label(d.block ? `${this.job.model ?? ""} · ${d.block}` : this.job.model ?? "");
    this.chart.totalSteps = d.total_steps || 0;
    this.count();
    this.running(0);
  }

  running(elapsed) {
    this.say("train.state.running", { model: this.job.model ?? "", elapsed: Math.round(elapsed || 0), budget: this.job.budget ?? "?" });
  }

  on_step(d) {
    this.chart.totalSteps = d.total_steps || this.chart.totalSteps;
    this.chart.losses.push([d.step, d.loss]);
    this.chart.draw();
    this.count();
    // the plan's last step is not the end: the run is still evaluated, written and served
    if (d.total_steps) this.$("train-progress").value = Math.min(0.99, d.step / d.total_steps);
    if (this.said[0] !== "train.state.stopping") this.running(d.elapsed);
  }

  on_epoch(d) {
    this.chart.epochs.push({ step: d.steps, val: d.val_acc, test: d.test_acc });
    this.chart.draw();
    this.count();
    if (this.said[0] === "train.state.stopping") return;
    const show = v => (v == null ? "-" : percent(v, 2));
    this.say("train.epoch", { epoch: d.epoch, val: show(d.val_acc), test: show(d.test_acc) });
  }

  async on_done(d) {
    this.close();
    const label = await this.on.modelTrained(d.model);
    this.say(d.stopped ? "train.done.stopped" : "train.done", { model: label || d.model, acc: percent(d.test_accuracy ?? 0, 2) });
    this.$("train-progress").value = 1;  // last: a full bar means the new model is served, chosen and announced
    this.$("train").dataset.state = d.stopped ? "stopped" : "done";
  }

  on_error(d) {
    this.close();
    this.$("train").dataset.state = "failed";
    this.say("train.failed", { message: Problem.from(d) }, true);
  }
}
