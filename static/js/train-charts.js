/*
 * Live training charts on a train job's page (templates/partials/train_charts.html).
 * Starts from the metric rows embedded in the page, then follows
 * /jobs/<id>/metrics/stream: each `metrics` event is a JSON list of new JobMetric rows and
 * its id is the last row's id, so a reconnect (Last-Event-ID) resumes where it stopped.
 * Epoch rows (`end: true`) feed the loss and accuracy charts; every row feeds the learning
 * rate and throughput charts (x = global step). Phase changes are drawn as dashed lines.
 */
(function () {
  "use strict";

  var root = document.getElementById("train-charts");
  if (!root || typeof Chart === "undefined") return;

  var COLORS = {
    train: "#2f6f4f",
    val: "#c2571a",
    train5: "#7fb89a",
    val5: "#e8a26f",
    lr: "#5b5fc7",
    speed: "#2f6f4f",
    speedEpoch: "#8a8f98",
    marker: "rgba(80, 80, 80, 0.75)",
  };

  var lastId = 0;
  var lastEpochPhase = null;
  var lastStepPhase = null;
  var epochRows = [];

  function line(label, color, dashed) {
    return {
      label: label,
      data: [],
      borderColor: color,
      backgroundColor: color,
      borderDash: dashed ? [6, 4] : [],
      borderWidth: 2,
      pointRadius: 2,
      tension: 0.2,
      spanGaps: true,
    };
  }

  // Dashed vertical lines labelled "phase N" where a new phase starts (chart.$phaseMarks).
  var phaseMarkers = {
    id: "phaseMarkers",
    afterDatasetsDraw: function (chart) {
      var marks = chart.$phaseMarks || [];
      var area = chart.chartArea;
      var x = chart.scales.x;
      var ctx = chart.ctx;
      ctx.save();
      ctx.strokeStyle = COLORS.marker;
      ctx.fillStyle = COLORS.marker;
      ctx.setLineDash([4, 4]);
      ctx.lineWidth = 1;
      ctx.font = "11px system-ui, sans-serif";
      marks.forEach(function (mark) {
        var px = x.getPixelForValue(mark.x);
        if (px < area.left || px > area.right) return;
        ctx.beginPath();
        ctx.moveTo(px, area.top);
        ctx.lineTo(px, area.bottom);
        ctx.stroke();
        ctx.fillText("phase " + (mark.phase + 1), px + 4, area.top + 12);
      });
      ctx.restore();
    },
  };

  function makeChart(id, datasets, xTitle, yOptions) {
    var canvas = document.getElementById(id);
    var chart = new Chart(canvas, {
      type: "line",
      data: { datasets: datasets },
      options: {
        animation: false,
        responsive: true,
        maintainAspectRatio: false,
        parsing: false,
        normalized: true,
        interaction: { mode: "nearest", intersect: false },
        scales: {
          x: { type: "linear", title: { display: true, text: xTitle }, ticks: { precision: 0 } },
          y: yOptions || {},
        },
        plugins: { legend: { position: "bottom", labels: { boxWidth: 12 } } },
      },
      plugins: [phaseMarkers],
    });
    chart.$phaseMarks = [];
    return chart;
  }

  var charts = {
    loss: makeChart(
      "chart-loss",
      [line("train loss", COLORS.train), line("val loss", COLORS.val)],
      "epoch",
    ),
    accuracy: makeChart(
      "chart-accuracy",
      [
        line("train accuracy", COLORS.train),
        line("val accuracy", COLORS.val),
        line("train top-5", COLORS.train5, true),
        line("val top-5", COLORS.val5, true),
      ],
      "epoch",
      { min: 0, max: 1 },
    ),
    lr: makeChart(
      "chart-lr",
      [Object.assign(line("learning rate", COLORS.lr), { stepped: true, tension: 0 })],
      "step",
      { type: "logarithmic" },
    ),
    speed: makeChart(
      "chart-speed",
      [line("images/s", COLORS.speed), line("epoch average", COLORS.speedEpoch, true)],
      "step",
      { beginAtZero: true },
    ),
  };

  function num(value) {
    return typeof value === "number" && isFinite(value) ? value : null;
  }

  function push(dataset, x, y) {
    if (x === null || y === null) return;
    dataset.data.push({ x: x, y: y });
  }

  function addRow(row) {
    if (typeof row.id !== "number" || row.id <= lastId) return; // already drawn
    lastId = row.id;
    var step = num(row.step);
    var lr = num(row.learning_rate);
    if (lr === null) lr = num(row.lr);
    if (step !== null) {
      if (lastStepPhase !== null && row.phase !== lastStepPhase) {
        charts.lr.$phaseMarks.push({ x: step, phase: row.phase });
        charts.speed.$phaseMarks.push({ x: step, phase: row.phase });
      }
      lastStepPhase = row.phase;
      if (lr !== null && lr > 0) push(charts.lr.data.datasets[0], step, lr);
      push(charts.speed.data.datasets[row.end ? 1 : 0], step, num(row.images_per_s));
    }
    if (!row.end) return;
    var epoch = row.epoch;
    if (lastEpochPhase !== null && row.phase !== lastEpochPhase) {
      charts.loss.$phaseMarks.push({ x: epoch - 0.5, phase: row.phase });
      charts.accuracy.$phaseMarks.push({ x: epoch - 0.5, phase: row.phase });
    }
    lastEpochPhase = row.phase;
    epochRows.push(row);
    var loss = charts.loss.data.datasets;
    push(loss[0], epoch, num(row.loss));
    push(loss[1], epoch, num(row.val_loss));
    var acc = charts.accuracy.data.datasets;
    push(acc[0], epoch, num(row.accuracy));
    push(acc[1], epoch, num(row.val_accuracy));
    push(acc[2], epoch, num(row.top5));
    push(acc[3], epoch, num(row.val_top5));
  }

  // How many epochs in a row, ending with the latest, val loss rose while train loss fell.
  function overfitStreak() {
    var streak = 0;
    for (var i = epochRows.length - 1; i > 0; i--) {
      var now = epochRows[i];
      var before = epochRows[i - 1];
      var rising = num(now.val_loss) !== null && num(before.val_loss) !== null &&
        now.val_loss > before.val_loss;
      var falling = num(now.loss) !== null && num(before.loss) !== null && now.loss < before.loss;
      if (!(rising && falling)) break;
      streak += 1;
    }
    return streak;
  }

  function formatSeconds(s) {
    s = Math.round(s);
    var h = Math.floor(s / 3600);
    var m = Math.floor((s % 3600) / 60);
    var sec = s % 60;
    return (h ? h + " h " : "") + (h || m ? m + " min " : "") + (h ? "" : sec + " s");
  }

  function refresh(latest) {
    Object.keys(charts).forEach(function (key) {
      charts[key].update("none");
    });
    var note = document.getElementById("overfit-note");
    var streak = overfitStreak();
    note.hidden = streak < 2;
    if (streak >= 2) note.querySelector("[data-overfit-epochs]").textContent = String(streak);
    document.getElementById("train-empty").hidden = lastId > 0;
    if (latest) {
      var total = Number(root.dataset.totalEpochs) || 0;
      var parts = ["phase " + (latest.phase + 1), "epoch " + latest.epoch + (total ? " of " + total : "")];
      if (num(latest.eta_s) !== null && latest.eta_s > 0) {
        parts.push("about " + formatSeconds(latest.eta_s) + " left");
      }
      document.getElementById("train-summary").textContent = parts.join(" · ");
    }
  }

  function addRows(rows) {
    rows.forEach(addRow);
    refresh(rows.length ? rows[rows.length - 1] : null);
  }

  var embedded = document.getElementById("train-metrics");
  addRows(JSON.parse((embedded && embedded.textContent) || "[]") || []);

  // Follow new rows. The browser reconnects by itself and sends Last-Event-ID.
  var source = new EventSource(root.dataset.stream + "?after=" + lastId);
  source.addEventListener("metrics", function (event) {
    addRows(JSON.parse(event.data));
  });
  source.addEventListener("done", function () {
    source.close();
  });
  window.addEventListener("pagehide", function () {
    source.close();
  });
})();
