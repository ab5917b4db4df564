// The workspace shell: live call pop-ups and toasts over /ws, the call feed and the head's
// "on a call now" panel, click-to-call, row links, the collapsible menu and keyboard keys.
// No inline code anywhere: the page's data comes in <script type="application/json"> elements,
// and text is only ever put in with textContent (never innerHTML).
(function () {
  "use strict";

  function readJson(id) {
    const node = document.getElementById(id);
    if (!node) return {};
    try { return JSON.parse(node.textContent || "{}"); } catch (err) { return {}; }
  }

  const T = readJson("cc-i18n");
  const PAGE = readJson("cc-page");
  window.CC_I18N = T;
  window.CC_PAGE = PAGE;
  const t = (key, values) => {
    let text = T[key] || key;
    for (const [k, v] of Object.entries(values || {})) text = text.split("{" + k + "}").join(String(v));
    return text;
  };
  const me = PAGE.user_id;
  const myExtensions = PAGE.extensions || [];
  const csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  const MAX_OPEN_POPS = 3;

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v;
      else if (k.startsWith("data-") || k.startsWith("aria-")) node.setAttribute(k, v);
      else node[k] = v;
    }
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  // +74951234567 -> +7 (495) 123-45-67 (as the server writes it); other numbers as they are.
  function formatPhone(number) {
    if (!number) return "";
    const m = /^\+7(\d{3})(\d{3})(\d{2})(\d{2})$/.exec(number);
    return m ? "+7 (" + m[1] + ") " + m[2] + "-" + m[3] + "-" + m[4] : number;
  }

  function phoneLink(number) {
    if (!number) return el("span", { class: "muted" }, t("pop.hidden_number"));
    if (!number.startsWith("+")) return el("span", {}, number);
    return el("a", { href: "tel:" + number, class: "phone", "data-call-to": number, title: t("call.click_to_call") }, formatPhone(number));
  }

  function when(iso) {
    return iso ? new Date(iso).toLocaleString(PAGE.lang === "en" ? "en-GB" : "ru-RU", { day: "numeric", month: "short", hour: "2-digit", minute: "2-digit" }) : "";
  }

  // A refusal from the API as a sentence (its stable error id in the catalogue).
  function errorText(body, fallbackKey) {
    if (body && body.error) {
      if (body.error === "lead-gate-missing-fields" && body.details && body.details.missing) {
        return t("error.lead-gate-missing-fields", { fields: body.details.missing.map((m) => t("requirement." + m)).join(", ") });
      }
      const field = body.details && typeof body.details.field === "string" ? body.details.field : null;
      if (field && T["error." + body.error + ".field"]) {
        return t("error." + body.error + ".field", { field: T["field." + field.split(".").pop()] || field });
      }
      if (T["error." + body.error]) return t("error." + body.error);
    }
    return t(fallbackKey || "error.generic");
  }

  async function api(method, path, data) {
    const resp = await fetch(path, {
      method, credentials: "same-origin",
      headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRF-Token": csrf },
      body: data === undefined ? undefined : JSON.stringify(data),
    });
    const body = await resp.json().catch(() => ({}));
    return { ok: resp.ok, status: resp.status, body };
  }

  // ------------------------------------------------------------ toasts and the bell

  const toasts = document.getElementById("toasts");
  const bell = document.getElementById("bell");
  const bellList = document.getElementById("bell-list");
  const bellCount = document.getElementById("bell-count");

  // The bell's unread count: from the page, the /ws hello, each new notification and reads.
  function setUnread(count) {
    if (!bellCount) return;
    const n = Math.max(0, Number(count) || 0);
    bellCount.dataset.count = String(n);
    bellCount.textContent = String(n);
    bellCount.classList.toggle("has", n > 0);
  }

  function loadBell() {
    if (bellList && window.htmx) window.htmx.ajax("GET", "/notifications?box=1", { target: bellList, swap: "innerHTML" });
  }

  if (bell) bell.addEventListener("toggle", () => { if (bell.open) loadBell(); });

  // A stored notification's link: following it marks it read.
  function markRead(id) {
    if (!id) return;
    fetch("/api/v1/notifications/read", {
      method: "POST", credentials: "same-origin", keepalive: true,
      headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify({ ids: [Number(id)] }),
    }).then((r) => r.json()).then((body) => { if (typeof body.unread === "number") setUnread(body.unread); }).catch(() => {});
  }

  document.addEventListener("click", (e) => {
    const link = e.target.closest("a[data-read-id]");
    if (link && link.dataset.readId) markRead(link.dataset.readId);
  });
  document.body.addEventListener("cc-unread", (e) => setUnread(e.detail.count));

  function toast(title, text, href, kind, readId) {
    if (!toasts) return;
    const link = href ? el("a", { href }, t("toast.open")) : null;
    if (link && readId) link.setAttribute("data-read-id", String(readId));
    const box = el("div", { class: "toast" + (kind ? " " + kind : ""), role: "status" }, el("strong", {}, title), text || "",
      link ? el("div", {}, link) : null);
    box.addEventListener("click", (e) => { if (e.target.tagName !== "A") box.remove(); });
    // The same confirmation again ("Сохранено" after each field) replaces the previous one
    // instead of stacking over the form; a bare confirmation goes sooner than news with a link.
    Array.from(toasts.children).forEach((old) => { if (old.textContent === box.textContent) old.remove(); });
    toasts.prepend(box);
    while (toasts.children.length > 3) toasts.lastChild.remove();
    setTimeout(() => box.remove(), kind === "error" ? 12000 : link ? 8000 : 4000);
  }

  // A notification stored for this user: the count goes up, a toast links to its object (the
  // server writes its title, line and link: /notifications/{id}.json).
  async function onStored(msg) {
    setUnread(Number(bellCount ? bellCount.dataset.count : 0) + 1);
    if (bell && bell.open) loadBell();
    try {
      const resp = await fetch("/notifications/" + encodeURIComponent(msg.notification_id) + ".json", { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (!resp.ok) return;
      const note = await resp.json();
      toast(note.title, note.text, note.url, null, note.id);
    } catch (err) { /* the bell still counts it */ }
  }

  // ------------------------------------------------------------ pop-ups

  const pops = document.getElementById("pops");
  const cards = new Map(); // call_id -> pop element
  const callers = new Map(); // call_id -> the client's number, from the ringing

  function row(list, label, value) {
    if (value === null || value === undefined || value === "") return;
    list.append(el("dt", {}, label), el("dd", {}, value));
  }

  function leadForm(msg) {
    const form = el("form", { class: "lead-form" },
      el("input", { name: "contact_name", placeholder: t("pop.contact_name") }),
      el("input", { name: "company_name", placeholder: t("pop.company_name") }),
      el("textarea", { name: "comment", rows: 2, placeholder: t("pop.comment") }),
      el("button", { type: "submit", class: "primary" }, t("pop.create_lead")));
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const data = Object.fromEntries(new FormData(form).entries());
      data.phones = msg.caller ? [msg.caller] : [];
      data.origin = "call";
      if (msg.tracking) data.tracking = msg.tracking;
      const out = await api("POST", "/api/v1/leads", data);
      if (out.ok) {
        form.replaceWith(el("p", {}, t("pop.lead_created") + " · ", el("a", { href: "/clients/lead/" + out.body.id }, t("pop.open_card"))));
      } else {
        form.append(el("p", { class: "field-error" }, errorText(out.body, "pop.lead_failed")));
      }
    });
    return form;
  }

  // At most MAX_OPEN_POPS open, newest first; older ones collapse to their header line.
  function arrangePops() {
    if (!pops) return;
    Array.from(pops.children).forEach((pop, i) => {
      if (pop.dataset.pinned === "1") return;
      pop.classList.toggle("collapsed", i >= MAX_OPEN_POPS);
    });
  }

  function showRinging(msg) {
    if (!pops) return;
    const c = msg.client;
    const pop = el("div", { class: "pop", "data-call": msg.call_id, role: "alert" });
    const close = el("button", { class: "close", type: "button", title: t("pop.close"), "aria-label": t("pop.close") }, "×");
    close.addEventListener("click", (e) => { e.stopPropagation(); pop.remove(); arrangePops(); });
    pop.append(el("div", { class: "pop-head" },
      el("span", { class: "muted" }, t(msg.direction === "outbound" ? "pop.outgoing" : "pop.incoming") + (msg.queue ? " · " + msg.queue : "")),
      el("span", { class: "pop-who" }, c && c.name ? c.name : formatPhone(msg.caller) || t("pop.hidden_number")),
      close));
    pop.append(el("div", { class: "phone" }, phoneLink(msg.caller)));
    const dl = el("dl");
    if (c) {
      pop.append(el("h3", {}, c.name || t("pop.no_name")));
      // The card opens in this tab: a manager works in one tab all day.
      if (c.url) pop.append(el("a", { href: c.url, class: "pop-open" }, t("pop.open_card")));
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
    row(dl, t("pop.did"), msg.did ? formatPhone(msg.did) : null);
    pop.append(dl);
    if (c && c.deals && c.deals.length) {
      pop.append(el("strong", {}, t("card.deals")));
      pop.append(el("ul", {}, ...c.deals.map((d) => el("li", {}, d.title + " — " + (d.stage || "") + (d.amount ? " · " + Number(d.amount).toLocaleString("ru-RU") + " ₽" : "")))));
    }
    if (c && c.tasks && c.tasks.length) {
      pop.append(el("strong", {}, t("card.tasks")));
      pop.append(el("ul", {}, ...c.tasks.map((x) => el("li", {}, x.title + (x.due_at ? " · " + when(x.due_at) : "")))));
    }
    if (c && c.activities && c.activities.length) {
      pop.append(el("strong", {}, t("card.activities")));
      pop.append(el("ul", {}, ...c.activities.map((a) => el("li", {},
        new Date(a.occurred_at).toLocaleDateString("ru-RU") + " " + (a.subject || a.kind),
        a.recording && a.recording.url ? el("audio", { controls: true, preload: "none", src: a.recording.url, class: "player" }) : null))));
    }
    if (!c) pop.append(leadForm(msg));
    pop.addEventListener("click", () => {
      if (pop.classList.contains("collapsed")) {
        pop.dataset.pinned = "1";
        pop.classList.remove("collapsed");
      }
    });
    const old = cards.get(msg.call_id);
    if (old) old.remove();
    cards.set(msg.call_id, pop);
    pops.prepend(pop);
    arrangePops();
  }

  // ------------------------------------------------------------ the call feed (/calls)

  const feed = document.getElementById("call-log");
  const feedEmpty = document.getElementById("call-empty");

  function addLog(msg, text) {
    if (!feed) return;
    const number = callers.get(msg.call_id) || msg.caller || null;
    const who = (PAGE.ext_names || {})[msg.extension] || msg.extension || "";
    const tr = el("tr", { "data-call": msg.call_id },
      el("td", { class: "nowrap" }, new Date().toLocaleTimeString("ru-RU", { hour: "2-digit", minute: "2-digit", second: "2-digit" })),
      el("td", {}, phoneLink(number)),
      el("td", {}, text),
      el("td", { class: "muted" }, who));
    feed.prepend(tr);
    if (feedEmpty) feedEmpty.hidden = true;
    while (feed.children.length > 50) feed.lastChild.remove();
  }

  // ------------------------------------------------------------ the head's "on a call now"

  const onCall = document.getElementById("on-call");
  const onCallEmpty = document.getElementById("on-call-empty");

  function trackCall(msg) {
    if (!onCall) return;
    let item = onCall.querySelector('[data-call="' + CSS.escape(msg.call_id) + '"]');
    if (msg.type === "call.ended") {
      if (item) item.remove();
    } else {
      const who = (PAGE.ext_names || {})[msg.extension] || msg.extension || "";
      const state = msg.type === "call.answered" ? "answered" : "ringing";
      const fresh = el("li", { "data-call": msg.call_id, class: state },
        el("strong", {}, who), " · ", formatPhone(callers.get(msg.call_id) || msg.caller) || t("pop.hidden_number"), " ",
        el("span", { class: "muted" }, t(state === "answered" ? "oncall.talking" : "oncall.ringing")));
      if (item) item.replaceWith(fresh); else onCall.prepend(fresh);
    }
    if (onCallEmpty) onCallEmpty.hidden = onCall.children.length > 0;
  }

  // ------------------------------------------------------------ events from /ws

  // Stored notifications (task due or given by another, a lead, deal or request assigned, an
  // invoice reminder) arrive as notification.created; the hello says how many wait unread.
  function onNotification(msg) {
    if (msg.type === "hello" && typeof msg.unread_notifications === "number") {
      setUnread(msg.unread_notifications);
    } else if (msg.type === "notification.created" && msg.user_id === me) {
      onStored(msg);
    } else if (msg.type === "notifications.read" && msg.user_id === me) {
      setUnread(msg.unread); // read on another page
      if (bell && bell.open) loadBell();
    } else if (msg.type === "notification") {
      toast(msg.title || t("toast.notification"), msg.text || "", msg.url || null);
    }
  }

  // The inbox counter of the menu follows the conversations' events (static/inbox.js and
  // other page scripts listen to "cc-ws" for the frames they care about).
  const inboxBadge = document.getElementById("inbox-unread");
  let badgeTimer = null;
  function refreshInboxBadge(msg) {
    if (!inboxBadge || !/^(message\.new|conversation\.changed)$/.test(msg.type || "")) return;
    clearTimeout(badgeTimer);
    badgeTimer = setTimeout(async () => {
      try {
        const resp = await api("GET", "/api/v1/inbox/counts");
        if (!resp.ok) return;
        const total = resp.body.mine + resp.body.unassigned;
        inboxBadge.textContent = String(total);
        inboxBadge.hidden = total === 0;
      } catch (err) { /* the next event tries again */ }
    }, 200);
  }

  function onMessage(msg) {
    // Page scripts (the kanban) listen for what concerns them.
    document.dispatchEvent(new CustomEvent("cc-ws", { detail: msg }));
    refreshInboxBadge(msg);
    onNotification(msg);
    if (!msg.type || !msg.type.startsWith("call.")) return;
    if (msg.type === "call.ringing" && msg.caller) callers.set(msg.call_id, msg.caller);
    if (msg.caller && !callers.has(msg.call_id)) callers.set(msg.call_id, msg.caller);
    const mine = msg.extension && myExtensions.includes(msg.extension);
    if (msg.type === "call.corrected") {
      // The PBX's own figures for a call whose end the link only estimated (it was cut):
      // the counters and an open card's history follow, the feed says what changed.
      document.body.dispatchEvent(new CustomEvent("calls-changed"));
      if (mine) document.body.dispatchEvent(new CustomEvent("my-call-ended"));
      const talk = msg.talk_seconds ? " · " + formatDuration(msg.talk_seconds) : "";
      addLog(msg, t("log.corrected") + ": " + t("disposition." + msg.disposition) + talk);
      return;  // not a call in progress: the head's "on a call now" stays as it is
    }
    if (msg.type === "call.ringing") {
      if (mine) showRinging(msg);
      addLog(msg, t("log.ringing"));
    } else if (msg.type === "call.answered") {
      const pop = cards.get(msg.call_id);
      if (pop) pop.classList.add("answered");
      addLog(msg, t("log.answered"));
    } else if (msg.type === "call.ended") {
      const pop = cards.get(msg.call_id);
      if (pop) {
        pop.classList.add("ended");
        if (!pop.querySelector("form")) setTimeout(() => { pop.remove(); arrangePops(); }, 8000);
      }
      // The call is stored before this frame: My day's counters and plan fact follow it, and
      // for a call of his an open card's history shows it at once.
      document.body.dispatchEvent(new CustomEvent("calls-changed"));
      if (mine || pop) document.body.dispatchEvent(new CustomEvent("my-call-ended"));
      const talk = msg.talk_seconds ? " · " + formatDuration(msg.talk_seconds) : "";
      addLog(msg, t("disposition." + msg.disposition) + talk);
      callers.delete(msg.call_id);
    }
    trackCall(msg);
  }

  function formatDuration(seconds) {
    const s = Math.round(seconds);
    const m = Math.floor(s / 60);
    const rest = String(s % 60).padStart(m ? 2 : 1, "0");
    return m ? m + " " + t("time.min") + " " + rest + " " + t("time.s") : rest + " " + t("time.s");
  }

  const linkState = document.getElementById("ws-state");
  let delay = 1000;
  function connect() {
    if (!linkState) return;
    const proto = location.protocol === "https:" ? "wss://" : "ws://";
    const ws = new WebSocket(proto + location.host + "/ws");
    ws.onopen = () => { delay = 1000; linkState.className = "status ok"; linkState.textContent = t("ws.online"); };
    ws.onmessage = (e) => { try { onMessage(JSON.parse(e.data)); } catch (err) { console.error(err); } };
    ws.onclose = () => {
      linkState.className = "status down"; linkState.textContent = t("ws.offline");
      setTimeout(connect, delay); delay = Math.min(delay * 2, 30000);
    };
  }

  // ------------------------------------------------------------ clicks and keys

  async function clickToCall(number, button) {
    if (!myExtensions.length) { toast(t("toast.calling"), t("call.no_extension"), null, "error"); return; }
    if (button) button.disabled = true;
    try {
      const out = await api("POST", "/api/v1/calls", { to: number });
      if (out.ok) toast(t("toast.calling"), formatPhone(number) + " · " + t("call.calling"));
      else toast(t("call.failed"), errorText(out.body, "call.failed"), null, "error");
    } finally {
      if (button) setTimeout(() => { button.disabled = false; }, 3000);
    }
  }

  document.addEventListener("click", (e) => {
    const caller = e.target.closest("[data-call-to]");
    if (caller) {
      if (!myExtensions.length && caller.tagName === "A") return; // the phone's own dialer
      e.preventDefault();
      clickToCall(caller.dataset.callTo, caller.tagName === "BUTTON" ? caller : null);
      return;
    }
    const rowLink = e.target.closest("tr[data-href]");
    if (rowLink && !e.target.closest("a, button, input, select, textarea, audio, summary, label, form")) {
      if (e.ctrlKey || e.metaKey) window.open(rowLink.dataset.href, "_blank");
      else location.href = rowLink.dataset.href;
    }
  });

  document.addEventListener("keydown", (e) => {
    const typing = e.target.closest("input, textarea, select, [contenteditable]");
    if (e.key === "/" && !typing) {
      const search = document.getElementById("global-search");
      if (search) { e.preventDefault(); search.focus(); }
    } else if (e.key === "Escape") {
      const open = document.querySelector("details.dropdown[open], details.inline-edit[open]");
      if (open) { open.open = false; return; }
      const newest = pops && pops.firstElementChild;
      if (newest) { newest.remove(); arrangePops(); }
    }
  });

  // One dropdown open at a time; a click elsewhere closes it.
  document.addEventListener("click", (e) => {
    document.querySelectorAll("details.dropdown[open]").forEach((d) => { if (!d.contains(e.target)) d.open = false; });
  });

  const toggle = document.getElementById("menu-toggle");
  const root = document.documentElement;
  if (localStorage.getItem("cc-menu") === "collapsed") root.classList.add("menu-collapsed");
  if (toggle) {
    toggle.setAttribute("aria-expanded", String(!root.classList.contains("menu-collapsed")));
    toggle.addEventListener("click", () => {
      const collapsed = root.classList.toggle("menu-collapsed");
      localStorage.setItem("cc-menu", collapsed ? "collapsed" : "open");
      toggle.setAttribute("aria-expanded", String(!collapsed));
    });
  }

  // htmx: what the server says after an action (HX-Trigger: cc-toast), and its refusals.
  document.body.addEventListener("cc-toast", (e) => { toast(e.detail.text || "", ""); });
  document.body.addEventListener("htmx:responseError", (e) => {
    const html = e.detail.xhr ? e.detail.xhr.responseText : "";
    const doc = new DOMParser().parseFromString(html || "", "text/html");
    const box = doc.querySelector(".error-box");
    toast(t("error.title.other"), box ? box.textContent.trim() : t("error.generic"), null, "error");
  });
  document.body.addEventListener("htmx:sendError", () => toast(t("error.title.other"), t("ws.offline"), null, "error"));

  window.CC = { onMessage, el, formatPhone, phoneLink, errorText, toast };
  connect();
})();
