// The case page: message frames sized to their content, per-message "show images" and
// "show full message", and outbound states kept current while any is still moving.
(function () {
  "use strict";

  function fit(frame) {
    try {
      var body = frame.contentDocument && frame.contentDocument.body;
      if (!body) return;
      var size = function () { frame.style.height = body.offsetHeight + 16 + "px"; };
      size();
      // Images that arrive later (inline files, "show images") change the height.
      if (window.ResizeObserver) new ResizeObserver(size).observe(body);
    } catch (e) {
      /* a frame we cannot read keeps its CSS height */
    }
  }

  function toggle(button) {
    var article = button.closest("article");
    var frame = article.querySelector("iframe.body");
    var url = new URL(frame.getAttribute("src"), window.location.href);
    var name = button.dataset.toggle;
    var on = url.searchParams.get(name) !== "1";
    if (on) {
      url.searchParams.set(name, "1");
    } else {
      url.searchParams.delete(name);
    }
    frame.setAttribute("src", url.pathname + url.search);
    button.setAttribute("aria-pressed", on ? "true" : "false");
    button.textContent = {
      images: on ? "Hide images" : "Show images",
      full: on ? "Hide quoted text" : "Show full message",
    }[name];
  }

  document.querySelectorAll("iframe.body").forEach(function (frame) {
    frame.addEventListener("load", function () { fit(frame); });
    fit(frame);
  });
  document.querySelectorAll("button[data-toggle]").forEach(function (button) {
    button.addEventListener("click", function () { toggle(button); });
  });

  var thread = document.querySelector("[data-states-url]");
  if (!thread) return;

  function update(states) {
    Object.keys(states).forEach(function (pk) {
      var badge = thread.querySelector('#message-' + pk + ' [data-state]');
      if (!badge) return;
      var s = states[pk];
      badge.textContent = s.label;
      badge.className = "out-state " + s.state;
      badge.title = s.error || "";
      if (s.moving) badge.setAttribute("data-moving", ""); else badge.removeAttribute("data-moving");
    });
  }

  function poll() {
    if (!thread.querySelector("[data-moving]")) return;
    fetch(thread.dataset.statesUrl, { headers: { Accept: "application/json" }, credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) { if (data) update(data.messages); })
      .catch(function () { /* try again at the next tick */ })
      .finally(function () { window.setTimeout(poll, 2000); });
  }
  window.setTimeout(poll, 2000);
  // A reply added to the page (actions helper) starts the polling again.
  document.addEventListener("postroom:message-added", function () { window.setTimeout(poll, 2000); });
}());
