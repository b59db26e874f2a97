/*
 * Species page: the import forms. htmx sends them; this adds what htmx leaves to the page:
 *   - a zip larger than the server's limit is refused here, before any byte is sent;
 *   - an upload shows its progress;
 *   - the server's refusal (4xx: too large, not a zip, no such folder) is shown under the form
 *     (htmx does not swap error responses by default; the forms pick `.error-message` out).
 */
(function () {
  "use strict";

  function formatBytes(n) {
    var units = ["bytes", "KiB", "MiB", "GiB"];
    var i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : String(n)) + " " + units[i];
  }

  function importForm(elt) {
    return elt && elt.closest ? elt.closest(".import-form") : null;
  }

  function feedback(form, text) {
    var box = form.querySelector(".field-error");
    if (box) box.textContent = text;
  }

  document.addEventListener("htmx:beforeRequest", function (evt) {
    var form = importForm(evt.detail.elt);
    if (!form) return;
    feedback(form, "");
    var limit = Number(form.dataset.maxBytes || 0);
    var input = form.querySelector('input[type="file"]');
    var file = input && input.files && input.files[0];
    if (limit && file && file.size > limit) {
      evt.preventDefault();
      feedback(form, "This zip is " + formatBytes(file.size) + "; uploads are limited to " +
        formatBytes(limit) + ". Split it, or import it as a folder on the server.");
      return;
    }
    var bar = form.querySelector(".upload-progress");
    if (bar && file) bar.hidden = false;
  });

  document.addEventListener("htmx:xhr:progress", function (evt) {
    var form = importForm(evt.detail.elt || evt.target);
    var box = form && form.querySelector(".upload-progress");
    if (!box || !evt.detail.lengthComputable) return;
    var pct = Math.round((100 * evt.detail.loaded) / Math.max(evt.detail.total, 1));
    box.querySelector(".progress-bar").style.width = pct + "%";
    box.querySelector("[role=progressbar]").setAttribute("aria-valuenow", String(pct));
    box.querySelector(".upload-progress-text").textContent = pct < 100
      ? "Uploading… " + pct + "% of " + formatBytes(evt.detail.total)
      : "Checking the zip…";
  });

  document.addEventListener("htmx:beforeSwap", function (evt) {
    var form = importForm(evt.detail.elt);
    if (!form) return;
    var status = evt.detail.xhr.status;
    if (status >= 400 && status < 500 && status !== 401) {
      evt.detail.shouldSwap = true;
      evt.detail.isError = false;
    }
  });

  document.addEventListener("htmx:sendError", function (evt) {
    var form = importForm(evt.detail.elt);
    if (form) feedback(form, "The upload was cut off before the server answered; check the connection and try again.");
  });

  document.addEventListener("htmx:afterRequest", function (evt) {
    var form = importForm(evt.detail.elt);
    var box = form && form.querySelector(".upload-progress");
    if (box && !evt.detail.successful) box.hidden = true;
    if (form && evt.detail.failed && evt.detail.xhr && evt.detail.xhr.status >= 500) {
      feedback(form, "The server could not start the import (" + evt.detail.xhr.status +
        "); try again, or see the Status page.");
    }
  });
})();
