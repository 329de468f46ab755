/* stormproof's dashboard: the runs page and a run's page, drawn from the JSON API.
 *
 * Rules: every text reaches the page through textContent (el() below); nothing is ever
 * parsed as HTML, so a task named "<img src=x onerror=...>" shows as those characters.
 * Links are built from encodeURIComponent'ed names only. In a report the same code draws
 * from the JSON embedded in the file instead of the API (staticSource). */
"use strict";

(function () {
  const COLOURS = {
    succeeded: "#2e7d32", failed: "#c62828", interrupted: "#f9a825", lost: "#e65100",
    timed_out: "#6a1b9a", cancelled: "#757575", running: "#1565c0", placed: "#90caf9",
    dropped: "#bdbdbd",
  };
  const OUTCOMES = Object.keys(COLOURS);
  const FINAL = new Set(["succeeded", "failed", "cancelled"]);
  const PAGE = 100;

  // ------------------------------------------------------------------ DOM helpers
  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") e.className = v;
      else if (k === "onclick") e.addEventListener("click", v);
      else e.setAttribute(k, String(v));
    }
    for (const kid of kids) {
      if (kid === undefined || kid === null) continue;
      e.append(kid instanceof Node ? kid : String(kid));
    }
    return e;
  }
  const $ = (id) => document.getElementById(id);
  function fill(tbody, rows) { tbody.replaceChildren(...rows); }
  function stateBadge(state) { return el("span", { class: "state " + state }, state); }
  function showError(message) {
    const box = $("error");
    if (!box) return;
    box.hidden = !message;
    box.textContent = message || "";
  }

  // ------------------------------------------------------------------ formatting
  const dash = "—";
  function when(ts) {
    if (ts === null || ts === undefined) return dash;
    const d = new Date(ts * 1000);
    const p = (n) => String(n).padStart(2, "0");
    return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ` +
      `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
  }
  function span(seconds) {
    if (seconds === null || seconds === undefined || isNaN(seconds)) return dash;
    const s = Math.max(0, seconds);
    if (s < 120) return `${s.toFixed(1)} s`;
    if (s < 7200) return `${(s / 60).toFixed(1)} min`;
    return `${(s / 3600).toFixed(2)} h`;
  }
  function took(start, end, now) {
    if (start === null || start === undefined) return dash;
    return span((end ?? now) - start);
  }
  const usd = (x) => (x === null || x === undefined ? dash : `$${Number(x).toFixed(4)}`);
  const cpu = (x) => (x === null || x === undefined ? dash : span(x));
  const mib = (x) => (x === null || x === undefined ? dash : `${Number(x).toFixed(0)} MiB`);

  // ------------------------------------------------------------------ data sources
  async function getJSON(url) {
    const r = await fetch(url, { credentials: "same-origin" });
    if (!r.ok) {
      let detail = `${r.status} ${r.statusText}`;
      try { detail = (await r.json()).detail || detail; } catch (e) { /* not JSON */ }
      throw new Error(detail);
    }
    return r.json();
  }
  const enc = encodeURIComponent;

  function apiSource() {
    let session = null;
    return {
      live: true,
      runs: () => getJSON("/api/runs"),
      run: (name, q) => getJSON(`/api/runs/${enc(name)}?${new URLSearchParams(q)}`),
      timeline: (name) => getJSON(`/api/runs/${enc(name)}/timeline`),
      stages: (name) => getJSON(`/api/runs/${enc(name)}/stages`),
      task: (name, task) => getJSON(`/api/runs/${enc(name)}/tasks/${enc(task)}`),
      async log(name, task, n, stream) {
        const r = await fetch(
          `/api/runs/${enc(name)}/tasks/${enc(task)}/attempts/${n}/logs/${stream}`,
          { credentials: "same-origin" });
        if (!r.ok) {
          // S3's refusal of an AWS attempt's output (502) says what to fix: show it
          let detail = "no log";
          try { detail = (await r.json()).detail || detail; } catch (e) { /* not JSON */ }
          throw new Error(`${r.status}: ${detail}`);
        }
        return r.text();
      },
      async cancel(name) {
        session = session || await getJSON("/api/session");
        const r = await fetch(`/api/runs/${enc(name)}/cancel`, {
          method: "POST", credentials: "same-origin",
          headers: { [session.csrf_header]: session.csrf },
        });
        const body = await r.json();
        if (!r.ok) throw new Error(body.detail || String(r.status));
        return body;
      },
    };
  }

  function staticSource(data) {
    // A report: everything is in the file; pages of tasks are cut here.
    const ids = Object.keys(data.run.tasks);
    return {
      live: false,
      runs: async () => [],
      async run(_name, q) {
        let chosen = ids.filter((id) => {
          const t = data.run.tasks[id];
          return (!q.state || t.state === q.state) && (!q.stage || t.stage === Number(q.stage));
        });
        const offset = Number(q.offset || 0), limit = Number(q.limit || PAGE);
        const end = offset + Math.min(limit, Math.max(0, chosen.length - offset));
        // the API's page: total matching, where the next page starts (null: the last)
        const page = { offset, limit, total: chosen.length, next_offset: end < chosen.length ? end : null };
        chosen = chosen.slice(offset, offset + limit);
        const tasks = {};
        for (const id of chosen) tasks[id] = data.run.tasks[id];
        return Object.assign({}, data.run, { tasks, page });
      },
      timeline: async () => data.timeline,
      stages: async () => data.stages,
      task: async (_name, task) => Object.assign({ id: task }, data.run.tasks[task]),
      async log(_name, task, n, stream) {
        const text = (data.logs || {})[`${task}/${n}/${stream}`];
        if (text === undefined) throw new Error("this report keeps the logs of failed attempts only");
        return text;
      },
      cancel: async () => { throw new Error("a report cannot cancel"); },
    };
  }

  const embedded = document.getElementById("stormproof-data");
  const source = embedded ? staticSource(JSON.parse(embedded.textContent)) : apiSource();

  // ------------------------------------------------------------------ the runs page
  async function runsPage() {
    const render = async () => {
      let runs;
      try { runs = await source.runs(); showError(""); } catch (e) { showError(e.message); return; }
      $("empty").hidden = runs.length > 0;
      const now = Date.now() / 1000;
      fill($("runs").tBodies[0], runs.map((r) => {
        const share = r.progress.total ? r.progress.done / r.progress.total : 0;
        const bar = el("span", { class: "bar" });
        bar.style.width = `${Math.round(90 * share)}px`;
        return el("tr", { "data-run": r.name },
          el("td", {}, el("a", { href: `/runs/${enc(r.name)}` }, r.name)),
          el("td", {}, r.workflow),
          el("td", {}, stateBadge(r.state)),
          el("td", {}, when(r.started)),
          el("td", {}, when(r.ended)),
          el("td", { class: "num" }, took(r.started, r.ended, now)),
          el("td", {}, el("span", { class: "bar-track" }, bar), `${r.progress.done}/${r.progress.total}`),
          el("td", { class: "num" }, usd(r.cost.spent)),
          el("td", { class: "num" }, usd(r.cost.saved)),
          el("td", { class: "num" }, r.interruptions));
      }));
    };
    await render();
    setInterval(render, 3000);
  }

  // ------------------------------------------------------------------ the run page
  function runName() {
    if (embedded) return JSON.parse(embedded.textContent).run.name;
    const parts = location.pathname.split("/").filter(Boolean);
    return decodeURIComponent(parts[parts.length - 1]);
  }

  const view = { name: "", query: { offset: 0, limit: PAGE, state: "", stage: "" }, lastSeq: -1,
    state: "", timeline: null, cost: null, selected: null };

  function figure(label, value) {
    return el("div", { class: "figure" }, el("div", { class: "label" }, label), el("div", { class: "value" }, value));
  }

  function drawSummary(run) {
    document.title = `stormproof · ${run.name}`;
    $("run-name").textContent = run.name;
    $("run-state").replaceChildren(stateBadge(run.state));
    $("run-state").dataset.state = run.state;
    $("run-workflow").textContent = `workflow ${run.workflow}`;
    const now = Date.now() / 1000;
    const c = run.counts;
    const res = run.resources;
    $("figures").replaceChildren(
      figure("execution time", took(run.started, run.ended, now)),
      figure("succeeded", c.succeeded || 0),
      figure("failed", c.failed || 0),
      figure("running attempts", run.running_attempts),
      figure("CPU time", cpu(res.cpu_s)),
      figure("peak memory (one attempt)", mib(res.max_rss_mib)),
      figure("spent", usd(run.cost.spent)),
      figure("saved vs on-demand", usd(run.cost.saved)),
      figure("wasted by interruptions", usd(run.cost.wasted)),
      figure("interruptions", run.interruptions),
      figure("notices", run.instance_notices),
    );
    const cancel = $("cancel");
    cancel.hidden = !source.live || run.state !== "running";
  }

  function drawPools(run) {
    fill($("breakers").tBodies[0], Object.entries(run.breakers).map(([pool, b]) =>
      el("tr", {}, el("td", {}, pool), el("td", {}, stateBadge(b.state)),
        el("td", { class: "num" }, b.trips), el("td", {}, when(b.until)), el("td", {}, b.reason))));
    fill($("fleet").tBodies[0], run.fleet.map((i) =>
      el("tr", {}, el("td", {}, i.id), el("td", {}, i.pool), el("td", {}, i.market),
        el("td", {}, stateBadge(i.state)), el("td", {}, i.attempts.join(", ") || dash),
        el("td", {}, i.reason))));
  }

  function lastAttempt(t) { return t.attempts.length ? t.attempts[t.attempts.length - 1] : null; }

  function drawTasks(run) {
    fill($("tasks").tBodies[0], Object.entries(run.tasks).map(([id, t]) => {
      const last = lastAttempt(t);
      const tries = t.attempts.filter((a) => a.state !== "dropped").length;
      const said = last && !["succeeded", "running", "placed"].includes(last.state) ? last.reason : "";
      const why = t.error && said.startsWith(t.error) ? said : [t.error, said].filter(Boolean).join(": ");
      const row = el("tr", { class: "clickable", "data-task": id },
        el("td", { class: "num" }, t.stage),
        el("td", {}, id),
        el("td", { class: "task-name" }, t.name),
        el("td", {}, stateBadge(t.state)),
        el("td", { class: "num" }, tries + (t.budgets_used.interruptions ? ` (${t.budgets_used.interruptions} int.)` : "")),
        el("td", {}, last ? stateBadge(last.state) : dash, last && last.exit_code ? ` exit ${last.exit_code}` : ""),
        el("td", {}, last ? (last.instances.join(",") || dash) : dash),
        el("td", {}, last ? `${cpu(last.cpu_s)} · ${mib(last.max_rss_mib)}` : dash),
        el("td", { class: "num" }, usd(t.cost.spent)),
        el("td", {}, why));
      row.addEventListener("click", () => selectTask(id));
      return row;
    }));
    const p = run.page;
    const all = Object.values(run.counts).reduce((a, b) => a + b, 0);
    $("page-info").textContent = p.total
      ? `${p.offset + 1}–${p.offset + Object.keys(run.tasks).length} of ${p.total}` +
        (p.total !== all ? ` (of ${all} tasks)` : "")
      : "no tasks";
    $("prev").disabled = p.offset === 0;
    $("next").disabled = p.next_offset === null;
  }

  function drawStages(stages) {
    const stageSelect = $("filter-stage");
    if (stageSelect.options.length !== stages.length + 1) {
      stageSelect.replaceChildren(el("option", { value: "" }, "any"),
        ...stages.map((s) => el("option", { value: s.stage }, `${s.stage}`)));
      stageSelect.value = view.query.stage;
    }
    $("stages").replaceChildren(...stages.map((s) => {
      const counts = Object.entries(s.counts).map(([k, v]) => `${v} ${k}`).join(", ");
      const chips = s.tasks.map((t) => {
        const chip = el("span", { class: "chip " + t.state, title: `${t.id}: ${t.state}`, "data-task": t.id }, t.name);
        chip.addEventListener("click", () => selectTask(t.id));
        return chip;
      });
      const more = s.total > s.tasks.length
        ? el("span", { class: "muted" }, `+ ${s.total - s.tasks.length} more (filter the task list by stage ${s.stage})`)
        : null;
      return el("div", { class: "stage" }, el("h3", {}, `stage ${s.stage}`),
        el("div", { class: "muted" }, counts), ...chips, more);
    }));
  }

  function fillStateFilter(run) {
    const select = $("filter-state");
    const known = new Set([...select.options].map((o) => o.value));
    for (const state of Object.keys(run.counts)) {
      if (!known.has(state)) select.append(el("option", { value: state }, state));
    }
  }

  // ------------------------------------------------------------------ charts
  function scaleOf(seconds) {
    if (seconds > 3 * 3600) return { unit: "h", div: 3600 };
    if (seconds > 300) return { unit: "min", div: 60 };
    return { unit: "s", div: 1 };
  }

  function drawTimeline(tl) {
    const origin = tl.origin ?? tl.now;
    const scale = scaleOf(tl.now - origin);
    const x = (t) => ((t ?? tl.now) - origin) / scale.div;
    const rows = tl.rows.length ? tl.rows : ["(no attempts yet)"];
    const datasets = OUTCOMES.map((state) => ({
      type: "bar", label: state, backgroundColor: COLOURS[state], grouped: false,
      borderSkipped: false, barPercentage: 0.7, categoryPercentage: 1.0,
      data: tl.attempts.filter((b) => b.state === state).map((b) => ({ x: [x(b.start), x(b.end)], y: rows[b.row], bar: b })),
    })).filter((d) => d.data.length);
    const marks = (kind, style, label) => ({
      type: "scatter", label, pointStyle: style, radius: 7, pointRadius: 7,
      backgroundColor: "#111", borderColor: "#111",
      data: tl.notices.filter((n) => n.kind === kind).map((n) => ({ x: x(n.at), y: rows[n.row], mark: n })),
    });
    datasets.push(marks("notice", "triangle", "interruption notice"), marks("lost", "crossRot", "instance lost"));
    $("timeline-box").style.height = `${Math.max(160, 60 + rows.length * 26)}px`;
    const note = $("timeline-note");
    note.hidden = tl.total_attempts <= tl.attempts.length;
    note.textContent = `The ${tl.attempts.length} latest of ${tl.total_attempts} attempts.`;
    const config = {
      type: "bar",
      data: { labels: rows, datasets },
      options: {
        indexAxis: "y", animation: false, responsive: true, maintainAspectRatio: false,
        parsing: { xAxisKey: "x", yAxisKey: "y" },
        scales: {
          x: { type: "linear", min: 0, title: { display: true, text: `${scale.unit} since the run started` } },
          y: { type: "category", labels: rows },
        },
        plugins: {
          legend: { position: "bottom" },
          tooltip: { callbacks: { label: (ctx) => tooltip(ctx.raw, origin) } },
        },
      },
    };
    if (view.timeline) {
      view.timeline.data = config.data;
      view.timeline.options = config.options;
      view.timeline.update();
    } else {
      view.timeline = new Chart($("timeline"), config);
    }
  }

  function tooltip(raw, origin) {
    if (raw.bar) {
      const b = raw.bar;
      return `${b.id} · ${b.state} · ${b.pool || dash} (${b.market || dash}) · ` +
        `${span(b.start - origin)} → ${b.end === null ? "now" : span(b.end - origin)}`;
    }
    if (raw.mark) return `${raw.mark.kind} · ${raw.mark.instance} at ${span(raw.mark.at - origin)}`;
    return "";
  }

  function drawCost(tl) {
    const origin = tl.origin ?? tl.now;
    const scale = scaleOf(tl.now - origin);
    const pts = (key) => tl.cost.map((p) => ({ x: (p.at - origin) / scale.div, y: p[key] }));
    const config = {
      type: "line",
      data: { datasets: [
        { label: "spent", data: pts("spent"), borderColor: "#1565c0", pointRadius: 0 },
        { label: "all on-demand", data: pts("on_demand_equivalent"), borderColor: "#9e9e9e", borderDash: [5, 4], pointRadius: 0 },
        { label: "saved", data: pts("saved"), borderColor: "#2e7d32", pointRadius: 0 },
        { label: "wasted by interruptions", data: pts("wasted"), borderColor: "#e65100", pointRadius: 0 },
      ] },
      options: {
        animation: false, responsive: true, maintainAspectRatio: false,
        scales: { x: { type: "linear", min: 0, title: { display: true, text: `${scale.unit} since the run started` } },
          y: { title: { display: true, text: "USD" } } },
        plugins: { legend: { position: "bottom" } },
      },
    };
    if (view.cost) { view.cost.data = config.data; view.cost.options = config.options; view.cost.update(); }
    else view.cost = new Chart($("cost"), config);
  }

  // ------------------------------------------------------------------ one task
  async function selectTask(id) {
    view.selected = id;
    let t;
    try { t = await source.task(view.name, id); } catch (e) { showError(e.message); return; }
    $("task-detail").hidden = false;
    $("task-title").textContent = `${t.id} — ${t.name} (${t.state})`;
    const now = Date.now() / 1000;
    fill($("attempts").tBodies[0], t.attempts.map((a) => {
      const logs = el("td", {});
      for (const stream of ["stdout", "stderr"]) {
        logs.append(el("button", { type: "button", onclick: () => showLog(t.id, a.number, stream) }, stream), " ");
      }
      return el("tr", { "data-attempt": a.number },
        el("td", { class: "num" }, a.number), el("td", {}, stateBadge(a.state),
          a.error ? ` ${a.error}` : "", a.exit_code ? ` (exit ${a.exit_code})` : ""),
        el("td", {}, a.reason), el("td", {}, a.pool || dash), el("td", {}, a.market || dash),
        el("td", {}, a.instances.join(", ") || dash),
        el("td", {}, a.restored_from === null ? dash : `checkpoint ${a.restored_from}`),
        el("td", { class: "num" }, took(a.started ?? a.launched, a.ended, now)),
        el("td", { class: "num" }, cpu(a.cpu_s)), el("td", { class: "num" }, mib(a.max_rss_mib)),
        el("td", { class: "num" }, usd(a.cost.spent)), logs);
    }));
  }

  async function showLog(task, n, stream) {
    $("log-box").hidden = false;
    $("log-title").textContent = `${stream} of ${task}/${n} (the last 64 KiB)`;
    try { $("log").textContent = await source.log(view.name, task, n, stream) || "(empty)"; }
    catch (e) { $("log").textContent = e.message; }
  }

  // ------------------------------------------------------------------ refresh loop
  async function refresh(force) {
    const q = Object.fromEntries(Object.entries(view.query).filter(([, v]) => v !== ""));
    let run;
    try { run = await source.run(view.name, q); showError(""); }
    catch (e) { showError(e.message); return; }
    const changed = force || run.last_seq !== view.lastSeq || run.state !== view.state;
    drawSummary(run);
    if (!changed) return;
    view.lastSeq = run.last_seq;
    view.state = run.state;
    drawTasks(run);
    drawPools(run);
    fillStateFilter(run);
    const [tl, stages] = await Promise.all([source.timeline(view.name), source.stages(view.name)]);
    drawTimeline(tl);
    drawCost(tl);
    drawStages(stages);
    if (view.selected) await selectTask(view.selected);
    document.body.dataset.lastSeq = String(run.last_seq);
  }

  async function runPage() {
    view.name = runName();
    $("filter-state").addEventListener("change", (e) => { view.query.state = e.target.value; view.query.offset = 0; refresh(true); });
    $("filter-stage").addEventListener("change", (e) => { view.query.stage = e.target.value; view.query.offset = 0; refresh(true); });
    $("prev").addEventListener("click", () => { view.query.offset = Math.max(0, view.query.offset - PAGE); refresh(true); });
    $("next").addEventListener("click", () => { view.query.offset += PAGE; refresh(true); });
    $("cancel").addEventListener("click", async () => {
      if (!window.confirm(`Cancel run ${view.name}? Its running attempts are killed.`)) return;
      try { await source.cancel(view.name); refresh(true); } catch (e) { showError(e.message); }
    });
    await refresh(true);
    if (!source.live) return;
    const timer = setInterval(async () => {
      await refresh(false);
      if (FINAL.has(view.state)) clearInterval(timer);
    }, 1500);
  }

  const page = document.body.dataset.page;
  const ready = page === "runs" ? runsPage() : runPage();
  ready.then(() => { document.body.dataset.ready = "1"; }, (e) => showError(String(e)));
})();
