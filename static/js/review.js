/*
 * The review queue's keyboard and selection layer. htmx does the requests and swaps; this file
 *   - moves focus between cards (arrow keys; Home / End), keeping one card focusable (roving
 *     tabindex), and keeps focus in place when a decided card leaves the queue;
 *   - maps keys to the focused card's buttons: k keep, x exclude, u undo, Space select,
 *     Enter open the photo;
 *   - tracks a multi-selection (checkbox, Space, Ctrl/Cmd-click, Shift-click for a range) for the
 *     bulk bar, and an undo stack of this page's decisions (u walks it back, newest first).
 * Served as-is from /static/js/review.js; no framework, no build step.
 */
(function () {
  "use strict";

  var undoStack = []; // arrays of image ids, newest last
  var anchorId = null; // where a Shift-click range starts
  var focusIndex = null; // where focus goes after a card leaves the queue

  function queue() {
    return document.getElementById("review-queue");
  }
  function cards() {
    var q = queue();
    return q ? Array.prototype.slice.call(q.querySelectorAll(".review-card")) : [];
  }
  function currentCard() {
    var el = document.activeElement;
    return el && el.closest ? el.closest(".review-card") : null;
  }
  function view() {
    var q = queue();
    return (q && q.getAttribute("data-view")) || "pending";
  }
  function scopeId() {
    var form = document.getElementById("review-bulk");
    var input = form && form.querySelector('input[name="scope_id"]');
    return input ? input.value : null;
  }

  function notice(text) {
    var region = document.getElementById("review-notice");
    if (region) region.textContent = text;
  }

  // --- focus -----------------------------------------------------------------
  function focusCard(card) {
    if (!card) return;
    cards().forEach(function (c) {
      c.tabIndex = c === card ? 0 : -1;
    });
    card.focus({ preventScroll: true });
    card.scrollIntoView({ block: "nearest", behavior: "smooth" });
  }

  function columns(list) {
    if (list.length < 2) return 1;
    var top = list[0].offsetTop;
    for (var i = 1; i < list.length; i++) {
      if (list[i].offsetTop !== top) return i;
    }
    return list.length;
  }

  function move(delta) {
    var list = cards();
    if (!list.length) return;
    var card = currentCard();
    var index = card ? list.indexOf(card) : -1;
    var next = index < 0 ? 0 : Math.max(0, Math.min(list.length - 1, index + delta));
    focusCard(list[next]);
  }

  function initFocus() {
    var list = cards();
    if (!list.length) return;
    if (!list.some(function (c) { return c.tabIndex === 0; })) list[0].tabIndex = 0;
  }

  // --- selection -------------------------------------------------------------
  function checkbox(card) {
    return card ? card.querySelector(".review-check") : null;
  }

  function setSelected(card, on) {
    var box = checkbox(card);
    if (!box) return;
    box.checked = on;
    card.classList.toggle("is-selected", on);
    card.setAttribute("aria-selected", on ? "true" : "false");
  }

  function selectedIds() {
    return cards()
      .filter(function (c) { var b = checkbox(c); return b && b.checked; })
      .map(function (c) { return c.getAttribute("data-image-id"); });
  }

  function updateBulk() {
    var form = document.getElementById("review-bulk");
    if (!form) return;
    var count = selectedIds().length;
    var label = form.querySelector("[data-selected-count]");
    if (label) label.textContent = String(count);
    form.classList.toggle("has-selection", count > 0);
    form.querySelectorAll("button").forEach(function (b) {
      b.disabled = count === 0;
    });
  }

  function selectRange(fromId, toCard) {
    var list = cards();
    var from = list.findIndex(function (c) { return c.getAttribute("data-image-id") === fromId; });
    var to = list.indexOf(toCard);
    if (from < 0 || to < 0) return setSelected(toCard, true);
    var lo = Math.min(from, to), hi = Math.max(from, to);
    for (var i = lo; i <= hi; i++) setSelected(list[i], true);
  }

  function clearSelection() {
    cards().forEach(function (c) { setSelected(c, false); });
    updateBulk();
  }

  // --- decisions -------------------------------------------------------------
  function press(card, decision) {
    if (!card) return;
    var button = card.querySelector('button[data-decision="' + decision + '"]');
    if (!button || button.disabled) return;
    focusIndex = cards().indexOf(card);
    button.click();
  }

  function undo() {
    var ids = undoStack.pop();
    if (!ids) {
      notice("Nothing to undo on this page.");
      return;
    }
    var values = { decision: "undo", view: view() };
    var scope = scopeId();
    if (scope) values.scope_id = scope;
    var url = "/review/images/" + ids[0];
    if (ids.length > 1) {
      url = "/review/bulk";
      values.image_ids = ids;
    }
    var card = currentCard();
    focusIndex = card ? cards().indexOf(card) : 0;
    htmx.ajax("POST", url, { values: values, swap: "none", target: "#review-notice" });
  }

  // --- events ----------------------------------------------------------------
  document.addEventListener("keydown", function (evt) {
    if (!queue() || evt.defaultPrevented || evt.altKey || evt.ctrlKey || evt.metaKey) return;
    var target = evt.target;
    var tag = target && target.tagName;
    if (tag === "INPUT" && target.type !== "checkbox") return;
    if (tag === "TEXTAREA" || tag === "SELECT" || (target && target.isContentEditable)) return;
    var card = currentCard();
    var key = evt.key;
    var handled = true;
    if (key === "ArrowRight") move(1);
    else if (key === "ArrowLeft") move(-1);
    else if (key === "ArrowDown") move(columns(cards()));
    else if (key === "ArrowUp") move(-columns(cards()));
    else if (key === "Home") focusCard(cards()[0]);
    else if (key === "End") focusCard(cards()[cards().length - 1]);
    else if (key === "k" || key === "K") press(card || cards()[0], "keep");
    else if (key === "x" || key === "X") press(card || cards()[0], "exclude");
    else if (key === "u" || key === "U") undo();
    else if (key === " " && card) {
      setSelected(card, !checkbox(card).checked);
      anchorId = card.getAttribute("data-image-id");
      updateBulk();
    } else if (key === "Enter" && card && target === card) {
      window.location.href = "/images/" + card.getAttribute("data-image-id");
    } else if (key === "Escape") clearSelection();
    else handled = false;
    if (handled) evt.preventDefault();
  });

  document.addEventListener("click", function (evt) {
    var card = evt.target.closest && evt.target.closest(".review-card");
    if (card && queue() && queue().contains(card)) {
      var onControl = evt.target.closest("button, a, label, input");
      if (evt.shiftKey && anchorId && !onControl) {
        evt.preventDefault();
        selectRange(anchorId, card);
        updateBulk();
      } else if ((evt.ctrlKey || evt.metaKey || evt.shiftKey) && !onControl) {
        evt.preventDefault();
        setSelected(card, !checkbox(card).checked);
        anchorId = card.getAttribute("data-image-id");
        updateBulk();
      }
      if (!evt.target.closest("button, a")) focusCard(card);
    }
    if (evt.target.closest && evt.target.closest('[data-action="clear-selection"]')) {
      clearSelection();
    }
  });

  document.addEventListener("change", function (evt) {
    if (!evt.target.classList || !evt.target.classList.contains("review-check")) return;
    var card = evt.target.closest(".review-card");
    if (evt.target.checked && anchorId && window.__reviewShift) selectRange(anchorId, card);
    setSelected(card, evt.target.checked);
    anchorId = card.getAttribute("data-image-id");
    updateBulk();
  });
  // Shift-click on a checkbox extends the range too.
  document.addEventListener("mousedown", function (evt) { window.__reviewShift = evt.shiftKey; });

  document.addEventListener("htmx:configRequest", function (evt) {
    var elt = evt.detail.elt;
    if (elt && elt.id === "review-bulk") {
      evt.detail.parameters.view = view();
      evt.detail.parameters.image_ids = selectedIds();
    }
  });

  document.addEventListener("htmx:afterRequest", function (evt) {
    var detail = evt.detail;
    if (!detail.successful) {
      var xhr = detail.xhr;
      if (xhr && xhr.status >= 400) {
        var doc = new DOMParser().parseFromString(xhr.responseText || "", "text/html");
        var message = doc.querySelector(".error-message, main p");
        notice("That did not work: " + (message ? message.textContent.trim() : "HTTP " + xhr.status));
      }
      return;
    }
    var params = detail.requestConfig && detail.requestConfig.parameters;
    var decision = params && (params.decision || (params.get && params.get("decision")));
    var elt = detail.elt;
    if (!decision || decision === "undo") return;
    if (elt && elt.closest && elt.closest(".review-actions")) {
      var card = elt.closest(".review-card");
      if (card) undoStack.push([card.getAttribute("data-image-id")]);
    } else if (elt && elt.id === "review-bulk") {
      var ids = detail.requestConfig.parameters.image_ids;
      if (ids && ids.length) undoStack.push([].concat(ids));
    }
  });

  document.addEventListener("htmx:afterSettle", function () {
    if (!queue()) return;
    initFocus();
    updateBulk();
    if (focusIndex !== null) {
      var list = cards();
      var active = document.activeElement;
      if (list.length && (!active || active === document.body || !document.contains(active) ||
          !queue().contains(active))) {
        focusCard(list[Math.min(focusIndex, list.length - 1)]);
      }
      focusIndex = null;
    }
  });

  function start() {
    initFocus();
    updateBulk();
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
