// The chip viewer: the four panels of a sheet, zoomed and panned together.
// Wheel zooms about the pointer, a drag pans, double click zooms in; + - 0 from the keyboard
// (interpret.js and cell pages). State: zoom z >= 1 and the centre (cx, cy) of the view in
// panel pixels; each <img> is the whole sheet, shifted so that its panel fills the frame.
(function () {
  "use strict";
  const viewer = document.getElementById("viewer");
  if (!viewer) return;
  const side = Number(viewer.dataset.side);
  const images = Array.from(viewer.querySelectorAll(".frame img"));
  const state = { z: 1, cx: side / 2, cy: side / 2 };
  const MAX = 16;

  function clamp() {
    state.z = Math.min(MAX, Math.max(1, state.z));
    const half = side / (2 * state.z);
    state.cx = Math.min(side - half, Math.max(half, state.cx));
    state.cy = Math.min(side - half, Math.max(half, state.cy));
  }

  function draw() {
    clamp();
    for (const img of images) {
      const tx = side / 2 - state.z * (state.cx + Number(img.dataset.x));
      const ty = side / 2 - state.z * (state.cy + Number(img.dataset.y));
      img.style.transform = `translate(${tx}px, ${ty}px) scale(${state.z})`;
    }
  }

  // Zoom by `factor` keeping the panel point under (mx, my) (frame pixels) in place.
  function zoomAt(factor, mx, my) {
    const px = state.cx + (mx - side / 2) / state.z;
    const py = state.cy + (my - side / 2) / state.z;
    state.z = Math.min(MAX, Math.max(1, state.z * factor));
    state.cx = px - (mx - side / 2) / state.z;
    state.cy = py - (my - side / 2) / state.z;
    draw();
  }

  for (const img of images) {
    const frame = img.parentElement;
    frame.addEventListener("wheel", (e) => {
      e.preventDefault();
      const r = frame.getBoundingClientRect();
      zoomAt(e.deltaY < 0 ? 1.25 : 0.8, e.clientX - r.left, e.clientY - r.top);
    }, { passive: false });
    frame.addEventListener("dblclick", (e) => {
      const r = frame.getBoundingClientRect();
      zoomAt(2, e.clientX - r.left, e.clientY - r.top);
    });
    frame.addEventListener("pointerdown", (e) => {
      frame.setPointerCapture(e.pointerId);
      frame.classList.add("dragging");
      let last = [e.clientX, e.clientY];
      const move = (m) => {
        state.cx -= (m.clientX - last[0]) / state.z;
        state.cy -= (m.clientY - last[1]) / state.z;
        last = [m.clientX, m.clientY];
        draw();
      };
      const up = () => {
        frame.classList.remove("dragging");
        frame.removeEventListener("pointermove", move);
        frame.removeEventListener("pointerup", up);
      };
      frame.addEventListener("pointermove", move);
      frame.addEventListener("pointerup", up);
    });
  }

  window.urbanmapViewer = {
    zoom(factor) { zoomAt(factor, side / 2, side / 2); },
    reset() { state.z = 1; state.cx = side / 2; state.cy = side / 2; draw(); },
    state,
  };
  document.addEventListener("keydown", (e) => {
    const t = e.target;
    if (t && (t.tagName === "TEXTAREA" || t.tagName === "INPUT" && t.type === "text")) return;
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    if (e.key === "+" || e.key === "=") window.urbanmapViewer.zoom(1.5);
    else if (e.key === "-" || e.key === "_") window.urbanmapViewer.zoom(1 / 1.5);
    else if (e.key === "0") window.urbanmapViewer.reset();
  });
})();
