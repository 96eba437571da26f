// Demo campaign page: mimics the BONDE phone-pressure widget. Starts a call
// with POST /v1/phone/call, then polls GET /v1/phone/status/{id} every 2 s
// until a final status, showing one of the eight status screens.
"use strict";

(function () {
  const POLL_MS = 2000;
  const FINAL = ["completed", "busy", "no-answer", "failed", "canceled"];
  const $ = (id) => document.getElementById(id);
  let widgetId = 1;
  let targets = [];
  let timer = null;

  const SCREENS = {
    initiated: {
      icon: "\u260E", spin: true,
      title: () => "Estamos ligando para você",
      text: (c) => "Atenda o telefone " + c.phone + " e confirme para ser conectado(a) a " + c.target + ".",
    },
    ringing: {
      icon: "\u260E", spin: true,
      title: (c) => "Chamando " + c.target,
      text: () => "Fique na linha: estamos ligando para o alvo.",
    },
    "in-progress": {
      icon: "\uD83D\uDDE3", spin: false,
      title: (c) => "Você está em ligação com " + c.target,
      text: () => "Explique por que esta causa importa. Seja breve e educado(a).",
    },
    completed: {
      icon: "\u2714", final: true,
      title: () => "Ligação concluída!",
      text: (c) => "Obrigado por pressionar " + c.target + ". Compartilhe com seus amigos.",
    },
    busy: {
      icon: "\u26D4", final: true,
      title: (c) => "A linha de " + c.target + " estava ocupada",
      text: () => "Tente de novo daqui a pouco.",
    },
    "no-answer": {
      icon: "\u23F3", final: true,
      title: (c) => c.target + " não atendeu",
      text: () => "Tente de novo mais tarde.",
    },
    failed: {
      icon: "\u26A0", final: true,
      title: () => "Não foi possível completar a ligação",
      text: () => "Algo deu errado do nosso lado. Tente de novo.",
    },
    canceled: {
      icon: "\u2716", final: true,
      title: () => "Não conseguimos falar com você",
      text: (c) => "Ligamos para " + c.phone + ", mas a ligação não foi adiante. Confira o número.",
    },
  };

  function show(status, ctx) {
    const s = SCREENS[status] || SCREENS.failed;
    const screen = $("screen");
    screen.dataset.status = status;
    screen.dataset.final = s.final ? "true" : "false";
    $("screen-icon").textContent = s.icon;
    $("screen-spinner").classList.toggle("hidden", !s.spin);
    $("screen-title").textContent = s.title(ctx);
    $("screen-text").textContent = s.text(ctx);
    $("again").classList.toggle("hidden", !s.final);
    $("change-number").classList.toggle("hidden", status !== "canceled");
    $("call-form").classList.add("hidden");
    screen.classList.remove("hidden");
    if (s.final) $("screen-title").focus();
  }

  function reset() {
    if (timer) clearTimeout(timer);
    timer = null;
    $("screen").classList.add("hidden");
    $("screen").dataset.status = "";
    $("call-form").classList.remove("hidden");
    $("submit").disabled = false;
  }

  async function poll(callId, ctx) {
    try {
      const r = await fetch("/v1/phone/status/" + encodeURIComponent(callId), {
        headers: { Accept: "application/json" },
        cache: "no-store",
      });
      if (r.ok) {
        const body = await r.json();
        show(body.status, ctx);
        if (FINAL.includes(body.status)) return;
      }
    } catch (e) {
      // network hiccup: keep polling
    }
    timer = setTimeout(() => poll(callId, ctx), POLL_MS);
  }

  function fieldMessage(detail) {
    if (!Array.isArray(detail)) return String(detail || "Erro");
    return detail
      .map((d) => (Array.isArray(d.loc) ? d.loc.slice(1).join(".") + ": " : "") + d.msg)
      .join("; ");
  }

  async function submit(ev) {
    ev.preventDefault();
    $("form-error").textContent = "";
    const t = targets[Number($("target").value)] || targets[0];
    if (!t) {
      $("form-error").textContent = "Esta campanha não tem alvos configurados.";
      return;
    }
    const name = $("name").value.trim();
    const parts = name.split(/\s+/);
    const body = {
      widget_id: widgetId,
      activist: {
        name: name,
        first_name: parts[0] || name,
        last_name: parts.slice(1).join(" ") || undefined,
        email: $("email").value.trim(),
        phone: $("phone").value.trim(),
      },
      target: { name: t.name, phone: t.phone },
    };
    $("submit").disabled = true;
    try {
      const r = await fetch("/v1/phone/call", {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify(body),
      });
      const answer = await r.json().catch(() => ({}));
      if (!r.ok) {
        $("form-error").textContent = fieldMessage(answer.detail);
        $("submit").disabled = false;
        return;
      }
      const ctx = { target: t.name, phone: body.activist.phone };
      show(answer.status || "initiated", ctx);
      timer = setTimeout(() => poll(answer.call_id, ctx), POLL_MS);
    } catch (e) {
      $("form-error").textContent = "Sem conexão com o servidor.";
      $("submit").disabled = false;
    }
  }

  async function init() {
    $("call-form").addEventListener("submit", submit);
    $("again").addEventListener("click", reset);
    $("change-number").addEventListener("click", () => {
      reset();
      $("phone").focus();
      $("phone").select();
    });
    try {
      const r = await fetch("/demo/config.json");
      const cfg = await r.json();
      widgetId = cfg.widget_id;
      targets = cfg.targets || [];
    } catch (e) {
      targets = [];
    }
    const sel = $("target");
    targets.forEach((t, i) => {
      const o = document.createElement("option");
      o.value = String(i);
      o.textContent = t.name;
      sel.appendChild(o);
    });
    document.body.dataset.ready = "true";
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
