// The kanban board (/leads?view=kanban, /deals?view=kanban): SortableJS drags cards between
// columns; a drop posts the move to the server, which applies the same rules as the API (the
// lead gate, the deal rules, access). A refused move puts the card back where it was and says
// why, with a link to the record's card; a drop on a lost stage asks for the reason first.
// Text goes in with textContent only; no inline code (CSP).
(function () {
  "use strict";

  const board = document.getElementById("kanban");
  const T = window.CC_I18N || {};
  const t = (key) => T[key] || key;
  const csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";

  // Selects that apply themselves (the responsible filter).
  document.querySelectorAll("select[data-autosubmit]").forEach((select) => {
    select.addEventListener("change", () => select.form.submit());
  });

  if (!board || typeof window.Sortable === "undefined") return;

  const moveUrl = board.dataset.moveUrl; // "/leads/kanban/" or "/deals/kanban/"
  const refusal = document.getElementById("kanban-refusal");
  const dialog = document.getElementById("reason-dialog");
  const reasonForm = document.getElementById("reason-form");
  const reasonSelect = document.getElementById("reason-select");
  const reasonError = document.getElementById("reason-error");

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v;
      else node.setAttribute(k, v);
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function hideRefusal() {
    if (refusal) { refusal.hidden = true; refusal.replaceChildren(); }
  }

  // Why the move was refused: the sentence, the missing fields, the card to open.
  function showRefusal(body, card, evt, stage) {
    if (!refusal) return;
    const close = el("button", { type: "button", class: "close", "aria-label": t("pop.close"), title: t("pop.close") }, "×");
    close.addEventListener("click", hideRefusal);
    const name = card.querySelector(".kname");
    refusal.replaceChildren(
      close,
      el("strong", {}, name ? name.textContent : ""),
      el("p", {}, body.message || t("error.generic")));
    // The missing fields are said once: as the inputs asked right here (each with its label),
    // else as a list; only what the board cannot ask for is listed beside the inputs.
    const asking = Boolean(body.fields && body.fields.length && evt);
    const listed = asking ? body.missing_elsewhere || [] : body.missing || [];
    if (listed.length) refusal.append(el("ul", { class: "missing" }, ...listed.map((m) => el("li", {}, m))));
    if (asking) refusal.append(fillForm(body, evt, stage));
    if (body.link) refusal.append(el("a", { href: body.link, class: body.fields && body.fields.length ? "button" : "button primary" }, body.link_text || t("toast.open")));
    refusal.hidden = false;
    const first = refusal.querySelector("input, select");
    if (first) first.focus();
    card.classList.add("refused");
    setTimeout(() => card.classList.remove("refused"), 2500);
  }

  // The gate's missing fields asked right here: saved through the API (PATCH the lead), then
  // the move is tried again.
  function fillForm(body, evt, stage) {
    const form = el("form", { class: "gate-fill", novalidate: "" });
    for (const f of body.fields) {
      const id = "gate-" + f.name;
      let input;
      if (f.kind === "select") {
        input = el("select", { id, name: f.name }, el("option", { value: "" }, "—"));
        for (const [value, label] of f.options || []) input.append(el("option", { value }, label));
      } else {
        input = el("input", { id, name: f.name, type: f.kind === "tel" ? "tel" : "text", autocomplete: "off" });
        if (f.kind === "money") input.setAttribute("inputmode", "decimal");
      }
      form.append(el("label", { for: id }, f.label), input);
    }
    const error = el("p", { class: "field-error", role: "alert" });
    error.hidden = true;
    const submit = el("button", { type: "submit", class: "primary" }, body.fill_submit || t("kanban.move"));
    form.append(error, submit);
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const patch = {};
      for (const f of body.fields) {
        const value = (form.elements[f.name].value || "").trim();
        if (!value) continue;
        if (f.kind === "tel") patch[f.name] = [value];
        else if (f.name === "source_id" || f.name === "region_id") patch[f.name] = Number(value);
        else if (f.name === "decision_maker_reached") patch[f.name] = value === "true";
        else if (f.kind === "money") patch[f.name] = value.replace(/[\s\u00a0\u202f₽]/g, "").replace(",", ".");
        else patch[f.name] = value;
      }
      submit.disabled = true;
      let out;
      try {
        const resp = await fetch("/api/v1/leads/" + encodeURIComponent(evt.item.dataset.id), {
          method: "PATCH", credentials: "same-origin",
          headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRF-Token": csrf },
          body: JSON.stringify(patch),
        });
        out = { ok: resp.ok, body: await resp.json().catch(() => ({})) };
      } catch (err) {
        out = { ok: false, body: {} };
      }
      submit.disabled = false;
      if (!out.ok) {
        error.textContent = window.CC && window.CC.errorText ? window.CC.errorText(out.body) : t("error.generic");
        error.hidden = false;
        return;
      }
      // Saved: the card goes to the stage it was dropped on, and the move is asked again.
      const again = { item: evt.item, from: evt.from, to: evt.to, oldIndex: evt.oldIndex };
      evt.to.prepend(evt.item);
      move(again, stage, null);
    });
    return form;
  }

  function putBack(evt) {
    const from = evt.from;
    from.insertBefore(evt.item, from.children[evt.oldIndex] || null);
  }

  function updateTotals(columns) {
    for (const [key, totals] of Object.entries(columns || {})) {
      const col = board.querySelector('.kcol[data-stage="' + CSS.escape(key) + '"]');
      if (!col) continue;
      col.querySelector(".kcount").textContent = totals.count_text;
      col.querySelector(".ksum").textContent = totals.total;
    }
  }

  async function move(evt, stage, reason) {
    const card = evt.item;
    card.classList.add("moving");
    let out;
    try {
      const query = new URLSearchParams(location.search);
      const suffix = query.get("responsible") ? "?responsible=" + encodeURIComponent(query.get("responsible")) : "";
      const resp = await fetch(moveUrl + encodeURIComponent(card.dataset.id) + "/move" + suffix, {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRF-Token": csrf },
        body: JSON.stringify({ stage, reason: reason || null }),
      });
      let body = {};
      try { body = await resp.json(); } catch (err) { body = { message: t(resp.status === 403 ? "error.csrf" : "error.generic") }; }
      out = { ok: resp.ok && body.ok, body };
    } catch (err) {
      out = { ok: false, body: { message: t("ws.offline") } };
    }
    card.classList.remove("moving");
    if (out.ok) {
      hideRefusal();
      updateTotals(out.body.columns);
      card.classList.add("moved");
      setTimeout(() => card.classList.remove("moved"), 1500);
    } else {
      putBack(evt);
      showRefusal(out.body, card, evt, stage);
    }
  }

  // A lost stage: ask for the reason; cancelling puts the card back.
  function askReason(evt, stage) {
    if (!dialog || typeof dialog.showModal !== "function") { putBack(evt); return; }
    reasonSelect.value = "";
    reasonError.hidden = true;
    let answered = false;
    const onSubmit = (e) => {
      e.preventDefault();
      if (!reasonSelect.value) { reasonError.hidden = false; reasonSelect.focus(); return; }
      answered = true;
      const reason = reasonSelect.value;
      dialog.close();
      move(evt, stage, reason);
    };
    const onClose = () => {
      reasonForm.removeEventListener("submit", onSubmit);
      dialog.removeEventListener("close", onClose);
      if (!answered) putBack(evt);
    };
    reasonForm.addEventListener("submit", onSubmit);
    dialog.addEventListener("close", onClose);
    dialog.showModal();
    reasonSelect.focus();
  }

  if (reasonSelect) reasonSelect.addEventListener("change", () => { reasonError.hidden = !!reasonSelect.value || reasonError.hidden; });
  const cancel = document.getElementById("reason-cancel");
  if (cancel) cancel.addEventListener("click", () => dialog.close());

  board.querySelectorAll(".kcards").forEach((list) => {
    window.Sortable.create(list, {
      group: "board",
      draggable: ".kcard",
      filter: ".locked, .kmore",
      preventOnFilter: false,
      animation: 120,
      forceFallback: true, // mouse events, not native drag and drop: the same on every browser
      fallbackOnBody: true,
      ghostClass: "ghost",
      onEnd: (evt) => {
        if (evt.from === evt.to) return; // order inside a stage is not kept
        const column = evt.to.closest(".kcol");
        const stage = evt.to.dataset.stage;
        if (column && column.dataset.kind === "lost") askReason(evt, stage);
        else move(evt, stage, null);
      },
    });
  });

  document.addEventListener("keydown", (e) => { if (e.key === "Escape") hideRefusal(); });

  // The keyboard: on a card, Alt+→ / Alt+← moves it to the next / previous stage (the same
  // move as a drop, so the same rules and questions).
  board.addEventListener("keydown", (e) => {
    if (!e.altKey || (e.key !== "ArrowRight" && e.key !== "ArrowLeft")) return;
    const card = e.target.closest(".kcard");
    if (!card || card.classList.contains("locked")) return;
    const from = card.parentElement;
    const columns = Array.from(board.querySelectorAll(".kcards"));
    const to = columns[columns.indexOf(from) + (e.key === "ArrowRight" ? 1 : -1)];
    if (!to) return;
    e.preventDefault();
    const evt = { item: card, from, to, oldIndex: Array.from(from.children).indexOf(card) };
    to.prepend(card);
    const link = card.querySelector(".kname");
    if (link) link.focus();
    if (to.closest(".kcol").dataset.kind === "lost") askReason(evt, to.dataset.stage);
    else move(evt, to.dataset.stage, null);
  });

  // Someone else changed this board (a move, a new or deleted record): offer a refresh
  // instead of moving cards under the user's hands.
  const stale = document.getElementById("kanban-stale");
  const me = (window.CC_PAGE || {}).user_id;
  const kind = board.dataset.board === "deals" ? "deal." : "lead.";
  const pipeline = board.dataset.pipeline || "";
  document.addEventListener("cc-ws", (e) => {
    const msg = e.detail || {};
    if (!stale || !msg.type || !msg.type.startsWith(kind)) return;
    if (!/^(deal|lead)\.(stage_changed|created|deleted)$/.test(msg.type)) return;
    if (msg.actor_id === me || msg.by_id === me) return;
    if (kind === "deal." && msg.pipeline && msg.pipeline !== pipeline) return;
    stale.querySelector("a").setAttribute("href", location.pathname + location.search);
    stale.hidden = false;
  });
})();
