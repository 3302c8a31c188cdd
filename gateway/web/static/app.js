// The cookline dashboard: one page, hash routes, plain DOM. Talks to the gateway's /api/.
"use strict";

// --- small helpers ------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== undefined && c !== null && c !== false) el.append(c);
  return el;
}

const stateName = s => (s || "RUN_STATE_QUEUED").replace("RUN_STATE_", "");
const stageName = s => (s || "").replace("STAGE_", "").toLowerCase();
const TERMINAL = ["SUCCEEDED", "FAILED", "CANCELLED"];
const fmt = (x, digits = 4) => x === undefined ? "—" : (+x).toFixed(digits).replace(/\.?0+$/, "") || "0";
const when = t => t ? t.replace("T", " ").replace(/\.\d+/, "").replace("Z", " UTC") : "";
const shortVersion = v => (v || "").slice(0, 10);
const badge = (text, cls) => h("span", {class: `badge ${cls || text}`}, text);
const bytes = n => { n = +n; const u = ["B", "KB", "MB", "GB"]; let i = 0;
  while (n >= 1024 && i < 3) { n /= 1024; i++; } return `${n.toFixed(i ? 1 : 0)} ${u[i]}`; };

function notice(text, ok) {
  const el = document.getElementById("notice");
  el.textContent = text || "";
  el.className = ok ? "ok" : "";
  el.hidden = !text;
}

// --- the API --------------------------------------------------------------------------

const token = () => localStorage.getItem("cookline-token") || "";

function headers(extra) {
  const out = Object.assign({}, extra);
  if (token()) out.Authorization = `Bearer ${token()}`;
  return out;
}

async function api(path, {method = "GET", json, form, signal} = {}) {
  const init = {method, signal, headers: headers(json ? {"Content-Type": "application/json"} : {})};
  if (json) init.body = JSON.stringify(json);
  if (form) init.body = form;
  const response = await fetch(path, init);
  const body = await response.json().catch(() => ({error: `${response.status} ${response.statusText}`}));
  if (response.status === 401) document.getElementById("token-bar").hidden = false;
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

// A run's events as server-sent events (read with fetch, so the token header goes along).
// A stream that breaks before the run's final event is resumed after the last event seen.
async function watch(runId, onEvent, signal) {
  let next = 0, failures = 0, finished = false;
  while (!finished) {
    try {
      await readEvents(`/api/runs/${encodeURIComponent(runId)}/events?from=${next}`, event => {
        next = Number(event.sequence || 0) + 1;
        failures = 0;
        finished = finished || Boolean(event.finished);
        onEvent(event);
      }, signal);
    } catch (e) {
      if (e.name === "AbortError" || e.status < 500 || ++failures > 5) throw e;
    }
    if (!finished) await new Promise(done => setTimeout(done, 1000 * failures));
  }
}

async function readEvents(url, onEvent, signal) {
  const response = await fetch(url, {headers: headers(), signal});
  if (!response.ok) {
    const error = new Error((await response.json().catch(() => ({}))).error || response.statusText);
    error.status = response.status;
    throw error;
  }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const {value, done} = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, {stream: true});
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block.split("\n").filter(l => l.startsWith("data: ")).map(l => l.slice(6)).join("\n");
      if (block.startsWith("event: error")) throw new Error(JSON.parse(data).error);
      if (data) onEvent(JSON.parse(data));
    }
  }
}

// --- pages ----------------------------------------------------------------------------

const pages = {};

pages.runs = async ({signal}) => {
  const {runs} = await api("/api/runs?limit=50", {signal});
  const body = h("tbody");
  const page = [
    h("h1", {}, "Runs", h("a", {class: "button secondary", href: "#/submit"}, "Submit a run")),
    h("div", {class: "card"}, runs.length ? h("table", {id: "runs"},
      h("thead", {}, h("tr", {}, ["Run", "Pipeline", "State", "Progress", "Model", "Submitted", ""].map(t => h("th", {}, t)))),
      body) : h("div", {class: "empty"}, "No runs yet. ", h("a", {href: "#/submit"}, "Submit one."))),
  ];
  for (const run of runs) body.append(runRow(run, signal));
  return page;
};

function runRow(run, signal) {
  const state = stateName(run.state);
  const progress = h("td", {class: "progress-cell"});
  const stateCell = h("td", {}, badge(state));
  const cancel = h("button", {class: "danger", onclick: async () => {
    cancel.disabled = true;
    try { await api(`/api/runs/${run.run_id}/cancel`, {method: "POST"}); } catch (e) { notice(e.message); }
  }}, "Cancel");
  const row = h("tr", {"data-run": run.run_id},
    h("td", {class: "nowrap"}, h("a", {class: "mono", href: `#/runs/${run.run_id}`}, run.run_id)),
    h("td", {}, run.pipeline?.name || ""), stateCell, progress,
    h("td", {}, run.model ? h("a", {href: `#/models/${run.model.name}`}, `${run.model.name} v${run.model.version}`) : ""),
    h("td", {class: "muted nowrap"}, when(run.created_at)),
    h("td", {}, TERMINAL.includes(state) ? "" : cancel));
  const summary = r => {
    const m = r.metrics || {};
    const key = ["val_accuracy", "accuracy", "r2"].find(k => k in m);
    return key ? `${key} ${fmt(m[key], 3)}` : (r.reason || "");
  };
  if (TERMINAL.includes(state)) {
    progress.append(h("span", {class: "muted"}, summary(run)));
  } else {
    const bar = h("div", {class: "progress"}, h("div", {style: "width:0%"}));
    const label = h("div", {class: "muted"}, stageName(run.stage) || "queued");
    progress.append(label, bar);
    watch(run.run_id, event => {
      if (event.stage) label.textContent = event.stage.message || stageName(event.stage.stage);
      if (event.train) {
        const t = event.train;
        bar.firstChild.style.width = `${100 * (+t.epoch - (t.epoch_finished ? 0 : 1)) / +t.epochs}%`;
        label.textContent = `epoch ${t.epoch}/${t.epochs} · loss ${fmt(t.metrics?.loss, 3)}`;
      }
      if (event.finished) {
        const r = event.finished;
        stateCell.replaceChildren(badge(stateName(r.state)));
        progress.replaceChildren(h("span", {class: "muted"}, summary(r)));
        cancel.remove();
      }
    }, signal).catch(e => { if (e.name !== "AbortError") label.textContent = e.message; });
  }
  return row;
}

pages.run = async ({signal, args: [runId]}) => {
  let {run} = await api(`/api/runs/${encodeURIComponent(runId)}`, {signal});
  const title = h("h1", {}), facts = h("div", {class: "card"}), evaluation = h("div");
  const progressLabel = h("div", {class: "muted"}), bar = h("div", {class: "progress"}, h("div", {style: "width:0%"}));
  const lossCard = h("div", {class: "card", id: "loss-chart"}), metricCard = h("div", {class: "card", id: "metric-chart"});
  const log = h("div", {class: "log"});
  const epochs = new Map();
  let planned = 0;

  const cancel = h("button", {class: "danger", onclick: async () => {
    cancel.disabled = true;
    try { await api(`/api/runs/${runId}/cancel`, {method: "POST"}); } catch (e) { notice(e.message); }
  }}, "Cancel run");

  function drawHeader() {
    const state = stateName(run.state);
    title.replaceChildren(`Run `, h("span", {class: "mono"}, run.run_id), h("span", {"data-state": state}, badge(state)),
      TERMINAL.includes(state) ? "" : cancel);
    const p = run.pipeline || {}, d = run.dataset, m = run.model;
    facts.replaceChildren(h("dl", {class: "facts"},
      h("dt", {}, "Pipeline"), h("dd", {}, `${p.name || ""} · ${p.train?.model || ""} · ${p.train?.epochs || "?"} epochs`),
      h("dt", {}, "Source"), h("dd", {class: "mono"}, p.collect?.source || ""),
      h("dt", {}, "Dataset"), h("dd", {}, d ? h("a", {href: `#/datasets/${d.name}`, class: "mono"}, `${d.name}@${shortVersion(d.version)}`) : "—"),
      h("dt", {}, "Model"), h("dd", {}, m ? h("a", {href: `#/models/${m.name}`, id: "run-model"}, `${m.name} version ${m.version}`) : "—"),
      h("dt", {}, "Deploy"), h("dd", {}, run.deploy_decision || "—"),
      run.reason ? [h("dt", {}, "Reason"), h("dd", {}, run.reason)] : "",
      h("dt", {}, "Submitted"), h("dd", {}, when(run.created_at))));
    evaluation.replaceChildren(run.evaluation ? evaluationCard(run.evaluation, run.model) : "");
  }

  function drawCharts() {
    const rows = [...epochs.entries()].sort((a, b) => a[0] - b[0]);
    const keys = [...new Set(rows.flatMap(([, m]) => Object.keys(m)))].sort();
    const series = ks => ks.map(k => ({name: k, points: rows.filter(([, m]) => k in m).map(([e, m]) => [e, m[k]])}));
    lossCard.replaceChildren(h("h2", {}, "Loss"), lineChart(series(keys.filter(k => k.endsWith("loss"))), {title: "loss"}));
    metricCard.replaceChildren(h("h2", {}, "Metrics"), lineChart(series(keys.filter(k => !k.endsWith("loss"))), {title: "metrics"}));
  }

  drawHeader();
  drawCharts();
  watch(runId, event => {
    if (event.stage) {
      const s = event.stage;
      log.append(h("div", {}, `${when(event.time)}  ${stageName(s.stage)} ${s.finished ? "done" : "started"}: ${s.message || ""}`));
      progressLabel.textContent = s.message || "";
    }
    if (event.train) {
      const t = event.train;
      planned = +t.epochs;
      bar.firstChild.style.width = `${100 * (+t.epoch - (t.epoch_finished ? 0 : 1)) / planned}%`;
      progressLabel.textContent = `epoch ${t.epoch} of ${t.epochs}` +
        (t.samples_per_second ? ` · ${Math.round(t.samples_per_second)} rows/s` : "") +
        (t.eta_seconds && !t.epoch_finished ? ` · ${Math.ceil(t.eta_seconds)} s left` : "");
      if (t.epoch_finished) { epochs.set(+t.epoch, t.metrics || {}); drawCharts(); }
    }
    if (event.finished) {
      run = event.finished;
      bar.firstChild.style.width = run.state === "RUN_STATE_SUCCEEDED" ? "100%" : bar.firstChild.style.width;
      progressLabel.textContent = run.reason || stateName(run.state).toLowerCase();
      drawHeader();
    }
  }, signal).catch(e => { if (e.name !== "AbortError") notice(e.message); });

  return [title, facts,
    h("div", {class: "card"}, h("h2", {}, "Progress"), progressLabel, bar),
    h("div", {class: "grid"}, lossCard, metricCard), h("div", {style: "height:18px"}),
    evaluation,
    h("div", {class: "card"}, h("h2", {}, "Events"), log)];
};

function evaluationCard(ev, model) {
  const names = (ev.classes || []).map(c => c.name);
  const n = names.length, cm = (ev.confusion_matrix || []).map(Number);
  const subset = (ev.subset || "").replace("SUBSET_", "").toLowerCase();
  const metrics = Object.entries(ev.metrics || {}).sort();
  const parts = [h("h2", {}, `Held-out evaluation · ${subset} · ${ev.rows} rows`),
    h("table", {}, h("tbody", {}, h("tr", {}, metrics.map(([k]) => h("th", {class: "num"}, k))),
      h("tr", {}, metrics.map(([, v]) => h("td", {class: "num"}, fmt(v)))))),];
  if (n && cm.length === n * n) {
    const max = Math.max(...cm, 1);
    parts.push(h("div", {class: "grid", style: "margin-top:16px"},
      h("div", {}, h("h2", {}, "Confusion matrix"), h("table", {class: "confusion", id: "confusion"},
        h("thead", {}, h("tr", {}, h("th", {class: "muted"}, "true ↓ / predicted →"), names.map(c => h("th", {}, c)))),
        h("tbody", {}, names.map((c, i) => h("tr", {}, h("th", {}, c), names.map((_, j) => {
          const v = cm[i * n + j], a = v / max;
          return h("td", {style: `background:rgba(${i === j ? "29,138,78" : "200,58,58"},${(a * 0.55).toFixed(2)})`}, v);
        })))))),
      h("div", {}, h("h2", {}, "Per class"), h("table", {},
        h("thead", {}, h("tr", {}, ["class", "precision", "recall", "f1", "rows"].map(t => h("th", {class: t === "class" ? "" : "num"}, t)))),
        h("tbody", {}, ev.classes.map(c => h("tr", {}, h("td", {}, c.name), h("td", {class: "num"}, fmt(c.precision, 3)),
          h("td", {class: "num"}, fmt(c.recall, 3)), h("td", {class: "num"}, fmt(c.f1, 3)), h("td", {class: "num"}, c.support || 0))))))));
  }
  return h("div", {class: "card", id: "evaluation"}, parts);
}

pages.datasets = async ({signal, args: [only]}) => {
  const {datasets} = await api("/api/datasets", {signal});
  const byName = new Map();
  for (const d of datasets) {
    if (only && d.ref.name !== only) continue;
    if (!byName.has(d.ref.name)) byName.set(d.ref.name, []);
    byName.get(d.ref.name).push(d);
  }
  if (!byName.size) return [h("h1", {}, "Datasets"), h("div", {class: "card empty"}, "No datasets yet.")];
  return [h("h1", {}, "Datasets", only ? h("a", {class: "button secondary", href: "#/datasets"}, "All datasets") : ""),
    [...byName].map(([name, versions]) => h("div", {class: "card", "data-dataset": name},
      h("h2", {}, name, h("span", {class: "muted"}, ` · ${versions.length} version${versions.length > 1 ? "s" : ""}`)),
      versions.map((d, i) => datasetVersion(d, i === 0))))];
};

function datasetVersion(d, open) {
  const s = d.statistics || {};
  const anomalies = d.anomalies || [];
  const table = (head, rows) => h("table", {}, h("thead", {}, h("tr", {}, head.map((t, i) => h("th", {class: i ? "num" : ""}, t)))),
    h("tbody", {}, rows.map(r => h("tr", {}, r.map((v, i) => h("td", {class: i ? "num" : ""}, v))))));
  const parts = [];
  if (anomalies.length) parts.push(h("ul", {class: "anomalies"}, anomalies.map(a => h("li", {}, `${a.field}: ${a.message}`))));
  if (s.numeric?.length) parts.push(h("h2", {style: "margin-top:14px"}, "Numeric columns"),
    table(["column", "count", "missing", "min", "max", "mean", "std"],
      s.numeric.map(c => [c.name, c.count || 0, c.missing || 0, fmt(c.min, 3), fmt(c.max, 3), fmt(c.mean, 3), fmt(c.std, 3)])));
  if (s.categorical?.length) parts.push(h("h2", {style: "margin-top:14px"}, "Category columns"),
    table(["column", "count", "missing", "unique"], s.categorical.map(c => [c.name, c.count || 0, c.missing || 0, c.unique || 0])));
  if (s.text) parts.push(h("h2", {style: "margin-top:14px"}, "Text"),
    table(["texts", "min tokens", "max tokens", "mean tokens", "vocabulary"],
      [[s.text.count || 0, s.text.min_tokens || 0, s.text.max_tokens || 0, fmt(s.text.mean_tokens, 1), s.text.vocabulary_size || 0]]));
  if (s.label_counts) parts.push(h("h2", {style: "margin-top:14px"}, "Labels"),
    table(["label", "rows"], Object.entries(s.label_counts).sort().map(([k, v]) => [k, v])));
  return h("details", {open, style: "border-top:1px solid var(--line);padding:10px 0"},
    h("summary", {}, h("span", {class: "mono"}, shortVersion(d.ref.version)),
      h("span", {class: "muted"}, `  ${d.num_rows} rows · ${d.format || "csv"} · ${bytes(d.size_bytes || 0)} · ${when(d.created_at)}  `),
      anomalies.length ? badge(`${anomalies.length} schema anomal${anomalies.length > 1 ? "ies" : "y"}`, "warn") : ""),
    h("div", {class: "muted mono", style: "margin:6px 0"}, d.source || ""), parts);
}

pages.models = async ({signal}) => {
  const {models} = await api("/api/models", {signal});
  if (!models.length) return [h("h1", {}, "Models"), h("div", {class: "card empty"}, "No models yet.")];
  return [h("h1", {}, "Models"), h("div", {class: "card"}, h("table", {id: "models"},
    h("thead", {}, h("tr", {}, ["Model", "Versions", "Deployed", "Aliases", ""].map(t => h("th", {}, t)))),
    h("tbody", {}, models.map(m => h("tr", {},
      h("td", {}, h("a", {href: `#/models/${m.name}`}, m.name)),
      h("td", {}, m.versions.length),
      h("td", {}, m.deployed_version ? badge(`version ${m.deployed_version}`, "deployed") : h("span", {class: "muted"}, "not deployed")),
      h("td", {}, Object.entries(m.aliases || {}).map(([a, v]) => badge(`${a} → ${v}`, "alias"))),
      h("td", {}, m.deployed_version ? h("a", {href: `#/predict/${m.name}`}, "Predict") : ""))))))];
};

pages.model = async ({signal, args: [name]}) => {
  const {model} = await api(`/api/models/${encodeURIComponent(name)}`, {signal});
  const reload = () => route();
  const act = async (fn, done) => {
    try { await fn(); notice(done, true); reload(); } catch (e) { notice(e.message); }
  };
  const versions = [...model.versions].sort((a, b) => b.version - a.version);
  const aliasName = h("input", {name: "alias", placeholder: "alias, e.g. prod", required: true, pattern: "[a-z0-9][a-z0-9_.-]*"});
  const aliasVersion = h("select", {name: "version"}, versions.map(v => h("option", {value: v.version}, `version ${v.version}`)));
  return [
    h("h1", {}, model.name,
      model.deployed_version ? badge(`deployed: version ${model.deployed_version}`, "deployed") : badge("not deployed"),
      model.deployed_version ? h("a", {class: "button", href: `#/predict/${model.name}`, id: "open-playground"}, "Predict") : "",
      model.deployed_version ? h("button", {class: "danger", onclick: () => act(
        () => api(`/api/models/${model.name}/undeploy`, {method: "POST"}), `${model.name} undeployed`)}, "Undeploy") : ""),
    h("div", {class: "card"}, h("table", {id: "versions"},
      h("thead", {}, h("tr", {}, ["Version", "Created", "Quality", "Aliases", "Lineage", ""].map(t => h("th", {}, t)))),
      h("tbody", {}, versions.map(v => {
        const m = v.metrics || {}, e = v.evaluation?.metrics || {};
        const quality = ["accuracy", "r2", "macro_f1"].filter(k => k in e).map(k => `${k} ${fmt(e[k], 3)}`).join(" · ")
          || Object.entries(m).filter(([k]) => !k.endsWith("loss")).slice(0, 2).map(([k, x]) => `${k} ${fmt(x, 3)}`).join(" · ");
        const l = v.lineage || {};
        return h("tr", {"data-version": v.version},
          h("td", {}, `${v.version} `, v.deployed ? badge("deployed", "deployed") : ""),
          h("td", {class: "muted nowrap"}, when(v.created_at)),
          h("td", {}, quality || "—"),
          h("td", {}, (v.aliases || []).map(a => badge(a, "alias"))),
          h("td", {}, l.dataset?.name ? h("div", {}, "dataset ", h("a", {class: "mono", href: `#/datasets/${l.dataset.name}`},
              `${l.dataset.name}@${shortVersion(l.dataset.version)}`)) : "",
            l.run_id ? h("div", {}, "run ", h("a", {class: "mono", href: `#/runs/${l.run_id}`}, l.run_id)) : "",
            l.pipeline?.train ? h("div", {class: "muted"}, `${l.pipeline.train.model} · ${l.pipeline.train.epochs || "?"} epochs`) : ""),
          h("td", {}, v.deployed ? "" : h("button", {class: "secondary", onclick: () => act(
            () => api(`/api/models/${model.name}/deploy`, {method: "POST", json: {version: v.version}}),
            `${model.name} version ${v.version} deployed`)}, "Deploy")));
      })))),
    h("div", {class: "card"}, h("h2", {}, "Set an alias"),
      h("form", {class: "row", onsubmit: ev => { ev.preventDefault(); act(
        () => api(`/api/models/${model.name}/aliases/${encodeURIComponent(aliasName.value)}`,
          {method: "PUT", json: {version: +aliasVersion.value}}), `alias ${aliasName.value} → version ${aliasVersion.value}`); }},
        aliasName, aliasVersion, h("button", {}, "Set alias"))),
  ];
};

pages.submit = async ({signal}) => {
  const {models, formats} = await api("/api/choices", {signal});
  const text = h("textarea", {id: "pipeline-text", name: "pipeline", spellcheck: "false", placeholder:
    "name: iris\ncollect:\n  source: examples/data/iris.csv   # on the gateway's machine, or s3://bucket/key\n  label: species\nsplit: {validation: 0.2, seed: 1}\ntrain:\n  model: mlp\n  epochs: 40"});
  const submit = async (body) => {
    try {
      const {run} = await api("/api/runs", body);
      location.hash = `#/runs/${run.run_id}`;
    } catch (e) { notice(e.message); }
  };
  const upload = h("form", {class: "stack", id: "upload-form", onsubmit: ev => {
    ev.preventDefault(); submit({method: "POST", form: new FormData(ev.target)}); }},
    h("label", {}, h("span", {}, "Data file"), h("input", {type: "file", name: "file", required: true, accept: ".csv,.npz,.txt"})),
    h("label", {}, h("span", {}, "Name"), h("input", {name: "name", required: true, placeholder: "e.g. churn"})),
    h("label", {}, h("span", {}, "Label column"), h("input", {name: "label", placeholder: "the CSV column to predict"})),
    h("div", {class: "fields3"},
      h("label", {}, h("span", {}, "Format"), h("select", {name: "format"}, formats.map(f => h("option", {}, f)))),
      h("label", {}, h("span", {}, "Model"), h("select", {name: "model"}, models.map(m => h("option", {}, m)))),
      h("label", {}, h("span", {}, "Epochs"), h("input", {name: "epochs", type: "number", min: 1, value: 20}))),
    h("button", {}, "Upload and run"));
  return [h("h1", {}, "Submit a run"), h("div", {class: "grid"},
    h("div", {class: "card"}, h("h2", {}, "Paste a pipeline file"),
      h("form", {onsubmit: ev => { ev.preventDefault(); submit({method: "POST", json: {pipeline: text.value}}); }},
        text, h("div", {class: "row", style: "margin-top:10px"}, h("button", {id: "submit-pipeline"}, "Submit"),
          h("span", {class: "muted"}, "Local paths are read on the gateway's machine, inside its source roots.")))),
    h("div", {class: "card"}, h("h2", {}, "Upload a data file and pick a model"), upload))];
};

pages.predict = async ({signal, args: [name]}) => {
  const {metadata, fields} = await api(`/api/models/${encodeURIComponent(name)}/metadata`, {signal});
  const result = h("div", {id: "prediction"}, h("div", {class: "empty"}, "Fill in a row and press Predict."));
  const files = {};
  const control = f => {
    if (f.kind === "numeric") return h("input", {type: "number", step: "any", name: f.column, required: true});
    if (f.kind === "category") return h("input", {name: f.column, required: true});
    if (f.kind === "text") return h("textarea", {name: f.column, required: true, style: "min-height:90px;font-family:inherit"});
    const input = h("input", {type: "file", accept: "image/*", name: f.column, hidden: true});
    const zone = h("div", {class: "drop", "data-column": f.column}, "Drop an image here, or click to choose one", input);
    const take = file => {
      files[f.column] = file;
      zone.replaceChildren(file.name, h("img", {src: URL.createObjectURL(file), alt: file.name}), input);
    };
    zone.addEventListener("click", () => input.click());
    input.addEventListener("change", () => input.files[0] && take(input.files[0]));
    zone.addEventListener("dragover", e => { e.preventDefault(); zone.classList.add("over"); });
    zone.addEventListener("dragleave", () => zone.classList.remove("over"));
    zone.addEventListener("drop", e => { e.preventDefault(); zone.classList.remove("over"); e.dataTransfer.files[0] && take(e.dataTransfer.files[0]); });
    return zone;
  };
  const form = h("form", {class: "stack", id: "predict-form", onsubmit: async ev => {
    ev.preventDefault();
    const data = new FormData(ev.target);
    let body;
    if (fields.some(f => f.kind === "image")) {
      const multipart = new FormData();
      for (const f of fields) {
        if (f.kind === "image") {
          if (!files[f.column]) { notice(`${f.column}: choose an image`); return; }
          multipart.append(f.column, files[f.column]);
        } else multipart.append(f.column, data.get(f.column));
      }
      body = {method: "POST", form: multipart};
    } else {
      body = {method: "POST", json: {row: Object.fromEntries(fields.map(f =>
        [f.column, f.kind === "numeric" ? Number(data.get(f.column)) : data.get(f.column)]))}};
    }
    try { result.replaceChildren(predictionView(await api(`/api/models/${encodeURIComponent(name)}/predict`, body), files)); notice(""); }
    catch (e) { notice(e.message); }
  }}, fields.map(f => h("label", {}, h("span", {}, f.column,
    f.kind !== f.column ? h("span", {class: "muted"}, `  ${f.kind}`) : ""), control(f))),
    h("button", {id: "predict"}, "Predict"));
  return [h("h1", {}, `Predict · ${name}`, badge(`version ${metadata.model.version}`, "deployed"),
    h("a", {class: "button secondary", href: `#/models/${name}`}, "Model")),
    h("div", {class: "grid"}, h("div", {class: "card"}, h("h2", {}, "Input row"), form),
      h("div", {class: "card"}, h("h2", {}, "Answer"), result))];
};

function predictionView(answer, files) {
  if ("detections" in answer) return detectionView(answer, Object.values(files || {})[0]);
  if (!("label" in answer)) return h("div", {class: "answer", "data-label": ""}, fmt(answer.value));
  const scores = Object.entries(answer.scores).sort((a, b) => b[1] - a[1]);
  return h("div", {},
    h("div", {class: "answer", id: "label"}, answer.label),
    h("div", {class: "muted"}, `${answer.model.name} version ${answer.model.version}`),
    h("div", {class: "bars", style: "margin-top:12px"}, scores.map(([name, p]) =>
      h("div", {class: `bar ${name === answer.label ? "top" : ""}`}, h("span", {}, name),
        h("div", {class: "track"}, h("div", {class: "fill", style: `width:${(100 * p).toFixed(1)}%`})),
        h("span", {class: "num"}, fmt(p, 3))))));
}

// A detector's answer: the image as sent with one outlined box and a "label score" tag per
// detection, drawn in an SVG laid over the shown image, and the detections listed under it. A box
// is [ymin, xmin, ymax, xmax] as fractions of the image: the model stretches the image to its input
// size, so fractions of its input are fractions of the image as sent, and of the image as shown.
function detectionView(answer, image) {
  const found = answer.detections;
  const labels = [...new Set(found.map(d => d.label))].sort();
  const color = label => COLORS[labels.indexOf(label) % COLORS.length];
  const pixels = found.map(() => h("div", {class: "muted"}));  // the box in the image's pixels, once it is loaded
  const parts = [
    h("div", {class: "answer", id: "detection-count"}, found.length ? `${found.length} object${found.length > 1 ? "s" : ""}` : "No objects found"),
    h("div", {class: "muted"}, `${answer.model.name} version ${answer.model.version}`),
  ];
  if (image) {
    const picture = h("img", {src: URL.createObjectURL(image), alt: image.name, id: "detection-image"});
    const overlay = svg("svg", {class: "boxes", id: "detection-boxes", "aria-label": "detected boxes"});
    const draw = () => {
      const width = picture.clientWidth, height = picture.clientHeight;
      if (!width || !height || !picture.naturalWidth) return;
      for (const [k, v] of Object.entries({width, height, viewBox: `0 0 ${width} ${height}`})) overlay.setAttribute(k, v);
      const outlines = svg("g", {class: "outlines"}), tags = svg("g", {class: "tags"});  // tags above every outline
      overlay.replaceChildren(outlines, tags);
      found.forEach((d, i) => {
        const [y0, x0, y1, x1] = d.box;
        const [x, y, w, ht] = [x0 * width, y0 * height, (x1 - x0) * width, (y1 - y0) * height];
        outlines.append(svg("rect", {class: "halo", x, y, width: w, height: ht}),  // keeps the outline visible on any colour
          svg("rect", {class: "box", x, y, width: w, height: ht, stroke: color(d.label),
            "data-box": d.box.join(" "), "data-label": d.label, "data-score": d.score, "data-detection": i}));
        const group = svg("g", {"data-detection": i});
        const tag = svg("text", {class: "tag", x: x + 4, y: y >= 18 ? y - 5 : y + 14}, `${d.label} ${d.score.toFixed(2)}`);
        tags.append(group);
        group.append(tag);
        const b = tag.getBBox();
        group.insertBefore(svg("rect", {class: "tag-bg", x: b.x - 3, y: b.y - 1, width: b.width + 6, height: b.height + 2,
          fill: color(d.label)}), tag);
      });
      const [nw, nh] = [picture.naturalWidth, picture.naturalHeight];
      found.forEach((d, i) => {
        const [y0, x0, y1, x1] = d.box;
        pixels[i].textContent = `x ${Math.round(x0 * nw)}–${Math.round(x1 * nw)}, y ${Math.round(y0 * nh)}–${Math.round(y1 * nh)} px`;
      });
    };
    picture.addEventListener("load", draw);
    new ResizeObserver(draw).observe(picture);  // redrawn when the page's width changes the image's
    parts.push(h("div", {class: "detection-figure"}, picture, overlay));
  }
  parts.push(found.length ? h("table", {id: "detections"},
    h("thead", {}, h("tr", {}, ["label", "score", "box: ymin xmin ymax xmax"].map(t => h("th", {}, t)))),
    h("tbody", {}, found.map((d, i) => h("tr", {"data-detection": i, "data-label": d.label},
      h("td", {class: "nowrap"}, h("i", {class: "swatch", style: `background:${color(d.label)}`}), d.label),
      h("td", {class: "num"}, d.score.toFixed(3)),
      h("td", {class: "mono nowrap"}, d.box.map(v => v.toFixed(3)).join(" "), pixels[i])))))
    : h("div", {class: "empty", id: "no-detections"}, "No objects found in this image."));
  return h("div", {}, parts);
}

// --- routing --------------------------------------------------------------------------

const ROUTES = [
  [/^#\/runs\/(.+)$/, "run", "runs"], [/^#\/runs$/, "runs", "runs"], [/^#\/submit$/, "submit", "submit"],
  [/^#\/datasets(?:\/(.+))?$/, "datasets", "datasets"], [/^#\/models\/(.+)$/, "model", "models"],
  [/^#\/models$/, "models", "models"], [/^#\/predict\/(.+)$/, "predict", "models"],
];
let current = null;

async function route() {
  if (current) current.abort();  // closes the previous page's event streams
  current = new AbortController();
  const hash = location.hash || "#/runs";
  const [re, name, nav] = ROUTES.find(([re]) => re.test(hash)) || ROUTES[1];
  const args = (hash.match(re) || []).slice(1).map(a => a && decodeURIComponent(a));
  document.querySelectorAll("[data-nav]").forEach(a => a.classList.toggle("active", a.dataset.nav === nav));
  const main = document.getElementById("page");
  try {
    const content = await pages[name]({signal: current.signal, args});
    main.replaceChildren(...[content].flat(Infinity));
    main.dataset.page = name;
  } catch (e) {
    if (e.name === "AbortError") return;
    main.replaceChildren(h("div", {class: "card empty"}, e.message));
  }
}

window.addEventListener("hashchange", () => { notice(""); route(); });
document.getElementById("token-bar").addEventListener("submit", ev => {
  ev.preventDefault();
  localStorage.setItem("cookline-token", ev.target.token.value.trim());
  ev.target.hidden = true;
  route();
});
route();
