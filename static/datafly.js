/* signal-edge tag */
(function (w, d) {
  var s = d.currentScript, L = w.localStorage, N = navigator;
  if (!s) return;
  var name = s.getAttribute("data-global") || "_df";
  var key = s.getAttribute("data-pipeline-key");
  var url = new URL(s.src).origin + "/v1/batch";
  var q = [], busy = 0, timer = 0, wait = 0, gen = 0, sentGen = 0, last;
  var uid = get("_df_uid"), gid = get("_df_gid"), traits = {}, consent = readConsent();

  function get(k) { try { return L.getItem(k) } catch (e) { return null } }
  function put(k, v) { try { v == null ? L.removeItem(k) : L.setItem(k, v) } catch (e) {} }
  function readConsent() {
    var m = d.cookie.match(/(?:^|; )_df_consent=([^;]*)/);
    return m ? decodeURIComponent(m[1]).split(",").filter(Boolean) : null;
  }
  function uuid() {
    var c = w.crypto;
    return c && c.randomUUID ? c.randomUUID() : "10000000-1000-4000-8000-100000000000".replace(/[018]/g, function (x) {
      return (x ^ Math.random() * 256 & 15 >> x / 4).toString(16);
    });
  }
  function send(type, f) {
    var p = f.properties || {}, l = w.location;
    f.type = type;
    f.messageId = p.event_id != null ? String(p.event_id) : uuid();
    f.timestamp = new Date().toISOString();
    if (uid) f.userId = uid;
    if (gid && !f.groupId) f.groupId = gid;
    f.context = {
      page: { url: l.href, path: l.pathname, referrer: d.referrer, title: d.title, search: l.search },
      userAgent: N.userAgent, locale: N.language
    };
    if (consent) f.context.consent = { categories: consent };
    q.push({ g: gen, m: f });
    if (q.length >= 10) flush(); else if (!timer) timer = setTimeout(flush, 1000);
  }
  function flush(beacon) {
    clearTimeout(timer); timer = 0;
    while (q.length && (!busy || beacon)) {
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
    busy = 1;
    fetch(url, { method: "POST", body: body, credentials: "include", keepalive: body.length < 6e4,
      headers: { "Content-Type": "text/plain" } }).then(function (r) {
      if (r.status >= 500 || r.status == 429 || r.status == 408) throw r;
      busy = 0; wait = 0; sentGen = g;
      if (q.length) flush();
    }).catch(function () {
      busy = 0; q = batch.concat(q);
      wait = Math.min(wait ? wait * 2 : 1000, 30000);
      timer = setTimeout(flush, wait);
    });
  }
  function page(n, p) {
    if (typeof n == "object") { p = n; n = null }
    last = w.location.href;
    send("page", { name: n || undefined, properties: p || {} });
  }
  var api = {
    page: page,
    track: function (e, p) { send("track", { event: e, properties: p || {} }) },
    identify: function (id, t) {
      if (typeof id == "object" && id) { t = id; id = null }
      if (id != null) { if ((id = String(id)) != uid) traits = {}; put("_df_uid", uid = id) }
      for (var k in t || {}) traits[k] = t[k];
      send("identify", { traits: traits });
    },
    group: function (id, t) { put("_df_gid", gid = String(id)); send("group", { groupId: gid, traits: t || {} }) },
    consent: function (c) {
      consent = [];
      for (var k in c || {}) consent.push(c[k] ? k : "!" + k);
      d.cookie = "_df_consent=" + encodeURIComponent(consent.join(",")) + ";path=/;max-age=31536000;samesite=lax";
    },
    reset: function () { flush(); gen++; uid = gid = null; traits = {}; put("_df_uid"); put("_df_gid") },
    flush: function () { flush() }
  };
  var pre = w[name], calls = pre && pre.push ? pre.slice() : [], paged = 0, i;
  w[name] = api;
  for (i = 0; i < calls.length; i++) if (calls[i][0] == "consent") api.consent.apply(0, calls[i][1]);
  for (i = 0; i < calls.length; i++) paged |= calls[i][0] == "page";
  if (!paged) page();
  for (i = 0; i < calls.length; i++) if (calls[i][0] != "consent" && api[calls[i][0]]) api[calls[i][0]].apply(0, calls[i][1]);
  ["pushState", "replaceState"].forEach(function (m) {
    var o = history[m];
    history[m] = function () { var r = o.apply(this, arguments); if (w.location.href != last) page(); return r };
  });
  w.addEventListener("popstate", function () { if (w.location.href != last) page() });
  w.addEventListener("pagehide", function () { flush(1) });
  d.addEventListener("visibilitychange", function () { if (d.visibilityState == "hidden") flush(1) });
})(window, document);
