// Входящие: live updates over /ws (app.js re-dispatches every frame as a "cc-ws" event).
// A frame about the open conversation reloads it; any conversation frame reloads the list.
// Filters submit themselves on change. Text only ever goes in through the server's templates.
(function () {
  "use strict";
  const TYPES = ["message.new", "message.status", "conversation.changed"];
  let pending = null;
  function refresh(name) {
    document.body.dispatchEvent(new CustomEvent(name, { bubbles: true }));
  }
  document.addEventListener("cc-ws", (e) => {
    const msg = e.detail || {};
    if (!TYPES.includes(msg.type)) return;
    const thread = document.getElementById("inbox-thread");
    if (thread && String(msg.conversation_id) === thread.dataset.conversation) {
      const typing = document.activeElement && document.activeElement.id === "reply-text" && document.activeElement.value;
      if (!typing) refresh("cc-thread-refresh");
    }
    clearTimeout(pending);
    pending = setTimeout(() => refresh("cc-inbox-refresh"), 150);
  });
  document.querySelectorAll(".inbox-filters select").forEach((select) => {
    select.addEventListener("change", () => select.form.requestSubmit());
  });
  const list = document.querySelector(".messages");
  if (list) list.scrollTop = list.scrollHeight;
  document.body.addEventListener("htmx:afterSwap", () => {
    const messages = document.querySelector(".messages");
    if (messages) messages.scrollTop = messages.scrollHeight;
  });
  document.body.addEventListener("keydown", (e) => {
    if (e.target && e.target.id === "reply-text" && e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
      e.preventDefault();
      e.target.form.requestSubmit();
    }
  });
})();
