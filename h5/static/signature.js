// @ts-check
// Handwriting on the customer's phone: a signature pad and the hand-copy grid, one big
// box per character with faint 田字格 guide lines. Both record the strokes (points in CSS px
// with the milliseconds since the first touch) that the server checks and reads; the page
// never sends the text that was to be copied. Pointer events: finger, stylus or mouse.

const INK = "#111";

/** @typedef {[x: number, y: number, ms: number]} Point */
/** @typedef {(ctx: CanvasRenderingContext2D, w: number, h: number) => void} Guides */

// Records strokes drawn on one canvas (CSS px coordinates) and draws them.
class Ink {
  /**
   * @param {HTMLCanvasElement} canvas
   * @param {Clock} clock
   * @param {Guides | null} [guides]
   */
  constructor(canvas, clock, guides = null) {
    this.canvas = canvas;
    this.clock = clock;
    this.guides = guides;
    /** @type {Point[][]} */
    this.strokes = [];
    this.ctx = /** @type {CanvasRenderingContext2D} */ (canvas.getContext("2d"));
    /** @type {(() => void) | null} */
    this.onchange = null;
    /** @type {Point[] | null} */
    let current = null;
    /** @param {PointerEvent} e @returns {Point} */
    const point = (e) => {
      const r = canvas.getBoundingClientRect();
      return [Math.round((e.clientX - r.left) * 10) / 10, Math.round((e.clientY - r.top) * 10) / 10,
        Math.max(0, Math.round(clock.now()))];
    };
    canvas.addEventListener("pointerdown", (e) => {
      e.preventDefault();
      canvas.setPointerCapture(e.pointerId);
      current = [point(e)];
      this.strokes.push(current);
      this.onchange && this.onchange();
      this.draw();
    });
    canvas.addEventListener("pointermove", (e) => {
      if (!current) return;
      const p = point(e);
      const last = current[current.length - 1];
      if (Math.hypot(p[0] - last[0], p[1] - last[1]) < 1 || current.length >= 1900) return;
      p[2] = Math.max(p[2], last[2]);
      current.push(p);
      this.draw();
    });
    const stop = () => { current = null; };
    canvas.addEventListener("pointerup", stop);
    canvas.addEventListener("pointercancel", stop);
  }

  get width() { return this.canvas.getBoundingClientRect().width; }
  get height() { return this.canvas.getBoundingClientRect().height; }

  resize() {
    const ratio = window.devicePixelRatio || 1;
    const r = this.canvas.getBoundingClientRect();
    this.canvas.width = Math.max(1, Math.round(r.width * ratio));
    this.canvas.height = Math.max(1, Math.round(r.height * ratio));
    this.draw();
  }

  clear() { this.strokes = []; this.draw(); this.onchange && this.onchange(); }

  get empty() { return this.strokes.length === 0; }

  /**
   * @param {CanvasRenderingContext2D} [ctx]
   * @param {number} [scale]
   * @param {number} [ox]
   * @param {number} [oy]
   */
  draw(ctx = this.ctx, scale = this.canvas.width / Math.max(1, this.width), ox = 0, oy = 0) {
    if (ctx === this.ctx) {
      ctx.setTransform(1, 0, 0, 1, 0, 0);
      ctx.fillStyle = "#fff";
      ctx.fillRect(0, 0, this.canvas.width, this.canvas.height);
    }
    ctx.save();
    ctx.translate(ox, oy);
    ctx.scale(scale, scale);
    if (this.guides) this.guides(ctx, this.width, this.height);
    ctx.strokeStyle = INK; ctx.fillStyle = INK;
    ctx.lineWidth = Math.max(3, this.width / 22); ctx.lineCap = "round"; ctx.lineJoin = "round";
    for (const s of this.strokes) {
      ctx.beginPath();
      ctx.moveTo(s[0][0], s[0][1]);
      if (s.length === 1) ctx.lineTo(s[0][0] + 0.1, s[0][1]);
      for (const p of s.slice(1)) ctx.lineTo(p[0], p[1]);
      ctx.stroke();
    }
    ctx.restore();
  }
}

// The milliseconds since the first touch of one piece of writing.
class Clock {
  constructor() { /** @type {number | null} */ this.start = null; }
  now() { if (this.start === null) this.start = performance.now(); return performance.now() - this.start; }
  reset() { this.start = null; }
}

export class SignaturePad {
  /** @param {HTMLCanvasElement} canvas */
  constructor(canvas) {
    this.clock = new Clock();
    this.ink = new Ink(canvas, this.clock);
    this.canvas = canvas;
    this.resize();
  }

  resize() { this.ink.resize(); }
  clear() { this.ink.clear(); this.clock.reset(); }
  get empty() { return this.ink.empty; }

  strokes() {
    return { kind: "pad", width: Math.round(this.ink.width), height: Math.round(this.ink.height),
      strokes: this.ink.strokes };
  }
}

// Faint 田字格 lines: a frame, the middle lines dashed.
/** @type {Guides} */
function tianGuides(ctx, w, h) {
  ctx.save();
  ctx.strokeStyle = "#d9a9a4"; ctx.lineWidth = 1.5;
  ctx.strokeRect(1, 1, w - 2, h - 2);
  ctx.setLineDash([5, 5]);
  ctx.beginPath();
  ctx.moveTo(w / 2, 4); ctx.lineTo(w / 2, h - 4);
  ctx.moveTo(4, h / 2); ctx.lineTo(w - 4, h / 2);
  ctx.stroke();
  ctx.restore();
}

/** @param {string} text @returns {string[]} the characters to write (CJK ideographs) */
export function writable(text) {
  return [...text].filter((c) => c >= "\u4e00" && c <= "\u9fff");
}

// The hand-copy: one box per character to copy, numbered, in rows that fit the phone.
export class CopyGrid {
  /** @param {HTMLElement} container */
  constructor(container) {
    this.container = container;
    this.clock = new Clock();
    /** @type {{ char: string, cell: HTMLElement, ink: Ink }[]} */
    this.boxes = [];
    /** @type {(() => void) | null} */
    this.onchange = null;
    /** @type {string | undefined} */
    this.text = undefined;
  }

  /** @param {string} text */
  build(text) {
    const chars = writable(text);
    this.text = text;
    this.clock.reset();
    this.container.replaceChildren();
    this.boxes = chars.map((char, i) => {
      const cell = document.createElement("div");
      cell.className = "copy-cell";
      const label = document.createElement("span");
      label.className = "copy-label";
      label.textContent = `${i + 1} ${char}`;
      const canvas = document.createElement("canvas");
      canvas.className = "copy-box";
      canvas.setAttribute("aria-label", `第 ${i + 1} 个字格：请写“${char}”`);
      cell.append(label, canvas);
      this.container.append(cell);
      const ink = new Ink(canvas, this.clock, tianGuides);
      ink.onchange = () => { cell.classList.remove("bad"); this.onchange && this.onchange(); };
      return { char, cell, ink };
    });
    this.resize();
  }

  resize() { for (const b of this.boxes) b.ink.resize(); }

  clear() { for (const b of this.boxes) { b.ink.strokes = []; b.ink.draw(); b.cell.classList.remove("bad"); } this.clock.reset(); }

  undoLast() {
    const last = [...this.boxes].reverse().find((b) => !b.ink.empty);
    if (last) last.ink.clear();
  }

  /**
   * The boxes the server named (1-based) are cleared and marked for rewriting.
   * @param {number[]} numbers
   */
  mark(numbers) {
    for (const n of numbers) {
      const box = this.boxes[n - 1];
      if (!box) continue;
      box.ink.strokes = []; box.ink.draw(); box.cell.classList.add("bad");
    }
    const first = this.boxes[numbers[0] - 1];
    if (first) first.cell.scrollIntoView({ block: "center" });
  }

  get filled() { return this.boxes.filter((b) => !b.ink.empty).length; }
  get empty() { return this.filled === 0; }
  get complete() { return this.boxes.length > 0 && this.filled === this.boxes.length; }

  strokes() {
    const size = this.boxes.length ? this.boxes[0].ink.width : 0;
    return { kind: "grid", box_size: Math.round(size * 10) / 10,
      boxes: this.boxes.map((b) => b.ink.strokes) };
  }

  // The boxes drawn ten to a line (the sealed picture of the copy).
  canvas(scale = 1) {
    const size = this.boxes.length ? this.boxes[0].ink.width : 1;
    const per = 10;
    const out = document.createElement("canvas");
    out.width = Math.round(size * scale * Math.min(per, this.boxes.length));
    out.height = Math.round(size * scale * Math.ceil(this.boxes.length / per));
    const ctx = /** @type {CanvasRenderingContext2D} */ (out.getContext("2d"));
    ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, out.width, out.height);
    this.boxes.forEach((b, i) => {
      b.ink.draw(ctx, scale, (i % per) * size * scale, Math.floor(i / per) * size * scale);
    });
    return out;
  }
}

// One PNG holding the given canvases stacked (the copy above the signature): the image sealed
// with the strokes.
/** @param {...HTMLCanvasElement} canvases */
export function combine(...canvases) {
  const out = document.createElement("canvas");
  out.width = Math.max(...canvases.map((c) => c.width));
  out.height = canvases.reduce((sum, c) => sum + c.height, 0);
  const ctx = /** @type {CanvasRenderingContext2D} */ (out.getContext("2d"));
  ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, out.width, out.height);
  let y = 0;
  for (const c of canvases) { ctx.drawImage(c, 0, y); y += c.height; }
  return out.toDataURL("image/png").split(",")[1];
}
