// The training panel: start a run with a time budget, follow it live over Server-Sent Events
// (/api/train/events), draw its curves, stop it keeping what was trained.

import { t, percent } from "./i18n.js";

const FOLLOWED = ["status", "started", "step", "epoch", "done", "error"];

// The curves of one run on a canvas: the loss every few steps (left axis), the validation and test accuracy
// after each epoch (right axis), against the step count.
class Chart {
  constructor(canvas) {
    this.canvas = canvas;
    this.reset();
    new ResizeObserver(() => this.draw()).observe(canvas);
  }

  reset() {
    this.losses = [];   // [step, loss]
    this.epochs = [];   // {step, val, test}
    this.totalSteps = 0;
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
    canvas.dataset.points = String(this.losses.length);
    canvas.dataset.epochs = String(this.epochs.length);
    if (!this.losses.length && !this.epochs.length) {
      ctx.fillStyle = "#57606a";
      ctx.textAlign = "center";
      ctx.fillText(t("chart.empty"), width / 2, height / 2);
      return;
    }
    const pad = { left: 48, right: 52, top: 30, bottom: 30 };
    const w = width - pad.left - pad.right, h = height - pad.top - pad.bottom;
    const lastStep = Math.max(1, this.totalSteps, ...this.losses.map(d => d[0]), ...this.epochs.map(d => d.step));
    const maxLoss = Math.max(0.1, ...this.losses.map(d => d[1])) * 1.05;
    const accs = this.epochs.flatMap(d => [d.val, d.test]).filter(v => v != null);
    // the accuracy axis starts just below the lowest accuracy seen, in steps of 5 points, so 98% and 99% differ
    const accLow = accs.length ? Math.max(0, Math.floor((Math.min(...accs) - 0.01) * 20) / 20) : 0.9;
    const x = s => pad.left + w * s / lastStep;
    const yLoss = v => pad.top + h * (1 - v / maxLoss);
    const yAcc = v => pad.top + h * (1 - (v - accLow) / (1 - accLow));

    ctx.strokeStyle = "#d0d7de";
    ctx.lineWidth = 1;
    ctx.fillStyle = "#57606a";
    for (let k = 0; k <= 4; k++) {
      const yy = pad.top + h * k / 4;
      ctx.beginPath(); ctx.moveTo(pad.left, yy); ctx.lineTo(pad.left + w, yy); ctx.stroke();
      ctx.textAlign = "right";
      ctx.fillText((maxLoss * (1 - k / 4)).toFixed(2), pad.left - 6, yy + 4);
      ctx.textAlign = "left";
      ctx.fillText(percent(1 - (1 - accLow) * k / 4, 0), pad.left + w + 6, yy + 4);
    }
    ctx.textAlign = "center";
    ctx.fillText(`${t("chart.steps")}: ${lastStep}`, pad.left + w / 2, height - 8);

    if (this.losses.length) {
      ctx.strokeStyle = "#3b6fc4";
      ctx.lineWidth = 2;
      ctx.beginPath();
      this.losses.forEach(([s, v], i) => (i ? ctx.lineTo(x(s), yLoss(v)) : ctx.moveTo(x(s), yLoss(v))));
      ctx.stroke();
    }
    for (const [key, color] of [["val", "#d9822b"], ["test", "#1a7f37"]]) {
      const points = this.epochs.filter(d => d[key] != null);
      ctx.strokeStyle = ctx.fillStyle = color;
      ctx.lineWidth = 2;
      ctx.beginPath();
      points.forEach((d, i) => (i ? ctx.lineTo(x(d.step), yAcc(d[key])) : ctx.moveTo(x(d.step), yAcc(d[key]))));
      ctx.stroke();
      for (const d of points) { ctx.beginPath(); ctx.arc(x(d.step), yAcc(d[key]), 3.5, 0, 2 * Math.PI); ctx.fill(); }
    }
    // legend
    let lx = pad.left;
    ctx.textAlign = "left";
    for (const [label, color] of [[t("chart.loss"), "#3b6fc4"], [t("chart.val"), "#d9822b"], [t("chart.test"), "#1a7f37"]]) {
      ctx.fillStyle = color;
      ctx.fillRect(lx, 10, 14, 4);
      ctx.fillStyle = "#1f2328";
      ctx.fillText(label, lx + 18, 16);
      lx += 26 + ctx.measureText(label).width;
    }
  }
}

export class TrainingPanel {
  /** @param {{modelTrained: (id: string) => Promise<string>}} on  called once a finished run is served: its label */
  constructor(on) {
    this.on = on;
    this.$ = id => document.getElementById(id);
    this.chart = new Chart(this.$("train-chart"));
    this.source = null;
    this.said = ["train.state.idle", {}, false];  // the status line, kept as a key so a language switch redraws it
    this.budget = { min: 15, max: 300 };
    const range = this.$("train-budget-range"), number = this.$("train-budget");
    range.addEventListener("input", () => { number.value = range.value; });
    number.addEventListener("input", () => { range.value = number.value; });
    this.$("train-start").addEventListener("click", () => this.start());
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
    this.chart.draw();
    this.count();
  }

  count() {
    this.$("train-points").textContent = t("train.points", { steps: this.chart.losses.length, epochs: this.chart.epochs.length });
  }

  async start() {
    const budget = Number(this.$("train-budget").value);
    const body = { model: this.$("train-model").value, budget };
    let res, answer;
    try {
      res = await fetch("/api/train", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
      answer = await res.json();
    } catch (err) {
      this.say("train.failed", { message: err.message }, true);
      return;
    }
    if (res.status === 409) {
      // another visitor's training runs (one at a time): say so, in the server's words, and watch that one
      this.note(answer.error || `HTTP ${res.status}`, true);
      this.follow();
      return;
    }
    if (!res.ok) {
      this.say("error", { message: answer.error || `HTTP ${res.status}` }, true);
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
      if (!res.ok) this.say("error", { message: answer.error || `HTTP ${res.status}` }, true);
      else this.say("train.state.stopping");
    } catch (err) {
      this.say("error", { message: err.message }, true);
    }
  }

  // The stream replays the job's events so far, then follows it; the server closes it after done or error, and
  // the page closes its side then too (an EventSource would otherwise reconnect and replay the job again).
  follow() {
    this.close();
    this.chart.reset();
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
    if (d.model) this.job.model = d.model;
    if (d.budget) this.job.budget = d.budget;
    if (d.state === "idle") { this.close(); this.say("train.state.idle"); return; }
    if (d.state === "starting") this.say("train.state.starting", { model: d.model });
    else if (d.state === "running") this.running(d.elapsed);
  }

  on_started(d) {
    this.chart.reset();
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
    this.say("train.failed", { message: d.message }, true);
  }
}
