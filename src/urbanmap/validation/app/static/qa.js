// The QA page remembers the adjudicator's name (in this browser only) for every form.
(function () {
  "use strict";
  const inputs = Array.from(document.querySelectorAll("input.adjudicator"));
  const saved = window.localStorage.getItem("urbanmap.adjudicator") || "";
  for (const input of inputs) {
    if (!input.value) input.value = saved;
    input.addEventListener("change", () => window.localStorage.setItem("urbanmap.adjudicator", input.value.trim()));
  }
})();
