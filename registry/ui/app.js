// Ferry's web UI: a client of the public /api/v1, nothing more. No framework; the DOM is built
// with textContent (never innerHTML from data). The token (when the server has tokens) is kept
// in sessionStorage for this tab and sent as a bearer header; there are no cookies.
"use strict";

(() => {
  const TOKEN_KEY = "ferry.token";
  const state = { role: null, open: false, cleanup: [], listeners: new Set(), stream: null };
  const main = document.getElementById("main");

  // ---------- small helpers ----------
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else if (k === "class") el.className = v;
      else el.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }
  const link = (path, text, attrs) => h("a", { href: path, ...(attrs || {}) }, text);
  const enc = encodeURIComponent;
  const fmt = {
    num(v, digits = 3) {
      if (v === null || v === undefined || Number.isNaN(v)) return "–";
      if (Number.isInteger(v)) return v.toLocaleString("en-US");
      return Number(v).toPrecision(digits);
    },
    pct(v) { return v === null || v === undefined ? "–" : `${(v * 100).toFixed(1)}%`; },
    bytes(n) {
      const units = ["B", "KiB", "MiB", "GiB"];
      let i = 0;
      while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
      return `${i ? n.toFixed(1) : n} ${units[i]}`;
    },
    ago(iso) {
      const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
      if (s < 60) return `${Math.round(s)}s ago`;
      if (s < 3600) return `${Math.round(s / 60)}m ago`;
      if (s < 86400) return `${Math.round(s / 3600)}h ago`;
      return `${Math.round(s / 86400)}d ago`;
    },
    time(iso) { return new Date(iso).toLocaleString(); },
  };
  function time(iso) { return h("time", { datetime: iso, title: fmt.time(iso) }, fmt.ago(iso)); }
  function toast(text, error) {
    const box = h("div", { class: error ? "error" : "" }, text);
    document.getElementById("toast").append(box);
    setTimeout(() => box.remove(), error ? 8000 : 4000);
  }
  const canWrite = () => state.role === "write" || state.role === "admin";
  const isAdmin = () => state.role === "admin";

  // ---------- the API ----------
  class ApiError extends Error {
    constructor(status, detail) { super(detail); this.status = status; }
  }
  function headers(json) {
    const out = { "x-ferry-client": "ui" };
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) out.authorization = `Bearer ${token}`;
    if (json) out["content-type"] = "application/json";
    return out;
  }
  async function api(path, { method = "GET", body, signal } = {}) {
    const response = await fetch(`/api/v1${path}`, {
      method, signal, headers: headers(body !== undefined), cache: "no-store",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (response.status === 204) return null;
    const text = await response.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch { data = null; }
    if (!response.ok) {
      if (response.status === 401) { showLogin("Your token was refused: sign in again."); }
      throw new ApiError(response.status, (data && (data.detail || data.title)) || `${response.status} ${response.statusText}`);
    }
    return data;
  }
  async function pages(path, max = 1000) {
    const items = [];
    let token = null;
    do {
      const sep = path.includes("?") ? "&" : "?";
      const page = await api(`${path}${sep}limit=200${token ? `&page_token=${enc(token)}` : ""}`);
      items.push(...page.items);
      token = page.next_page_token;
    } while (token && items.length < max);
    return items;
  }

  // ---------- live events: one Server-Sent Events stream for the whole app ----------
  // Read with fetch (EventSource cannot send an Authorization header); resumes after the last
  // id it saw when the connection drops.
  async function startStream() {
    if (state.stream) return;
    const controller = new AbortController();
    state.stream = controller;
    let after;
    try {
      after = (await api("/events?after=0&limit=1")).head;
    } catch (e) {
      state.stream = null;
      return;
    }
    while (!controller.signal.aborted) {
      try {
        const response = await fetch(`/api/v1/events/stream?after=${after}`, {
          headers: headers(false), signal: controller.signal, cache: "no-store",
        });
        if (!response.ok) throw new Error(`event stream: ${response.status}`);
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value;
          let end;
          while ((end = buffer.indexOf("\n\n")) >= 0) {
            const block = buffer.slice(0, end);
            buffer = buffer.slice(end + 2);
            const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n");
            if (!data) continue;
            let event;
            try { event = JSON.parse(data); } catch { continue; }
            if (typeof event.id !== "number") continue;
            after = event.id;
            for (const listener of state.listeners) {
              try { listener(event); } catch (e) { console.warn("event listener failed", e); }
            }
          }
        }
      } catch (e) {
        if (controller.signal.aborted) return;
      }
      await new Promise((r) => setTimeout(r, 2000));
    }
  }
  function onEvent(listener) {
    state.listeners.add(listener);
    state.cleanup.push(() => state.listeners.delete(listener));
  }
  function every(ms, fn) {
    const id = setInterval(fn, ms);
    state.cleanup.push(() => clearInterval(id));
  }
  // Refreshes at most once per `ms` however many events ask for it.
  function debounced(fn, ms = 300) {
    let timer = null;
    return () => { if (!timer) timer = setTimeout(() => { timer = null; fn(); }, ms); };
  }

  // ---------- sign-in ----------
  function showLogin(message) {
    cleanup();
    if (state.stream) { state.stream.abort(); state.stream = null; }
    sessionStorage.removeItem(TOKEN_KEY);
    state.role = null;
    document.getElementById("who").textContent = "";
    document.getElementById("logout").hidden = true;
    const input = h("input", { type: "password", id: "token", name: "token", autocomplete: "off", required: true, "aria-describedby": "token-help" });
    const form = h("form", { class: "login", onsubmit: async (e) => {
      e.preventDefault();
      sessionStorage.setItem(TOKEN_KEY, input.value.trim());
      try { await whoami(); route(); } catch (err) { showLogin(err.status === 401 ? "That token was refused." : err.message); }
    } },
      h("h1", {}, "Sign in to Ferry"),
      message ? h("p", { class: "error-box", role: "alert" }, message) : null,
      h("label", { for: "token" }, "API token"),
      input,
      h("p", { id: "token-help", class: "muted" }, "A token from the registry's tokens file. It is kept for this tab only and sent as a bearer header."),
      h("button", { type: "submit", class: "primary" }, "Sign in"));
    main.replaceChildren(form);
    input.focus();
  }
  async function whoami() {
    const me = await api("/whoami");
    state.role = me.role;
    state.open = me.open;
    document.getElementById("who").textContent = me.open ? "open server (admin)" : `role: ${me.role}`;
    document.getElementById("logout").hidden = me.open;
    document.getElementById("nav-webhooks").hidden = me.role !== "admin";
    startStream();
  }

  // ---------- routing: every view has a stable URL under /ui/ ----------
  function cleanup() {
    for (const fn of state.cleanup.splice(0)) fn();
  }
  async function route() {
    cleanup();
    if (!state.role) {
      // A server with tokens and a tab without one: ask first (no refused call to start with).
      const auth = document.querySelector('meta[name="ferry-auth"]');
      if (auth && auth.content === "tokens" && !sessionStorage.getItem(TOKEN_KEY)) { showLogin(); return; }
      try { await whoami(); } catch (e) { if (e.status !== 401) main.replaceChildren(h("p", { class: "error-box" }, e.message)); return; }
    }
    const path = location.pathname.replace(/^\/ui\/?/, "");
    const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
    const query = new URLSearchParams(location.search);
    for (const a of document.querySelectorAll(".top nav a")) {
      a.toggleAttribute("aria-current", a.dataset.section === (parts[0] || "models"));
      if (a.hasAttribute("aria-current")) a.setAttribute("aria-current", "page");
    }
    const view =
      parts.length === 0 || (parts[0] === "models" && parts.length === 1) ? () => modelsView(query)
      : parts[0] === "models" && parts.length === 2 ? () => modelView(parts[1])
      : parts[0] === "models" && parts[2] === "compare" ? () => compareView(parts[1], query)
      : parts[0] === "endpoints" && parts.length === 1 ? () => endpointsView()
      : parts[0] === "endpoints" && parts.length === 2 ? () => endpointView(parts[1])
      : parts[0] === "events" ? () => eventsView(query)
      : parts[0] === "webhooks" ? () => webhooksView()
      : () => { main.replaceChildren(h("h1", {}, "Not found"), h("p", {}, "No page here. "), link("/ui/models", "Models")); };
    try {
      await view();
    } catch (e) {
      if (e.status === 401) return;
      main.replaceChildren(h("h1", {}, "Could not load this page"), h("p", { class: "error-box", role: "alert" }, e.message));
    }
  }
  function go(path) {
    history.pushState(null, "", path);
    route();
    main.focus({ preventScroll: true });
  }
  document.addEventListener("click", (e) => {
    const a = e.target.closest && e.target.closest("a[href^='/ui/']");
    if (!a || e.ctrlKey || e.metaKey || e.shiftKey || e.button !== 0 || a.target) return;
    e.preventDefault();
    go(a.getAttribute("href"));
  });
  window.addEventListener("popstate", route);
  document.getElementById("logout").addEventListener("click", () => showLogin());

  // ---------- models ----------
  async function modelsView(query) {
    const search = h("input", { type: "search", id: "search", placeholder: "Search models", "aria-label": "Search models", value: query.get("q") || "" });
    const body = h("tbody");
    const table = h("div", { class: "table-wrap" }, h("table", {},
      h("thead", {}, h("tr", {}, h("th", {}, "Model"), h("th", { class: "num" }, "Latest"), h("th", { class: "num" }, "Versions"), h("th", {}, "Aliases"), h("th", {}, "Updated"))),
      body));
    const empty = h("p", { class: "muted", hidden: true }, "No model matches.");
    main.replaceChildren(h("h1", {}, "Models"), search, table, empty);
    let models = [];
    const render = () => {
      const q = search.value.trim().toLowerCase();
      const shown = models.filter((m) => m.name.toLowerCase().includes(q));
      body.replaceChildren(...shown.map((m) => h("tr", { "data-model": m.name },
        h("td", {}, link(`/ui/models/${enc(m.name)}`, m.name)),
        h("td", { class: "num" }, m.latest_version),
        h("td", { class: "num" }, m.version_count),
        h("td", {}, Object.entries(m.aliases).map(([a, v]) => h("span", { class: "badge alias" }, `@${a} → ${v}`))),
        h("td", {}, time(m.updated_at)))));
      empty.hidden = shown.length > 0;
      empty.textContent = models.length ? "No model matches." : "No models yet: push one with `ferry model push`.";
    };
    const load = async () => { models = await pages("/models"); render(); };
    search.addEventListener("input", () => {
      const url = search.value ? `/ui/models?q=${enc(search.value)}` : "/ui/models";
      history.replaceState(null, "", url);
      render();
    });
    await load();
    const refresh = debounced(load);
    onEvent((e) => { if (["model.created", "version.created", "version.updated", "alias.set", "alias.deleted"].includes(e.type)) refresh(); });
  }

  function forgeLink(repo, commit) {
    if (!repo) return null;
    const m = /^(?:https?:\/\/|git@)(github\.com|gitlab\.com|codeberg\.org|bitbucket\.org)[:/](.+?)(?:\.git)?\/?$/.exec(repo);
    if (!m) return null;
    const base = `https://${m[1]}/${m[2]}`;
    if (!commit) return base;
    return m[1] === "bitbucket.org" ? `${base}/commits/${commit}` : `${base}/commit/${commit}`;
  }
  function kvTable(title, entries) {
    if (!entries.length) return null;
    return h("div", {}, h("h3", {}, title), h("table", {}, h("tbody", {}, entries.map(([k, v]) => h("tr", {}, h("th", { scope: "row" }, k), h("td", { class: "mono" }, typeof v === "object" ? JSON.stringify(v) : String(v)))))));
  }
  function dims(shape) {
    if (!shape) return "any";
    return `[${shape.map((d) => (d === null ? "?" : d)).join(", ")}]`;
  }
  function versionDetail(model, v, aliasesOf) {
    const lineage = v.lineage || {};
    const forge = forgeLink(lineage.git_repo, lineage.git_commit);
    const rows = [
      ["sha256", h("code", {}, v.sha256)],
      ["size", fmt.bytes(v.size)],
      ["created", fmt.time(v.created_at)],
      ["git commit", lineage.git_commit ? (forge ? h("a", { href: forge, rel: "noopener noreferrer", target: "_blank" }, lineage.git_commit) : h("code", {}, lineage.git_commit)) : "–"],
      ["repository", lineage.git_repo || "–"],
      ["data", (lineage.data || []).length ? h("ul", {}, lineage.data.map((d) => h("li", {}, h("code", {}, d.uri), " ", h("span", { class: "muted mono" }, d.sha256.slice(0, 12)), d.as_of ? ` as of ${fmt.time(d.as_of)}` : ""))) : "–"],
      ["feature view", lineage.feature_view ? `${lineage.feature_view.name}:${lineage.feature_view.version}` : "–"],
      ["training profile", v.has_profile ? "yes (drift is scored against it)" : "no"],
    ];
    if (v.description) rows.push(["description", v.description]);
    const actions = canWrite() ? h("form", { class: "inline", onsubmit: (e) => e.preventDefault() },
      v.status === "active"
        ? h("button", { type: "button", class: "danger", "data-action": "archive", onclick: () => setStatus(model, v.version, "archived") }, `Archive version ${v.version}`)
        : h("button", { type: "button", "data-action": "restore", onclick: () => setStatus(model, v.version, "active") }, `Restore version ${v.version}`)) : null;
    const sig = v.signature || { inputs: [], outputs: [] };
    return h("details", { class: "version", id: `v${v.version}`, "data-version": v.version },
      h("summary", {},
        h("strong", {}, `Version ${v.version}`),
        h("span", { class: `badge ${v.status === "active" ? "ok" : "warn"}` }, v.status),
        (aliasesOf[v.version] || []).map((a) => h("span", { class: "badge alias" }, `@${a}`)),
        h("span", { class: "mono muted" }, v.sha256.slice(0, 12)),
        h("span", { class: "muted" }, fmt.bytes(v.size)),
        time(v.created_at)),
      h("dl", { class: "kv" }, rows.map(([k, val]) => [h("dt", {}, k), h("dd", {}, val)])),
      kvTable("Params", Object.entries(v.params || {})),
      kvTable("Metrics", Object.entries(v.metrics || {})),
      kvTable("Tags", Object.entries(v.tags || {})),
      h("h3", {}, "Signature"),
      h("table", { class: "signature" }, h("thead", {}, h("tr", {}, h("th", {}, ""), h("th", {}, "name"), h("th", {}, "type"), h("th", {}, "shape"))),
        h("tbody", {}, sig.inputs.map((t) => h("tr", {}, h("td", {}, "input"), h("td", { class: "mono" }, t.name), h("td", {}, t.datatype), h("td", { class: "mono" }, dims(t.shape)))),
          sig.outputs.map((t) => h("tr", {}, h("td", {}, "output"), h("td", { class: "mono" }, t.name), h("td", {}, t.datatype), h("td", { class: "mono" }, dims(t.shape)))))),
      actions);
  }
  async function setStatus(model, version, status) {
    const verb = status === "archived" ? "Archive" : "Restore";
    if (!confirm(`${verb} ${model}:${version}?${status === "archived" ? " An archived version cannot be served or get aliases." : ""}`)) return;
    try {
      await api(`/models/${enc(model)}/versions/${version}`, { method: "PATCH", body: { status } });
      toast(`${model}:${version} is ${status}`);
    } catch (e) { toast(`${verb} failed: ${e.message}`, true); }
  }

  async function modelView(name) {
    const container = h("div");
    main.replaceChildren(h("h1", {}, name), container);
    let open = new Set(location.hash ? [location.hash.slice(2)] : []);
    const load = async () => {
      const [model, versions] = await Promise.all([api(`/models/${enc(name)}`), pages(`/models/${enc(name)}/versions`)]);
      for (const d of container.querySelectorAll("details[open]")) open.add(d.dataset.version);
      const aliasesOf = {};
      for (const [a, v] of Object.entries(model.aliases)) (aliasesOf[v] ||= []).push(a);
      const options = (selected) => versions.map((v) => h("option", { value: v.version, selected: v.version === selected }, `${v.version}${v.status === "archived" ? " (archived)" : ""}`));
      const a = h("select", { id: "compare-a", "aria-label": "First version" }, options(versions[1]?.version ?? versions[0]?.version));
      const b = h("select", { id: "compare-b", "aria-label": "Second version" }, options(versions[0]?.version));
      const compare = h("form", { class: "inline", onsubmit: (e) => { e.preventDefault(); go(`/ui/models/${enc(name)}/compare?a=${a.value}&b=${b.value}`); } },
        h("span", {}, "Compare"), a, h("span", {}, "with"), b, h("button", { type: "submit" }, "Compare"));
      let aliasForm = null;
      if (canWrite()) {
        const aliasName = h("input", { id: "alias-name", list: "alias-names", placeholder: "alias", "aria-label": "Alias", required: true, pattern: "[A-Za-z0-9][A-Za-z0-9._\\-]*" });
        const target = h("select", { id: "alias-version", "aria-label": "Version" }, versions.filter((v) => v.status === "active").map((v) => h("option", { value: v.version }, `version ${v.version}`)));
        aliasForm = h("form", { class: "inline", id: "alias-form", onsubmit: async (e) => {
          e.preventDefault();
          const alias = aliasName.value.trim().replace(/^@/, "");
          const version = Number(target.value);
          const now = model.aliases[alias];
          if (!confirm(`Move ${name}@${alias} ${now ? `from version ${now} ` : ""}to version ${version}? Endpoints and deployments that follow it will change.`)) return;
          try {
            await api(`/models/${enc(name)}/aliases/${enc(alias)}`, { method: "PUT", body: { version } });
            toast(`${name}@${alias} → ${version}`);
          } catch (err) { toast(`Moving the alias failed: ${err.message}`, true); }
        } }, h("span", {}, "Move alias"), aliasName, h("datalist", { id: "alias-names" }, Object.keys(model.aliases).map((x) => h("option", { value: x }))), h("span", {}, "to"), target, h("button", { type: "submit", class: "primary" }, "Move"));
      }
      container.replaceChildren(
        h("p", {}, `${model.version_count} version(s), latest ${model.latest_version}, updated `, time(model.updated_at)),
        h("p", { id: "aliases" }, Object.keys(model.aliases).length ? Object.entries(model.aliases).map(([al, v]) => h("a", { class: "badge alias", href: `#v${v}` }, `@${al} → ${v}`)) : h("span", { class: "muted" }, "no aliases")),
        aliasForm,
        versions.length > 1 ? compare : null,
        h("h2", {}, "Versions"),
        h("div", { id: "versions" }, versions.map((v) => {
          const d = versionDetail(name, v, aliasesOf);
          if (open.has(String(v.version))) d.open = true;
          return d;
        })));
    };
    await load();
    const refresh = debounced(load);
    onEvent((e) => { if (e.subject === name) refresh(); });
  }

  async function compareView(name, query) {
    const [a, b] = await Promise.all([api(`/models/${enc(name)}/versions/${enc(query.get("a") || "")}`), api(`/models/${enc(name)}/versions/${enc(query.get("b") || "")}`)]);
    const section = (title, x, y) => {
      const keys = [...new Set([...Object.keys(x || {}), ...Object.keys(y || {})])].sort();
      if (!keys.length) return h("p", { class: "muted" }, `No ${title.toLowerCase()}.`);
      return h("table", { class: "compare" }, h("thead", {}, h("tr", {}, h("th", {}, title), h("th", {}, `version ${a.version}`), h("th", {}, `version ${b.version}`))),
        h("tbody", {}, keys.map((k) => {
          const l = x?.[k], r = y?.[k];
          const differs = JSON.stringify(l) !== JSON.stringify(r);
          return h("tr", { class: differs ? "differs" : "" }, h("th", { scope: "row" }, k), h("td", { class: "mono" }, l === undefined ? "–" : String(l)), h("td", { class: "mono" }, r === undefined ? "–" : String(r), differs ? h("span", { class: "badge warn" }, "differs") : null));
        })));
    };
    main.replaceChildren(
      h("h1", {}, `${name}: version ${a.version} and version ${b.version}`),
      h("p", {}, link(`/ui/models/${enc(name)}`, `← ${name}`)),
      h("h2", {}, "Params"), section("Param", a.params, b.params),
      h("h2", {}, "Metrics"), section("Metric", a.metrics, b.metrics),
      h("h2", {}, "Lineage"), section("Field", { "git commit": a.lineage.git_commit, data: (a.lineage.data || []).map((d) => d.uri).join(", "), sha256: a.sha256 }, { "git commit": b.lineage.git_commit, data: (b.lineage.data || []).map((d) => d.uri).join(", "), sha256: b.sha256 }));
  }

  // ---------- endpoints ----------
  function policySummary(p) {
    return [
      h("span", { class: "badge" }, `stable ${p.stable}`),
      p.canary ? h("span", { class: "badge warn" }, `canary ${p.canary.version} at ${fmt.pct(p.canary.weight)}`) : null,
      (p.shadows || []).map((s) => h("span", { class: "badge" }, `shadow ${s.version} (${fmt.pct(s.sample_rate)})`)),
    ];
  }
  async function endpointsView() {
    const endpoints = await pages("/endpoints");
    main.replaceChildren(h("h1", {}, "Endpoints"), endpoints.length === 0 ? h("p", { class: "muted" }, "No endpoints yet: `ferry endpoint set` creates one.") :
      h("div", { class: "table-wrap" }, h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "Endpoint"), h("th", {}, "Model"), h("th", {}, "Traffic"), h("th", {}, "Updated"))),
        h("tbody", {}, endpoints.map((e) => h("tr", { "data-endpoint": e.name }, h("td", {}, link(`/ui/endpoints/${enc(e.name)}`, e.name)), h("td", {}, link(`/ui/models/${enc(e.model)}`, e.model)), h("td", {}, policySummary(e)), h("td", {}, e.updated_at ? time(e.updated_at) : "–")))))));
    const refresh = debounced(() => route());
    onEvent((e) => { if (e.type === "endpoint.updated" || e.type === "endpoint.deleted") refresh(); });
  }

  const COLORS = ["#0a58ca", "#d9480f", "#2b8a3e", "#862e9c", "#c92a2a", "#087f5b", "#5c940d", "#364fc7"];
  // One chart per metric; one line per version. Each chart carries its data as a table too
  // (for screen readers, and to read the numbers).
  const CHARTS = [
    { key: "requests_per_second", title: "Requests/s" },
    { key: "error_rate", title: "Error rate", pct: true, range: (max) => [0, Math.max(0.01, max * 1.2)] },
    { key: "latency_p50_ms", title: "Latency p50 (ms)" },
    { key: "latency_p99_ms", title: "Latency p99 (ms)" },
    { key: "shadow_agreement", title: "Shadow agreement", pct: true, roles: ["shadow"], range: () => [0, 1] },
    { key: "shadow_mean_abs_diff", title: "Shadow mean |difference|", roles: ["shadow"] },
    { key: "reward_mean", title: "Mean reward" },
    { key: "accuracy", title: "Accuracy", pct: true, range: () => [0, 1] },
    { key: "drift_psi", title: "Drift (worst feature's PSI)", threshold: (p) => threshold(p) },
  ];
  function chartData(series, chart) {
    const versions = new Map();
    for (const point of series.points) for (const v of point.versions) {
      if (chart.roles && !chart.roles.includes(v.role)) continue;
      if (!versions.has(v.version)) versions.set(v.version, v.role);
    }
    const list = [...versions.entries()];
    const xs = series.points.map((p) => Date.parse(p.at) / 1000);
    const ys = list.map(([version]) => series.points.map((p) => {
      const v = p.versions.find((x) => x.version === version);
      const value = v ? v[chart.key] : null;
      return value === undefined ? null : value;
    }));
    return { list, data: [xs, ...ys] };
  }
  function drawChart(box, chart, series, policy) {
    const { list, data } = chartData(series, chart);
    const plot = box.querySelector(".plot");
    const table = box.querySelector("table.chart-data");
    const withData = data.slice(1).some((ys) => ys.some((y) => y !== null));
    box.dataset.points = data.slice(1).reduce((n, ys) => n + ys.filter((y) => y !== null).length, 0);
    const threshold = chart.threshold ? chart.threshold(policy) : null;
    const labels = list.map(([v, role]) => `v${v} ${role}`);
    table.replaceChildren(
      h("thead", {}, h("tr", {}, h("th", {}, "time"), labels.map((l) => h("th", { class: "num" }, l)))),
      h("tbody", {}, data[0].map((x, i) => data.slice(1).some((ys) => ys[i] !== null) ? h("tr", {}, h("td", {}, new Date(x * 1000).toLocaleTimeString()), data.slice(1).map((ys) => h("td", { class: "num" }, chart.pct ? fmt.pct(ys[i]) : fmt.num(ys[i])))) : null)));
    const key = `${labels.join("|")}|${threshold}`;
    const allData = threshold === null ? data : [...data, data[0].map(() => threshold)];
    if (!withData) {
      if (box._plot) { box._plot.destroy(); box._plot = null; }
      plot.replaceChildren(h("p", { class: "muted" }, "no data in this window"));
      return;
    }
    if (box._plot && box._key === key) { box._plot.setData(allData); return; }
    if (box._plot) box._plot.destroy();
    plot.replaceChildren();
    // Points as well as lines: a step with traffic between two without is a point, not nothing.
    const seriesOpts = [{}, ...list.map(([v, role], i) => ({ label: `v${v} ${role}`, stroke: COLORS[i % COLORS.length], fill: null, width: 2, spanGaps: false, points: { show: true, size: 5 }, value: (u, y) => (chart.pct ? fmt.pct(y) : fmt.num(y)) }))];
    if (threshold !== null) seriesOpts.push({ label: "threshold", stroke: "#b42318", dash: [6, 4], width: 1 });
    box._plot = new uPlot({
      width: Math.max(280, plot.clientWidth || 360), height: 180, series: seriesOpts,
      scales: { x: { time: true }, y: chart.range ? { range: (u, min, max) => chart.range(max ?? 0) } : { range: (u, min, max) => [Math.min(0, min ?? 0), (max ?? 1) > 0 ? max * 1.1 : 1] } }, legend: { live: false },
      axes: [{}, { values: (u, vals) => vals.map((y) => (chart.pct ? `${+(y * 100).toFixed(2)}%` : fmt.num(y, 2))), size: 60 }],
    }, allData, plot);
    box._key = key;
  }

  // The endpoint's PSI threshold, when its drift policy judges PSI.
  const threshold = (p) => (p && p.drift && p.drift.metric === "psi" ? p.drift.threshold : null);

  async function endpointView(name) {
    const header = h("div");
    const conditions = h("div", { id: "conditions" });
    const analysis = h("div", { id: "analysis" });
    const drift = h("div", { id: "drift" });
    const histVersion = h("select", { id: "hist-version", "aria-label": "Version" });
    const histFeature = h("select", { id: "hist-feature", "aria-label": "Feature" });
    const histogram = h("div", { id: "histogram" });
    const windowSelect = h("select", { id: "window", "aria-label": "Chart window" }, [["5m", "15s"], ["15m", "15s"], ["1h", "1m"]].map(([w, s]) => h("option", { value: `${w}|${s}`, selected: w === "15m" }, `last ${w}`)));
    const charts = h("div", { class: "charts", id: "charts" }, CHARTS.map((c) => h("section", { class: "chart", "data-chart": c.key, "aria-label": c.title },
      h("h3", {}, c.title), h("div", { class: "plot" }),
      h("details", {}, h("summary", {}, "Data"), h("div", { class: "table-wrap" }, h("table", { class: "chart-data" }))))));
    const timeline = h("ol", { class: "timeline", id: "timeline" });
    main.replaceChildren(h("h1", {}, `Endpoint ${name}`), header, conditions,
      h("h2", {}, "Live, per version ", windowSelect), charts,
      h("h2", {}, "Now (last minute)"), analysis,
      h("h2", {}, "Drift by feature"), drift,
      h("h2", {}, "Training vs live, last 5 minutes"),
      h("form", { class: "inline", onsubmit: (e) => e.preventDefault() }, h("label", { for: "hist-version" }, "Version"), histVersion, h("label", { for: "hist-feature" }, "Feature"), histFeature),
      histogram,
      h("h2", {}, "Rollout timeline"), timeline);
    let endpoint = null;
    const loadPolicy = async () => {
      endpoint = await api(`/endpoints/${enc(name)}`);
      const p = endpoint; // the record carries its policy's fields
      header.replaceChildren(
        h("p", {}, "Model ", link(`/ui/models/${enc(p.model)}`, p.model), " · revision ", endpoint.revision, " · ", policySummary(p)),
        h("dl", { class: "kv" },
          h("dt", {}, "sticky header"), h("dd", {}, p.sticky_header || "–"),
          h("dt", {}, "drift policy"), h("dd", {}, p.drift ? `${p.drift.metric} > ${p.drift.threshold} for ${p.drift.consecutive_windows} window(s), at least ${p.drift.min_samples} samples` : "–"),
          h("dt", {}, "maximum age"), h("dd", {}, p.max_age_seconds ? `${Math.round(p.max_age_seconds / 86400 * 10) / 10} days` : "–"),
          h("dt", {}, "performance decay"), h("dd", {}, p.decay ? `${p.decay.metric} drop > ${p.decay.max_drop} over ${p.decay.window}` : "–")));
      conditions.replaceChildren(...(endpoint.conditions || []).map((c) => h("p", {},
        h("span", { class: `badge ${c.status === "True" ? "bad" : c.status === "False" ? "ok" : "warn"}` }, `${c.type}: ${c.status}`), " ", c.message)));
    };
    const loadSeries = async () => {
      const [w, s] = windowSelect.value.split("|");
      const [series, now] = await Promise.all([api(`/endpoints/${enc(name)}/analysis/series?window=${w}&step=${s}`), api(`/endpoints/${enc(name)}/analysis?window=1m`)]);
      for (const box of charts.children) drawChart(box, CHARTS.find((c) => c.key === box.dataset.chart), series, endpoint);
      analysis.replaceChildren(h("div", { class: "table-wrap" }, h("table", {},
        h("thead", {}, h("tr", {}, ["version", "role", "requests", "error rate", "p50 ms", "p99 ms", "shadow agreement", "mean |diff|", "reward (n)", "accuracy (n)", "drift PSI"].map((t) => h("th", {}, t)))),
        h("tbody", {}, now.versions.map((v) => h("tr", { "data-version": v.version },
          h("td", {}, v.version), h("td", {}, v.role), h("td", { class: "num" }, v.requests), h("td", { class: "num" }, fmt.pct(v.error_rate)),
          h("td", { class: "num" }, fmt.num(v.latency_p50_ms)), h("td", { class: "num" }, fmt.num(v.latency_p99_ms)),
          h("td", { class: "num" }, v.shadow_compared ? `${fmt.pct(v.shadow_agreement)} of ${v.shadow_compared}` : "–"),
          h("td", { class: "num" }, fmt.num(v.shadow_mean_abs_diff)),
          h("td", { class: "num" }, v.reward_count ? `${fmt.num(v.reward_mean)} (${v.reward_count})` : "–"),
          h("td", { class: "num" }, v.label_count ? `${fmt.pct(v.accuracy)} (${v.label_count})` : "–"),
          h("td", { class: "num" }, v.drift && v.drift.scores ? fmt.num(v.drift.scores.psi) : "–")))))));
      const drifted = now.versions.filter((v) => v.drift && Object.keys(v.drift.features || {}).length);
      drift.replaceChildren(...(drifted.length ? drifted.map((v) => {
        const features = Object.entries(v.drift.features).sort((x, y) => y[1].scores.psi - x[1].scores.psi || x[0].localeCompare(y[0]));
        const worst = Math.max(...features.map(([, d]) => d.scores.psi), threshold(endpoint) || 0, 1e-9);
        const row = ([f, d]) => {
          const bar = h("span", { class: `bar${threshold(endpoint) !== null && d.scores.psi > threshold(endpoint) ? " over" : ""}` });
          bar.style.width = `${Math.min(100, (d.scores.psi / worst) * 100)}%`;
          return h("tr", { "data-feature": f }, h("td", { class: "mono" }, f), h("td", { class: "num" }, d.samples), h("td", { class: "num" }, fmt.num(d.scores.psi)), h("td", { class: "barcell", "aria-hidden": "true" }, bar), h("td", { class: "num" }, fmt.num(d.scores.kl)), h("td", { class: "num" }, fmt.num(d.scores.js)));
        };
        const head = () => h("thead", {}, h("tr", {}, h("th", {}, "feature"), h("th", { class: "num" }, "samples"), h("th", { class: "num" }, "PSI"), h("th", {}, ""), h("th", { class: "num" }, "KL"), h("th", { class: "num" }, "JS")));
        const top = features.slice(0, 10);
        const rest = features.slice(10);
        return h("div", {}, h("h3", {}, `Version ${v.version} (${v.role}), ${v.drift.samples} samples, worst first${threshold(endpoint) !== null ? `; threshold ${threshold(endpoint)}` : ""}`),
          h("div", { class: "table-wrap" }, h("table", { class: "drift-features" }, head(), h("tbody", {}, top.map(row)))),
          rest.length ? h("details", {}, h("summary", {}, `the other ${rest.length} features`), h("div", { class: "table-wrap" }, h("table", { class: "drift-features-rest" }, head(), h("tbody", {}, rest.map(row))))) : null);
      }) : [h("p", { class: "muted" }, "No drift scored in the last minute (a version needs a training profile and traffic).")]));
    };
    // One feature's training histogram beside its live one: shares per bucket as bars, and the
    // counts as a table.
    const loadHistogram = async () => {
      const versions = endpoint ? [endpoint.stable, endpoint.canary && endpoint.canary.version, ...(endpoint.shadows || []).map((x) => x.version)].filter((v) => v) : [];
      if (histVersion.options.length !== versions.length || [...histVersion.options].some((o, i) => Number(o.value) !== versions[i])) {
        const keep = histVersion.value;
        histVersion.replaceChildren(...versions.map((v) => h("option", { value: v, selected: String(v) === keep }, `version ${v}`)));
      }
      let data;
      try {
        data = await api(`/endpoints/${enc(name)}/histograms?version=${histVersion.value}&window=5m`);
      } catch (e) {
        if (e.status !== 404) throw e;
        histFeature.replaceChildren();
        histogram.replaceChildren(h("p", { class: "muted" }, e.message));
        return;
      }
      const keep = histFeature.value;
      const names = data.features.map((f) => f.feature);
      if (histFeature.options.length !== names.length || [...histFeature.options].some((o, i) => o.value !== names[i])) {
        histFeature.replaceChildren(...data.features.map((f) => h("option", { value: f.feature, selected: f.feature === keep }, `${f.feature}${f.scores ? ` (PSI ${fmt.num(f.scores.psi)})` : ""}`)));
      }
      const f = data.features.find((x) => x.feature === histFeature.value) || data.features[0];
      if (!f) { histogram.replaceChildren(h("p", { class: "muted" }, "This version's profile has no tabular features.")); return; }
      const total = (xs) => xs.reduce((a, b) => a + b, 0) || 1;
      const tShare = f.training.map((c) => c / total(f.training));
      const lShare = f.live.map((c) => c / total(f.live));
      const top = Math.max(...tShare, ...lShare, 1e-9);
      const label = (i) => (i === 0 ? `< ${fmt.num(f.edges[0])}` : i === f.edges.length ? `≥ ${fmt.num(f.edges[i - 1])}` : `${fmt.num(f.edges[i - 1])}–${fmt.num(f.edges[i])}`);
      const bar = (share, cls) => { const b = h("span", { class: `hbar ${cls}` }); b.style.height = `${(share / top) * 100}%`; return b; };
      histogram.replaceChildren(
        h("p", {}, `${f.feature}: ${f.scores ? `PSI ${fmt.num(f.scores.psi)}, KL ${fmt.num(f.scores.kl)}, JS ${fmt.num(f.scores.js)}` : "no live values in the window"} · `, h("span", { class: "key training" }, "training"), " ", h("span", { class: "key live" }, "live")),
        h("div", { class: "histogram", "data-feature": f.feature, role: "img", "aria-label": `Histogram of ${f.feature}: training and live shares per bucket` },
          f.training.map((_, i) => h("div", { class: "bucket", title: `${label(i)}: training ${fmt.pct(tShare[i])}, live ${fmt.pct(lShare[i])}` }, bar(tShare[i], "training"), bar(lShare[i], "live")))),
        h("details", {}, h("summary", {}, "Data"), h("div", { class: "table-wrap" }, h("table", { class: "histogram-data" },
          h("thead", {}, h("tr", {}, h("th", {}, "bucket"), h("th", { class: "num" }, "training"), h("th", { class: "num" }, "live"))),
          h("tbody", {}, f.training.map((c, i) => h("tr", {}, h("td", {}, label(i)), h("td", { class: "num" }, c), h("td", { class: "num" }, f.live[i]))))))));
    };
    histVersion.addEventListener("change", () => { histFeature.replaceChildren(); loadHistogram(); });
    histFeature.addEventListener("change", loadHistogram);
    const TIMELINE = new Set(["rollout.step", "endpoint.updated", "drift.detected", "drift.recovered", "alias.set", "alias.deleted", "model.stale", "model.refreshed", "performance.degraded", "performance.recovered"]);
    const concerns = (e) => TIMELINE.has(e.type) && (e.subject === name || (endpoint && e.subject === endpoint.model && e.type.startsWith("alias.")));
    const describe = (e) => {
      const d = e.data || {};
      switch (e.type) {
        case "rollout.step": return `${d.phase}: ${d.reason}, weight ${d.weight}%${d.step ? `, step ${d.step}` : ""}. ${d.message || ""}`;
        case "endpoint.updated": return `policy revision ${d.revision ?? ""}: stable ${d.policy?.stable ?? d.stable ?? "?"}${d.policy?.canary ? `, canary ${d.policy.canary.version} at ${fmt.pct(d.policy.canary.weight)}` : ""}`;
        case "alias.set": return `@${d.alias} → ${d.version}${d.previous ? ` (was ${d.previous})` : ""}`;
        case "drift.detected": return `version ${d.version}: ${d.metric} ${fmt.num(d.score)} over ${d.threshold}${d.worst_feature ? `, worst feature ${d.worst_feature}` : ""}`;
        default: return JSON.stringify(d).slice(0, 300);
      }
    };
    // The analysis that decided a rollout step: every check with its value and threshold.
    const analysisTable = (a) => h("div", { class: "table-wrap" }, h("table", { class: "checks", "data-verdict": a.verdict },
      h("caption", {}, `${a.verdict}${a.decided_by ? ` (decided by ${a.decided_by})` : ""}: ${a.stage.toLowerCase()} analysis of version ${a.candidate} against ${a.stable} over ${fmt.num(a.window_seconds)} s`),
      h("thead", {}, h("tr", {}, ["Check", "Value", "Threshold", "Result", "Note"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, a.checks.map((c) => h("tr", { class: c.passed === false ? "failed" : "", "data-check": c.check },
        h("th", { scope: "row" }, c.check), h("td", { class: "num" }, fmt.num(c.value)), h("td", { class: "num" }, fmt.num(c.threshold)),
        h("td", {}, c.passed === undefined ? "not judged" : c.passed ? "passed" : "failed"), h("td", {}, c.note || ""))))));
    const addToTimeline = (e, fresh) => {
      const analysis = e.type === "rollout.step" && e.data && e.data.analysis;
      timeline.prepend(h("li", { class: fresh ? "new" : "", "data-event": e.id, "data-type": e.type }, h("strong", {}, e.type), " ", time(e.created_at), h("div", {}, describe(e)),
        analysis ? analysisTable(analysis) : null));
    };
    await loadPolicy();
    await loadSeries();
    await loadHistogram();
    const head = (await api("/events?after=0&limit=1")).head;
    const recent = (await api(`/events?after=${Math.max(0, head - 1000)}&limit=1000`)).events.filter(concerns);
    for (const e of recent.slice(-100)) addToTimeline(e, false);
    if (!timeline.children.length) timeline.append(h("li", { class: "muted" }, "No rollout events yet."));
    windowSelect.addEventListener("change", loadSeries);
    every(5000, () => Promise.all([loadSeries(), loadHistogram()]).catch((e) => console.warn("analysis refresh failed", e.message)));
    const refreshPolicy = debounced(() => loadPolicy().catch(() => {}));
    onEvent((e) => { if (concerns(e)) { addToTimeline(e, true); refreshPolicy(); } });
    const resize = debounced(() => { for (const box of charts.children) if (box._plot) box._plot.setSize({ width: Math.max(280, box.querySelector(".plot").clientWidth), height: 180 }); }, 200);
    window.addEventListener("resize", resize);
    state.cleanup.push(() => window.removeEventListener("resize", resize));
  }

  // ---------- events ----------
  const EVENT_TYPES = ["model.created", "version.created", "version.updated", "alias.set", "alias.deleted", "endpoint.updated", "endpoint.deleted", "endpoint.degraded", "endpoint.recovered", "drift.detected", "drift.recovered", "rollout.step", "webhook.created", "webhook.deleted", "model.stale", "model.refreshed", "performance.degraded", "performance.recovered", "feature_view.registered", "feature_view.materialized", "skew.detected", "skew.recovered"];
  async function eventsView(query) {
    const filter = h("select", { id: "event-type", "aria-label": "Event type" }, h("option", { value: "" }, "all types"), EVENT_TYPES.map((t) => h("option", { value: t, selected: query.get("type") === t }, t)));
    const list = h("ol", { class: "timeline feed", id: "feed", reversed: true });
    main.replaceChildren(h("h1", {}, "Events"), h("form", { class: "inline", onsubmit: (e) => e.preventDefault() }, h("label", { for: "event-type" }, "Type"), filter, h("span", { class: "muted" }, "newest first, live")), list);
    const item = (e, fresh) => h("li", { class: fresh ? "new" : "", "data-event": e.id, "data-type": e.type },
      h("strong", {}, e.type), " ", h("span", { class: "mono" }, e.subject), " ", time(e.created_at), " ", h("span", { class: "muted" }, `#${e.id}`),
      h("div", { class: "mono muted" }, JSON.stringify(e.data).slice(0, 400)));
    const shown = (e) => !filter.value || e.type === filter.value;
    const load = async () => {
      const head = (await api("/events?after=0&limit=1")).head;
      const events = (await api(`/events?after=${Math.max(0, head - 1000)}&limit=1000`)).events.filter(shown).slice(-200).reverse();
      list.replaceChildren(...events.map((e) => item(e, false)));
      if (!events.length) list.append(h("li", { class: "muted" }, "No events yet."));
    };
    filter.addEventListener("change", () => {
      history.replaceState(null, "", filter.value ? `/ui/events?type=${enc(filter.value)}` : "/ui/events");
      load();
    });
    await load();
    onEvent((e) => {
      if (!shown(e)) return;
      list.querySelector("li.muted")?.remove();
      list.prepend(item(e, true));
      while (list.children.length > 500) list.lastChild.remove();
    });
  }

  // ---------- webhooks (admin) ----------
  async function webhooksView() {
    if (!isAdmin()) {
      main.replaceChildren(h("h1", {}, "Webhooks"), h("p", { class: "error-box" }, "Webhooks are managed with an admin token."));
      return;
    }
    const body = h("div", { id: "webhooks" });
    main.replaceChildren(h("h1", {}, "Webhooks"), body);
    const load = async () => {
      const hooks = await pages("/webhooks");
      const sections = await Promise.all(hooks.map(async (w) => {
        const [deliveries, dead] = await Promise.all([api(`/webhooks/${enc(w.id)}/deliveries?limit=20`), api(`/webhooks/${enc(w.id)}/dead-letters?limit=50`)]);
        const deadItems = dead.items || [];
        return h("section", { "data-webhook": w.id },
          h("h2", {}, w.url),
          h("p", {}, (w.events || []).map((e) => h("span", { class: "badge" }, e)), " ", h("span", { class: "mono muted" }, w.id)),
          h("h3", {}, "Recent deliveries"),
          h("div", { class: "table-wrap" }, h("table", {}, h("thead", {}, h("tr", {}, ["event", "status", "attempts", "last"].map((t) => h("th", {}, t)))),
            h("tbody", {}, (deliveries.items || []).map((d) => h("tr", {}, h("td", {}, `#${d.event_id} ${d.event_type || ""}`), h("td", {}, d.status), h("td", { class: "num" }, d.attempts), h("td", {}, d.last_error || d.last_status || "–")))))),
          h("h3", {}, `Dead letters (${deadItems.length})`),
          deadItems.length ? h("ul", {}, deadItems.map((d) => h("li", {}, `#${d.event_id} ${d.event_type || ""}: ${d.last_error || ""} `,
            h("button", { type: "button", onclick: async () => {
              if (!confirm(`Send event #${d.event_id} to ${w.url} again?`)) return;
              try { await api(`/webhooks/${enc(w.id)}/dead-letters/${enc(d.id)}/replay`, { method: "POST", body: {} }); toast("Queued again"); await load(); } catch (e) { toast(`Replay failed: ${e.message}`, true); }
            } }, "Replay")))) : h("p", { class: "muted" }, "none"));
      }));
      body.replaceChildren(...(sections.length ? sections : [h("p", { class: "muted" }, "No subscriptions: `ferry webhook create URL --event 'drift.*'` creates one.")]));
    };
    await load();
    // Refreshed every 5 s, unless the keyboard is on one of its buttons (a re-render would drop it).
    every(5000, () => { if (!body.contains(document.activeElement)) load().catch((e) => console.warn("webhooks refresh failed", e.message)); });
  }

  route();
})();
