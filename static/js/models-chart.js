/*
 * The Models page's scatter: top-1 accuracy on the test split against file size (MB, log
 * scale), one point per TFLite export coloured by kind, each model's .keras file as a hollow
 * square for reference, and the Pareto front (no other export both smaller and at least as
 * accurate) as a step line. The data rides along in the page as JSON (#models-chart-data);
 * the table under the chart is the accessible source of the same figures.
 * Clicking an export's point opens Try it with that export.
 */
(function () {
  "use strict";

  var canvas = document.getElementById("models-scatter");
  var source = document.getElementById("models-chart-data");
  if (!canvas || !source || typeof Chart === "undefined") return;

  var data = JSON.parse(source.textContent || "{}");
  var points = data.points || [];
  var COLORS = {
    float32: "#2d6190",
    float16: "#2f7040",
    dynamic: "#9a6700",
    int8: "#b3261e",
    keras: "#6b665b",
    front: "rgba(47, 93, 58, 0.85)",
  };
  var STYLES = { float32: "circle", float16: "triangle", dynamic: "rect", int8: "rectRot" };
  var LABELS = { float32: "float32", float16: "float16", dynamic: "dynamic range", int8: "int8" };

  function xy(p) {
    return {
      x: p.size_mb,
      y: p.accuracy,
      label: p.label,
      exportId: p.export_id,
      pareto: p.pareto,
    };
  }

  var datasets = [];
  (data.kinds || Object.keys(STYLES)).forEach(function (kind) {
    var mine = points.filter(function (p) { return p.kind === kind; });
    if (!mine.length) return;
    datasets.push({
      type: "scatter",
      label: LABELS[kind] || kind,
      data: mine.map(xy),
      backgroundColor: COLORS[kind] || "#444",
      borderColor: COLORS[kind] || "#444",
      pointStyle: STYLES[kind] || "circle",
      pointRadius: mine.map(function (p) { return p.pareto ? 7 : 5; }),
      pointHoverRadius: 9,
      clip: 10,
      order: 1,
    });
  });
  var keras = points.filter(function (p) { return p.kind === "keras"; });
  if (keras.length) {
    datasets.push({
      type: "scatter",
      label: ".keras (reference)",
      data: keras.map(xy),
      backgroundColor: "transparent",
      borderColor: COLORS.keras,
      borderWidth: 2,
      pointStyle: "rect",
      pointRadius: 6,
      pointHoverRadius: 8,
      clip: 10,
      order: 2,
    });
  }
  var front = data.front || [];
  if (front.length) {
    datasets.push({
      type: "line",
      label: "Pareto front",
      data: front.map(function (p) { return { x: p.size_mb, y: p.accuracy }; }),
      borderColor: COLORS.front,
      backgroundColor: COLORS.front,
      borderWidth: 2,
      borderDash: [6, 4],
      // Along the x axis first, then up: the edge of what the front's exports beat.
      stepped: "before",
      pointStyle: "line",
      pointRadius: 0,
      pointHoverRadius: 0,
      fill: false,
      order: 3,
    });
  }

  // Room around the points on the log axis, so none sits on the frame.
  var sizes = points.map(function (p) { return p.size_mb; }).filter(function (v) { return v > 0; });
  var xMin = sizes.length ? Math.min.apply(null, sizes) / 1.3 : undefined;
  var xMax = sizes.length ? Math.max.apply(null, sizes) * 1.3 : undefined;
  var accs = points.map(function (p) { return p.accuracy; });
  var yMin = accs.length ? Math.max(0, Math.floor((Math.min.apply(null, accs) - 0.03) * 50) / 50) : 0;

  function pct(v) { return (v * 100).toFixed(1) + " %"; }
  function mb(v) { return v >= 10 ? v.toFixed(0) + " MB" : v >= 1 ? v.toFixed(1) + " MB" : v.toFixed(2) + " MB"; }

  var chart = new Chart(canvas, {
    type: "scatter",
    data: { datasets: datasets },
    options: {
      animation: false,
      responsive: true,
      maintainAspectRatio: false,
      parsing: false,
      interaction: { mode: "nearest", intersect: true },
      scales: {
        x: {
          type: "logarithmic",
          min: xMin,
          max: xMax,
          title: { display: true, text: "file size (MB, log scale)" },
          ticks: { callback: function (v) { return mb(Number(v)); }, maxTicksLimit: 8 },
        },
        y: {
          title: { display: true, text: "top-1 accuracy (test split)" },
          min: yMin,
          max: 1,
          // Whole percents unless the axis spans only a few, where they would repeat.
          ticks: {
            callback: function (v) {
              return (Number(v) * 100).toFixed(1 - yMin > 0.1 ? 0 : 1) + " %";
            },
          },
        },
      },
      plugins: {
        legend: { position: "bottom", labels: { usePointStyle: true, boxWidth: 10 } },
        tooltip: {
          filter: function (item) { return item.dataset.type !== "line"; },
          callbacks: {
            label: function (ctx) {
              var raw = ctx.raw || {};
              return (raw.label || ctx.dataset.label) + ": " + pct(raw.y) + " · " + mb(raw.x) +
                (raw.pareto ? " · Pareto" : "");
            },
          },
        },
      },
      onClick: function (_event, elements) {
        if (!elements.length) return;
        var el = elements[0];
        var raw = chart.data.datasets[el.datasetIndex].data[el.index];
        if (raw && raw.exportId) window.location.href = "/try?export=" + raw.exportId;
      },
      onHover: function (event, elements) {
        var target = event.native && event.native.target;
        if (!target) return;
        var raw = elements.length
          ? chart.data.datasets[elements[0].datasetIndex].data[elements[0].index]
          : null;
        target.style.cursor = raw && raw.exportId ? "pointer" : "default";
      },
    },
  });
})();
