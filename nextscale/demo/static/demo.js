// nextscale demo page: sampling and zero-shot editing against the JSON API of nextscale/demo/app.py.
// Sampling and editing answer with JSON lines (start, a "scale" event with previews after each scale, done); the page
// shows each event as it arrives. Images travel as PNG data URLs.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { info: null, editImage: null, busy: false };

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  node.append(...children);
  return node;
}

// ---- errors and requests ----------------------------------------------------------------------------------------

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

async function errorMessage(response) {
  try {
    const body = await response.json();
    if (body && body.error) return body.error;
  } catch (_) { /* not JSON */ }
  return `the server answered ${response.status} ${response.statusText}`;
}

async function post(url, body) {
  let response;
  try {
    response = await fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
  } catch (_) {
    throw new Error("the server did not answer (is nextscale demo still running?)");
  }
  if (!response.ok) throw new Error(await errorMessage(response));
  return response;
}

// POST `body`, then call onEvent for each JSON line of the answer as it arrives.
async function streamEvents(url, body, onEvent) {
  const response = await post(url, body);
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let newline;
    while ((newline = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, newline);
      buffer = buffer.slice(newline + 1);
      if (!line.trim()) continue;
      const event = JSON.parse(line);
      if (event.event === "error") throw new Error(event.message);
      onEvent(event);
    }
  }
}

// ---- form values --------------------------------------------------------------------------------------------------

// A number input's value as a number; what is not a number goes as typed (or null when empty), for the server to refuse.
function numberValue(id) {
  const text = $(id).value.trim();
  if (text === "") return null;
  const value = Number(text);
  return Number.isFinite(value) ? value : text;
}

function settingsOf(prefix) {
  return {
    seed: numberValue(`${prefix}-seed`),
    cfg: numberValue(`${prefix}-cfg`),
    top_k: numberValue(`${prefix}-top-k`),
    top_p: numberValue(`${prefix}-top-p`),
    more_smooth: $(`${prefix}-more-smooth`).checked,
    prune_ratio: numberValue(`${prefix}-prune-ratio`),
    prune_scales: numberValue(`${prefix}-prune-scales`),
    guidance_scales: numberValue(`${prefix}-guidance-scales`),
    inverse_cdf: $(`${prefix}-inverse-cdf`).checked,
    previews: $(`${prefix}-previews`).checked,
  };
}

function fillSettings(prefix, defaults) {
  $(`${prefix}-cfg`).value = defaults.cfg;
  $(`${prefix}-top-k`).value = defaults.top_k;
  $(`${prefix}-top-p`).value = defaults.top_p;
  $(`${prefix}-more-smooth`).checked = defaults.more_smooth;
  $(`${prefix}-prune-ratio`).value = defaults.prune_ratio;
  $(`${prefix}-prune-scales`).value = Math.min(defaults.prune_scales, state.info.scales.length);
  $(`${prefix}-prune-scales`).max = String(state.info.scales.length);
  $(`${prefix}-guidance-scales`).value = Math.min(defaults.guidance_scales, state.info.scales.length);
  $(`${prefix}-guidance-scales`).max = String(state.info.scales.length);
  $(`${prefix}-inverse-cdf`).checked = defaults.inverse_cdf;
  $(`${prefix}-seed-random`).addEventListener("click", () => {
    $(`${prefix}-seed`).value = Math.floor(Math.random() * 2 ** 32);
  });
}

// The handover scale (a model with a refiner only): the model drafts the scales before it, the refiner draws the rest.
function fillHandover(info) {
  if (!info.refiner) return;  // hidden, and left out of the requests: the server refuses a handover without a refiner
  const field = $("sample-handover-scale");
  field.value = Math.min(info.defaults.sample.handover_scale, info.scales.length);
  field.max = String(info.scales.length);
  field.addEventListener("input", describeHandover);
  $("sample-handover").hidden = false;
  describeHandover();
}

function describeHandover() {
  const sides = state.info.scales;
  const k = Number($("sample-handover-scale").value);
  $("sample-handover-hint").textContent = Number.isInteger(k) && k > 0 && k < sides.length
    ? `the model drafts up to ${sides[k - 1]}×${sides[k - 1]}, the refiner draws from ${sides[k]}×${sides[k]} on`
    : `0 (or ${sides.length}) = the model alone`;
}

function className(label) {
  const names = state.info.class_names;
  return names ? names[label] : `class ${label}`;
}

// The classes chosen: ids from the list, or ids and names typed (for models with many classes).
function chosenClasses() {
  if (!$("sample-classes").hidden) {
    return Array.from($("sample-classes").selectedOptions, (option) => Number(option.value));
  }
  return $("sample-classes-text").value.split(",").map((part) => part.trim()).filter((part) => part !== "")
    .map((part) => (/^\d+$/.test(part) ? Number(part) : part));
}

// ---- results: tiles, previews, settings, command ------------------------------------------------------------------

// One run's view (prefix "sample" or "edit"): tiles updated by the preview events, then the final images.
function makeRun(prefix, count, sides) {
  const run = { prefix, sides, tiles: [], previews: [], selected: 0 };
  const results = $(`${prefix}-results`);
  results.replaceChildren();
  results.dataset.state = "running";
  for (let i = 0; i < count; i++) {
    const image = el("img", { class: "pending", alt: `image ${i + 1}` });
    const caption = el("figcaption", {}, `image ${i + 1}`);
    const tile = el("figure", { class: "tile" }, image, caption);
    tile.addEventListener("click", () => selectTile(run, i));
    results.append(tile);
    run.tiles.push({ tile, image, caption });
    run.previews.push([]);
  }
  $(`${prefix}-details`).hidden = true;
  selectTile(run, 0);
  return run;
}

function selectTile(run, index) {
  run.selected = index;
  run.tiles.forEach((t, i) => t.tile.classList.toggle("selected", i === index));
  drawStrip(run);
}

function drawStrip(run) {
  const strip = $(`${run.prefix}-strip`);
  const previews = run.previews[run.selected] || [];
  strip.replaceChildren(...previews.map((url, k) => el("figure", {},
    el("img", { class: "scale-preview", src: url, alt: `after scale ${k + 1}` }),
    `${run.sides[k]}×${run.sides[k]}`)));
  $(`${run.prefix}-previews-hint`).textContent = previews.length
    ? `image ${run.selected + 1}: the decode after each scale (tokens per side)` : "previews were off for this run";
}

function onScale(run, event) {
  event.previews.forEach((url, i) => {
    run.previews[i][event.index] = url;
    run.tiles[i].image.src = url;
  });
  setProgress(run.prefix, "running",
    `scale ${event.index + 1} of ${run.sides.length} (${event.side}×${event.side} tokens)…`);
  drawStrip(run);
}

function onDone(run, event, names) {
  const previewed = run.previews.some((previews) => previews.length > 0);
  event.images.forEach((url, i) => {
    const { image, caption } = run.tiles[i];
    if (previewed) run.previews[i][run.sides.length - 1] = url;  // the last scale's decode is the image
    image.src = url;
    image.className = "result";
    const file = `${names[i].file.replace(/[^\w.-]+/g, "_")}.png`;
    const download = el("a", { href: url, download: file, class: "download" }, "PNG");
    const editThis = el("button", { type: "button", class: "small edit-this" }, "Edit");
    editThis.addEventListener("click", (e) => { e.stopPropagation(); useForEditing(url, `${run.prefix} ${i + 1}`); });
    caption.replaceChildren(el("span", {}, names[i].caption), download, editThis);
  });
  if (event.kind === "edit") {
    $("edit-input-download").href = event.input;
    $("edit-mask-download").href = event.mask;
  }
  const table = $(`${run.prefix}-settings`);
  table.replaceChildren(...Object.entries(event.settings).map(([key, value]) =>
    el("tr", {}, el("td", {}, key), el("td", {}, shownValue(value)))));
  $(`${run.prefix}-command`).textContent = event.command;
  $(`${run.prefix}-details`).hidden = false;
  $(`${run.prefix}-results`).dataset.state = "done";
  setProgress(run.prefix, "done", `${event.images.length} image(s) in ${event.seconds.toFixed(2)} s`);
  drawStrip(run);
}

function shownValue(value) {
  if (value === null) return "none";
  return Array.isArray(value) ? value.join(", ") : String(value);
}

function setProgress(prefix, stateName, text) {
  const progress = $(`${prefix}-progress`);
  progress.dataset.state = stateName;
  progress.textContent = text;
}

function setBusy(busy) {
  state.busy = busy;
  $("sample-run").disabled = busy;
  $("edit-run").disabled = busy;
}

async function runJob(prefix, url, body, fileNames) {
  clearError();
  setBusy(true);
  setProgress(prefix, "running", "waiting for the model…");
  let run = null;
  try {
    await streamEvents(url, body, (event) => {
      if (event.event === "start") run = makeRun(prefix, event.count, event.sides);
      else if (event.event === "scale") onScale(run, event);
      else if (event.event === "done") onDone(run, event, fileNames(event));
    });
  } catch (err) {
    showError(err.message);
    setProgress(prefix, "error", "");
    $(`${prefix}-results`).dataset.state = "error";
  } finally {
    setBusy(false);
  }
}

// ---- sampling -----------------------------------------------------------------------------------------------------

function runSample(event) {
  event.preventDefault();
  const settings = settingsOf("sample");
  const body = { classes: chosenClasses(), per_class: numberValue("sample-per-class"), ...settings };
  if (state.info.refiner) body.handover_scale = numberValue("sample-handover-scale");
  runJob("sample", "/api/sample", body, (done) => done.label_names.map(
    (name, i) => ({ caption: name, file: `${name}_seed${done.settings.seed}_${i}` })));
}

// ---- editing: the image, the region editor --------------------------------------------------------------------------

const editor = { side: 1, drawn: new Uint8Array(1), tool: "brush", painting: false, last: null, boxStart: null,
  boxEnd: null, image: null };

function useForEditing(url, name) {
  const image = new Image();
  image.onload = () => {
    editor.image = image;
    state.editImage = url;
    $("edit-canvas-hint").textContent = `Editing ${name}. Draw the region; red tokens are redrawn, the rest is kept.`;
    redraw();
  };
  image.src = url;
  document.querySelectorAll("#edit-examples img").forEach((img) => img.classList.toggle("selected", img.src === url));
  showTab("edit");
}

function uploadPicture() {
  const file = $("edit-upload").files[0];
  if (!file) return;
  const reader = new FileReader();
  reader.onload = async () => {
    clearError();
    try {
      const response = await post("/api/image", { image: reader.result });
      const fitted = await response.json();
      useForEditing(fitted.image, file.name + (fitted.note ? ` (${fitted.note})` : ""));
    } catch (err) {
      showError(err.message);
    }
  };
  reader.onerror = () => showError(`could not read ${file.name}`);
  reader.readAsDataURL(file);
}

function regenerated(index) {
  const outpaint = $("edit-mode").value === "outpaint";
  return outpaint ? !editor.drawn[index] : Boolean(editor.drawn[index]);
}

function redraw() {
  const canvas = $("edit-canvas");
  const context = canvas.getContext("2d");
  const size = canvas.width;
  const cell = size / editor.side;
  context.clearRect(0, 0, size, size);
  if (editor.image) {
    context.imageSmoothingEnabled = false;
    context.drawImage(editor.image, 0, 0, size, size);
  } else {
    context.fillStyle = "#e8ebf0";
    context.fillRect(0, 0, size, size);
  }
  const anyDrawn = editor.drawn.some((v) => v);
  context.fillStyle = "rgba(215, 38, 38, 0.5)";
  for (let i = 0; i < editor.side; i++) {
    for (let j = 0; j < editor.side; j++) {
      if (anyDrawn && regenerated(i * editor.side + j)) context.fillRect(j * cell, i * cell, cell, cell);
    }
  }
  context.strokeStyle = "rgba(255, 255, 255, 0.35)";
  context.lineWidth = 1;
  for (let k = 1; k < editor.side; k++) {
    context.beginPath();
    context.moveTo(k * cell + 0.5, 0); context.lineTo(k * cell + 0.5, size);
    context.moveTo(0, k * cell + 0.5); context.lineTo(size, k * cell + 0.5);
    context.stroke();
  }
  if (editor.boxStart && editor.boxEnd) {
    context.setLineDash([6, 4]);
    context.strokeStyle = "#2f5fd0";
    context.lineWidth = 2;
    const [x0, y0] = editor.boxStart;
    const [x1, y1] = editor.boxEnd;
    context.strokeRect(Math.min(x0, x1), Math.min(y0, y1), Math.abs(x1 - x0), Math.abs(y1 - y0));
    context.setLineDash([]);
  }
  $("edit-canvas").dataset.drawn = String(editor.drawn.reduce((a, b) => a + b, 0));
}

function canvasPoint(event) {
  const canvas = $("edit-canvas");
  const rect = canvas.getBoundingClientRect();
  return [(event.clientX - rect.left) * canvas.width / rect.width, (event.clientY - rect.top) * canvas.height / rect.height];
}

// Brush and eraser: every token within the radius of the token under the pointer.
function paintAt([x, y], value) {
  const cell = $("edit-canvas").width / editor.side;
  const ci = Math.floor(y / cell);
  const cj = Math.floor(x / cell);
  const radius = Number($("edit-brush").value);
  for (let i = ci - radius; i <= ci + radius; i++) {
    for (let j = cj - radius; j <= cj + radius; j++) {
      const inside = i >= 0 && j >= 0 && i < editor.side && j < editor.side;
      if (inside && (i - ci) ** 2 + (j - cj) ** 2 <= radius * radius) editor.drawn[i * editor.side + j] = value;
    }
  }
}

// Paint along the segment from the last point, so that fast strokes leave no gaps.
function paintStroke(point, value) {
  const cell = $("edit-canvas").width / editor.side;
  const from = editor.last || point;
  const steps = Math.max(1, Math.ceil(Math.hypot(point[0] - from[0], point[1] - from[1]) / (cell / 2)));
  for (let s = 1; s <= steps; s++) {
    paintAt([from[0] + (point[0] - from[0]) * s / steps, from[1] + (point[1] - from[1]) * s / steps], value);
  }
  editor.last = point;
}

// Box: every token the rectangle touches.
function fillBox() {
  const cell = $("edit-canvas").width / editor.side;
  const [x0, y0] = editor.boxStart;
  const [x1, y1] = editor.boxEnd;
  const j0 = Math.floor(Math.min(x0, x1) / cell), j1 = Math.ceil(Math.max(x0, x1) / cell);
  const i0 = Math.floor(Math.min(y0, y1) / cell), i1 = Math.ceil(Math.max(y0, y1) / cell);
  for (let i = Math.max(0, i0); i < Math.min(editor.side, i1); i++) {
    for (let j = Math.max(0, j0); j < Math.min(editor.side, j1); j++) editor.drawn[i * editor.side + j] = 1;
  }
}

function pointerDown(event) {
  if (event.button !== 0) return;
  const canvas = $("edit-canvas");
  canvas.setPointerCapture(event.pointerId);
  const point = canvasPoint(event);
  editor.tool = document.querySelector("input[name=tool]:checked").value;
  editor.painting = true;
  if (editor.tool === "box") {
    editor.boxStart = point;
    editor.boxEnd = point;
  } else {
    editor.last = null;
    paintStroke(point, editor.tool === "eraser" ? 0 : 1);
  }
  redraw();
}

function pointerMove(event) {
  if (!editor.painting) return;
  const point = canvasPoint(event);
  if (editor.tool === "box") editor.boxEnd = point;
  else paintStroke(point, editor.tool === "eraser" ? 0 : 1);
  redraw();
}

function pointerUp(event) {
  if (!editor.painting) return;
  editor.painting = false;
  if (editor.tool === "box") {
    editor.boxEnd = canvasPoint(event);
    fillBox();
    editor.boxStart = editor.boxEnd = null;
  }
  editor.last = null;
  redraw();
}

function regionRows() {
  const rows = [];
  for (let i = 0; i < editor.side; i++) rows.push(Array.from(editor.drawn.slice(i * editor.side, (i + 1) * editor.side)));
  return rows;
}

function runEdit(event) {
  event.preventDefault();
  if (!state.editImage) {
    showError("pick an example, upload a picture or press Edit under a result first");
    return;
  }
  const classValue = $("edit-class").value;
  const body = {
    image: state.editImage,
    region: regionRows(),
    mode: $("edit-mode").value,
    class: classValue === "" ? null : Number(classValue),
    samples: numberValue("edit-samples"),
    ...settingsOf("edit"),
  };
  runJob("edit", "/api/edit", body, (done) => done.images.map((_, i) => ({
    caption: `result ${i + 1}`, file: `edit_${done.settings.mode}_seed${done.settings.seed}_${i}` })));
}

// ---- page ---------------------------------------------------------------------------------------------------------

function showTab(name) {
  for (const tab of ["sample", "edit"]) {
    $(`panel-${tab}`).hidden = tab !== name;
    $(`tab-${tab}`).classList.toggle("active", tab === name);
    $(`tab-${tab}`).setAttribute("aria-selected", String(tab === name));
  }
}

function describeModel(info) {
  const classes = info.class_names ? `${info.num_classes} classes` : `${info.num_classes} classes (ids)`;
  const refiner = info.refiner ? ` · refiner ${info.refiner}` : "";
  $("model-info").textContent = `${info.model}${refiner} · ${info.image_size}×${info.image_size} px · scales `
    + `${info.scales.join(", ")} · ${classes} · ${info.device} ${info.precision}`;
}

function fillClasses(info) {
  const list = $("sample-classes");
  if (info.num_classes <= 100) {
    for (let c = 0; c < info.num_classes; c++) {
      list.append(el("option", { value: String(c) }, info.class_names ? `${c} · ${info.class_names[c]}` : `${c}`));
    }
    list.options[0].selected = true;
    if (info.num_classes > 1) list.options[1].selected = true;
    $("sample-classes-hint").textContent = "ctrl/shift-click for several";
  } else {
    list.hidden = true;
    $("sample-classes-text").hidden = false;
    $("sample-classes-text").value = "0";
    $("sample-classes-hint").textContent = `ids in 0…${info.num_classes - 1}${info.class_names ? " or names" : ""}, comma-separated`;
  }
  const editClass = $("edit-class");
  editClass.append(el("option", { value: "" }, "none (unconditional)"));
  for (let c = 0; c < info.num_classes; c++) {
    editClass.append(el("option", { value: String(c) }, info.class_names ? `${c} · ${info.class_names[c]}` : `${c}`));
  }
}

function fillExamples(info) {
  const box = $("edit-examples");
  if (!info.examples.length) {
    box.append(el("p", { class: "hint" }, "No test images of this model's data on this machine; upload a picture."));
    return;
  }
  for (const example of info.examples) {
    const image = el("img", { src: example.image, alt: example.name, title: example.name, class: "example" });
    image.addEventListener("click", () => useForEditing(example.image, example.name));
    box.append(image);
  }
}

async function start() {
  $("tab-sample").addEventListener("click", () => showTab("sample"));
  $("tab-edit").addEventListener("click", () => showTab("edit"));
  document.querySelectorAll("button.copy").forEach((button) => button.addEventListener("click", () => {
    const text = $(button.dataset.copy).textContent;
    if (navigator.clipboard) navigator.clipboard.writeText(text).catch(() => {});
  }));
  let response;
  try {
    response = await fetch("/api/info");
    if (!response.ok) throw new Error(await errorMessage(response));
  } catch (err) {
    showError(`could not read the model's facts: ${err.message}`);
    return;
  }
  const info = await response.json();
  state.info = info;
  describeModel(info);
  fillClasses(info);
  fillExamples(info);
  fillSettings("sample", info.defaults.sample);
  fillSettings("edit", info.defaults.edit);
  fillHandover(info);
  $("sample-per-class").value = Math.max(1, Math.min(4, Math.floor(info.limits.max_images / 2)));
  $("edit-samples").value = Math.min(4, info.limits.max_images);

  editor.side = info.token_side;
  editor.drawn = new Uint8Array(info.token_side * info.token_side);
  $("edit-brush").max = String(Math.max(1, Math.floor(info.token_side / 4)));
  $("edit-brush").value = String(Math.floor(info.token_side / 16));
  const canvas = $("edit-canvas");
  canvas.addEventListener("pointerdown", pointerDown);
  canvas.addEventListener("pointermove", pointerMove);
  canvas.addEventListener("pointerup", pointerUp);
  canvas.addEventListener("pointercancel", pointerUp);
  $("edit-clear").addEventListener("click", () => { editor.drawn.fill(0); redraw(); });
  $("edit-invert").addEventListener("click", () => { editor.drawn = editor.drawn.map((v) => 1 - v); redraw(); });
  $("edit-mode").addEventListener("change", () => {
    if ($("edit-mode").value === "class-edit" && $("edit-class").value === "") $("edit-class").selectedIndex = 1;
    redraw();
  });
  $("edit-upload").addEventListener("change", uploadPicture);
  $("sample-form").addEventListener("submit", runSample);
  $("edit-form").addEventListener("submit", runEdit);
  redraw();
  document.body.dataset.ready = "true";
}

start();
