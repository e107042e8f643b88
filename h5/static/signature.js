// A handwriting pad on a canvas (pointer events: finger, stylus or mouse).

export class SignaturePad {
  constructor(canvas) {
    this.canvas = canvas;
    this.strokes = 0;
    this.ctx = canvas.getContext("2d");
    this.resize();
    let drawing = false;
    const point = (e) => {
      const r = canvas.getBoundingClientRect();
      return [(e.clientX - r.left) * (canvas.width / r.width),
              (e.clientY - r.top) * (canvas.height / r.height)];
    };
    canvas.addEventListener("pointerdown", (e) => {
      drawing = true; canvas.setPointerCapture(e.pointerId);
      const [x, y] = point(e); this.ctx.beginPath(); this.ctx.moveTo(x, y); this.strokes += 1;
    });
    canvas.addEventListener("pointermove", (e) => {
      if (!drawing) return;
      const [x, y] = point(e); this.ctx.lineTo(x, y); this.ctx.stroke();
    });
    const stop = () => { drawing = false; };
    canvas.addEventListener("pointerup", stop);
    canvas.addEventListener("pointercancel", stop);
  }

  resize() {
    const ratio = window.devicePixelRatio || 1;
    const r = this.canvas.getBoundingClientRect();
    this.canvas.width = Math.max(1, Math.round(r.width * ratio));
    this.canvas.height = Math.max(1, Math.round(r.height * ratio));
    this.ctx.lineWidth = 3 * ratio; this.ctx.lineCap = "round"; this.ctx.lineJoin = "round";
    this.ctx.strokeStyle = "#111";
    this.clear();
  }

  clear() {
    this.ctx.fillStyle = "#fff";
    this.ctx.fillRect(0, 0, this.canvas.width, this.canvas.height);
    this.strokes = 0;
  }

  get empty() { return this.strokes === 0; }
}

// One PNG holding the given pads stacked (hand-copied sentence above the signature), the
// evidence kept.
export function combine(...canvases) {
  const out = document.createElement("canvas");
  out.width = Math.max(...canvases.map((c) => c.width));
  out.height = canvases.reduce((sum, c) => sum + c.height, 0);
  const ctx = out.getContext("2d");
  ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, out.width, out.height);
  let y = 0;
  for (const c of canvases) { ctx.drawImage(c, 0, y); y += c.height; }
  return out.toDataURL("image/png").split(",")[1];
}
