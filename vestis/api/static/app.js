// vestis web page: browse the catalogue, search it in words, by a photo (drop, paste, pick), by both, or
// by any item; results marked "more like this" (+) and "less like this" (−) refine the query.
// Plain JavaScript, no build step, no network beyond this server.
"use strict";

const TITLE_KEYS = ["productDisplayName", "name", "title", "description"];

const state = {
  info: null,
  query: null, // {kind: "image", file, url} or {kind: "item", id}
  text: "", // words of the query ("" when none)
  positive: new Set(), // ids marked "more like this"
  negative: new Set(), // ids marked "less like this"
  attrs: new Set(),
  shown: 0, // results (or browsed items) on screen: the offset of the next page
  seq: 0, // number of the latest request: answers to older ones are dropped
};

const $ = (id) => document.getElementById(id);

function errorText(status, body) {
  const detail = body && body.detail;
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail.map((e) => `${(e.loc || []).filter((p) => p !== "body").join(".") || "request"}: ${e.msg}`).join("; ");
  }
  return `request failed (HTTP ${status})`;
}

async function api(path, options) {
  let response;
  try {
    response = await fetch(path, options);
  } catch (e) {
    throw new Error("the server cannot be reached");
  }
  let body = null;
  try {
    body = await response.json();
  } catch (e) {
    body = null;
  }
  if (!response.ok) throw new Error(errorText(response.status, body));
  return body;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

function setStatus(text, loading) {
  const status = $("status");
  status.textContent = text;
  status.classList.toggle("loading", Boolean(loading));
  $("results").classList.toggle("busy", Boolean(loading));
}

function filterableColumns() {
  return state.info ? state.info.columns.filter((c) => c.filterable) : [];
}

// ------------------------------------------------------------------ controls
function buildFilters(columns) {
  const box = $("filters");
  if (!columns.length) return;
  box.textContent = "";
  for (const column of columns) {
    const label = document.createElement("label");
    label.className = "control";
    label.textContent = column.name;
    const select = document.createElement("select");
    select.dataset.column = column.name;
    select.setAttribute("aria-label", `filter by ${column.name}`);
    select.add(new Option(`any ${column.name}`, ""));
    for (const v of column.values) select.add(new Option(`${v.value} (${v.count})`, v.value));
    select.addEventListener("change", () => search());
    label.appendChild(select);
    box.appendChild(label);
  }
}

function buildAttributes(names) {
  $("attrs").hidden = names.length === 0;
  const chips = $("attr-chips");
  chips.textContent = "";
  for (const name of names) {
    const chip = document.createElement("button");
    chip.type = "button";
    chip.className = "chip";
    chip.textContent = name;
    chip.setAttribute("aria-pressed", "false");
    chip.addEventListener("click", () => {
      const on = !state.attrs.has(name);
      if (on) state.attrs.add(name);
      else state.attrs.delete(name);
      chip.setAttribute("aria-pressed", String(on));
      search();
    });
    chips.appendChild(chip);
  }
}

function currentFilters() {
  const filters = {};
  for (const select of document.querySelectorAll("#filters select")) {
    if (select.value) filters[select.dataset.column] = [select.value];
  }
  return filters;
}

// ------------------------------------------------------------------ queries
function setImageQuery(file) {
  if (!file || !file.type.startsWith("image/")) {
    showError("that is not an image file: choose a JPEG, PNG or WebP photo");
    return;
  }
  if (state.info && file.size > state.info.max_upload_bytes) {
    showError(`that photo is ${(file.size / 1e6).toFixed(1)} MB; the limit is ${(state.info.max_upload_bytes / 1e6).toFixed(0)} MB`);
    return;
  }
  if (state.query && state.query.url) URL.revokeObjectURL(state.query.url);
  const url = URL.createObjectURL(file);
  state.query = { kind: "image", file, url };
  showQuery(url, file.name || "pasted image");
  search();
}

function setItemQuery(id) {
  if (state.query && state.query.url) URL.revokeObjectURL(state.query.url);
  renderLook(null);
  state.query = { kind: "item", id };
  showQuery(`/images/${encodeURIComponent(id)}?size=400`, `more like ${id}`);
  window.scrollTo({ top: 0, behavior: "smooth" });
  search();
}

function showQuery(src, caption) {
  const preview = $("query-preview");
  preview.src = src;
  preview.alt = caption;
  preview.hidden = false;
  $("drop-hint").innerHTML = 'Drop, paste or <span class="link">pick</span> another photo';
  $("query-caption").textContent = caption;
  $("query-caption").hidden = false;
}

function isTextQuery() {
  return Boolean(state.text || state.positive.size || state.negative.size);
}

function textFields() {
  const fields = {};
  if (state.text) fields.text = state.text;
  if (state.positive.size) fields.positive = [...state.positive];
  if (state.negative.size) fields.negative = [...state.negative];
  return fields;
}

function textRequestFor(offset) {
  const options = { k: Number($("k").value), offset, filters: currentFilters() };
  if (state.query && state.query.kind === "image") {
    const form = new FormData();
    form.append("file", state.query.file, state.query.file.name || "query.jpg");
    form.append("region", "auto");
    for (const [key, value] of Object.entries({ ...options, ...textFields() })) {
      form.append(key, typeof value === "string" || typeof value === "number" ? String(value) : JSON.stringify(value));
    }
    return { method: "POST", body: form };
  }
  const body = { ...options, ...textFields() };
  if (state.query && state.query.kind === "item") body.item_id = state.query.id;
  return { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
}

function showRefinement() {
  const parts = [];
  if (state.positive.size) parts.push(`more like ${state.positive.size}`);
  if (state.negative.size) parts.push(`less like ${state.negative.size}`);
  $("refine-text").textContent = parts.length ? `Refined: ${parts.join(" · ")}` : "";
  $("refine").hidden = parts.length === 0;
}

function mark(id, positive) {
  const add = positive ? state.positive : state.negative;
  const other = positive ? state.negative : state.positive;
  other.delete(id);
  if (add.has(id)) add.delete(id);
  else add.add(id);
  showRefinement();
  search();
}

function requestFor(offset) {
  if (isTextQuery()) return textRequestFor(offset);
  const options = {
    k: Number($("k").value),
    offset,
    color_weight: Number($("colour").value),
    filters: currentFilters(),
    attrs: [...state.attrs],
  };
  if (state.query.kind === "item") {
    return {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ item_id: state.query.id, ...options }),
    };
  }
  const form = new FormData();
  form.append("file", state.query.file, state.query.file.name || "query.jpg");
  form.append("k", String(options.k));
  form.append("offset", String(offset));
  form.append("color_weight", String(options.color_weight));
  form.append("filters", JSON.stringify(options.filters));
  form.append("attrs", options.attrs.join("; "));
  form.append("region", "auto"); // a photo of a person: each garment is searched too (shop the look)
  return { method: "POST", body: form };
}

async function search(append = false) {
  if (!state.query && !isTextQuery()) return;
  const seq = ++state.seq;
  const offset = append ? state.shown : 0;
  showError("");
  setStatus("Searching…", true);
  const started = performance.now();
  try {
    const answer = await api("/search", requestFor(offset));
    if (seq !== state.seq) return;
    render(answer, append, performance.now() - started);
  } catch (e) {
    if (seq !== state.seq) return;
    setStatus("", false);
    if (!append) {
      $("results").textContent = ""; // the results on screen no longer answer the query
      $("more").hidden = true;
    }
    showError(e.message);
  }
}

// ------------------------------------------------------------------ results
function cardFor(hit, rank) {
  const figure = document.createElement("figure");
  figure.className = "card";
  figure.tabIndex = 0;
  figure.dataset.id = hit.id;
  const meta = hit.metadata || {};
  const titleKey = TITLE_KEYS.find((k) => meta[k]);
  const title = titleKey ? String(meta[titleKey]) : hit.id;
  const labels = filterableColumns().map((c) => meta[c.name]).filter((v) => v !== undefined && v !== null && v !== "");

  const img = document.createElement("img");
  img.loading = "lazy";
  img.src = `${hit.image_url}?size=300`;
  img.alt = title;
  const caption = document.createElement("figcaption");
  const score = document.createElement("span");
  score.className = "score";
  score.textContent = hit.score === undefined ? `#${rank}` : `#${rank} · ${hit.score.toFixed(3)}`;
  const name = document.createElement("span");
  name.className = "title";
  name.textContent = title;
  name.title = `${title} (${hit.id})`;
  const labelLine = document.createElement("span");
  labelLine.className = "labels";
  labelLine.textContent = labels.slice(0, 4).join(" · ");
  caption.append(score, name, labelLine);
  const marks = document.createElement("span");
  marks.className = "marks";
  for (const [positive, symbol, label] of [[true, "+", "more like this"], [false, "−", "less like this"]]) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = `mark ${positive ? "plus" : "minus"}`;
    button.textContent = symbol;
    button.title = label;
    button.setAttribute("aria-label", `${label}: ${title}`);
    button.setAttribute("aria-pressed", String((positive ? state.positive : state.negative).has(hit.id)));
    button.addEventListener("click", (e) => {
      e.stopPropagation();
      mark(hit.id, positive);
    });
    button.addEventListener("keydown", (e) => e.stopPropagation());
    marks.appendChild(button);
  }
  figure.append(img, caption, marks);
  const open = () => setItemQuery(hit.id);
  figure.addEventListener("click", open);
  figure.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") {
      e.preventDefault();
      open();
    }
  });
  return figure;
}

const REGION_COLOURS = { top: "#d62728", bottom: "#1f77b4", shoes: "#2ca02c", person: "#ff7f0e" };

// Shop the look: each region's box over the photo, and a row of its results above the whole photo's.
function renderLook(regions) {
  const look = $("look");
  const boxes = $("boxes");
  look.textContent = "";
  boxes.textContent = "";
  look.hidden = !regions || regions.length === 0;
  if (look.hidden) return;
  const heading = document.createElement("h2");
  heading.textContent = "Shop the look";
  look.appendChild(heading);
  for (const region of regions) {
    const colour = REGION_COLOURS[region.name] || "#555";
    const box = document.createElement("div");
    box.className = "box";
    box.dataset.region = region.name;
    box.style.setProperty("--region", colour);
    const label = document.createElement("span");
    label.textContent = region.name;
    box.appendChild(label);
    boxes.appendChild(box);
    const row = document.createElement("div");
    row.className = "look-row";
    row.dataset.region = region.name;
    row.style.setProperty("--region", colour);
    const title = document.createElement("h3");
    const scope = Object.entries(region.scope || {}).map(([c, v]) => v.join(", ")).join("; ");
    title.textContent = scope ? `${region.name} · in ${scope}` : region.name;
    const grid = document.createElement("div");
    grid.className = "grid";
    region.results.slice(0, 6).forEach((hit, i) => grid.appendChild(cardFor(hit, i + 1)));
    row.append(title, grid);
    look.appendChild(row);
  }
  placeBoxes(regions);
}

function placeBoxes(regions) {
  const img = $("query-preview");
  const place = () => {
    if (!img.naturalWidth) return;
    const scale = img.clientWidth / img.naturalWidth;
    [...$("boxes").children].forEach((box, i) => {
      const [x0, y0, x1, y1] = regions[i].box;
      Object.assign(box.style, { left: `${x0 * scale}px`, top: `${y0 * scale}px`,
        width: `${(x1 - x0) * scale}px`, height: `${(y1 - y0) * scale}px` });
    });
  };
  if (img.complete) place();
  else img.addEventListener("load", place, { once: true });
}

function render(answer, append, roundTripMs) {
  const grid = $("results");
  if (!append) {
    grid.textContent = "";
    renderLook(answer.regions);
  }
  answer.results.forEach((hit, i) => grid.appendChild(cardFor(hit, answer.offset + i + 1)));
  state.shown = answer.offset + answer.results.length;
  const t = answer.timings_ms;
  const parts = [`server ${t.total.toFixed(0)} ms`];
  if (t.embed !== undefined) parts.push(`embed ${t.embed.toFixed(0)} ms`);
  if (t.search !== undefined) parts.push(`search ${t.search.toFixed(1)} ms`);
  const found = state.shown ? `${state.shown} of ${answer.candidates.toLocaleString()} items` : "No matching items";
  // label values the server read in the words (hybrid text queries), so a person sees how it was understood
  const understood = answer.query && answer.query.understood ? ` · understood: ${answer.query.understood}` : "";
  const garments = answer.regions && answer.regions.length
    ? ` · shop the look: ${answer.regions.map((r) => r.name).join(", ")} (the whole photo's results below)` : "";
  setStatus(`${found}${understood}${garments} · ${parts.join(", ")} · round trip ${roundTripMs.toFixed(0)} ms`, false);
  $("more").hidden = answer.results.length < answer.k || state.shown >= answer.candidates;
}

// ------------------------------------------------------------------ browsing
// Before any query the grid shows the catalogue page by page, so an item can be clicked for
// "more like this" without a photo at hand.
async function browse(append = false) {
  const seq = ++state.seq;
  const offset = append ? state.shown : 0;
  const limit = Number($("k").value);
  setStatus("Loading the catalogue…", true);
  try {
    const page = await api(`/items?offset=${offset}&limit=${limit}`);
    if (seq !== state.seq) return;
    const grid = $("results");
    if (!append) grid.textContent = "";
    page.items.forEach((item, i) => grid.appendChild(cardFor(item, page.offset + i + 1)));
    state.shown = page.offset + page.items.length;
    setStatus(state.shown ? `Browsing the catalogue: ${state.shown} of ${page.total.toLocaleString()} items · `
      + "click one for more like it, or search by a photo" : "The collection is empty", false);
    $("more").hidden = state.shown >= page.total;
  } catch (e) {
    if (seq !== state.seq) return;
    setStatus("", false);
    showError(`cannot list the catalogue: ${e.message}`);
  }
}

// ------------------------------------------------------------------ near-duplicates
// The catalogue's near-duplicate listings, one row per group (the scan runs once per change of the
// catalogue on the server; a large catalogue takes about a minute the first time).
async function showDuplicates() {
  const seq = ++state.seq;
  renderLook(null);
  setStatus("Looking for near-duplicate listings…", true);
  try {
    const answer = await api("/duplicates?limit=50");
    if (seq !== state.seq) return;
    const grid = $("results");
    grid.textContent = "";
    for (const [n, group] of answer.duplicates.entries()) {
      const row = document.createElement("section");
      row.className = "dup-group";
      const title = document.createElement("h3");
      title.textContent = `Group ${n + 1}: ${group.ids.length} items · best pair ${group.pairs[0].score.toFixed(3)}`;
      const cards = document.createElement("div");
      cards.className = "grid";
      group.ids.forEach((id, i) => cards.appendChild(cardFor({ id, image_url: `/images/${encodeURIComponent(id)}`,
        metadata: {} }, i + 1)));
      row.append(title, cards);
      grid.appendChild(row);
    }
    $("more").hidden = true;
    setStatus(answer.groups ? `${answer.groups} group(s) of near-duplicates among ${answer.items.toLocaleString()} items`
      + ` (similarity ≥ ${answer.threshold}; showing ${answer.duplicates.length}) · click an item for more like it`
      : `No near-duplicates among ${answer.items.toLocaleString()} items`, false);
  } catch (e) {
    if (seq !== state.seq) return;
    setStatus("", false);
    showError(`cannot list near-duplicates: ${e.message}`);
  }
}

// ------------------------------------------------------------------ wiring
function wire() {
  $("query-preview").addEventListener("error", () => { $("query-preview").hidden = true; });
  if (window.matchMedia("(max-width: 700px)").matches) $("options").open = false; // results first on phones
  const drop = $("drop");
  const file = $("file");
  drop.addEventListener("click", () => file.click());
  drop.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") {
      e.preventDefault();
      file.click();
    }
  });
  file.addEventListener("change", () => {
    if (file.files.length) setImageQuery(file.files[0]);
    file.value = "";
  });
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (e) => {
      e.preventDefault();
      drop.classList.add("dragging");
    });
  }
  for (const type of ["dragleave", "drop"]) drop.addEventListener(type, () => drop.classList.remove("dragging"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    if (e.dataTransfer.files.length) setImageQuery(e.dataTransfer.files[0]);
  });
  document.addEventListener("paste", (e) => {
    const item = [...(e.clipboardData ? e.clipboardData.items : [])].find((i) => i.type.startsWith("image/"));
    if (item) setImageQuery(item.getAsFile());
  });
  $("show-duplicates").addEventListener("click", showDuplicates);
  $("colour").addEventListener("input", () => { $("colour-out").value = $("colour").value; });
  $("colour").addEventListener("change", () => search());
  $("k").addEventListener("change", () => (state.query || isTextQuery() ? search() : browse()));
  $("more").addEventListener("click", () => (state.query || isTextQuery() ? search(true) : browse(true)));
  $("text-form").addEventListener("submit", (e) => {
    e.preventDefault();
    state.text = $("text").value.trim();
    if (state.query || isTextQuery()) search();
    else browse();
  });
  $("clear-examples").addEventListener("click", () => {
    state.positive.clear();
    state.negative.clear();
    showRefinement();
    if (state.query || isTextQuery()) search();
    else browse();
  });
  $("clear-filters").addEventListener("click", () => {
    for (const select of document.querySelectorAll("#filters select")) select.value = "";
    search();
  });
}

async function start() {
  wire();
  try {
    state.info = await api("/api/info");
  } catch (e) {
    $("collection-info").textContent = "";
    showError(`cannot load the collection: ${e.message}`);
    return;
  }
  const info = state.info;
  $("collection-info").textContent = `${info.name}: ${info.items.toLocaleString()} items · ${info.encoder}`;
  $("colour").disabled = !info.colour;
  buildFilters(filterableColumns());
  buildAttributes(info.attributes);
  if (!state.query) browse();
}

start();
