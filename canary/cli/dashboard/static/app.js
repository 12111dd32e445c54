// canary dashboard: the list of Canaries and one Canary's page, drawn from the JSON the server
// streams (server-sent events). Every string from the cluster goes into the page through
// textContent or setAttribute, never as markup; the charts are SVG elements built from numbers.
"use strict";
(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const main = document.getElementById("app");
  const errors = document.getElementById("errors");
  const conn = document.getElementById("conn");
  const page = main.dataset.page;
  const key = main.dataset.key || "";
  const tokenMeta = document.querySelector('meta[name="canary-token"]');
  const token = tokenMeta ? tokenMeta.getAttribute("content") : "";
  const COLOURS = ["white", "green", "red", "yellow", "cyan", "blue", "magenta"];
  const COMMANDS = ["promote", "abort", "retry", "pause", "resume", "set-weight"];

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function svg(tag, attrs) {
    const e = document.createElementNS(SVG, tag);
    for (const k of Object.keys(attrs || {})) e.setAttribute(k, String(attrs[k]));
    return e;
  }
  function num(v) {
    return v === null || v === undefined ? "-" : String(Math.round(v * 1e4) / 1e4);
  }
  function canaryHref(ns, name) {
    return "/canary/" + encodeURIComponent(ns) + "/" + encodeURIComponent(name);
  }

  // a check as a small chart: its values, its bounds, failing points marked
  function chart(sp, cls) {
    const s = svg("svg", {class: cls, width: sp.w, height: sp.h, viewBox: "0 0 " + sp.w + " " + sp.h,
                          role: "img"});
    for (const y of sp.bounds) s.appendChild(svg("line", {class: "bound", x1: 0, x2: sp.w, y1: y, y2: y}));
    for (const x of sp.gaps) s.appendChild(svg("line", {class: "gap", x1: x, x2: x, y1: 0, y2: sp.h}));
    for (const pts of sp.lines) s.appendChild(svg("polyline", {class: "values", points: pts}));
    for (const p of sp.fail) s.appendChild(svg("circle", {class: "fail", cx: p[0], cy: p[1], r: 2.5}));
    return s;
  }

  function weightBar(c) {
    const w = 120, h = 10;
    const s = svg("svg", {class: "bar", width: w, height: h, viewBox: "0 0 " + w + " " + h});
    s.appendChild(svg("rect", {class: "track", x: 0, y: 0, width: w, height: h}));
    s.appendChild(svg("rect", {class: "set", x: 0, y: 0, width: w * c.weight / 100, height: h}));
    s.appendChild(svg("line", {class: "max", x1: w * c.maxWeight / 100, x2: w * c.maxWeight / 100, y1: 0, y2: h}));
    return s;
  }

  function row(parent, label, value, cls) {
    const r = el("div", "row" + (cls ? " " + cls : ""));
    r.appendChild(el("span", "label", label));
    const v = el("span", "value");
    if (value instanceof Node) v.appendChild(value); else v.textContent = String(value);
    r.appendChild(v);
    parent.appendChild(r);
    return v;
  }

  function card(c, full) {
    const a = el("article", "canary");
    a.dataset.key = c.key;
    const h = el("h2");
    if (full) h.textContent = c.namespace + "/" + c.name;
    else {
      const link = el("a", "name", c.namespace + "/" + c.name);
      link.setAttribute("href", canaryHref(c.namespace, c.name));
      h.appendChild(link);
    }
    a.appendChild(h);
    const colour = COLOURS.indexOf(c.colour) >= 0 ? c.colour : "white";
    row(a, "Status", c.icon + " " + c.phase + (c.paused ? " (paused)" : ""), "phase phase-" + colour);
    row(a, "Strategy", c.strategy + "   " + c.step, "strategy");
    const wv = row(a, "Weight", "", "weight");
    wv.appendChild(el("span", "weight-text", "set " + c.weight + (c.routed === null ? "" : ", routed " + c.routed) +
                      " / max " + c.maxWeight));
    wv.appendChild(weightBar(c));
    row(a, "Failed", c.failed + "/" + c.threshold + " checks", c.failed ? "failed bad" : "failed");
    row(a, "Canary", c.canary.image + "   " + c.canary.pods, "image-canary" + (c.canary.problem ? " bad" : ""));
    row(a, "Primary", c.primary.image + "   " + c.primary.pods, "image-primary" + (c.primary.problem ? " bad" : ""));
    if (c.checks.length) {
      const t = el("table", "checks");
      for (const k of c.checks) {
        const tr = el("tr", k.ok ? "ok" : "bad");
        tr.appendChild(el("td", "check-name", k.name));
        tr.appendChild(el("td", "check-value", k.shown));
        const bounds = [k.min === null ? "" : "min " + num(k.min), k.max === null ? "" : "max " + num(k.max)]
          .filter(Boolean).join(", ");
        tr.appendChild(el("td", "check-bounds", bounds || "no bounds"));
        const td = el("td", "check-spark");
        td.appendChild(chart(k.spark, "spark"));
        tr.appendChild(td);
        tr.appendChild(el("td", "check-verdict", k.ok ? "ok" : "FAILED"));
        tr.setAttribute("title", k.text);
        t.appendChild(tr);
      }
      a.appendChild(t);
    }
    if (c.nextAnalysisAt) {
      const v = row(a, "Timing", "", "timing");
      v.dataset.at = String(c.nextAnalysisAt);
      v.dataset.every = String(c.interval);
    }
    if (c.gates.length) {
      row(a, "Gates", c.gates.map(g => g.name + " (" + g.type + "): " + (g.open ? "open" : "closed")).join("; "),
          "gates");
    }
    if (c.note) row(a, "Now", c.note, "note");
    if (c.failure) row(a, "Failure", c.failure, "failure bad");
    if (!full && c.decisions.length) {
      const ul = el("ul", "decisions");
      for (const d of c.decisions) ul.appendChild(el("li", "", d.time + " " + d.actor + ": " + d.text));
      a.appendChild(ul);
    }
    return a;
  }

  function tick() {
    for (const v of document.querySelectorAll(".timing .value")) {
      const left = Math.max(0, Math.round(Number(v.dataset.at) - Date.now() / 1000));
      v.textContent = "next analysis in " + left + "s (every " + v.dataset.every + "s)";
    }
  }

  function showErrors(list) {
    errors.replaceChildren();
    for (const m of list || []) errors.appendChild(el("div", "error", m));
  }

  // ---- the list page -------------------------------------------------------------------
  const cards = new Map();
  function listSnapshot(data) {
    showErrors(data.errors);
    main.replaceChildren();
    cards.clear();
    const grid = el("section", "grid");
    grid.id = "canaries";
    main.appendChild(grid);
    for (const c of data.canaries) put(c);
    empty();
  }
  function put(c) {
    const grid = document.getElementById("canaries");
    const fresh = card(c, false);
    const old = cards.get(c.key);
    if (old) grid.replaceChild(fresh, old);
    else {
      const after = [...cards.keys()].sort().find(k => k > c.key);
      grid.insertBefore(fresh, after ? cards.get(after) : null);
    }
    cards.set(c.key, fresh);
    empty();
  }
  function drop(k) {
    const old = cards.get(k);
    if (old) old.remove();
    cards.delete(k);
    empty();
  }
  function empty() {
    const grid = document.getElementById("canaries");
    let note = document.getElementById("empty");
    if (cards.size === 0 && !note) {
      note = el("p", "empty", "No canaries.");
      note.id = "empty";
      grid.appendChild(note);
    } else if (cards.size && note) note.remove();
  }

  // ---- one Canary's page -----------------------------------------------------------------
  function drawTimeline(t) {
    const box = el("section", "timeline");
    box.id = "timeline";
    box.appendChild(el("h3", "", "Timeline (" + t.xlabel + ", " + t.seconds + " s)"));
    const total = t.h + t.metrics.length * (t.metricHeight + 18);
    const s = svg("svg", {class: "timeline-chart", width: t.w, height: total, viewBox: "0 0 " + t.w + " " + total});
    const seen = new Map();
    for (const b of t.bands) {
      const r = svg("rect", {class: "band", x: b.x, y: 0, width: b.w, height: total, fill: /^#[0-9a-f]{6}$/i.test(b.colour) ? b.colour : "#eeeeee"});
      const title = svg("title", {});
      title.textContent = b.phase;
      r.appendChild(title);
      s.appendChild(r);
      seen.set(b.phase, r.getAttribute("fill"));
    }
    s.appendChild(svg("line", {class: "bound", x1: 0, x2: t.w, y1: t.maxWeightY, y2: t.maxWeightY}));
    for (const pts of t.weight) s.appendChild(svg("polyline", {class: "weight", points: pts}));
    const wl = svg("text", {class: "panel-label", x: 4, y: 12});
    wl.textContent = "weight %";
    s.appendChild(wl);
    let top = t.h;
    for (const m of t.metrics) {
      const g = svg("g", {transform: "translate(0," + (top + 18) + ")", class: "metric"});
      const label = svg("text", {class: "panel-label", x: 4, y: -4});
      label.textContent = m.name + [m.min === null ? "" : " min " + num(m.min), m.max === null ? "" : " max " + num(m.max)].join("");
      g.appendChild(label);
      g.appendChild(chart(m.spark, "panel"));
      s.appendChild(g);
      top += t.metricHeight + 18;
    }
    box.appendChild(s);
    const legend = el("div", "legend");
    for (const [phase, fill] of seen) {
      const item = el("span", "legend-item", phase);
      const sw = svg("svg", {width: 10, height: 10});
      sw.appendChild(svg("rect", {width: 10, height: 10, fill: fill}));
      item.prepend(sw);
      legend.appendChild(item);
    }
    box.appendChild(legend);
    return box;
  }

  function entriesTable(c) {
    const t = el("table", "entries");
    t.id = "entries";
    const head = el("tr");
    for (const h of ["TIME (UTC)", "PHASE", "WEIGHT", "ACTOR", "DECISION"]) head.appendChild(el("th", "", h));
    t.appendChild(head);
    for (const e of c.entries) {
      const tr = el("tr", e.decisive ? "entry decisive" : "entry");
      for (const v of [e.time, e.phase, e.weight, e.actor]) tr.appendChild(el("td", "", v));
      const td = el("td", "decision");
      td.appendChild(el("div", "", e.text));
      for (const k of e.checks) td.appendChild(el("div", k.ok ? "sub ok" : "sub bad", "check " + k.text));
      for (const w of e.webhooks) td.appendChild(el("div", w.ok ? "sub ok" : "sub bad", w.text));
      tr.appendChild(td);
      t.appendChild(tr);
    }
    return t;
  }

  function actions(c) {
    const box = el("section", "actions");
    box.id = "actions";
    box.appendChild(el("h3", "", "Actions"));
    const reason = el("input", "reason");
    reason.setAttribute("placeholder", "reason (recorded in the ledger)");
    reason.setAttribute("maxlength", "256");
    const weight = el("input", "weight-input");
    weight.setAttribute("type", "number");
    weight.setAttribute("min", "0");
    weight.setAttribute("max", "100");
    weight.value = String(c.weight);
    const result = el("div", "action-result");
    result.id = "action-result";
    box.appendChild(reason);
    for (const command of COMMANDS) {
      const b = el("button", "action", command);
      b.dataset.command = command;
      b.addEventListener("click", () => act(c, command, reason.value, Number(weight.value), result));
      box.appendChild(b);
      if (command === "set-weight") box.appendChild(weight);
    }
    box.appendChild(result);
    return box;
  }

  function act(c, command, reason, weight, result) {
    result.textContent = command + "…";
    fetch("/api/actions/" + encodeURIComponent(c.namespace) + "/" + encodeURIComponent(c.name) + "/" + command, {
      method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-Canary-Token": token},
      body: JSON.stringify({reason: reason, weight: weight}),
    }).then(r => r.json()).then(d => { result.textContent = d.message; result.className = "action-result " + (d.ok ? "ok" : "bad"); })
      .catch(e => { result.textContent = String(e); });
  }

  // the head (card, why) and the body (timeline, ledger) are redrawn on a change; the actions
  // (with what is being typed into them) stay
  function part(id) {
    let p = document.getElementById(id);
    if (!p) {
      p = el("div", id);
      p.id = id;
      main.appendChild(p);
    }
    return p;
  }
  function detail(c) {
    const head = part("detail-head");
    head.replaceChildren();
    if (!c) {
      head.appendChild(el("p", "empty", "canary " + key + " is not (or not yet) among the watched ones."));
      part("detail-body").replaceChildren();
      return;
    }
    head.appendChild(card(c, true));
    const why = el("p", "why", c.why);
    why.id = "why";
    head.appendChild(why);
    if (token && !document.getElementById("actions")) main.insertBefore(actions(c), part("detail-body"));
    const body = part("detail-body");
    body.replaceChildren();
    if (c.annotations.length) {
      const ul = el("ul", "annotations");
      for (const a of c.annotations) ul.appendChild(el("li", "", a.key + ": " + a.value));
      body.appendChild(ul);
    }
    if (c.timeline) body.appendChild(drawTimeline(c.timeline));
    else body.appendChild(el("p", "empty", "No decisions recorded yet."));
    if (c.hidden) body.appendChild(el("p", "hidden", "(" + c.hidden + " older entries not shown; canary explain --all)"));
    body.appendChild(entriesTable(c));
  }

  // ---- the stream ------------------------------------------------------------------------
  const url = page === "canary" ? "/api/events/" + key.split("/").map(encodeURIComponent).join("/") : "/api/events";
  const source = new EventSource(url);
  let events = 0;
  source.addEventListener("open", () => { conn.textContent = "live"; conn.className = "conn live"; });
  source.addEventListener("error", () => { conn.textContent = "reconnecting…"; conn.className = "conn down"; });
  source.addEventListener("snapshot", ev => {
    const data = JSON.parse(ev.data);
    if (page === "canary") { showErrors(data.errors); detail(data.canary); } else listSnapshot(data);
    tick();
  });
  source.addEventListener("canary", ev => { put(JSON.parse(ev.data)); tick(); main.dataset.events = String(++events); });
  source.addEventListener("detail", ev => { detail(JSON.parse(ev.data)); tick(); main.dataset.events = String(++events); });
  source.addEventListener("deleted", ev => {
    const d = JSON.parse(ev.data);
    if (page === "canary") detail(null); else drop(d.key);
  });
  source.addEventListener("problem", ev => errors.appendChild(el("div", "error", JSON.parse(ev.data).message)));
  setInterval(tick, 1000);
})();
