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

// Tick steps for the x axis: whole epochs (or steps) only. uPlot's default steps include 0.5 and
// 0.25, which label a few-epoch chart "0, 0.5, 1, 1.5" though nothing happens between epochs.
const WHOLE_INCRS = [];
for (let p = 1; p <= 1e9; p *= 10) WHOLE_INCRS.push(p, 2 * p, 5 * p);

function chart(el, series, data, plugins, xLabel) {
  // xLabel: "epoch", or "step" for a run evaluated every so many steps.
  const x = xLabel || "epoch";
  const opts = { width: el.clientWidth || 520, height: 260, series: [{ label: x }, ...series],
                 scales: { x: { time: false } }, axes: [{ label: x, incrs: WHOLE_INCRS }, {}],
                 plugins: plugins || [] };
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

const trialPlots = {};

function trialCharts() {
  // A small chart of each trial's validation metric; live progress redraws it.
  const node = document.getElementById("trial-data");
  if (!node) return;
  const d = JSON.parse(node.textContent);
  const small = { font: "10px system-ui, sans-serif", stroke: "#667085", ticks: { size: 3 } };
  d.trials.forEach(t => {
    const el = document.querySelector(`.chart.trial[data-trial="${t.id}"]`);
    if (!el) return;
    const opts = { width: 200, height: 90, legend: { show: false }, cursor: { show: false },
                   series: [{ label: "epoch" }, { label: d.metric, stroke: "#2457c5", width: 1.5 }],
                   scales: { x: { time: false } },
                   axes: [{ ...small, size: 22, incrs: WHOLE_INCRS, space: 20 }, { ...small, size: 36, space: 20 }] };
    const plot = new uPlot(opts, [t.epochs, t.values], el);
    trialPlots[t.id] = { plot, metric: d.metric, n: t.epochs.length };
    (window.advisorTrialCharts = window.advisorTrialCharts || []).push(plot);
  });
}

function clock(iso) {
  // The page shows UTC wall-clock times, as the server renders them.
  return iso ? iso.slice(11, 19) : "—";
}

function showTrial(t) {
  const row = document.querySelector(`tr[data-trial="${t.id}"]`);
  if (!row) return;
  const cell = name => row.querySelector(name);
  const badge = cell(".t-status");
  badge.textContent = t.status; badge.className = `badge t-status ${t.status}`;
  cell(".t-epochs-text").textContent = `${t.epochs_done}/${t.epochs}`;
  const bar = cell(".t-progress"); bar.max = t.epochs || 1; bar.value = t.epochs_done;
  cell(".t-worker").textContent = t.worker || "—";
  cell(".t-device").textContent = t.device || "—";
  cell(".t-started").textContent = clock(t.started_at);
  cell(".t-finished").textContent = clock(t.finished_at);
  cell(".t-duration").textContent = t.duration_s != null ? `${t.duration_s.toFixed(1)} s` : "—";
  const chart = trialPlots[t.id];
  if (chart && chart.n !== t.curve.length) {
    chart.plot.setData([t.curve.map(e => e.epoch), t.curve.map(e => (e.metrics || {})[chart.metric] ?? null)]);
    chart.n = t.curve.length;
  }
}

function progressText(p) {
  if (!p || !p.trials) return "Waiting for a worker…";
  return `${p.trials_done} of ${p.trials} trainings done, ${p.trials_running} running, ` +
    `${p.trials_queued} queued · ${p.epochs_done} of ${p.epochs_total} epochs`;
}

function liveProgress() {
  const live = document.getElementById("live");
  if (!live) return;
  const id = live.dataset.job;
  const text = document.getElementById("progress-text"), bar = document.getElementById("progress-bar");
  const status = document.getElementById("status");
  const table = document.getElementById("trials");
  const tick = async () => {
    try {
      const [r, rt] = await Promise.all([
        fetch(`/api/v1/verifications/${id}`, { credentials: "same-origin" }),
        fetch(`/api/v1/verifications/${id}/trials`, { credentials: "same-origin" }),
      ]);
      if (r.ok && rt.ok) {
        const job = await r.json(), trials = await rt.json();
        if (job.finished) { window.location.reload(); return; }
        status.textContent = job.status; status.className = `badge ${job.status}`;
        const p = job.progress || {};
        text.textContent = progressText(p);
        bar.max = p.epochs_total || 1; bar.value = p.epochs_done || 0;
        // The protocol queued more trials (another seed pair): the page lays them out anew.
        if (trials.map(t => t.id).join(",") !== table.dataset.ids) { window.location.reload(); return; }
        trials.forEach(showTrial);
      }
    } catch (e) { /* the service is briefly unreachable: the next tick tries again */ }
    setTimeout(tick, 1000);
  };
  setTimeout(tick, 1000);
}

document.addEventListener("DOMContentLoaded", () => { runCharts(); overlayCharts(); trialCharts(); liveProgress(); });
