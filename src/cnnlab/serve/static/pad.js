// The drawing pad: pointer events, so a mouse, a finger and a pen all draw; an uploaded image replaces the drawing.

import { Problem } from "./i18n.js";

const STROKE = 22;  // px on the 280 px pad: about MNIST's stroke width once the digit is scaled to its 20 px box

export class Pad {
  /**
   * @param {HTMLCanvasElement} canvas
   * @param {{changed: () => void, finished: () => void}} on  changed: while drawing (for live answers);
   *   finished: a stroke ended or an image was loaded
   */
  constructor(canvas, on) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.on = on;
    this.upload = null;   // the data URL of an uploaded image, sent as it is until the user draws on it
    this.inked = false;
    this.last = null;
    this.pointer = null;  // the pointer drawing now: a second finger does not draw
    this.clear();
    canvas.addEventListener("pointerdown", ev => this.down(ev));
    canvas.addEventListener("pointermove", ev => this.move(ev));
    canvas.addEventListener("pointerup", ev => this.up(ev));
    canvas.addEventListener("pointercancel", ev => this.up(ev));
  }

  clear() {
    this.ctx.fillStyle = "#fff";
    this.ctx.fillRect(0, 0, this.canvas.width, this.canvas.height);
    this.inked = false;
    this.upload = null;
  }

  get empty() {
    return !this.inked;
  }

  /** What the server reads: the uploaded file untouched (full resolution), otherwise the pad as PNG. */
  image() {
    return this.upload ?? this.canvas.toDataURL("image/png");
  }

  point(ev) {
    const r = this.canvas.getBoundingClientRect();
    return { x: (ev.clientX - r.left) * this.canvas.width / r.width, y: (ev.clientY - r.top) * this.canvas.height / r.height };
  }

  line(a, b) {
    const ctx = this.ctx;
    ctx.strokeStyle = "#000";
    ctx.lineWidth = STROKE;
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    ctx.beginPath();
    ctx.moveTo(a.x, a.y);
    ctx.lineTo(b.x, b.y);
    ctx.stroke();
    this.inked = true;
    this.upload = null;  // drawn over: the pad is the picture now
  }

  // a touch without a move is ink too (a zero-length line draws nothing)
  dot(p) {
    this.ctx.fillStyle = "#000";
    this.ctx.beginPath();
    this.ctx.arc(p.x, p.y, STROKE / 2, 0, 2 * Math.PI);
    this.ctx.fill();
    this.inked = true;
    this.upload = null;
  }

  down(ev) {
    if (this.pointer !== null || (ev.pointerType === "mouse" && ev.button !== 0)) return;
    ev.preventDefault();
    this.pointer = ev.pointerId;
    this.canvas.setPointerCapture(ev.pointerId);
    this.last = this.point(ev);
    this.dot(this.last);
    this.on.changed();
  }

  move(ev) {
    if (ev.pointerId !== this.pointer) return;
    // a fast pen or mouse delivers several positions per frame: draw them all, so curves stay round
    const events = ev.getCoalescedEvents ? ev.getCoalescedEvents() : [ev];
    for (const e of events.length ? events : [ev]) {
      const p = this.point(e);
      this.line(this.last, p);
      this.last = p;
    }
    this.on.changed();
  }

  up(ev) {
    if (ev.pointerId !== this.pointer) return;
    this.pointer = null;
    this.on.finished();
  }

  /** Show a user's image file on the pad (fitted, centred) and keep its bytes to send; a file that cannot be read
   *  at all is a Problem ("client.file"). */
  async load(file) {
    if (!file.size) throw new Problem("image.empty");  // the server's words for it; nothing to send
    const read = await new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(reader.result);
      reader.onerror = () => reject(new Problem("client.file", {}, String(reader.error?.message ?? "")));
      reader.readAsDataURL(file);
    });
    // The server reads a file by its bytes, whatever type the browser gave it (none, text/plain, a format it does not
    // know): sent as an image, so that the server says what it is (and, for a file that is no picture, that it is not).
    const url = read.replace(/^data:(?!image\/)[^;,]*/, "data:image/unknown");
    this.clear();
    const img = new Image();
    try {
      await new Promise((resolve, reject) => { img.onload = resolve; img.onerror = reject; img.src = url; });
      const { width, height } = this.canvas;
      const scale = Math.min(width / img.width, height / img.height);
      const w = img.width * scale, h = img.height * scale;
      this.ctx.drawImage(img, (width - w) / 2, (height - h) / 2, w, h);
    } catch {
      // a format the browser cannot show may still be one the server reads: send it, and let it say
    }
    this.inked = true;
    this.upload = url;
    this.on.finished();
  }
}
