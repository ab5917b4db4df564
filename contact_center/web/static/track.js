/* contact-center call tracking. Embed once per page:
 *   <script src="https://HOST/track.js" data-site="main" async></script>
 * Optional: data-region="RU-SPE" (the region the page is about), or a city selector calling
 * window.ccTracking.setRegion("RU-SPE").
 * Every element with data-cc-phone gets the visitor's tracking number as its text, and links
 * (tel:) get it in href. Hidden inputs with data-cc-visitor get the visitor id (for forms).
 * Stores only a first-party visitor id, the first-touch source and the region. No dependencies.
 */
(function (w, d) {
  "use strict";
  if (w.ccTracking) return;
  var script = d.currentScript || d.querySelector("script[data-site][src*='track.js']");
  if (!script) return;
  var site = script.getAttribute("data-site") || "main";
  var base = script.src.replace(/\/track\.js(\?.*)?$/, "");
  var api = base + "/api/v1/tracking/session";
  var TAGS = ["utm_source", "utm_medium", "utm_campaign", "utm_content", "utm_term", "yclid", "gclid"];
  var KEY = "cc_" + site + "_";
  var state = { session: null, number: null, display: null, leased: false, beat: 60, last: 0 };
  var waiting = [];

  function load(name) {
    try {
      var v = w.localStorage.getItem(KEY + name);
      if (v !== null) return v;
    } catch (e) { /* storage blocked: fall back to the cookie */ }
    var m = d.cookie.match(new RegExp("(?:^|; )" + KEY + name + "=([^;]*)"));
    return m ? decodeURIComponent(m[1]) : null;
  }

  function save(name, value) {
    try { w.localStorage.setItem(KEY + name, value); } catch (e) { /* cookie below */ }
    d.cookie = KEY + name + "=" + encodeURIComponent(value) + "; path=/; max-age=31536000; SameSite=Lax";
  }

  function newId() {
    var c = w.crypto;
    if (c && c.randomUUID) return c.randomUUID().replace(/-/g, "");
    var out = "";
    for (var i = 0; i < 32; i++) out += Math.floor(Math.random() * 16).toString(16);
    return out;
  }

  function pageTags() {
    var tags = {}, found = false, q = new URLSearchParams(w.location.search);
    for (var i = 0; i < TAGS.length; i++) {
      var v = q.get(TAGS[i]);
      if (v) { tags[TAGS[i]] = v.slice(0, 200); found = true; }
    }
    return found ? tags : null;
  }

  function externalReferrer() {
    var r = d.referrer;
    if (!r) return "";
    try { return new URL(r).host === w.location.host ? "" : r; } catch (e) { return ""; }
  }

  // The first touch stays unless a new campaign click (tags in the URL) arrives.
  function firstTouch() {
    var tags = pageTags(), stored = load("touch"), touch = null;
    if (stored) { try { touch = JSON.parse(stored); } catch (e) { touch = null; } }
    if (tags || !touch) {
      touch = { utm: tags || {}, referrer: externalReferrer(), landing: w.location.href.slice(0, 2000) };
      save("touch", JSON.stringify(touch));
    }
    return touch;
  }

  var visitor = load("vid");
  if (!visitor || !/^[A-Za-z0-9_-]{8,64}$/.test(visitor)) { visitor = newId(); }
  save("vid", visitor);
  var region = load("region") || script.getAttribute("data-region") || null;

  function post(url, body) {
    return w.fetch(url, {
      method: "POST",
      body: body ? JSON.stringify(body) : "",
      headers: { "Content-Type": "text/plain" }, // a simple request: no CORS preflight
      credentials: "omit",
      keepalive: true
    }).then(function (r) { return r.ok ? r.json() : null; });
  }

  function apply() {
    var els = d.querySelectorAll("[data-cc-phone]");
    for (var i = 0; i < els.length; i++) {
      var el = els[i];
      if (!el.hasAttribute("data-cc-original")) el.setAttribute("data-cc-original", el.textContent);
      el.textContent = state.display || el.getAttribute("data-cc-original");
      var link = el.closest ? el.closest("a[href^='tel:']") : null;
      if (link && state.number) link.setAttribute("href", "tel:" + state.number);
    }
    var ids = d.querySelectorAll("input[data-cc-visitor]");
    for (var j = 0; j < ids.length; j++) ids[j].value = visitor;
  }

  function start() {
    var touch = firstTouch();
    var body = {
      site: site, visitor_id: visitor, page: w.location.href.slice(0, 2000),
      referrer: touch.referrer, landing_page: touch.landing, utm: touch.utm, region: region
    };
    return post(api, body).then(function (a) {
      if (!a) return;
      if (a.visitor_id && a.visitor_id !== visitor) { visitor = a.visitor_id; save("vid", visitor); }
      state.session = a.session_id; state.number = a.number; state.display = a.display;
      state.leased = a.leased; state.beat = a.heartbeat_s || 60; state.last = Date.now();
      apply();
      while (waiting.length) waiting.shift()(api_());
    })["catch"](function () { /* the page keeps its own number */ });
  }

  function release() {
    if (!state.session || !state.leased) return;
    var url = api + "/" + state.session + "/release?site=" + encodeURIComponent(site);
    state.session = null;
    if (!(w.navigator.sendBeacon && w.navigator.sendBeacon(url, ""))) post(url, null);
  }

  function beat() {
    if (!state.session || !state.leased || d.visibilityState !== "visible") return;
    if (Date.now() - state.last < state.beat * 900) return;
    state.last = Date.now();
    post(api + "/" + state.session + "/heartbeat?site=" + encodeURIComponent(site), null)
      .then(function (a) { if (a && a.active === false) start(); })["catch"](function () {});
  }

  function api_() {
    return { visitorId: visitor, number: state.number, display: state.display, region: region };
  }

  w.ccTracking = {
    setRegion: function (code) {
      region = code || null;
      if (region) save("region", region);
      release();
      return start();
    },
    visitorId: function () { return visitor; },
    ready: function (fn) { if (state.session) fn(api_()); else waiting.push(fn); }
  };

  w.setInterval(beat, 5000);
  d.addEventListener("visibilitychange", beat);
  w.addEventListener("pagehide", release);
  w.addEventListener("pageshow", function (e) { if (e.persisted) start(); });
  if (d.readyState === "loading") d.addEventListener("DOMContentLoaded", apply);
  start();
})(window, document);
