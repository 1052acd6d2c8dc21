/* Draws every chart described in <script type="application/json" id="chart-data"> with uPlot.
   After drawing, each chart element carries what it drew: data-points (non-empty values over
   all series) and data-series (the series values uPlot holds), so a test can check them. */
(function () {
  "use strict";
  var COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
                "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31"];

  function slotLabel(v) {
    var h = Math.floor(v), m = Math.round((v - h) * 60);
    return (h < 10 ? "0" : "") + h + ":" + (m < 10 ? "0" : "") + m;
  }

  function draw(el, c) {
    var width = Math.max(320, el.clientWidth || 640);
    var bars = c.kind === "bars";
    var series = [{}];
    c.series.forEach(function (s, i) {
      var spec = {label: s.label, stroke: COLORS[i % COLORS.length], width: 1.5,
                  spanGaps: false, points: {show: c.x.length <= 60}};
      if (bars) {
        spec.fill = COLORS[i % COLORS.length] + "99";
        spec.paths = uPlot.paths.bars({size: [0.35, 60], align: i === 0 ? -1 : 1});
      } else if (c.kind === "slots") {
        spec.paths = uPlot.paths.stepped({align: 1});
      }
      series.push(spec);
    });
    var xAxis = {};
    if (bars) {
      xAxis.values = function (u, vals) { return vals.map(function (v) { return c.labels[v] || ""; }); };
      xAxis.splits = function () { return c.x; };
    } else if (c.kind === "slots") {
      xAxis.values = function (u, vals) { return vals.map(slotLabel); };
    }
    var opts = {
      width: width, height: 240, series: series,
      scales: {x: {time: c.kind === "time", range: bars ? [-0.6, c.x.length - 0.4] : undefined},
               y: bars ? {range: function (u, min, max) { return [0, Math.max(max, 1)]; }} : {}},
      axes: [xAxis, {}],
      legend: {live: true}
    };
    var data = [c.x].concat(c.series.map(function (s) { return s.values; }));
    var u = new uPlot(opts, data, el);
    var held = u.data.slice(1);
    var points = 0;
    held.forEach(function (vals) { vals.forEach(function (v) { if (v !== null && v !== undefined) points++; }); });
    el.setAttribute("data-points", String(points));
    el.setAttribute("data-x", JSON.stringify(u.data[0]));
    el.setAttribute("data-series", JSON.stringify(held));
    el.setAttribute("data-drawn", "1");
  }

  function start() {
    var node = document.getElementById("chart-data");
    if (!node) return;
    var charts = JSON.parse(node.textContent);
    charts.forEach(function (c) {
      var el = document.querySelector('[data-chart="' + c.id + '"]');
      if (el) {
        try { draw(el, c); } catch (e) { el.setAttribute("data-error", String(e)); el.textContent = "chart failed: " + e; }
      }
    });
    var sel = document.querySelector("[data-refresh]");
    if (sel && window.location.hash !== "#still") {  /* #still: read (or screenshot) without reloads */
      var s = parseFloat(sel.getAttribute("data-refresh"));
      if (s > 0) setTimeout(function () { if (window.location.hash !== "#still") window.location.reload(); }, s * 1000);
    }
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
