/*
 * Try it: htmx posts the form and swaps the answer into #try-result; this adds
 *   - a photo larger than the server's limit is refused here, before any byte is sent;
 *   - the server's refusal (4xx: empty file, not an image, too many pixels) is shown in place
 *     (htmx does not swap error responses by default; a full error page is boiled down to its
 *     message);
 *   - picking a dataset photo fills the image id and clears the file input, and the reverse.
 */
(function () {
  "use strict";

  var form = document.getElementById("try-form");
  if (!form) return;
  var fileInput = document.getElementById("try-photo");
  var idInput = document.getElementById("try-image-id");
  var result = document.getElementById("try-result");

  function formatBytes(n) {
    var units = ["bytes", "KiB", "MiB", "GiB"];
    var i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : String(n)) + " " + units[i];
  }

  function showError(text) {
    var box = document.createElement("div");
    box.className = "alert alert-error try-error";
    box.setAttribute("role", "alert");
    var p = document.createElement("p");
    p.className = "error-message";
    p.textContent = text;
    box.appendChild(p);
    result.replaceChildren(box);
  }

  function markChosen(id) {
    form.querySelectorAll(".try-sample").forEach(function (a) {
      var on = a.dataset.imageId === String(id);
      a.classList.toggle("is-chosen", on);
      if (on) a.setAttribute("aria-current", "true");
      else a.removeAttribute("aria-current");
    });
  }

  form.addEventListener("click", function (evt) {
    var sample = evt.target.closest ? evt.target.closest(".try-sample") : null;
    if (!sample) return;
    evt.preventDefault();
    idInput.value = sample.dataset.imageId;
    if (fileInput) fileInput.value = "";
    markChosen(sample.dataset.imageId);
  });
  if (fileInput) {
    fileInput.addEventListener("change", function () {
      if (fileInput.files && fileInput.files.length) {
        idInput.value = "";
        markChosen(null);
      }
    });
  }
  idInput.addEventListener("input", function () { markChosen(idInput.value); });

  form.addEventListener("htmx:beforeRequest", function (evt) {
    var limit = Number(form.dataset.maxBytes || 0);
    var file = fileInput && fileInput.files && fileInput.files[0];
    if (limit && file && file.size > limit) {
      evt.preventDefault();
      showError("This photo is " + formatBytes(file.size) + "; Try it reads at most " +
        formatBytes(limit) + ". Send a smaller one.");
    }
  });

  function fromForm(evt) {
    var d = evt.detail || {};
    var elt = d.requestConfig ? d.requestConfig.elt : d.elt;
    return elt === form || d.elt === form || d.target === result;
  }

  document.addEventListener("htmx:beforeSwap", function (evt) {
    if (!fromForm(evt)) return;
    var status = evt.detail.xhr.status;
    if (status >= 400 && status < 500 && status !== 401) {
      evt.detail.shouldSwap = true;
      evt.detail.isError = false;
      var text = evt.detail.serverResponse || "";
      if (text.indexOf("data-try-fragment") === -1) {
        // A full error page (the upload was refused before the route): keep its message.
        var doc = new DOMParser().parseFromString(text, "text/html");
        var message = doc.querySelector(".error-message");
        evt.detail.shouldSwap = false;
        showError(message ? message.textContent : "The server refused the photo (" + status + ").");
      }
    }
  });

  document.addEventListener("htmx:sendError", function (evt) {
    if (fromForm(evt)) {
      showError("The photo was cut off before the server answered; check the connection and try again.");
    }
  });

  document.addEventListener("htmx:afterRequest", function (evt) {
    if (fromForm(evt) && evt.detail.failed && evt.detail.xhr && evt.detail.xhr.status >= 500) {
      showError("The server could not run the export (" + evt.detail.xhr.status + "); try again.");
    }
  });
})();
