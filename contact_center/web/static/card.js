// Client card: a contact, company or lead with its deals, open tasks and timeline, read from
// the REST API with the session cookie. No dependencies beyond app.js (pop-ups, toasts, el()).
(function () {
  "use strict";
  const T = window.CC_I18N || {};
  const t = (key) => T[key] || key;
  const PAGE = window.CC_PAGE || {};
  const NAMES = PAGE.names || {};
  const root = document.getElementById("card");
  if (!root) return;

  const el = window.CC.el; // app.js, loaded first

  const nameOf = (table, id) => (id === null || id === undefined ? null : (NAMES[table] || {})[id] || "#" + id);
  const yesNo = (v) => (v === true ? t("card.yes") : v === false ? t("card.no") : null);
  const when = (iso) => (iso ? new Date(iso).toLocaleString(PAGE.lang || undefined) : "");
  const money = (v) => (v === null || v === undefined || v === "" ? null
    : Number(v).toLocaleString("ru-RU", { maximumFractionDigits: 2 }) + " ₽");
  const stageName = (s) => (!s ? "" : typeof s === "string" ? s : (PAGE.lang === "en" && s.name_en) || s.name_ru || s.code);
  const label = (prefix, code) => (code ? (T[prefix + code] || code) : null);

  async function get(path) {
    const resp = await fetch("/api/v1" + path, { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (!resp.ok) {
      const err = new Error(path + ": " + resp.status);
      err.status = resp.status;
      throw err;
    }
    return resp.json();
  }

  function fields(rows) {
    const dl = el("dl", { class: "fields" });
    for (const [key, value] of rows) {
      if (value === null || value === undefined || value === "" || (Array.isArray(value) && !value.length)) continue;
      dl.append(el("dt", {}, t(key)), el("dd", {}, value));
    }
    return dl;
  }

  function phoneLinks(phones) {
    if (!phones || !phones.length) return null;
    const span = el("span");
    phones.forEach((p, i) => {
      if (i) span.append(", ");
      span.append(window.CC.phoneLink(p));
    });
    return span;
  }

  function cardFields(doc) {
    return [
      ["card.client_type", label("client_type.", doc.client_type)],
      ["card.potential", money(doc.potential_amount)],
      ["card.purchase_mode", label("purchase.", doc.purchase_mode)],
      ["card.region", nameOf("regions", doc.region_id)],
      ["card.source", nameOf("sources", doc.source_id)],
      ["card.responsible", nameOf("users", doc.responsible_id)],
      ["card.decision_maker_reached", yesNo(doc.decision_maker_reached)],
      ["card.decision_maker", doc.decision_maker_name],
      ["card.target_fit", yesNo(doc.target_fit)],
      ["card.needs_products", doc.needs_products],
      ["card.current_suppliers", doc.current_suppliers],
      ["card.conditions", doc.conditions],
      ["card.current_need", doc.current_need],
    ];
  }

  function linkList(items, href, text) {
    if (!items || !items.length) return null;
    return el("ul", { class: "plain" }, ...items.map((x) => el("li", {}, el("a", { href: href(x) }, text(x)))));
  }

  function head(kind, doc) {
    const box = el("section", { class: "card-head" });
    const title = kind === "lead" ? doc.title : doc.name;
    box.append(el("div", { class: "muted" }, t("card.title." + kind)), el("h2", { class: "card-title" }, title || t("pop.no_name")));
    const rows = [];
    if (kind === "lead") rows.push(["card.stage", (NAMES.stages || {})[doc.stage] || doc.stage]);
    if (kind === "contact") rows.push(["card.position", doc.position]);
    rows.push(["card.phones", phoneLinks(doc.phones)], ["card.emails", (doc.emails || []).join(", ")]);
    if (kind === "company") rows.push(["card.website", doc.website]);
    if (kind === "contact") {
      rows.push(["card.companies", linkList(doc.companies, (c) => "/clients/company/" + c.company_id,
        (c) => c.company_name + (c.is_decision_maker ? " · " + t("card.decision_maker") : "") + (c.position ? " · " + c.position : ""))]);
    }
    if (kind === "company") {
      rows.push(["card.contacts", linkList(doc.contacts, (c) => "/clients/contact/" + c.contact_id,
        (c) => c.contact_name + (c.is_decision_maker ? " · " + t("card.decision_maker") : "") + (c.position ? " · " + c.position : ""))]);
    }
    if (kind === "lead") {
      if (doc.contact_id) rows.push(["card.title.contact", el("a", { href: "/clients/contact/" + doc.contact_id }, "#" + doc.contact_id)]);
      if (doc.company_id) rows.push(["card.title.company", el("a", { href: "/clients/company/" + doc.company_id }, "#" + doc.company_id)]);
      if (doc.tracking) rows.push(["card.tracking", [doc.tracking.source, doc.tracking.campaign, doc.tracking.region].filter(Boolean).join(" / ")]);
    }
    box.append(fields(rows.concat(cardFields(doc), [["card.comment", doc.comment]])));
    return box;
  }

  function legalEntities(doc) {
    const entities = doc.legal_entities || [];
    if (!entities.length) return null;
    const box = el("section", {}, el("h2", {}, t("card.legal_entities")));
    for (const le of entities) {
      box.append(el("h3", {}, le.name));
      for (const r of le.requisites || []) {
        box.append(fields([
          ["card.inn", r.inn], ["card.kpp", r.kpp], ["card.ogrn", r.ogrn],
          ["card.legal_address", r.legal_address], ["card.bank", [r.bank_name, r.bik].filter(Boolean).join(", ")],
        ]));
      }
    }
    return box;
  }

  function listSection(titleKey, items, render) {
    const box = el("section", { "data-section": titleKey }, el("h2", {}, t(titleKey)));
    box.append(items.length ? el("ul", { class: "plain" }, ...items.map(render)) : el("p", { class: "muted" }, t("card.nothing")));
    return box;
  }

  function recording(rec) {
    if (!rec) return null;
    if (rec.state === "stored" || (!rec.state && rec.url)) {
      return el("audio", { controls: true, preload: "none", src: rec.url, class: "player" });
    }
    return el("span", { class: "muted" }, rec.state === "missing" || rec.state === "failed"
      ? t("card.recording_missing") : t("card.recording_pending"));
  }

  function activity(a) {
    const what = [label("kind.", a.kind), label("direction.", a.direction)].filter(Boolean).join(", ");
    const talk = a.talk_s ? " · " + t("card.talk") + " " + Math.round(a.talk_s) + " " + t("log.seconds") : "";
    return el("li", { class: "timeline-item" },
      el("span", { class: "muted" }, when(a.occurred_at)), " ",
      el("strong", {}, what), " ", a.subject || "", talk,
      a.outcome && a.kind === "call" ? el("span", { class: "badge" }, t("disposition." + a.outcome)) : null,
      a.body ? el("div", { class: "muted" }, a.body) : null,
      recording(a.recording));
  }

  async function load() {
    const kind = root.dataset.kind;
    const id = root.dataset.id;
    let doc;
    try {
      doc = await get("/" + (kind === "company" ? "companies" : kind + "s") + "/" + id);
    } catch (err) {
      root.replaceChildren(el("section", {}, el("p", { class: "muted" }, t("card.not_found"))));
      return;
    }
    const filter = kind + "_id=" + encodeURIComponent(id);
    const [deals, tasks, acts] = await Promise.all([
      kind === "lead" ? Promise.resolve({ items: [] }) : get("/deals?" + filter + "&limit=50").catch(() => ({ items: [] })),
      get("/tasks?" + filter + "&status=open&limit=50").catch(() => ({ items: [] })),
      get("/activities?" + filter + "&limit=100").catch(() => ({ items: [] })),
    ]);
    const sections = [head(kind, doc)];
    if (kind === "company") sections.push(legalEntities(doc));
    if (kind !== "lead") {
      sections.push(listSection("card.all_deals", deals.items, (d) => el("li", {},
        el("strong", {}, d.title), " · ", stageName(d.stage), d.amount ? " · " + money(d.amount) : "")));
    }
    sections.push(listSection("card.open_tasks", tasks.items, (x) => el("li", {},
      x.title, x.due_at ? el("span", { class: "muted" }, " · " + t("card.due") + " " + when(x.due_at)) : null)));
    sections.push(listSection("card.timeline", acts.items, activity));
    root.replaceChildren(...sections.filter(Boolean));
    document.title = (kind === "lead" ? doc.title : doc.name) + " — " + t("app.title");
  }

  load();
})();
