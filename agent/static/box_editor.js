// The layout canvas of `scenewright serve`: draggable, resizable boxes, kept in sync with a hidden
// Gradio textbox (#sw-state) that holds the box state as JSON: {"boxes": [{name, phrase, x, y, w, h}]},
// coordinates normalized to the canvas (origin top-left, y down). The server writes that textbox after
// planning; this script polls it and redraws, and writes it back (with an `input` event, so Gradio
// sees the edit) when a box is moved, resized, added, removed or relabelled.
// Runs as gr.HTML's js_on_load: `element` is the component's root.
const canvas = element.querySelector(".sw-canvas");
const labelInput = element.querySelector(".sw-label");
const addButton = element.querySelector(".sw-add");
const removeButton = element.querySelector(".sw-remove");
let state = { boxes: [] };
let selected = -1;
let lastSeen = null; // the textbox text last drawn or written, so a poll redraws only on a server update
let drag = null;

function stateTextbox() {
  return document.querySelector("#sw-state textarea, #sw-state input");
}

function publish() {
  const box = stateTextbox();
  if (!box) return;
  lastSeen = JSON.stringify(state);
  box.value = lastSeen;
  box.dispatchEvent(new Event("input", { bubbles: true }));
}

function percent(v) {
  return (Number(v) * 100).toFixed(3) + "%";
}

function render() {
  canvas.querySelectorAll(".sw-box").forEach((node) => node.remove());
  state.boxes.forEach((b, i) => {
    const node = document.createElement("div");
    node.className = "sw-box" + (i === selected ? " sw-selected" : "");
    node.dataset.index = String(i);
    node.style.left = percent(b.x);
    node.style.top = percent(b.y);
    node.style.width = percent(b.w);
    node.style.height = percent(b.h);
    const label = document.createElement("span");
    label.className = "sw-box-label";
    label.textContent = String(b.phrase ?? "");
    const handle = document.createElement("div");
    handle.className = "sw-handle";
    handle.title = "drag to resize";
    node.append(label, handle);
    canvas.append(node);
  });
  const has = selected >= 0 && selected < state.boxes.length;
  labelInput.value = has ? String(state.boxes[selected].phrase ?? "") : labelInput.value;
  removeButton.disabled = !has;
}

function poll() {
  const box = stateTextbox();
  if (!box || box.value === lastSeen) return;
  lastSeen = box.value;
  let parsed = null;
  try {
    parsed = JSON.parse(box.value || "{}");
  } catch (e) {
    parsed = null;
  }
  state = parsed && Array.isArray(parsed.boxes) ? parsed : { boxes: [] };
  if (selected >= state.boxes.length) selected = -1;
  render();
}

function clamp(v, lo, hi) {
  return Math.min(hi, Math.max(lo, v));
}

canvas.addEventListener("pointerdown", (event) => {
  const node = event.target.closest(".sw-box");
  if (!node) {
    selected = -1;
    render();
    return;
  }
  event.preventDefault();
  selected = Number(node.dataset.index);
  const b = state.boxes[selected];
  drag = {
    mode: event.target.classList.contains("sw-handle") ? "resize" : "move",
    x: event.clientX,
    y: event.clientY,
    box: { x: Number(b.x), y: Number(b.y), w: Number(b.w), h: Number(b.h) },
  };
  canvas.setPointerCapture(event.pointerId);
  render();
});

canvas.addEventListener("pointermove", (event) => {
  if (!drag || selected < 0) return;
  const rect = canvas.getBoundingClientRect();
  const dx = (event.clientX - drag.x) / rect.width;
  const dy = (event.clientY - drag.y) / rect.height;
  const b = state.boxes[selected];
  if (drag.mode === "move") {
    b.x = clamp(drag.box.x + dx, 0, 1 - drag.box.w);
    b.y = clamp(drag.box.y + dy, 0, 1 - drag.box.h);
  } else {
    // A box may shrink to nothing: the server then says which box has no area (never a silent minimum).
    b.w = clamp(drag.box.w + dx, 0, 1 - drag.box.x);
    b.h = clamp(drag.box.h + dy, 0, 1 - drag.box.y);
  }
  render();
});

function endDrag() {
  if (!drag) return;
  drag = null;
  publish();
}
canvas.addEventListener("pointerup", endDrag);
canvas.addEventListener("pointercancel", endDrag);

addButton.addEventListener("click", () => {
  const phrase = labelInput.value.trim() || "an object";
  state.boxes.push({ phrase: phrase, x: 0.35, y: 0.35, w: 0.3, h: 0.3 });
  selected = state.boxes.length - 1;
  render();
  publish();
});

removeButton.addEventListener("click", () => {
  if (selected < 0) return;
  state.boxes.splice(selected, 1);
  selected = -1;
  render();
  publish();
});

labelInput.addEventListener("input", () => {
  if (selected < 0) return;
  const b = state.boxes[selected];
  b.phrase = labelInput.value;
  delete b.name; // the server derives the kind from the new phrase
  canvas.querySelector(`.sw-box[data-index="${selected}"] .sw-box-label`).textContent = b.phrase;
  publish();
});

setInterval(poll, 100);
