// Keyboard shortcuts of the interpreter's page: u / n / c the answer, 1-3 the confidence,
// m the comment (Escape leaves it, Ctrl+Enter submits from it), Enter submits and moves on,
// s skips (the cell comes back after the others). The form works without them too.
(function () {
  "use strict";
  const form = document.getElementById("answer-form");
  if (!form) return;
  const message = document.getElementById("message");
  const comment = document.getElementById("comment");
  const ANSWER_KEYS = { u: "urban", n: "non_urban", c: "cannot_tell" };
  let sent = false;

  function pick(name, value) {
    const input = form.querySelector(`input[name="${name}"][value="${value}"]`);
    if (input) { input.checked = true; message.textContent = ""; }
  }

  function submit(submitter) {
    if (sent) return;  // one post per page: a second Enter would be refused as a replay
    if (submitter.value === "answer") {
      if (!form.querySelector('input[name="answer"]:checked')) { message.textContent = "Choose an answer: u, n or c."; return; }
      if (!form.querySelector('input[name="confidence"]:checked')) { message.textContent = "Choose a confidence: 1, 2 or 3."; return; }
    }
    sent = true;
    form.requestSubmit(submitter);
  }

  form.addEventListener("submit", () => { sent = true; });

  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey && e.key === "Enter") { e.preventDefault(); submit(document.getElementById("submit")); return; }
    if (e.target === comment) {
      if (e.key === "Escape") comment.blur();
      return;
    }
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const key = e.key.toLowerCase();
    if (key in ANSWER_KEYS) { pick("answer", ANSWER_KEYS[key]); e.preventDefault(); }
    else if (key === "1" || key === "2" || key === "3") { pick("confidence", key); e.preventDefault(); }
    else if (key === "m") { comment.focus(); e.preventDefault(); }
    else if (key === "s") { e.preventDefault(); submit(document.getElementById("skip")); }
    else if (e.key === "Enter") { e.preventDefault(); submit(document.getElementById("submit")); }
  });
})();
