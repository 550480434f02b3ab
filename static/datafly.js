/* signal-edge tag */
(function (w, d, C) {
  var s = d.currentScript, L = w.localStorage, N = navigator;
  if (!s) return;
  var name = attr("global") || "_df", key = attr("pipeline-key"), M = C.m || {}, S = "_df_q";
  // Posts beside the script (/sig/x.js posts under /sig/), to the name its source gave it.
  var url = new URL(attr("endpoint") || C.e || "v1/batch", s.src).href;
  var bridge = C.b || attr("pintrk") == "bridge", waiting = attr("consent") == "wait";
  var q = [], held = [], out = 0, timer = 0, wait = 0, gen = 0, sentGen = 0, last;
  var uid = get("_df_uid"), gid = get("_df_gid"), traits = {}, consent = d.cookie.match(/(?:^|; )_df_consent=([^;]*)/);
  consent = consent && decodeURIComponent(consent[1]).split(",").filter(Boolean);

  function attr(n) { return s.getAttribute("data-" + n) }
  function get(k) { try { return L.getItem(k) } catch (e) { return null } }
  function put(k, v) { try { v == null ? L.removeItem(k) : L.setItem(k, v); return 1 } catch (e) {} }
  function stored() { try { return JSON.parse(get(S)) || [] } catch (e) { return [] } }
  function ads() { return consent && consent.indexOf("advertising") >= 0 }
  function send(type, f) {
    var p = f.properties || {}, l = w.location, c = w.crypto, e = { g: gen, m: f };
    f.type = type;
    // (randomUUID only exists on https pages)
    f.messageId = p.event_id != null ? String(p.event_id) : c && c.randomUUID ? c.randomUUID() :
      Math.random().toString(36).slice(2) + Date.now().toString(36);
    f.timestamp = new Date().toISOString();
    if (uid) f.userId = uid;
    if (gid && !f.groupId) f.groupId = gid;
    f.context = {
      page: { url: l.href, path: l.pathname, referrer: d.referrer, title: d.title, search: l.search },
      userAgent: N.userAgent, locale: N.language
    };
    // data-consent="wait": held for the consent call (at most 50, dropped 60 s after load)
    if (!waiting || ads()) enqueue(e); else if (!consent && held.length < 50) held.push(e);
    return f.messageId;
  }
  function enqueue(e) {
    var f = e.m, p = f.properties, t = f.type == "page" ? M[""] : f.event && M[(f.event + "").trim().toLowerCase()];
    if (consent) f.context.consent = { categories: consent };
    // The same event id to a Pinterest Tag on the page: Pinterest counts the conversion once.
    if (bridge && t && w.pintrk) w.pintrk("track", t, { event_id: f.messageId,
      value: p.value || p.total || p.revenue, currency: p.currency, order_id: p.order_id });
    q.push(e);
    if (q.length >= 10) flush(); else if (!timer) timer = setTimeout(flush, 1000);
  }
  function flush(beacon) {
    clearTimeout(timer); timer = 0;
    while (q.length && (!out || beacon)) {
      var g = q[0].g, n = 0;
      while (n < q.length && n < 100 && q[n].g === g) n++;
      var batch = q.splice(0, n), body = JSON.stringify({
        pipeline_key: key, sentAt: new Date().toISOString(), reset: g > sentGen,
        batch: batch.map(function (e) { return e.m })
      });
      if (beacon && N.sendBeacon && N.sendBeacon(url, new Blob([body], { type: "text/plain" }))) { sentGen = g; continue }
      post(batch, body, g);
      if (!beacon) return;
    }
  }
  function post(batch, body, g) {
    out = batch;
    fetch(url, { method: "POST", body: body, credentials: "include", keepalive: body.length < 6e4,
      headers: { "Content-Type": "text/plain" } }).then(function (r) {
      if (r.status >= 500 || r.status == 429 || r.status == 408) throw r;
      if (r.status > 399) r.json().then(function (j) { console.warn("signal-edge: " + j.error.message) }, Object);
      out = wait = 0; sentGen = g;
      if (q.length) flush();
    }).catch(function () {
      // unless the page left it to the next page
      if (out == batch) q = batch.concat(q);
      out = 0;
      wait = Math.min(wait ? wait * 2 : 1000, 30000);
      timer = setTimeout(flush, wait);
    });
  }
  // Hidden or left: sent by beacon, or, while the edge fails, kept for the next page (the oldest
  // 100 events, 60 kB at most: a landing page's click id is in the first).
  function leave() {
    if (!wait) return flush(1);
    var all = stored().concat(out || [], q), k = 0, n = 0;
    while (k < 100 && all[k] && (n += JSON.stringify(all[k]).length) < 6e4) k++;
    // (what storage cannot hold stays here, and is retried while the page lives)
    if (put(S, JSON.stringify(all.slice(0, k)))) { q = all.slice(k); out = 0 }
  }
  // What a page left goes first.
  function claim() {
    q = stored().concat(q);
    put(S);
    if (q.length) flush();
  }
  function page(n, p) {
    if (typeof n == "object") { p = n; n = null }
    last = w.location.href;
    return send("page", { name: n || undefined, properties: p || {} });
  }
  var api = {
    page: page,
    track: function (e, p) { return send("track", { event: e, properties: p || {} }) },
    identify: function (id, t) {
      if (typeof id == "object" && id) { t = id; id = null }
      if (id != null) { if ((id = String(id)) != uid) traits = {}; put("_df_uid", uid = id) }
      for (var k in t || {}) traits[k] = t[k];
      return send("identify", { traits: traits });
    },
    group: function (id, t) { put("_df_gid", gid = String(id)); return send("group", { groupId: gid, traits: t || {} }) },
    consent: function (c) {
      var h = held;
      consent = []; held = [];
      for (var k in c || {}) consent.push(c[k] ? k : "!" + k);
      d.cookie = "_df_consent=" + encodeURIComponent(consent.join(",")) + ";path=/;max-age=31536000;samesite=lax";
      if (ads()) h.forEach(enqueue);
      // consent enforced and advertising not granted: the advertising ids go
      else if (C.c) ["_pin_unauth", "_epik"].forEach(function (n) {
        for (var p = w.location.hostname.split("."); p.length; p.shift()) d.cookie = n + "=;path=/;max-age=0;domain=" + p.join(".");
        d.cookie = n + "=;path=/;max-age=0";
      });
    },
    reset: function () { flush(); gen++; uid = gid = null; traits = {}; put("_df_uid"); put("_df_gid") },
    flush: function () { flush() }
  };
  var pre = w[name], calls = pre && pre.push ? pre.slice() : [], paged = 0;
  w[name] = api;
  claim();
  if (waiting) setTimeout(function () { held = [] }, 6e4);
  calls.forEach(function (c) { if (c[0] == "consent") api.consent.apply(0, c[1]); paged |= c[0] == "page" });
  if (!paged) page();
  calls.forEach(function (c) { if (c[0] != "consent" && api[c[0]]) api[c[0]].apply(0, c[1]) });
  ["pushState", "replaceState"].forEach(function (m) {
    var o = history[m];
    history[m] = function () { var r = o.apply(this, arguments); if (w.location.href != last) page(); return r };
  });
  w.addEventListener("popstate", function () { if (w.location.href != last) page() });
  w.addEventListener("pagehide", leave);
  d.addEventListener("visibilitychange", function () { d.visibilityState == "hidden" ? leave() : claim() });
})(window, document, /*config*/{});
