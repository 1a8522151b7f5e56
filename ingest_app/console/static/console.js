// The console's only script: keeps a page's live parts fresh, and asks before destructive forms.
// Every page works without it; it adds no content of its own (the server renders every part).
"use strict";

(function () {
  var body = document.body;
  var stateLine = document.getElementById("live-state");

  // --- confirmation ------------------------------------------------------------------------
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!form.matches || !form.matches("form[data-confirm]")) return;
    var question = form.getAttribute("data-confirm");
    var button = event.submitter;
    if (button && button.name === "decision") {
      question = (button.value === "accept" ? "Accept" : "Reject") + " this result? A review is final.";
    }
    if (!window.confirm(question)) {
      event.preventDefault();
      return;
    }
    var confirmed = document.createElement("input");
    confirmed.type = "hidden";
    confirmed.name = "confirmed";
    confirmed.value = "1";
    form.appendChild(confirmed);
  });

  // --- an error page that asks to be reloaded (database down) -----------------------------
  var reloadAfter = body.getAttribute("data-reload-after");
  if (reloadAfter) {
    window.setTimeout(function () { window.location.reload(); }, Number(reloadAfter));
  }

  // --- the event log opens at its newest line ---------------------------------------------------
  var logScroll = document.getElementById("log-scroll");
  if (logScroll) logScroll.scrollTop = logScroll.scrollHeight;

  // --- live parts ----------------------------------------------------------------------------
  var liveUrl = body.getAttribute("data-live-url");
  if (!liveUrl) return;
  var every = Number(body.getAttribute("data-live-every") || 2000);
  var idleEvery = 10000;
  var failures = 0;
  var lastUpdate = Date.now();
  var timer = null;
  var inFlight = false;

  function showState(text, bad) {
    if (!stateLine) return;
    stateLine.hidden = !text;
    stateLine.textContent = text || "";
    stateLine.classList.toggle("bad", !!bad);
  }

  function busy(part) {
    // Never replace a part someone is typing into (the review notes).
    var active = document.activeElement;
    if (active && part.contains(active) && /^(INPUT|TEXTAREA|SELECT)$/.test(active.tagName)) return true;
    var areas = part.querySelectorAll("textarea");
    for (var i = 0; i < areas.length; i++) { if (areas[i].value) return true; }
    return false;
  }

  function replace(part, html) {
    // Keep open whatever the reader opened (history, traceback, artifact list).
    var open = {};
    part.querySelectorAll("details").forEach(function (d, i) { open[i] = d.open; });
    part.innerHTML = html;
    part.querySelectorAll("details").forEach(function (d, i) { if (i in open) d.open = open[i]; });
  }

  function url() {
    var u = new URL(liveUrl, window.location.href);
    var version = body.getAttribute("data-version");
    var after = body.getAttribute("data-after-seq");
    if (version) u.searchParams.set("v", version);
    if (after !== null) u.searchParams.set("after_seq", after);
    return u.toString();
  }

  function apply(data) {
    Object.keys(data.parts || {}).forEach(function (name) {
      var part = document.getElementById("part-" + name) || document.getElementById("live-" + name);
      if (part && !busy(part)) replace(part, data.parts[name]);
    });
    if (data.events) {
      var log = document.getElementById("live-events");
      var scroller = document.getElementById("log-scroll");
      var atEnd = scroller && scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 40;
      if (log) log.insertAdjacentHTML("beforeend", data.events);
      if (atEnd) scroller.scrollTop = scroller.scrollHeight;
    }
    if (data.v) body.setAttribute("data-version", data.v);
    if (typeof data.afterSeq === "number") body.setAttribute("data-after-seq", String(data.afterSeq));
    if (data.live === false) body.setAttribute("data-live-idle", "");
    if (data.live === true) body.removeAttribute("data-live-idle");
  }

  function schedule() {
    var wait = body.hasAttribute("data-live-idle") ? idleEvery : every;
    if (failures) wait = Math.min(30000, every * Math.pow(2, failures));
    window.clearTimeout(timer);
    timer = window.setTimeout(poll, wait);
  }

  function poll() {
    if (inFlight) return;
    if (document.hidden) { schedule(); return; }
    inFlight = true;
    fetch(url(), { credentials: "same-origin", cache: "no-store", headers: { "Accept": "application/json" } })
      .then(function (response) {
        if (response.status === 401) { window.location.reload(); return null; }
        if (response.status === 204) return null;
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      })
      .then(function (data) {
        inFlight = false;
        if (data) apply(data);
        failures = 0;
        lastUpdate = Date.now();
        showState("", false);
        schedule();
      })
      .catch(function () {
        inFlight = false;
        failures += 1;
        showState("Live updates paused: the server did not answer; retrying.", true);
        schedule();
      });
  }

  document.addEventListener("visibilitychange", function () {
    if (!document.hidden && Date.now() - lastUpdate > every) { window.clearTimeout(timer); poll(); }
  });
  schedule();
})();
