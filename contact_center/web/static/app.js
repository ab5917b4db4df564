// Manager workplace: live call pop-ups over /ws. No dependencies.
(function () {
  "use strict";
  const T = window.CC_I18N || {};
  const t = (key) => T[key] || key;
  const pops = document.getElementById("pops");
  const log = document.getElementById("call-log");
  const linkState = document.getElementById("ws-state");
  const cards = new Map(); // call_id -> pop element
  const toasts = document.getElementById("toasts");
  const me = (window.CC_PAGE || {}).user_id;

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v;
      else if (k.startsWith("data-")) node.setAttribute(k, v);
      else node[k] = v;
    }
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function row(list, label, value) {
    if (value === null || value === undefined || value === "") return;
    list.append(el("dt", {}, label), el("dd", {}, value));
  }

  function leadForm(msg) {
    const form = el("form", { class: "lead-form" },
      el("input", { name: "contact_name", placeholder: t("pop.contact_name") }),
      el("input", { name: "company_name", placeholder: t("pop.company_name") }),
      el("textarea", { name: "comment", rows: 2, placeholder: t("pop.comment") }),
      el("button", { type: "submit" }, t("pop.create_lead")));
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const data = Object.fromEntries(new FormData(form).entries());
      data.phones = msg.caller ? [msg.caller] : [];
      data.origin = "call";
      if (msg.tracking) data.tracking = msg.tracking;
      const resp = await fetch("/api/v1/leads", {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json" }, body: JSON.stringify(data),
      });
      const out = await resp.json().catch(() => ({}));
      form.replaceWith(el("p", { class: "muted" },
        resp.ok ? t("pop.lead_created") + " #" + out.id : t("pop.lead_failed") + ": " + (out.message || resp.status)));
    });
    return form;
  }

  function showRinging(msg) {
    const c = msg.client;
    const pop = el("div", { class: "pop", "data-call": msg.call_id, role: "alert" });
    pop.append(el("button", { class: "close", title: t("pop.close"), onclick: () => pop.remove() }, "×"));
    pop.append(el("div", { class: "muted" }, t("pop.incoming") + (msg.queue ? " · " + msg.queue : "")));
    pop.append(el("div", { class: "phone" }, msg.caller || t("pop.hidden_number")));
    const dl = el("dl");
    if (c) {
      pop.append(el("h3", {}, c.name || t("pop.no_name")));
      if (c.url) pop.append(el("a", { href: c.url, target: "_blank" }, t("pop.open_card")));
      if (c.restricted) pop.append(el("div", { class: "muted" }, t("pop.restricted")));
      row(dl, t("card.company"), c.company);
      row(dl, t("card.client_type"), c.client_type ? t("client_type." + c.client_type) : null);
      row(dl, t("card.potential"), c.potential);
      row(dl, t("card.responsible"), c.responsible);
      row(dl, t("card.region"), c.region);
      row(dl, t("card.source"), c.source);
    } else {
      pop.append(el("h3", {}, el("span", { class: "badge new" }, t("pop.new_client"))));
    }
    if (msg.tracking) {
      row(dl, t("card.call_source"), [msg.tracking.source, msg.tracking.campaign].filter(Boolean).join(" / "));
      row(dl, t("card.region"), msg.tracking.region);
    }
    row(dl, t("pop.did"), msg.did);
    pop.append(dl);
    if (c && c.deals && c.deals.length) {
      pop.append(el("strong", {}, t("card.deals")));
      pop.append(el("ul", {}, ...c.deals.map((d) => el("li", {}, d.title + " — " + (d.stage || "") + (d.amount ? " · " + d.amount + " ₽" : "")))));
    }
    if (c && c.tasks && c.tasks.length) {
      pop.append(el("strong", {}, t("card.tasks")));
      pop.append(el("ul", {}, ...c.tasks.map((x) => el("li", {}, x.title + (x.due_at ? " · " + new Date(x.due_at).toLocaleString() : "")))));
    }
    if (c && c.activities && c.activities.length) {
      pop.append(el("strong", {}, t("card.activities")));
      pop.append(el("ul", {}, ...c.activities.map((a) => el("li", {},
        new Date(a.occurred_at).toLocaleDateString() + " " + (a.subject || a.kind),
        a.recording && a.recording.url ? el("audio", { controls: true, preload: "none", src: a.recording.url, class: "player" }) : null))));
    }
    if (!c) pop.append(leadForm(msg));
    const old = cards.get(msg.call_id);
    if (old) old.remove();
    cards.set(msg.call_id, pop);
    pops.prepend(pop);
  }

  function addLog(msg, text) {
    if (!log) return;
    const tr = el("tr", {}, el("td", {}, new Date().toLocaleTimeString()), el("td", {}, msg.caller || msg.extension || ""), el("td", {}, text));
    log.prepend(tr);
    while (log.children.length > 50) log.lastChild.remove();
  }

  // The client a task or reminder is about, as a card link (or null).
  function clientLink(msg) {
    if (msg.contact_id) return "/clients/contact/" + msg.contact_id;
    if (msg.company_id) return "/clients/company/" + msg.company_id;
    if (msg.lead_id) return "/clients/lead/" + msg.lead_id;
    return null;
  }

  function toast(title, text, href) {
    if (!toasts) return;
    const box = el("div", { class: "toast", role: "status" }, el("strong", {}, title), text || "",
      href ? el("div", {}, el("a", { href: href }, t("toast.open"))) : null);
    box.addEventListener("click", (e) => { if (e.target.tagName !== "A") box.remove(); });
    toasts.prepend(box);
    while (toasts.children.length > 5) toasts.lastChild.remove();
    setTimeout(() => box.remove(), 20000);
  }

  // Notifications meant for this user (the server sends only his; events he caused himself
  // are not news to him).
  function notify(msg) {
    const due = (iso) => (iso ? " · " + new Date(iso).toLocaleString() : "");
    if (msg.type === "task.due") {
      toast(t("toast.task_due"), msg.title + due(msg.due_at), clientLink(msg));
    } else if (msg.type === "task.created" && msg.responsible_id === me && msg.created_by_id !== me) {
      toast(t("toast.task_assigned"), msg.title + due(msg.due_at), clientLink(msg));
    } else if (msg.type === "lead.created" && msg.responsible_id === me && msg.actor_id !== me) {
      toast(t("toast.lead_assigned"), msg.title, "/clients/lead/" + msg.lead_id);
    } else if (msg.type === "web_request.received" && msg.queued) {
      toast(t("toast.web_request_queued"), [msg.client_name, msg.phone, msg.region].filter(Boolean).join(" · "),
        msg.lead_id ? "/clients/lead/" + msg.lead_id : null);
    } else if (msg.type === "invoice.reminder") {
      toast(t("toast.invoice"), "№ " + msg.number + " · " + msg.due_on, msg.company_id ? "/clients/company/" + msg.company_id : null);
    } else if (msg.type === "notification") {
      toast(msg.title || t("toast.notification"), msg.text || "", msg.url || null);
    }
  }

  function onMessage(msg) {
    notify(msg);
    if (msg.type === "call.ringing") {
      showRinging(msg);
      addLog(msg, t("log.ringing") + " " + (msg.extension || ""));
    } else if (msg.type === "call.answered") {
      const pop = cards.get(msg.call_id);
      if (pop) pop.classList.add("answered");
      addLog(msg, t("log.answered") + " " + (msg.extension || ""));
    } else if (msg.type === "call.ended") {
      const pop = cards.get(msg.call_id);
      if (pop) {
        pop.classList.add("ended");
        if (!pop.querySelector("form")) setTimeout(() => pop.remove(), 8000);
      }
      addLog(msg, t("disposition." + msg.disposition) + (msg.talk_seconds ? " · " + Math.round(msg.talk_seconds) + " " + t("log.seconds") : ""));
    }
  }

  let delay = 1000;
  function connect() {
    const proto = location.protocol === "https:" ? "wss://" : "ws://";
    const ws = new WebSocket(proto + location.host + "/ws");
    ws.onopen = () => { delay = 1000; linkState.className = "status ok"; linkState.textContent = t("ws.online"); };
    ws.onmessage = (e) => { try { onMessage(JSON.parse(e.data)); } catch (err) { console.error(err); } };
    ws.onclose = () => {
      linkState.className = "status down"; linkState.textContent = t("ws.offline");
      setTimeout(connect, delay); delay = Math.min(delay * 2, 30000);
    };
  }
  window.CC = { onMessage, el };
  connect();
})();
