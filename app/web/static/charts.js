// Charts (uPlot) from the JSON the page carries, and live progress for running verifications.
"use strict";

function markEpochs(stop, onset, last, shade) {
  // The epoch to keep as a green dashed line; when overfitting, the epochs from the onset of
  // the degradation to the end shaded red, with the onset as a red line (all on the x axis:
  // epochs, or steps for a step-based run).
  return {
    hooks: {
      draw: [u => {
        if (stop == null) return;
        const ctx = u.ctx, top = u.bbox.top, height = u.bbox.height;
        const line = (epoch, colour) => {
          const x = u.valToPos(epoch, "x", true);
          ctx.strokeStyle = colour; ctx.setLineDash([5, 4]); ctx.lineWidth = 2;
          ctx.beginPath(); ctx.moveTo(x, top); ctx.lineTo(x, top + height); ctx.stroke();
        };
        ctx.save();
        if (shade) {
          const from = onset != null ? onset : stop;
          const x0 = u.valToPos(from, "x", true), x1 = u.valToPos(last, "x", true);
          if (x1 > x0) { ctx.fillStyle = "rgba(240, 68, 56, 0.10)"; ctx.fillRect(x0, top, x1 - x0, height); }
          if (onset != null) line(onset, "#f04438");
        }
        line(stop, "#12b76a");
        ctx.restore();
      }],
    },
  };
}

function chart(el, series, data, plugins, xLabel) {
  // xLabel: "epoch", or "step" for a run evaluated every so many steps.
  const x = xLabel || "epoch";
  const opts = { width: el.clientWidth || 520, height: 260, series: [{ label: x }, ...series],
                 scales: { x: { time: false } }, axes: [{ label: x }, {}], plugins: plugins || [] };
  const plot = new uPlot(opts, data, el);
  (window.advisorCharts = window.advisorCharts || []).push(plot);
  return plot;
}

function runCharts() {
  const node = document.getElementById("run-data");
  if (!node) return;
  const d = JSON.parse(node.textContent);
  const mark = [markEpochs(d.stop_epoch, d.onset_epoch, d.last_epoch, d.overfitting)];
  // The loss chart carries the marks when the loss decided, or when there is no metric.
  const onLoss = !d.metric || d.signal === "valid_loss";
  chart(document.getElementById("loss-chart"),
        [{ label: "train loss", stroke: "#2457c5", width: 2 }, { label: "valid loss", stroke: "#f79009", width: 2 }],
        [d.x, d.train_loss, d.valid_loss], onLoss ? mark : [], d.x_label);
  const metricEl = document.getElementById("metric-chart");
  if (metricEl && d.metric) {
    chart(metricEl, [{ label: "valid " + d.metric, stroke: "#7a5af8", width: 2 }], [d.x, d.metric_values], onLoss ? [] : mark, d.x_label);
  }
}

const LINE_COLOURS = ["#667085", "#2457c5", "#12b76a", "#f79009", "#7a5af8", "#f04438", "#0ba5ec", "#ee46bc"];

function overlayCharts() {
  // Per seed: the baseline (grey) and each candidate; a candidate stopped in a race ends early.
  const node = document.getElementById("overlay-data");
  if (!node) return;
  const seeds = JSON.parse(node.textContent);
  document.querySelectorAll(".chart.overlay").forEach(el => {
    const s = seeds[Number(el.dataset.index)];
    const series = s.series.map((line, i) => ({ label: line.label, stroke: LINE_COLOURS[i % LINE_COLOURS.length], width: 2 }));
    chart(el, series, [s.epochs, ...s.series.map(line => line.values)]);
  });
}

function liveProgress() {
  const live = document.getElementById("live");
  if (!live) return;
  const id = live.dataset.job;
  const text = document.getElementById("progress-text"), bar = document.getElementById("progress-bar");
  const status = document.getElementById("status");
  const tick = async () => {
    const r = await fetch(`/api/v1/verifications/${id}`, { credentials: "same-origin" });
    if (!r.ok) return;
    const job = await r.json();
    status.textContent = job.status;
    const p = job.progress || {};
    if (p.trial) {
      text.textContent = `Trial ${p.trial} of ${p.trials} so far (${p.role}, seed ${p.seed}), epoch ${p.epoch} of ${p.epochs}` +
        ` · ${p.elapsed_s} s elapsed` + (p.eta_s != null ? ` · about ${p.eta_s} s left` : "");
      bar.max = p.epochs_total || 1; bar.value = p.epochs_done || 0;
    }
    if (job.finished) { window.location.reload(); return; }
    setTimeout(tick, 1000);
  };
  setTimeout(tick, 1000);
}

document.addEventListener("DOMContentLoaded", () => { runCharts(); overlayCharts(); liveProgress(); });
