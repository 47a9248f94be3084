// funcnn playground: draw on #pad, downsample like the training images, ask /api/predict, show the answer.
// Vanilla JS, no build step, nothing fetched from outside this server.
"use strict";

const PEN = 30;            // stroke width on the 280 px pad: thick, like the 8x8 digits' strokes
const DEBOUNCE_MS = 60;    // at most one request per this many ms while drawing
const HIDDEN_COLS = 32;    // hidden units per row of a layer's strip
const $ = (id) => document.getElementById(id);

const state = { model: null, pixels: null, answer: null, requests: 0, answered: 0, drawing: false, last: null,
  scheduled: false, strokes: [] };
window.funcnnPlayground = state;  // what the browser test reads back

// ---------------------------------------------------------------- drawing

const pad = $("pad");
const ctx = pad.getContext("2d");

function clearPad() {
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, pad.width, pad.height);
  state.pixels = null;
  state.answer = null;
  state.strokes = [];
  showEmpty();
}

function point(e) {
  const r = pad.getBoundingClientRect();
  return [(e.clientX - r.left) * pad.width / r.width, (e.clientY - r.top) * pad.height / r.height];
}

function stroke(from, to) {
  ctx.strokeStyle = "#fff";
  ctx.fillStyle = "#fff";
  ctx.lineWidth = PEN;
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  ctx.beginPath();
  ctx.moveTo(from[0], from[1]);
  ctx.lineTo(to[0], to[1]);
  ctx.stroke();
}

pad.addEventListener("pointerdown", (e) => {
  e.preventDefault();
  pad.setPointerCapture(e.pointerId);
  state.drawing = true;
  state.last = point(e);
  state.strokes.push([state.last]);
  stroke(state.last, state.last);
  schedule();
});
pad.addEventListener("pointermove", (e) => {
  if (!state.drawing) return;
  const p = point(e);
  stroke(state.last, p);
  state.last = p;
  state.strokes[state.strokes.length - 1].push(p);
  schedule();
});
for (const type of ["pointerup", "pointercancel"]) {
  pad.addEventListener(type, () => { if (state.drawing) { state.drawing = false; predictNow(); } });
}

// ---------------------------------------------------------------- downsampling

// The training images were made from pen strokes: the digit scaled (aspect kept) into a box of the k x k
// frame (the 8x8 digits: the full height; MNIST: 20x20), drawn with a pen of a fixed width in image pixels,
// each pixel the ink's area average in [0, 1], and centred: the 8x8 digits by their bounding box, MNIST by
// the ink's centre of mass (LeCun et al.: "centered in a 28x28 image by computing the center of mass of the
// pixels"). The page keeps the strokes and does the same: it redraws them at SUPER times the model's
// resolution with the model's pen, then averages SUPER x SUPER blocks. The test calls this with known strokes.
const SUPER = 4;
const work = document.createElement("canvas");

// strokes: lists of [x, y] points on a pad of padSize x padSize; model: /api/model's side, box, pen, centre.
function downsample(strokes, model, padSize) {
  const points = strokes.flat();
  if (points.length === 0) return null;
  const k = model.side, [boxH, boxW] = model.box, pen = model.pen;
  const xs = points.map((p) => p[0]), ys = points.map((p) => p[1]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs), y0 = Math.min(...ys), y1 = Math.max(...ys);
  const minExtent = padSize / 8;  // a dot or a short dash is not blown up to fill the frame
  const scale = Math.min((boxH - pen) / Math.max(y1 - y0, minExtent), (boxW - pen) / Math.max(x1 - x0, minExtent));
  // First the bounding box's centre at the image's centre; MNIST-style frames then move the ink's
  // centre of mass there (a sub-pixel shift, drawn again rather than resampled).
  let ink = render(strokes, k, pen, scale, k / 2 - scale * (x0 + x1) / 2, k / 2 - scale * (y0 + y1) / 2);
  if (model.centre === "mass") {
    const [cx, cy] = centreOfMass(ink.pixels, k);
    if (cx !== null) ink = render(strokes, k, pen, scale, ink.dx + k / 2 - cx, ink.dy + k / 2 - cy);
  }
  return ink.pixels;
}

// The strokes mapped by p -> scale * p + (dx, dy) into a k x k image, as area averages in [0, 1].
function render(strokes, k, pen, scale, dx, dy) {
  const K = k * SUPER;
  work.width = K;
  work.height = K;
  const c = work.getContext("2d", { willReadFrequently: true });
  c.fillStyle = "#000";
  c.fillRect(0, 0, K, K);
  c.setTransform(SUPER * scale, 0, 0, SUPER * scale, SUPER * dx, SUPER * dy);
  c.strokeStyle = "#fff";
  c.fillStyle = "#fff";
  c.lineWidth = pen / scale;  // in pad units: the transform scales it to `pen` image pixels
  c.lineCap = "round";
  c.lineJoin = "round";
  for (const line of strokes) {
    c.beginPath();
    c.moveTo(line[0][0], line[0][1]);
    if (line.length === 1) c.lineTo(line[0][0] + 0.01, line[0][1]);
    for (const [x, y] of line.slice(1)) c.lineTo(x, y);
    c.stroke();
  }
  const img = c.getImageData(0, 0, K, K).data;
  const out = new Array(k * k).fill(0);
  for (let y = 0; y < K; y++) {
    for (let x = 0; x < K; x++) out[Math.floor(y / SUPER) * k + Math.floor(x / SUPER)] += img[4 * (y * K + x)];
  }
  return { pixels: out.map((v) => Math.min(1, v / (255 * SUPER * SUPER))), dx, dy };
}

// [x, y] of the ink's centre of mass in image pixels (pixel i spans [i, i + 1)); [null, null] without ink.
function centreOfMass(pixels, k) {
  let total = 0, sx = 0, sy = 0;
  pixels.forEach((v, p) => { total += v; sx += v * (p % k + 0.5); sy += v * (Math.floor(p / k) + 0.5); });
  return total > 0 ? [sx / total, sy / total] : [null, null];
}
state.downsample = (strokes) => downsample(strokes, state.model, pad.height);

// ---------------------------------------------------------------- talking to the server

let timer = null;
function schedule() {
  if (timer !== null) return;
  state.scheduled = true;
  timer = setTimeout(() => { timer = null; state.scheduled = false; predictNow(); }, DEBOUNCE_MS);
}

async function api(path, body) {
  const opts = body === undefined ? {} : { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body) };
  const r = await fetch(path, opts);
  const doc = await r.json();
  if (!r.ok) throw new Error(doc.error || `${r.status}`);
  return doc;
}

async function predictNow() {
  const pixels = downsample(state.strokes, state.model, pad.height);
  if (pixels === null) return;
  const id = ++state.requests;
  try {
    const answer = await api("/api/predict", { pixels });
    if (id < state.answered) return;  // a later drawing was already answered
    state.answered = id;
    state.pixels = pixels;
    state.answer = answer;
    show(pixels, answer);
    document.body.dataset.state = "answered";
    document.body.dataset.answered = String(id);
  } catch (err) {
    showError(`prediction failed: ${err.message}`);
  }
}

function showError(message) {
  const el = $("error");
  el.textContent = message;
  el.hidden = false;
  setTimeout(() => { el.hidden = true; }, 6000);
}

// ---------------------------------------------------------------- drawing the answer

function paintImage(canvas, pixels, k, tint) {
  canvas.width = k;
  canvas.height = k;
  const c = canvas.getContext("2d");
  const data = c.createImageData(k, k);
  for (let p = 0; p < k * k; p++) {
    const rgb = tint ? tint(p) : [255 * pixels[p], 255 * pixels[p], 255 * pixels[p]];
    data.data.set([rgb[0], rgb[1], rgb[2], 255], 4 * p);
  }
  c.putImageData(data, 0, 0);
}

// Diverging colours, red where more ink raises p(class) and blue where it lowers it, over a light copy of the
// input (its ink grey) so the colours can be placed on the drawing. The square root of |d p / d x| / peak keeps
// the middle values visible: border pixels that were almost always blank in training have a tiny std, so
// their d p / d x is large and would otherwise leave every other pixel nearly white.
function paintSaliency(pixels, saliency, k) {
  let peak = 0;
  for (const s of saliency) peak = Math.max(peak, Math.abs(s));
  paintImage($("saliency"), pixels, k, (p) => {
    const base = 248 - 120 * pixels[p];
    const t = peak > 0 ? saliency[p] / peak : 0, a = Math.sqrt(Math.min(1, Math.abs(t)));
    const hue = t >= 0 ? [200, 30, 40] : [30, 90, 200];
    return hue.map((h) => base + (h - base) * a);
  });
}

function paintHidden(hidden) {
  const root = $("hidden");
  hidden.forEach((h, l) => {
    let row = root.children[l];
    if (!row) {
      row = document.createElement("div");
      row.className = "layer";
      row.innerHTML = `<div class="name"></div><canvas></canvas>`;
      root.appendChild(row);
    }
    const lo = Math.min(...h), hi = Math.max(...h);
    const peak = hi - lo || 1;
    row.querySelector(".name").textContent = `layer ${l + 1}: ${h.length} units (min ${lo.toFixed(2)}, max ${hi.toFixed(2)})`;
    // A wide layer wraps into rows of HIDDEN_COLS units: one row of 256 would give each unit 1.4 px.
    const cols = Math.min(h.length, HIDDEN_COLS), rows = Math.ceil(h.length / cols);
    const canvas = row.querySelector("canvas");
    canvas.width = cols;
    canvas.height = rows;
    canvas.style.aspectRatio = `${cols} / ${rows}`;
    const c = canvas.getContext("2d"), data = c.createImageData(cols, rows);
    data.data.fill(255);  // the unused end of the last row: white
    h.forEach((v, i) => {
      const t = (v - lo) / peak;  // dark violet (lowest) to yellow (highest), as viridis runs
      data.data.set([68 + 185 * t, 1 + 230 * t, 84 - 47 * t, 255], 4 * i);
    });
    c.putImageData(data, 0, 0);
  });
}

function makeBars() {
  const root = $("bars");
  root.innerHTML = "";
  for (const c of state.model.classes) {
    const row = document.createElement("div");
    row.className = "bar";
    row.innerHTML = `<span class="cls">${c}</span><span class="track"><span class="fill"></span></span>` +
      `<span class="pct">&ndash;</span>`;
    root.appendChild(row);
  }
}

function show(pixels, answer) {
  const k = state.model.side;
  paintImage($("input"), pixels, k);
  paintSaliency(pixels, answer.saliency, k);
  paintHidden(answer.hidden);
  const rows = $("bars").children;
  answer.probabilities.forEach((p, i) => {
    rows[i].classList.toggle("top", i === answer.label);
    rows[i].querySelector(".fill").style.width = `${(100 * p).toFixed(1)}%`;
    rows[i].querySelector(".pct").textContent = `${(100 * p).toFixed(1)}%`;
  });
  $("label").textContent = String(answer.label);
  $("confidence").textContent = `${(100 * answer.probabilities[answer.label]).toFixed(1)}% sure`;
  $("saliency-class").textContent = `p(${answer.label})`;
}

function showEmpty() {
  $("label").textContent = "\u2013";
  $("confidence").textContent = "draw something";
  for (const row of $("bars").children) {
    row.classList.remove("top");
    row.querySelector(".fill").style.width = "0";
    row.querySelector(".pct").textContent = "\u2013";
  }
  for (const id of ["input", "saliency"]) {
    const c = $(id);
    c.getContext("2d").clearRect(0, 0, c.width, c.height);
  }
  document.body.dataset.state = "ready";
}

async function showSamples() {
  try {
    const doc = await api("/api/samples?n=24");
    const root = $("samples"), k = state.model.side;
    root.innerHTML = "";
    doc.images.forEach((img, i) => {
      const item = document.createElement("div");
      const right = doc.predictions[i] === doc.labels[i];
      item.className = right ? "sample" : "sample wrong";
      item.innerHTML = `<canvas></canvas><div>true ${doc.labels[i]}</div>` +
        `<div class="pred">says ${doc.predictions[i]} (${(100 * doc.confidence[i]).toFixed(0)}%)</div>`;
      paintImage(item.querySelector("canvas"), img, k);
      root.appendChild(item);
    });
    $("samples-card").hidden = false;
    $("samples-card").scrollIntoView({ behavior: "smooth", block: "nearest" });
  } catch (err) {
    showError(err.message);
  }
}

// ---------------------------------------------------------------- start

$("clear").addEventListener("click", clearPad);
$("samples-button").addEventListener("click", showSamples);

(async () => {
  try {
    state.model = await api("/api/model");
  } catch (err) {
    showError(`could not load the model: ${err.message}`);
    return;
  }
  const m = state.model;
  $("model-info").textContent = `run ${m.run}: ${m.side}\u00d7${m.side} images, ${m.classes.length} classes, ` +
    `hidden layers ${m.hidden_sizes.join(", ") || "none"}`;
  $("input-caption").textContent = `input, ${m.side}\u00d7${m.side} pixels`;
  $("samples-button").hidden = m.samples === null;
  $("samples-source").textContent = m.samples ? `(${m.samples})` : "";
  makeBars();
  clearPad();
})();
