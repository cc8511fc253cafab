/* Conveyor console: draws each page from the JSON API (/api/v1) and refreshes it.
   No framework, no CDN: DOM built with h() (text is never parsed as HTML). */
"use strict";
(function () {
  const root = document.getElementById("page");
  const cfg = JSON.parse(root.dataset.config);
  const NS = cfg.ns, A = cfg.args, REFRESH = cfg.refresh * 1000;
  const content = document.getElementById("content");
  const statusBox = document.getElementById("status");
  const enc = encodeURIComponent;
  const base = "/namespaces/" + enc(NS);

  /* ---------- helpers ---------- */
  function h(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      node.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }
  class ApiError extends Error {
    constructor(status, body) {
      const e = (body && body.error) || {};
      super(e.message || "HTTP " + status);
      this.status = status; this.code = e.code || ""; this.violations = e.field_violations || [];
      this.correlation = e.correlation_id || "";
    }
  }
  async function api(path, body) {
    const opts = { credentials: "same-origin", headers: { accept: "application/json" } };
    if (body !== undefined) {
      opts.method = "POST"; opts.body = JSON.stringify(body);
      opts.headers["content-type"] = "application/json";
    }
    const reply = await fetch("/api/v1" + base + path, opts);
    const data = await reply.json().catch(() => ({}));
    if (!reply.ok) throw new ApiError(reply.status, data);
    return data;
  }
  function errorBox(err) {
    if (err.status === 401) {
      return h("div", { class: "error", role: "alert" },
        "The platform needs a bearer token: ", err.message, " ",
        h("a", { href: "/signin?next=" + enc(location.pathname + location.search) }, "Sign in"));
    }
    return h("div", { class: "error", role: "alert" },
      h("strong", {}, err.code ? err.code + " (" + err.status + "): " : ""), err.message,
      err.violations.length ? h("ul", {}, err.violations.map(v => h("li", {}, v.field + ": " + v.description))) : null,
      err.code === "PERMISSION_DENIED" ? h("div", {}, "Your token lacks the role or namespace this needs.") : null,
      err.correlation ? h("div", { class: "muted" }, "correlation id " + err.correlation) : null);
  }
  function say(node) { statusBox.replaceChildren(node || ""); }
  function notice(text) { return h("div", { class: "notice", role: "status" }, text); }
  function state(value) { return h("span", { class: "state " + value }, value); }
  function time(value) {
    if (!value) return h("span", { class: "muted" }, "—");
    const d = new Date(value);
    return h("time", { datetime: value, title: value }, d.toLocaleString());
  }
  function ago(value) {
    if (!value) return "—";
    return secs((Date.now() - new Date(value).getTime()) / 1000) + " ago";
  }
  function secs(s) {
    if (s === null || s === undefined) return "—";
    if (s < 1) return (s * 1000).toFixed(0) + " ms";
    if (s < 120) return s.toFixed(1) + " s";
    if (s < 7200) return (s / 60).toFixed(1) + " min";
    if (s < 172800) return (s / 3600).toFixed(1) + " h";
    return (s / 86400).toFixed(1) + " d";
  }
  function rate(r) { return (r || 0).toFixed(2) + "/s"; }
  function leaf(name) { return (name || "").split("/").pop(); }
  function link(name, text) { return name ? h("a", { href: "/" + name }, text || leaf(name)) : h("span", { class: "muted" }, "—"); }
  function table(headers, rows, empty) {
    if (!rows.length) return h("p", { class: "muted" }, empty || "Nothing here.");
    return h("table", {}, h("thead", {}, h("tr", {}, headers.map(x => h("th", {}, x)))),
      h("tbody", {}, rows.map(r => h("tr", {}, r.map(c => h("td", {}, c))))));
  }
  function kv(pairs) {
    return h("dl", { class: "kv" }, pairs.filter(p => p).map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
  }
  function failure(f) {
    if (!f) return null;
    return h("div", { class: "error failure" },
      h("strong", {}, f.type || "error"), f.retryable ? " (retryable)" : " (not retryable)", ": ", f.message,
      Object.keys(f.details || {}).length ? h("pre", {}, JSON.stringify(f.details, null, 2)) : null);
  }
  function wfLink(workflow) { return workflow ? h("a", { href: base + "/workflows/" + enc(leaf(workflow)) }, leaf(workflow)) : "—"; }
  function traceLink(id) {
    if (!id) return h("span", { class: "muted" }, "—");
    if (!cfg.trace_url) return h("code", {}, id);
    return h("a", { href: cfg.trace_url.replace("{trace_id}", enc(id)), class: "trace" }, h("code", {}, id));
  }
  function journalLink(correlation) {
    return correlation ? h("a", { href: base + "/journal?correlation_id=" + enc(correlation) }, "journal trail") : null;
  }
  function payload(p) {
    if (!p) return h("span", { class: "muted" }, "—");
    const shown = "json" in p ? JSON.stringify(p.json, null, 2) : (p.text !== undefined ? p.text : "base64: " + p.base64);
    return h("pre", {}, shown);
  }
  /* An action form asking for a reason; `send(reason, extra)` returns a promise. */
  function actionForm(label, send, opts) {
    const reason = h("textarea", { name: "reason", rows: 2, placeholder: "Why? (required, recorded with the change)", "aria-label": "Reason" });
    const extra = (opts && opts.fields) || [];
    const form = h("form", { class: "action" }, h("label", {}, "Reason", reason), extra,
      h("button", { type: "submit" }, label));
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const button = form.querySelector("button[type=submit]");
      button.disabled = true;
      try {
        const message = await send(reason.value, form);
        say(notice(message));
        if (opts && opts.after) await opts.after();
      } catch (err) { say(errorBox(err)); } finally { button.disabled = false; }
    });
    return form;
  }
  /* An action whose RPC takes no reason: "Label…" opens a question to confirm or cancel. */
  function confirmAction(label, question, send, opts) {
    const yes = h("button", { type: "submit" }, label);
    const form = h("form", { class: "action confirm", hidden: true }, h("p", {}, question), yes, " ",
      h("button", { type: "button", onclick: () => { form.hidden = true; open.hidden = false; } }, "Cancel"));
    const open = h("button", { type: "button", onclick: () => { form.hidden = false; open.hidden = true; } }, label + "…");
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      yes.disabled = true;
      try {
        say(notice(await send()));
        form.hidden = true; open.hidden = false;
        if (opts && opts.after) await opts.after();
      } catch (err) { say(errorBox(err)); } finally { yes.disabled = false; }
    });
    return h("div", { class: "confirm-action" }, open, form);
  }
  /* A box of actions under the refreshed content, rebuilt only when `key` changes (paused or
     not), so a reason being typed survives the page's refreshes. */
  function actions() {
    const box = h("div", { class: "actions" });
    root.appendChild(box);
    let shown = null;
    return (key, build) => {
      if (key === shown) return;
      shown = key;
      const built = build();
      box.replaceChildren(...(built ? [h("h2", {}, "Actions"), built] : []));
    };
  }
  /* Draw `render()` now and, if `every`, again every refresh period while `keep()` is true. */
  async function live(render, every, keep) {
    try {
      const node = await render();
      if (node) content.replaceChildren(Array.isArray(node) ? h("div", {}, node) : node);
      if (statusBox.querySelector(".error.load")) say(null);
    } catch (err) {
      const box = errorBox(err); box.classList.add("load");
      if (content.textContent === "Loading…") content.replaceChildren();
      say(box);
    }
    if (every && (!keep || keep())) setTimeout(() => live(render, every, keep), REFRESH);
  }

  /* ---------- pages ---------- */
  const history = {};  // queue -> {depth: [], inflight: [], add: [], dispatch: []}
  const pages = {};

  pages.overview = () => live(async () => {
    const data = await api("/queues");
    const cards = data.queues.map(q => {
      const s = q.stats || {};
      const d = s.depth_by_state || {};
      const hist = history[q.id] = history[q.id] || { depth: [], inflight: [], add: [], dispatch: [] };
      const push = (k, v) => { hist[k].push(v || 0); if (hist[k].length > 60) hist[k].shift(); };
      push("depth", d.QUEUED); push("inflight", s.in_flight); push("add", s.add_rate_per_second); push("dispatch", s.dispatch_rate_per_second);
      return h("div", { class: "card queue", "data-queue": q.id },
        h("h3", {}, h("a", { href: base + "/queues/" + enc(q.id) }, q.id), q.paused ? [" ", state("PAUSED")] : null),
        kv([["queued", String(d.QUEUED || 0)], ["in flight", h("span", { class: "in-flight" }, String(s.in_flight || 0))],
          ["oldest queued", secs(s.oldest_queued_age)],
          ["added / dispatched", rate(s.add_rate_per_second) + " / " + rate(s.dispatch_rate_per_second)],
          ["wait p50 / p90 / p99", [s.wait_time_p50, s.wait_time_p90, s.wait_time_p99].map(secs).join(" / ")],
          ["succeeded / failed / dead", [d.SUCCEEDED, d.FAILED, d.DEAD].map(x => x || 0).join(" / ")]]),
        ConveyorCharts.line([{ label: "queued", values: hist.depth, color: "#2f5fd0" },
          { label: "in flight", values: hist.inflight, color: "#1f8a4c" }], { title: "depth of " + q.id }),
        ConveyorCharts.line([{ label: "add/s", values: hist.add, color: "#b7791f" },
          { label: "dispatch/s", values: hist.dispatch, color: "#7b3fb5" }], { title: "rates of " + q.id }),
        h("div", {}, h("a", { href: base + "/runs" }, "runs"), " · ",
          h("a", { href: base + "/queues/" + enc(q.id) + "/dead-letters" }, "dead letters (" + (d.DEAD || 0) + ")")));
    });
    return cards.length ? h("div", { class: "cards" }, cards) : h("p", { class: "muted" }, "No queues in namespace " + NS + " yet.");
  }, true);

  pages.runs = () => {
    const params = new URLSearchParams(location.search);
    const stateSel = h("select", { name: "state" }, ["", "PENDING", "RUNNING", "SUCCEEDED", "FAILED", "ABORTED"].map(
      s => h("option", { value: s, selected: params.get("state") === s }, s || "any state")));
    const job = h("input", { name: "job", value: params.get("job") || "", placeholder: "job id" });
    const filters = h("form", { class: "filters", method: "get" }, h("label", {}, "State ", stateSel), h("label", {}, "Job ", job),
      h("button", { type: "submit" }, "Filter"));
    root.insertBefore(filters, statusBox);
    const query = new URLSearchParams();
    for (const k of ["state", "job", "schedule", "work_order"]) if (params.get(k)) query.set(k, params.get(k));
    live(async () => {
      const data = await api("/runs?" + query);
      return table(["run", "state", "job", "progress", "created", "work order"], data.runs.map(r => [
        h("a", { href: base + "/runs/" + enc(r.id) }, r.id), state(r.state),
        r.job ? h("a", { href: base + "/runs?job=" + enc(leaf(r.job)) }, leaf(r.job)) : "—",
        r.progress ? Math.round(r.progress.percent) + "% " + (r.progress.message || "") : "",
        time(r.create_time), link(r.work_order, "order")]), "No runs match.");
    }, true);
  };

  pages.run = () => {
    let final = false;
    const setActions = actions();
    live(async () => {
      const [{ run }, steps] = await Promise.all([api("/runs/" + enc(A.run)), api("/runs/" + enc(A.run) + "/steps")]);
      final = run.final;
      setActions(run.final, () => run.final ? null :  // outside the refreshed part: a reason typed stays
        actionForm("Abort run", async (reason) => { await api("/runs/" + enc(A.run) + "/abort", { reason }); return "Abort requested."; }));
      const pct = run.progress ? run.progress.percent : (run.final ? 100 : 0);
      const outputs = await Promise.all(steps.outputs.slice(0, 10).map(o =>
        api("/runs/" + enc(A.run) + "/outputs/" + enc(o)).catch(err => ({ output: { display_name: o, text: "(" + err.message + ")" } }))));
      return h("div", {},
        kv([["state", h("span", { id: "run-state" }, state(run.state))],
          ["progress", [h("span", { class: "progress" }, h("span", { style: "width:" + Math.min(100, pct) + "%" })), " ",
            h("span", { id: "run-progress" }, Math.round(pct) + "%"), " ", h("span", { id: "run-progress-message" }, run.progress ? run.progress.message : "")]],
          ["kind", run.kind], ["job", run.job ? h("a", { href: base + "/runs?job=" + enc(leaf(run.job)) }, leaf(run.job)) : "—"], ["schedule", link(run.schedule)],
          ["work order", link(run.work_order)],
          ["created / started / ended", [time(run.create_time), " / ", time(run.start_time), " / ", time(run.end_time)]],
          ["summary", run.summary || "—"],
          ["usage", run.usage ? `${run.usage.input_tokens} in / ${run.usage.output_tokens} out tokens, $${run.usage.cost_usd.toFixed(4)}` : "—"],
          ["correlation id", [run.correlation_id || "—", " ", journalLink(run.correlation_id)]],
          ["trace id", traceLink(run.trace_id)]]),
        run.failure ? [h("h2", {}, "Error"), failure(run.failure)] : null,
        h("h2", {}, "Attempts"),
        table(["#", "state", "executor", "started", "ended", "failure"], run.attempts.map(a => [
          String(a.number), state(a.state), a.executor, time(a.start_time), time(a.end_time), a.failure ? a.failure.type + ": " + a.failure.message : ""])),
        h("h2", {}, "Steps"),
        table(["step", "kind", "status", "started", "ended", "details"], steps.steps.map(s => [
          s.display_name || leaf(s.name), s.kind, state(s.status), time(s.start_time), time(s.end_time),
          s.failure ? failure(s.failure) : (s.attributes ? h("code", {}, JSON.stringify(s.attributes)) : "")]), "No steps yet."),
        h("h2", {}, "Outputs"),
        outputs.length ? outputs.map(o => [h("h3", {}, o.output.display_name || leaf(o.output.name || "")), h("pre", {}, o.output.text)])
          : h("p", { class: "muted" }, "No outputs."));
    }, true, () => !final);
  };

  pages.queue = () => {
    const path = "/queues/" + enc(A.queue);
    const setActions = actions();
    const render = async () => {
      const { queue: q } = await api(path);
      const s = q.stats || {}, d = s.depth_by_state || {};
      const limit = r => r && r.per_second ? r.per_second + "/s (burst " + (r.burst || 0) + ")" : "none";
      setActions(q.paused, () => q.paused
        ? confirmAction("Resume queue", "Resume leasing from " + A.queue + "?", async () => {
          await api(path + "/resume", {}); return "Queue " + A.queue + " resumed: workers lease from it again.";
        }, { after: refresh })
        : confirmAction("Pause queue", "Pause " + A.queue + "? Nothing is leased from it until it is resumed; submits are still accepted.", async () => {
          await api(path + "/pause", {}); return "Queue " + A.queue + " paused: nothing is leased from it.";
        }, { after: refresh }));
      return h("div", {},
        kv([["state", h("span", { id: "queue-state" }, state(q.paused ? "PAUSED" : "ACTIVE"))],
          ["queued / in flight", (d.QUEUED || 0) + " / " + (s.in_flight || 0)], ["oldest queued", secs(s.oldest_queued_age)],
          ["added / dispatched", rate(s.add_rate_per_second) + " / " + rate(s.dispatch_rate_per_second)],
          ["succeeded / failed / dead", [d.SUCCEEDED, d.FAILED, d.DEAD].map(x => x || 0).join(" / ")],
          ["max in flight (per key)", (q.max_in_flight || "∞") + " (" + (q.max_in_flight_per_key || "∞") + ")"],
          ["fair", q.fair ? "yes" : "no"], ["rate limit (per key)", limit(q.rate_limit) + " (" + limit(q.rate_limit_per_key) + ")"],
          ["updated", time(q.update_time)]]),
        h("div", {}, h("a", { href: base + "/queues/" + enc(A.queue) + "/dead-letters" }, "dead letters (" + (d.DEAD || 0) + ")")));
    };
    const refresh = () => live(render);
    live(render, true);
  };

  pages["work-order"] = () => live(async () => {
    const data = await api("/queues/" + enc(A.queue) + "/work-orders/" + enc(A.order));
    const o = data.work_order, p = data.position;
    return h("div", {},
      kv([["state", state(o.state)], ["queue", h("a", { href: base + "/queues/" + enc(A.queue) + "/dead-letters" }, A.queue)],
        ["attempt", o.attempt + " of " + (o.max_attempts || "∞")], ["priority", String(o.spec ? o.spec.priority : 0)],
        p ? ["position", p.ahead + " ahead; starts " + (p.estimated_start_time ? "about " + new Date(p.estimated_start_time).toLocaleString() : "—") + " at " + rate(p.dispatch_rate_per_second)] : null,
        ["created", time(o.create_time)], ["leased by", o.leased_by || "—"],
        ["runs", data.runs.length ? data.runs.map(r => [h("a", { href: base + "/runs/" + enc(leaf(r.name)) }, leaf(r.name)), " ", state(r.state), " "]) : "—"],
        ["correlation id", [o.correlation_id || "—", " ", journalLink(o.correlation_id)]],
        ["trace id", traceLink((o.traceparent || "").split("-")[1] || "")]]),
      o.last_failure ? [h("h2", {}, "Last failure"), failure(o.last_failure)] : null,
      h("h2", {}, "Payload"), payload(o.spec && o.spec.payload),
      h("h2", {}, "History"),
      table(["#", "from", "to", "time", "reason", "actor"], data.history.map(e => [
        String(e.sequence), e.from_state, state(e.to_state), time(e.time), e.reason || (e.failure ? e.failure.message : ""), e.actor])));
  }, true);

  function deadLetters(queue) {
    const draw = () => live(async () => {
      const data = await api("/queues/" + enc(queue) + "/dead-letters");
      return h("div", {},
        table(["work order", "attempts", "failed with", "dead since"], data.work_orders.map(o => [
          h("a", { href: "/" + o.name, class: "dead-letter" }, leaf(o.name)), String(o.attempt),
          o.last_failure ? o.last_failure.type + ": " + o.last_failure.message : "", time(o.complete_time || o.update_time)]),
          "No dead letters in " + queue + "."),
        h("h2", {}, "Past redrives"),
        table(["when", "by", "reason", "error type", "orders"], data.redrives.map(r => [
          time(r.create_time), r.requested_by, r.reason, r.error_type || "any", String(r.redriven_count)]), "None."));
    });
    const errorType = h("input", { type: "text", name: "error_type", placeholder: "only this error type (optional)" });
    return [actionForm("Redrive dead letters", async (reason) => {
      const data = await api("/queues/" + enc(queue) + "/redrive", { reason, error_type: errorType.value });
      return "Redrove " + data.redrive.redriven_count + " work order(s) of " + queue + ".";
    }, { fields: [h("label", {}, "Error type", errorType)], after: draw }), draw];
  }

  pages["queue-dead-letters"] = () => {
    const [form, draw] = deadLetters(A.queue);
    root.appendChild(h("h2", {}, "Redrive"));
    root.appendChild(form);
    draw();
  };

  pages["dead-letters"] = () => live(async () => {
    const data = await api("/queues");
    return table(["queue", "dead", "oldest queued"], data.queues.map(q => [
      h("a", { href: base + "/queues/" + enc(q.id) + "/dead-letters" }, q.id),
      String(((q.stats || {}).depth_by_state || {}).DEAD || 0), secs((q.stats || {}).oldest_queued_age)]), "No queues.");
  }, true);

  pages.workflows = () => live(async () => {
    const data = await api("/workflows");
    const schedules = await api("/schedules").catch(() => ({ schedules: [] }));
    const byName = {}; for (const s of schedules.schedules) byName[s.name] = s;
    return data.workflows.length ? data.workflows.map(w => h("div", { class: "card workflow" },
      h("h3", {}, h("a", { href: base + "/workflows/" + enc(w.id) }, w.id), w.paused ? [" ", state("PAUSED")] : null),
      kv([["queue", w.queue], ["code version", w.code_version],
        ["budgets", `${w.iteration_budget || "∞"} iterations, $${(w.cost_budget_usd || 0).toFixed(2)}`],
        ["usage", w.usage ? `$${w.usage.cost_usd.toFixed(4)}, ${w.usage.input_tokens + w.usage.output_tokens} tokens` : "—"]]),
      table(["handler", "kind", "topic / schedule", "next fire"], w.handlers.map(x => [
        x.handler, x.kind,
        x.kind === "PRODUCER" ? link(x.schedule) : h("a", { href: base + "/topics/" + enc(leaf(x.topic)) }, leaf(x.topic)),
        x.schedule && byName[x.schedule] ? time(byName[x.schedule].next_fire_time) : "—"])))) :
      h("p", { class: "muted" }, "No workflows in " + NS + ".");
  }, true);

  pages.workflow = () => {
    const path = "/workflows/" + enc(A.workflow);
    const setActions = actions();
    const render = async () => {
      const data = await api(path);
      const w = data.workflow;
      setActions(w.paused, () => w.paused
        ? confirmAction("Resume workflow", "Resume " + A.workflow + "? A session starts for the work that waited.", async () => {
          await api(path + "/resume", {}); return "Workflow " + A.workflow + " resumed: a session starts for the work that waited.";
        }, { after: refresh })
        : actionForm("Pause workflow", async (reason) => {
          await api(path + "/pause", { reason }); return "Workflow " + A.workflow + " paused: its sessions end at once without running a handler.";
        }, { after: refresh }));
      return h("div", {},
        kv([["queue", w.queue], ["paused", h("span", { id: "workflow-paused" },
          w.paused ? ["yes, by " + w.paused_by + (w.pause_reason ? ": " + w.pause_reason : ""), " ", state("PAUSED")] : "no")],
          ["iteration budget", String(w.iteration_budget || "∞")], ["cost budget", "$" + (w.cost_budget_usd || 0).toFixed(2)]]),
        h("h2", {}, "Sessions"),
        table(["session", "state", "trigger", "iterations", "handler runs", "cost", "started", "summary"], data.sessions.map(s => [
          h("a", { href: base + "/sessions/" + enc(s.id) }, s.id), state(s.state), s.trigger, String(s.iterations),
          String(s.handler_runs), s.usage ? "$" + s.usage.cost_usd.toFixed(4) : "—", time(s.start_time),
          [s.summary, s.follow_up ? [" → follow-up ", link(s.follow_up)] : null]]), "No sessions yet."));
    };
    const refresh = () => live(render);
    live(render, true);
  };

  pages.session = () => live(async () => {
    const data = await api("/sessions/" + enc(A.session));
    const s = data.session;
    return h("div", {},
      kv([["workflow", wfLink(s.workflow)], ["state", state(s.state)], ["trigger", s.trigger], ["iterations", String(s.iterations)],
        ["usage", s.usage ? `$${s.usage.cost_usd.toFixed(4)}, ${s.usage.input_tokens} in / ${s.usage.output_tokens} out tokens` : "—"],
        ["run", s.run ? link(s.run) : "—"], ["follow-up", s.follow_up ? link(s.follow_up) : "—"], ["summary", s.summary || "—"]]),
      h("h2", {}, "Handler runs"),
      table(["handler run", "handler", "phase", "events", "updated"], data.handler_runs.map(r => [
        h("a", { href: base + "/handlerRuns/" + enc(r.id) }, r.id), r.handler, state(r.phase),
        r.events.map(e => e.title || e.message_id).join(", "), time(r.update_time)])));
  }, true);

  function resolveForms(run, after) {
    const forms = ["applied", "failed", "skip"].map(choice => {
      const extra = choice === "applied" ? [h("label", {}, "Result JSON (optional)", h("input", { type: "text", name: "result_json" }))] : [];
      const form = actionForm({ applied: "It was applied", failed: "It failed (retry)", skip: "Skip it" }[choice], async (reason, f) => {
        const resultField = f.querySelector("input[name=result_json]");
        await api("/handler-runs/" + enc(run.id) + "/resolve", { resolution: choice, reason, result_json: resultField ? resultField.value : "" });
        return "Resolved " + run.id + " as " + choice + "; the run continues.";
      }, { fields: extra, after });
      form.dataset.resolution = choice;
      form.hidden = true;
      return form;
    });
    const buttons = h("div", { class: "resolve-buttons" }, forms.map(f => h("button", {
      type: "button", "data-choose": f.dataset.resolution,
      onclick: () => forms.forEach(g => { g.hidden = g !== f; }) }, { applied: "Applied…", failed: "Failed…", skip: "Skip…" }[f.dataset.resolution])));
    return [buttons, forms];
  }

  pages.blocked = () => {
    const draw = () => live(async () => {
      const data = await api("/blocked");
      if (!data.blocked.length) return h("p", { class: "muted", id: "no-blocked" }, "No blocked runs: nothing waits for a person.");
      return h("div", {}, data.blocked.map(r => h("div", { class: "card blocked-run", "data-run": r.id },
        h("h3", {}, wfLink(r.workflow), " · ", r.handler, " · ", h("a", { href: base + "/handlerRuns/" + enc(r.id) }, r.id)),
        kv([["phase", state(r.phase)], ["mutation", r.mutation ? state(r.mutation.state) : "—"],
          ["events", r.events.map(e => e.title || e.message_id).join(", ")], ["since", ago(r.update_time)]]),
        h("pre", { class: "prompt" }, r.prompt), resolveForms(r, draw))));
    });
    draw();
  };

  /* Refreshes until the run ends or waits for a person (then its forms must stay put). */
  pages["handler-run"] = () => { let phase = ""; live(async () => {
    const data = await api("/handler-runs/" + enc(A.run));
    const r = data.handler_run, m = data.mutation;
    phase = r.phase;
    return h("div", {},
      kv([["workflow", wfLink(r.workflow)], ["handler", r.handler], ["phase", h("span", { id: "handler-phase" }, state(r.phase))], ["session", link(r.session)],
        ["events", r.events.map(e => [link(e.name, e.title || e.message_id), " "])], ["updated", time(r.update_time)]]),
      r.failure ? failure(r.failure) : null,
      r.prompt ? [h("h2", {}, "What a person must decide"), h("pre", { class: "prompt" }, r.prompt)] : null,
      m ? [h("h2", {}, "Mutation"), kv([["state", state(m.state)], ["attempts", String(m.attempts)], ["resolution", m.resolution],
        ["resolved by", m.resolved_by || "—"], ["reason", m.resolution_reason || "—"], ["result", m.result_json || "—"]])] : null,
      r.phase === "SUSPENDED" ? resolveForms(r, () => location.reload()) : null,
      h("h2", {}, "Prepared"), h("pre", {}, r.prepared_json || "—"));
  }, true, () => !["COMMITTED", "FAILED", "SUSPENDED"].includes(phase)); };

  pages.topics = () => live(async () => {
    const data = await api("/topics");
    return table(["topic", "workflow", "pending", "reserved", "consumed", "skipped", "stale", "oldest pending"], data.topics.map(t => {
      const s = t.stats || {};
      return [h("a", { href: base + "/topics/" + enc(t.id) }, t.id), wfLink(t.workflow), String(s.pending || 0),
        String(s.reserved || 0), String(s.consumed || 0), String(s.skipped || 0),
        s.stale ? h("span", { class: "warning" }, String(s.stale)) : "0", ago(s.oldest_pending_publish_time)];
    }), "No topics in " + NS + ".");
  }, true);

  pages.topic = () => live(async () => {
    const data = await api("/topics/" + enc(A.topic) + "/events" + (A.status ? "?status=" + enc(A.status) : ""));
    const stale = data.events.filter(e => e.stale).length;
    return h("div", {},
      stale ? h("div", { class: "warning" }, stale + " event(s) have been pending longer than the event store's stale threshold: a consumer may be stuck.") : null,
      table(["#", "title", "status", "published", "by", "correlation"], data.events.map(e => [
        h("a", { href: base + "/topics/" + enc(A.topic) + "/events/" + e.sequence }, String(e.sequence)), e.title,
        [state(e.status), e.stale ? [" ", h("span", { class: "warning" }, "stale")] : null], time(e.publish_time),
        e.consumed_by || e.reserved_by || e.skipped_by || "", journalLink(e.correlation_id)]), "No events."));
  }, true);

  pages.event = () => {
    const draw = () => live(async () => {
      const { event: e } = await api("/topics/" + enc(A.topic) + "/events/" + enc(A.sequence));
      return h("div", {},
        e.stale ? h("div", { class: "warning", id: "stale-warning" }, "Stale: pending since " + ago(e.publish_time) + "; no consumer has taken it.") : null,
        kv([["status", h("span", { id: "event-status" }, state(e.status))], ["title", e.title], ["message id", e.message_id],
          ["published", time(e.publish_time)], ["reserved by", e.reserved_by || "—"], ["consumed by", e.consumed_by || "—"],
          e.skipped_by ? ["skipped by", e.skipped_by + ": " + e.skip_reason] : null,
          ["correlation id", [e.correlation_id || "—", " ", journalLink(e.correlation_id)]]]),
        h("h2", {}, "Payload"), payload(e.payload));
    });
    root.appendChild(h("h2", {}, "Skip"));
    root.appendChild(actionForm("Skip event", async (reason) => {
      await api("/topics/" + enc(A.topic) + "/events/" + enc(A.sequence) + "/skip", { reason });
      return "Event skipped: no consumer will get it.";
    }, { after: draw }));
    draw();
  };

  pages.schedules = () => live(async () => {
    const data = await api("/schedules");
    return table(["schedule", "job", "spec", "next fire", "paused"], data.schedules.map(s => [
      h("a", { href: "/" + s.name }, s.id), s.job,
      s.cron ? "cron " + s.cron.expression : s.interval ? "every " + secs(s.interval.every || s.interval.period || 0) : s.on_event ? "on event" : s.one_off ? "once" : "—",
      time(s.next_fire_time), s.paused ? state("PAUSED") : "no"]), "No schedules in " + NS + ".");
  }, true);

  pages.schedule = () => {
    const path = "/jobs/" + enc(A.job) + "/schedules/" + enc(A.schedule);
    const setActions = actions();
    const render = async () => {
      const data = await api(path);
      const s = data.schedule;
      setActions(s.paused, () => h("div", {},
        s.paused
          ? confirmAction("Resume schedule", "Resume " + A.schedule + " from now? Slots that passed while it was paused are not fired.", async () => {
            await api(path + "/resume", {}); return "Schedule " + A.schedule + " resumed from now.";
          }, { after: refresh })
          : confirmAction("Pause schedule", "Pause " + A.schedule + "? It fires nothing until it is resumed.", async () => {
            await api(path + "/pause", {}); return "Schedule " + A.schedule + " paused: it fires nothing until resumed.";
          }, { after: refresh }),
        confirmAction("Trigger now", "Fire " + A.schedule + " now, outside its schedule (its overlap policy does not apply)?", async () => {
          const { fire } = await api(path + "/trigger", {});
          return "Triggered: fire " + leaf(fire.name) + " (its work order shows in the fire history).";
        }, { after: refresh })));
      const missed = data.fires.filter(f => f.outcome === "SKIPPED" || f.outcome === "MISSED");
      return h("div", {},
        kv([["job", A.job], ["paused", h("span", { id: "schedule-paused" }, s.paused ? state("PAUSED") : "no")], ["overlap", s.overlap_policy], ["catch-up", s.catch_up_mode],
          ["backoff level", String(s.backoff_level)]]),
        h("h2", {}, "Next fires"), data.next_fires.length ? h("ol", { class: "next-fires" }, data.next_fires.map(t => h("li", {}, time(t)))) : h("p", { class: "muted" }, "None planned."),
        missed.length ? h("div", { class: "warning" }, missed.length + " slot(s) skipped or missed below.") : null,
        h("h2", {}, "Fire history"),
        table(["slot", "kind", "outcome", "fired", "work order", "runs", "reason"], data.fires.map(f => [
          time(f.slot_time), f.kind, state(f.outcome), time(f.fire_time), link(f.work_order, "order"),
          f.work_order ? h("a", { href: base + "/runs?work_order=" + enc(f.work_order) }, "runs") : "—",
          f.reason || f.error_type || ""]), "No fires yet."));
    };
    const refresh = () => live(render);
    live(render, true);
  };

  pages.journal = () => {
    const params = new URLSearchParams(location.search);
    const input = h("input", { name: "correlation_id", value: params.get("correlation_id") || "", placeholder: "correlation id", size: 36 });
    root.insertBefore(h("form", { class: "filters", method: "get" }, h("label", {}, "Correlation id ", input), h("button", { type: "submit" }, "Show")), statusBox);
    const query = new URLSearchParams();
    for (const k of ["correlation_id", "subject"]) if (params.get(k)) query.set(k, params.get(k));
    live(async () => {
      const data = await api("/journal?" + query);
      return table(["#", "time", "type", "subjects", "trace id"], data.records.map(r => [
        String(r.position), time(r.time), r.type,
        Object.entries(r.subjects).map(([k, v]) => [k + ": ", v.startsWith("namespaces/") ? link(v, v) : v, " "]),
        traceLink(r.trace_id)]), "No journal records match.");
    }, true);
  };

  (pages[cfg.page] || (() => { content.textContent = "Unknown page."; }))();
})();
