// The demo page: one image and one phrase to POST /api/segment, the answer drawn in place.
"use strict";

const state = { file: null, info: null };
const $ = (id) => document.getElementById(id);

function showMessage(text, isError) {
  const message = $("message");
  message.textContent = text;
  message.className = isError ? "error" : "";
  message.hidden = !text;
}

function chooseFile(file) {
  if (!file) return;
  state.file = file;
  $("result").hidden = true;
  const limit = state.info ? state.info.max_upload_bytes : Infinity;
  if (file.size > limit) {
    showMessage(`The file is too large: ${(file.size / 1048576).toFixed(1)} MB; this demo ` +
                `accepts at most ${(limit / 1048576).toFixed(1)} MB.`, true);
  } else {
    showMessage("", false);
  }
  const preview = $("preview");
  if (file.type.startsWith("image/")) {
    preview.src = URL.createObjectURL(file);
    preview.hidden = false;
  } else {
    preview.hidden = true;
  }
  $("drop-text").textContent = `${file.name} — drop or click to change`;
}

function readAsBase64(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).split(",", 2)[1] || "");
    reader.onerror = () => reject(new Error(`Cannot read ${file.name}.`));
    reader.readAsDataURL(file);
  });
}

function showResult(answer) {
  const maskUrl = `data:image/png;base64,${answer.mask_png}`;
  $("overlay").src = `data:image/png;base64,${answer.overlay_png}`;
  $("mask").src = maskUrl;
  $("mask-download").href = maskUrl;
  $("result-stats").textContent =
    `“${answer.expression}”: ${answer.width} × ${answer.height} px, ` +
    `${(100 * answer.foreground).toFixed(1)}% foreground, ${answer.seconds.toFixed(2)} s`;
  const explained = Boolean(answer.explain_jpg);
  $("explain-result").hidden = !explained;
  if (explained) $("explain-picture").src = `data:image/jpeg;base64,${answer.explain_jpg}`;
  $("result").hidden = false;
}

async function segment(event) {
  event.preventDefault();
  if (!state.file) {
    showMessage("Choose or drop an image first.", true);
    return;
  }
  const button = $("segment-button");
  button.disabled = true;
  showMessage("Segmenting…", false);
  try {
    const body = JSON.stringify({
      image: await readAsBase64(state.file),
      expression: $("expression").value,
      explain: Boolean(state.info && state.info.explain && $("explain").checked),
    });
    const response = await fetch("/api/segment", {
      method: "POST", headers: { "Content-Type": "application/json" }, body,
    });
    let answer;
    try {
      answer = await response.json();
    } catch (error) {
      throw new Error(`The server answered ${response.status} without a readable message.`);
    }
    if (!response.ok) throw new Error(answer.error || `Error ${response.status}.`);
    showResult(answer);
    showMessage("", false);
  } catch (error) {
    $("result").hidden = true;
    showMessage(error.message, true);
  } finally {
    button.disabled = false;
  }
}

async function loadInfo() {
  try {
    const info = await (await fetch("/api/info")).json();
    state.info = info;
    const size = info.image_size ? `, ${info.image_size} px input` : "";
    const maps = info.explain ? ", per-word maps" : "";
    $("model-info").textContent = `Model ${info.model} from ${info.source}${size}${maps}.`;
    $("explain-option").hidden = !info.explain;
  } catch (error) {
    $("model-info").textContent = "Cannot reach the server.";
  }
}

function setUp() {
  const zone = $("drop-zone");
  $("image-input").addEventListener("change", (event) => chooseFile(event.target.files[0]));
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("dragging"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dragging");
    chooseFile(event.dataTransfer.files[0]);
  });
  $("segment-form").addEventListener("submit", segment);
  loadInfo();
}

setUp();
