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
  function showRefusal(body, card) {
    if (!refusal) return;
    const close = el("button", { type: "button", class: "close", "aria-label": t("pop.close"), title: t("pop.close") }, "×");
    close.addEventListener("click", hideRefusal);
    const name = card.querySelector(".kname");
    refusal.replaceChildren(
      close,
      el("strong", {}, name ? name.textContent : ""),
      el("p", {}, body.message || t("error.generic")));
    if (body.missing && body.missing.length) {
      refusal.append(el("ul", { class: "missing" }, ...body.missing.map((m) => el("li", {}, m))));
    }
    if (body.link) refusal.append(el("a", { href: body.link, class: "button primary" }, body.link_text || t("toast.open")));
    refusal.hidden = false;
    card.classList.add("refused");
    setTimeout(() => card.classList.remove("refused"), 2500);
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
      showRefusal(out.body, card);
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
})();
