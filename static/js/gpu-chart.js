/*
 * GPU memory over time on a train job's page (the #gpu-memory figure in
 * templates/partials/train_charts.html). Starts from the GpuSample rows embedded in the page,
 * then follows /jobs/<id>/gpu/stream: each `gpu` event is a JSON list of new rows and its id is
 * the last row's id, so a reconnect (Last-Event-ID) resumes where it stopped; a `note` event
 * says what to show instead while there are no rows (waiting, or no GPU on the worker).
 * Per GPU: memory used (solid), the job's own process where the GPU lists it (dotted) and the
 * GPU's total memory (dashed reference line). x = minutes since the job started.
 */
(function () {
  "use strict";

  var box = document.getElementById("gpu-memory");
  if (!box || typeof Chart === "undefined") return;

  var PALETTE = ["#5b5fc7", "#2f6f4f", "#c2571a", "#8a5a9e", "#1f7a8c", "#b5473a", "#6b8e23"];
  var note = document.getElementById("gpu-note");
  var chartBox = document.getElementById("gpu-chart-box");
  var summary = document.getElementById("gpu-summary");
  var started = Number(box.dataset.started) || null;
  var lastId = 0;
  var gpus = {}; // gpu index -> {used, total, job, latest}

  var chart = new Chart(document.getElementById("chart-gpu"), {
    type: "line",
    data: { datasets: [] },
    options: {
      animation: false,
      responsive: true,
      maintainAspectRatio: false,
      parsing: false,
      normalized: true,
      interaction: { mode: "nearest", intersect: false },
      scales: {
        x: { type: "linear", min: 0, title: { display: true, text: "minutes since start" } },
        y: { beginAtZero: true, title: { display: true, text: "MiB" } },
      },
      plugins: { legend: { position: "bottom", labels: { boxWidth: 12 } } },
    },
  });

  function line(label, color, dash, gpu, role) {
    return {
      label: label,
      data: [],
      borderColor: color,
      backgroundColor: color,
      borderDash: dash,
      borderWidth: role === "total" ? 1 : 2,
      pointRadius: role === "used" ? 1.5 : 0,
      tension: 0.1,
      spanGaps: true,
      gpu: gpu,
      role: role,
    };
  }

  function num(value) {
    return typeof value === "number" && isFinite(value) ? value : null;
  }

  function mib(value) {
    return Math.round(value) + " MiB";
  }

  function gpuFor(row) {
    var entry = gpus[row.gpu];
    if (entry) return entry;
    var color = PALETTE[row.gpu % PALETTE.length];
    var name = row.name ? " · " + row.name : "";
    entry = {
      used: line("GPU " + row.gpu + " used" + name, color, [], row.gpu, "used"),
      total: line("GPU " + row.gpu + " total", color, [6, 4], row.gpu, "total"),
      job: null,
      color: color,
      latest: null,
    };
    chart.data.datasets.push(entry.used, entry.total);
    gpus[row.gpu] = entry;
    return entry;
  }

  function addRow(row) {
    if (typeof row.id !== "number" || row.id <= lastId) return; // already drawn
    lastId = row.id;
    if (started === null) started = row.t;
    var x = (row.t - started) / 60;
    var entry = gpuFor(row);
    entry.latest = row;
    var used = num(row.used_mb);
    var total = num(row.total_mb);
    var own = num(row.job_mb);
    if (used !== null) entry.used.data.push({ x: x, y: used });
    if (total !== null) {
      entry.total.data.push({ x: x, y: total });
      entry.total.label = "GPU " + row.gpu + " total (" + mib(total) + ")";
    }
    if (own !== null) {
      if (!entry.job) {
        entry.job = line("GPU " + row.gpu + " this job", entry.color, [2, 3], row.gpu, "job");
        chart.data.datasets.push(entry.job);
      }
      entry.job.data.push({ x: x, y: own });
    }
  }

  function showNote(value) {
    if (value && lastId === 0) {
      note.textContent = value.text;
      note.dataset.state = value.state;
      note.hidden = false;
      chartBox.hidden = value.state !== "waiting";
    } else {
      note.hidden = true;
      note.dataset.state = "";
      chartBox.hidden = false;
    }
  }

  function refresh() {
    chart.update("none");
    if (lastId > 0) showNote(null);
    var parts = Object.keys(gpus).map(function (index) {
      var row = gpus[index].latest;
      var text = "GPU " + index + ": " + (num(row.used_mb) === null ? "?" : mib(row.used_mb));
      if (num(row.total_mb) !== null) text += " of " + mib(row.total_mb);
      if (num(row.job_mb) !== null) text += " (this job " + mib(row.job_mb) + ")";
      return text;
    });
    summary.textContent = parts.join(" · ");
  }

  function addRows(rows) {
    rows.forEach(addRow);
    refresh();
  }

  var embedded = document.getElementById("gpu-samples");
  addRows(JSON.parse((embedded && embedded.textContent) || "[]") || []);

  // Follow new rows. The browser reconnects by itself and sends Last-Event-ID.
  var source = new EventSource(box.dataset.stream + "?after=" + lastId);
  source.addEventListener("gpu", function (event) {
    addRows(JSON.parse(event.data));
  });
  source.addEventListener("note", function (event) {
    showNote(JSON.parse(event.data));
  });
  source.addEventListener("done", function () {
    source.close();
  });
  window.addEventListener("pagehide", function () {
    source.close();
  });
})();
