// Results dashboard: reads GET /v1/phone/widgets/{id}/stats and the live
// counters stream with the admin token, which is kept in sessionStorage only.
// Charts are SVG built here (no library); each has a text alternative.
"use strict";

(function () {
  const TOKEN_KEY = "bonde-pressure.admin-token";
  const LANG_KEY = "bonde-pressure.lang";
  const SVG = "http://www.w3.org/2000/svg";
  const STATUSES = ["initiated", "ringing", "in-progress", "completed", "busy", "no-answer", "failed", "canceled"];
  const COLORS = {
    initiated: "#8a8f98", ringing: "#3b6fd8", "in-progress": "#7b4fd0", completed: "#1b7f3b",
    busy: "#d07a00", "no-answer": "#c9a100", failed: "#b00020", canceled: "#5b5b66",
  };
  const T = {
    "pt-BR": {
      skip: "Pular para o conteúdo", title: "Resultados da campanha", login_title: "Acesso",
      token: "Token de administração", enter: "Entrar",
      token_hint: "O token fica só nesta aba (sessionStorage) e some ao fechá-la. Sem ADMIN_TOKEN configurado, o servidor gera um ao iniciar e o mostra no log.",
      filters: "Filtros", widget: "Widget", from: "De", to: "Até (inclusive)", tz: "Fuso horário",
      interval: "Agrupar por", auto: "automático", hour: "hora", day: "dia", refresh: "Atualizar",
      csv: "Baixar CSV", logout: "Sair", live: "Ao vivo (hoje)", totals: "Resultado das ligações",
      funnel: "Funil", as_table: "Ver como tabela", step: "Etapa", calls: "Ligações",
      series: "Resultados ao longo do tempo", targets: "Por alvo", target: "Alvo",
      connected: "Conectadas", completed_calls: "Concluídas", median: "Mediana (s)", p90: "P90 (s)",
      percentiles: "Tempo de conversa das ligações concluídas; percentis pelo método do posto mais próximo (nearest rank).",
      total: "Total", live_now: "Em andamento", bucket: "Período",
      bad_token: "Token inválido.", failed_load: "Não foi possível carregar os resultados.",
      period: (a, b, tz) => "Período: " + a + " a " + b + " (" + tz + ")",
      live_on: "Conectado: atualiza sozinho.", live_off: "Reconectando…",
      funnel_alt: "Funil: ", series_alt: (n, total) => n + " períodos, " + total + " ligações no total. Detalhes na tabela abaixo.",
      no_targets: "Nenhuma ligação no período.",
      status: {
        initiated: "Iniciadas", ringing: "Chamando o alvo", "in-progress": "Em conversa", completed: "Concluídas",
        busy: "Alvo ocupado", "no-answer": "Alvo não atendeu", failed: "Falharam", canceled: "Canceladas",
      },
      stage: {
        requested: "Solicitadas", activist_answered: "Ativista atendeu", confirmed: "Confirmadas",
        target_dialled: "Alvo discado", connected: "Conectadas", completed: "Concluídas",
      },
    },
    en: {
      skip: "Skip to content", title: "Campaign results", login_title: "Sign in",
      token: "Admin token", enter: "Sign in",
      token_hint: "The token stays in this tab only (sessionStorage) and is gone when it closes. Without ADMIN_TOKEN configured, the server generates one at start-up and logs it.",
      filters: "Filters", widget: "Widget", from: "From", to: "To (inclusive)", tz: "Time zone",
      interval: "Group by", auto: "automatic", hour: "hour", day: "day", refresh: "Refresh",
      csv: "Download CSV", logout: "Sign out", live: "Live (today)", totals: "Call outcomes",
      funnel: "Funnel", as_table: "Show as a table", step: "Step", calls: "Calls",
      series: "Outcomes over time", targets: "Per target", target: "Target",
      connected: "Connected", completed_calls: "Completed", median: "Median (s)", p90: "P90 (s)",
      percentiles: "Talk time of completed calls; nearest-rank percentiles.",
      total: "Total", live_now: "In progress", bucket: "Period",
      bad_token: "Invalid token.", failed_load: "Could not load the results.",
      period: (a, b, tz) => "Period: " + a + " to " + b + " (" + tz + ")",
      live_on: "Connected: updates by itself.", live_off: "Reconnecting…",
      funnel_alt: "Funnel: ", series_alt: (n, total) => n + " periods, " + total + " calls in all. Details in the table below.",
      no_targets: "No calls in the period.",
      status: {
        initiated: "Initiated", ringing: "Ringing the target", "in-progress": "Talking", completed: "Completed",
        busy: "Target busy", "no-answer": "Target did not answer", failed: "Failed", canceled: "Canceled",
      },
      stage: {
        requested: "Requested", activist_answered: "Activist answered", confirmed: "Confirmed",
        target_dialled: "Target dialled", connected: "Connected", completed: "Completed",
      },
    },
  };

  const $ = (id) => document.getElementById(id);
  let lang = sessionStorage.getItem(LANG_KEY) === "en" ? "en" : "pt-BR";
  let last = null;
  let lastLive = null;
  let liveAbort = null;

  const t = (k) => T[lang][k];
  const fmt = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString(lang));

  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function svg(tag, attrs, text) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function token() { return sessionStorage.getItem(TOKEN_KEY); }

  function applyLang() {
    document.documentElement.lang = lang;
    document.querySelectorAll("[data-i18n]").forEach((n) => {
      const v = T[lang][n.dataset.i18n];
      if (typeof v === "string") n.textContent = v;
    });
    $("lang-pt").setAttribute("aria-pressed", String(lang === "pt-BR"));
    $("lang-en").setAttribute("aria-pressed", String(lang === "en"));
    document.title = t("title") + " — bonde-pressure";
    if (last) render(last);
    if (lastLive) renderLive(lastLive);
  }

  function isoDate(d) {
    const p = (n) => String(n).padStart(2, "0");
    return d.getFullYear() + "-" + p(d.getMonth() + 1) + "-" + p(d.getDate());
  }

  function params() {
    const q = new URLSearchParams();
    q.set("from", $("from").value);
    q.set("to", $("to").value);
    q.set("tz", $("tz").value.trim());
    if ($("interval").value) q.set("interval", $("interval").value);
    return q;
  }

  function widgetId() { return encodeURIComponent($("widget").value.trim() || "1"); }

  function showLogin(message) {
    $("app").classList.add("hidden");
    $("login").classList.remove("hidden");
    $("login-error").textContent = message || "";
    document.body.dataset.state = "login";
    if (liveAbort) liveAbort.abort();
  }

  function errorText(body) {
    if (body && Array.isArray(body.detail)) {
      return body.detail.map((d) => d.loc.slice(1).join(".") + ": " + d.msg).join("; ");
    }
    return (body && body.detail) || t("failed_load");
  }

  async function load() {
    $("error").textContent = "";
    document.body.dataset.state = "loading";
    let r;
    try {
      r = await fetch("/v1/phone/widgets/" + widgetId() + "/stats?" + params(), {
        headers: { Authorization: "Bearer " + token(), Accept: "application/json" },
        cache: "no-store",
      });
    } catch (e) {
      $("error").textContent = t("failed_load");
      document.body.dataset.state = "error";
      return;
    }
    if (r.status === 401) {
      sessionStorage.removeItem(TOKEN_KEY);
      showLogin(t("bad_token"));
      return;
    }
    const body = await r.json().catch(() => null);
    if (!r.ok) {
      $("error").textContent = errorText(body);
      document.body.dataset.state = "error";
      return;
    }
    last = body;
    render(body);
    document.body.dataset.state = "loaded";
    startLive();
  }

  function statCard(id, name, value, status) {
    const d = el("div", { class: "stat" });
    if (status) d.dataset.status = status;
    const v = el("span", { class: "value", id: id }, fmt(value));
    d.append(v, el("span", { class: "name" }, name));
    return d;
  }

  function render(r) {
    const from = new Date(r.from);
    const to = new Date(new Date(r.to).getTime() - 1);
    const opts = { timeZone: r.tz, dateStyle: "short", timeStyle: "short" };
    $("period").textContent = t("period")(from.toLocaleString(lang, opts), to.toLocaleString(lang, opts), r.tz);
    // totals
    const totals = $("totals");
    totals.replaceChildren(statCard("total-all", t("total"), r.total));
    for (const s of STATUSES) totals.append(statCard("total-" + s, t("status")[s], r.by_status[s] || 0, s));
    renderFunnel(r);
    renderSeries(r);
    renderTargets(r);
  }

  function renderFunnel(r) {
    const steps = r.funnel;
    const max = Math.max(1, steps[0] ? steps[0].calls : 0);
    const W = 640, row = 34, labelW = 170;
    const chart = svg("svg", { viewBox: "0 0 " + W + " " + (steps.length * row + 4), width: "100%", role: "img" });
    const alt = t("funnel_alt") + steps.map((s) => t("stage")[s.stage] + " " + s.calls).join(", ");
    chart.append(svg("title", {}, alt));
    steps.forEach((s, i) => {
      const y = i * row + 2;
      const w = Math.round(((W - labelW - 90) * s.calls) / max);
      chart.append(svg("text", { x: 0, y: y + 21, "font-size": 14, fill: "#1d1d1f" }, t("stage")[s.stage]));
      chart.append(svg("rect", { x: labelW, y: y + 4, width: Math.max(w, 1), height: row - 10, rx: 4, fill: "#c4003b" }));
      chart.append(svg("text", { x: labelW + Math.max(w, 1) + 8, y: y + 21, "font-size": 14, fill: "#1d1d1f" }, fmt(s.calls)));
    });
    $("funnel-chart").replaceChildren(chart);
    const body = $("funnel-table").tBodies[0];
    body.replaceChildren();
    for (const s of steps) {
      const tr = el("tr", { "data-stage": s.stage });
      const pct = steps[0] && steps[0].calls ? Math.round((100 * s.calls) / steps[0].calls) + "%" : "–";
      tr.append(el("th", { scope: "row" }, t("stage")[s.stage]), el("td", { class: "num" }, fmt(s.calls)), el("td", { class: "num" }, pct));
      body.append(tr);
    }
  }

  function bucketLabel(start, interval) {
    // start is a local naive date-time: "2026-11-30T14:00:00"
    const [d, time] = start.split("T");
    const [, m, day] = d.split("-");
    return interval === "hour" ? day + "/" + m + " " + time.slice(0, 5) : day + "/" + m;
  }

  function renderSeries(r) {
    const series = r.series;
    const W = 720, H = 240, padL = 40, padB = 28, padT = 10;
    const max = Math.max(1, ...series.map((b) => b.total));
    const chart = svg("svg", { viewBox: "0 0 " + W + " " + H, width: "100%", role: "img" });
    chart.append(svg("title", {}, t("series") + ": " + t("series_alt")(series.length, r.total)));
    const plotW = W - padL - 8, plotH = H - padB - padT;
    chart.append(svg("line", { x1: padL, y1: padT + plotH, x2: W - 8, y2: padT + plotH, stroke: "#999" }));
    chart.append(svg("text", { x: padL - 6, y: padT + 10, "font-size": 11, "text-anchor": "end", fill: "#5b5b66" }, fmt(max)));
    chart.append(svg("text", { x: padL - 6, y: padT + plotH, "font-size": 11, "text-anchor": "end", fill: "#5b5b66" }, "0"));
    const bw = series.length ? plotW / series.length : plotW;
    const every = Math.max(1, Math.ceil(series.length / 12));
    series.forEach((b, i) => {
      let y = padT + plotH;
      for (const s of STATUSES) {
        const n = b.by_status[s] || 0;
        if (!n) continue;
        const h = (plotH * n) / max;
        y -= h;
        const rect = svg("rect", { x: padL + i * bw + 1, y: y, width: Math.max(bw - 2, 1), height: h, fill: COLORS[s] });
        rect.append(svg("title", {}, bucketLabel(b.start, r.interval) + " — " + t("status")[s] + ": " + n));
        chart.append(rect);
      }
      if (i % every === 0) {
        chart.append(svg("text", { x: padL + i * bw + bw / 2, y: H - 8, "font-size": 11, "text-anchor": "middle", fill: "#5b5b66" }, bucketLabel(b.start, r.interval)));
      }
    });
    $("series-chart").replaceChildren(chart);
    const legend = $("series-legend");
    legend.replaceChildren();
    for (const s of STATUSES) {
      const item = el("span");
      const sw = svg("svg", { width: 12, height: 12, "aria-hidden": "true", class: "swatch" });
      sw.append(svg("rect", { width: 12, height: 12, rx: 2, fill: COLORS[s] }));
      item.append(sw, document.createTextNode(t("status")[s]));
      legend.append(item);
    }
    const table = $("series-table");
    const head = el("tr");
    head.append(el("th", { scope: "col" }, t("bucket")), el("th", { scope: "col", class: "num" }, t("total")));
    for (const s of STATUSES) head.append(el("th", { scope: "col", class: "num" }, t("status")[s]));
    table.tHead.replaceChildren(head);
    const body = table.tBodies[0];
    body.replaceChildren();
    for (const b of series) {
      if (!b.total) continue;
      const tr = el("tr");
      tr.append(el("th", { scope: "row" }, bucketLabel(b.start, r.interval)), el("td", { class: "num" }, fmt(b.total)));
      for (const s of STATUSES) tr.append(el("td", { class: "num" }, fmt(b.by_status[s] || 0)));
      body.append(tr);
    }
  }

  function renderTargets(r) {
    const body = $("targets").tBodies[0];
    body.replaceChildren();
    if (!r.targets.length) {
      const tr = el("tr");
      tr.append(el("td", { colspan: "6" }, t("no_targets")));
      body.append(tr);
      return;
    }
    for (const x of r.targets) {
      const tr = el("tr", { "data-target": x.name });
      tr.append(
        el("th", { scope: "row" }, x.name),
        el("td", { class: "num", "data-col": "calls" }, fmt(x.calls)),
        el("td", { class: "num", "data-col": "connected" }, fmt(x.connected)),
        el("td", { class: "num", "data-col": "completed" }, fmt(x.completed)),
        el("td", { class: "num", "data-col": "median" }, fmt(x.median_talk_secs)),
        el("td", { class: "num", "data-col": "p90" }, fmt(x.p90_talk_secs)),
      );
      body.append(tr);
    }
  }

  function renderLive(c) {
    const box = $("live");
    box.replaceChildren(statCard("live-total", t("total"), c.total), statCard("live-now", t("live_now"), c.live));
    for (const s of ["completed", "busy", "no-answer", "failed", "canceled"]) {
      box.append(statCard("live-" + s, t("status")[s], c.by_status[s] || 0, s));
    }
    box.dataset.updated = String(Date.now());
  }

  // Live counters: an SSE stream read with fetch (EventSource cannot send
  // the Authorization header). Reconnects after errors.
  async function startLive() {
    if (liveAbort) liveAbort.abort();
    const ctrl = new AbortController();
    liveAbort = ctrl;
    const url = "/v1/phone/widgets/" + widgetId() + "/events?tz=" + encodeURIComponent($("tz").value.trim());
    while (!ctrl.signal.aborted) {
      try {
        const r = await fetch(url, {
          headers: { Authorization: "Bearer " + token(), Accept: "text/event-stream" },
          signal: ctrl.signal,
          cache: "no-store",
        });
        if (!r.ok || !r.body) throw new Error("status " + r.status);
        $("live-dot").classList.add("on");
        $("live-state").textContent = t("live_on");
        const reader = r.body.getReader();
        const dec = new TextDecoder();
        let buf = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += dec.decode(value, { stream: true });
          let i;
          while ((i = buf.indexOf("\n\n")) >= 0) {
            const chunk = buf.slice(0, i);
            buf = buf.slice(i + 2);
            const data = chunk.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
            if (data) {
              lastLive = JSON.parse(data);
              renderLive(lastLive);
            }
          }
        }
      } catch (e) {
        if (ctrl.signal.aborted) return;
      }
      $("live-dot").classList.remove("on");
      $("live-state").textContent = t("live_off");
      await new Promise((res) => setTimeout(res, 3000));
    }
  }

  async function downloadCsv() {
    const r = await fetch("/v1/phone/widgets/" + widgetId() + "/calls.csv?" + params(), {
      headers: { Authorization: "Bearer " + token() },
    });
    if (!r.ok) {
      $("error").textContent = errorText(await r.json().catch(() => null));
      return;
    }
    const url = URL.createObjectURL(await r.blob());
    const a = el("a", { href: url, download: "widget-" + $("widget").value + "-calls.csv" });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  }

  function init() {
    const today = new Date();
    const weekAgo = new Date(today.getTime() - 6 * 86400000);
    $("from").value = isoDate(weekAgo);
    $("to").value = isoDate(today);
    $("lang-pt").addEventListener("click", () => { lang = "pt-BR"; sessionStorage.setItem(LANG_KEY, lang); applyLang(); });
    $("lang-en").addEventListener("click", () => { lang = "en"; sessionStorage.setItem(LANG_KEY, lang); applyLang(); });
    $("login-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const v = $("token").value.trim();
      if (!v) return;
      sessionStorage.setItem(TOKEN_KEY, v);
      $("token").value = "";
      $("login").classList.add("hidden");
      $("app").classList.remove("hidden");
      load();
    });
    $("filters").addEventListener("submit", (e) => { e.preventDefault(); load(); });
    $("csv").addEventListener("click", downloadCsv);
    $("logout").addEventListener("click", () => { sessionStorage.removeItem(TOKEN_KEY); showLogin(""); });
    applyLang();
    if (token()) {
      $("login").classList.add("hidden");
      $("app").classList.remove("hidden");
      load();
    } else {
      showLogin("");
    }
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
