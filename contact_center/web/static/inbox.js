// Входящие: live updates over /ws (app.js re-dispatches every frame as a "cc-ws" event).
// A frame about the open conversation reloads it (only its messages and header while a reply
// is being written); any conversation frame reloads the list.
// One reload at a time per piece: a frame arriving meanwhile asks for one more afterwards,
// so the last state always shows. Filters submit themselves on change. Text only ever comes
// in through the server's templates (autoescaped).
(function () {
  "use strict";
  const TYPES = ["message.new", "message.status", "conversation.changed"];

  function scrollDown() {
    const messages = document.querySelector(".messages");
    if (messages) messages.scrollTop = messages.scrollHeight;
  }

  // Fetch the piece again and put it in place (server-rendered, autoescaped HTML, as htmx
  // swaps it), then let htmx wire its forms.
  // The parts of the thread that change while the manager writes a reply.
  const KEPT_IN_PLACE = [".thread-head", ".messages"];

  function reloader(target, url, outer, keep) {
    let running = false;
    let again = false;
    async function run() {
      if (running) { again = true; return; }
      running = true;
      try {
        const node = document.querySelector(target);
        const path = node && url(node);
        if (path) {
          const resp = await fetch(path, { credentials: "same-origin", headers: { "HX-Request": "true" } });
          const current = document.querySelector(target);
          if (resp.ok && current) {
            const tpl = document.createElement("template");
            tpl.innerHTML = await resp.text();
            if (outer) {
              const fresh = tpl.content.firstElementChild;
              if (fresh && keep && keep()) {
                // A reply is being written: the messages and the header follow, the reply box
                // stays as it is.
                for (const part of KEPT_IN_PLACE) {
                  const old = current.querySelector(part);
                  const now = fresh.querySelector(part);
                  if (old && now) { old.replaceWith(now); window.htmx.process(now); }
                }
              } else if (fresh) { current.replaceWith(fresh); window.htmx.process(fresh); }
            } else {
              current.replaceChildren(tpl.content);
              window.htmx.process(current);
            }
            scrollDown();
          }
        }
      } catch (err) {
        console.error(err);
      } finally {
        running = false;
        if (again) { again = false; run(); }
      }
    }
    return run;
  }

  // A reply being written is not thrown away by a reload: text typed in the box, a subject
  // changed, files chosen (a file input cannot be refilled).
  function composing() {
    const form = document.querySelector("#inbox-thread form.composer");
    if (!form) return false;
    const text = form.querySelector("#reply-text");
    const subject = form.querySelector("#reply-subject");
    const files = form.querySelector("#reply-files");
    return Boolean(
      (text && text.value && form.contains(document.activeElement)) ||
      (subject && subject.value !== subject.defaultValue) ||
      (files && files.files && files.files.length)
    );
  }

  const reloadThread = reloader(
    "#inbox-thread", (node) => "/inbox/" + node.dataset.conversation + "/thread", true, composing);
  const reloadList = reloader("#inbox-rows", (node) => node.dataset.src, false);

  // A frame that arrives while the manager's own post (a reply, resolve) is in flight is
  // older news than the thread that post returns is not: reload once more after that swap.
  let events = 0;
  let postedAt = -1;
  document.body.addEventListener("htmx:beforeRequest", (e) => {
    const cfg = e.detail.requestConfig || {};
    if (cfg.verb === "post" && e.detail.target && e.detail.target.id === "inbox-thread") postedAt = events;
  });
  document.body.addEventListener("htmx:afterSwap", (e) => {
    const cfg = e.detail.requestConfig || {};
    if (cfg.verb === "post" && postedAt >= 0 && events > postedAt) reloadThread();
    if (cfg.verb === "post") postedAt = -1;
  });

  // The files chosen for a reply, named beside our button.
  document.addEventListener("change", (e) => {
    const input = e.target;
    if (!input || input.id !== "reply-files") return;
    const names = input.parentElement && input.parentElement.querySelector(".file-names");
    if (!names) return;
    const chosen = Array.from(input.files || []).map((f) => f.name);
    names.textContent = chosen.length ? chosen.join(", ") : names.dataset.none;
    names.title = chosen.join("\n");
  });

  document.addEventListener("cc-ws", (e) => {
    const msg = e.detail || {};
    if (!TYPES.includes(msg.type)) return;
    const thread = document.getElementById("inbox-thread");
    if (thread && String(msg.conversation_id) === thread.dataset.conversation) {
      events += 1;
      reloadThread();
    }
    reloadList();
  });
  document.querySelectorAll(".inbox-filters select").forEach((select) => {
    select.addEventListener("change", () => select.form.requestSubmit());
  });
  scrollDown();
  document.body.addEventListener("htmx:afterSwap", scrollDown);
  document.body.addEventListener("keydown", (e) => {
    if (e.target && e.target.id === "reply-text" && e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
      e.preventDefault();
      e.target.form.requestSubmit();
    }
  });
})();
