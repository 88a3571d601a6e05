// search.html: explanation search (GET api/search) and latents on a text (POST api/infer), via the server.
(function () {
  "use strict";
  function $(id) { return document.getElementById(id); }

  // Opened from disk there is no API to call: say how to get one instead of failing.
  if (location.protocol === "file:") {
    $("server-note").hidden = false;
    document.querySelectorAll("form button, form input, form textarea, form select").forEach(function (el) { el.disabled = true; });
    return;
  }

  function request(url, options) {
    return fetch(url, options).then(function (r) {
      return r.json().then(function (body) {
        if (!r.ok) throw new Error(body.error || r.status + " " + r.statusText);
        return body;
      });
    });
  }

  function link(url, text) {
    var a = document.createElement("a");
    a.href = url;
    a.textContent = text;
    return a;
  }

  function span(cls, text) {
    var s = document.createElement("span");
    s.className = cls;
    s.textContent = text;
    return s;
  }

  function latentItem(r, extra) {
    var li = document.createElement("li");
    li.appendChild(link(r.url, (r.unit ? r.unit + " · " : "") + "latent " + r.latent));
    if (extra) li.appendChild(span("muted", " " + extra));
    if (r.explanation) li.appendChild(span("result-explanation", r.explanation));
    return li;
  }

  $("search-form").addEventListener("submit", function (e) {
    e.preventDefault();
    var q = $("q").value.trim();
    if (!q) return;
    $("search-status").textContent = "searching…";
    request("api/search?k=20&q=" + encodeURIComponent(q)).then(function (body) {
      var list = $("results");
      list.innerHTML = "";
      body.results.forEach(function (r) {
        var scores = Object.keys(r.scores || {}).map(function (s) {
          var v = r.scores[s];
          return s + " " + (v === null ? "—" : Number(v).toFixed(2));
        }).join(" · ");
        var li = latentItem(r, r.explainer + " · similarity " + Number(r.similarity).toFixed(3));
        if (scores) li.appendChild(span("muted small result-scores", scores));
        list.appendChild(li);
      });
      $("search-status").textContent = body.results.length + " results for “" + body.query + "”";
    }).catch(function (err) { $("search-status").textContent = "error: " + err.message; });
  });

  request("api/units").then(function (body) {
    body.units.forEach(function (u) {
      var o = document.createElement("option");
      o.value = o.textContent = u;
      $("unit").appendChild(o);
    });
  }).catch(function () { /* the infer call will report the problem */ });

  function showDetail(i, tok, top) {
    var d = $("token-detail");
    d.hidden = false;
    d.innerHTML = "";
    d.appendChild(span("", "token " + JSON.stringify(tok) + " — top latents:"));
    var ol = document.createElement("ol");
    top.forEach(function (t) { ol.appendChild(latentItem(t, Number(t.value).toFixed(3))); });
    d.appendChild(ol);
  }

  $("infer-form").addEventListener("submit", function (e) {
    e.preventDefault();
    var text = $("text").value;
    if (!text.trim()) return;
    $("infer-status").textContent = "running the model…";
    var body = { text: text };
    if ($("unit").value) body.unit = $("unit").value;
    request("api/infer", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) })
      .then(function (res) {
        var tops = res.per_token.map(function (top) { return top.length ? top[0].value : 0; });
        var max = Math.max.apply(null, tops.concat([0]));
        var box = $("infer-tokens");
        box.innerHTML = "";
        res.tokens.forEach(function (tok, i) {
          var top = res.per_token[i] || [];
          var s = span("tok", tok.replace(/\n/g, "⏎"));
          s.setAttribute("data-act", String(tops[i]));
          if (max > 0 && tops[i] > 0) s.style.setProperty("--a", (tops[i] / max).toFixed(3));
          s.title = top.map(function (t) { return "latent " + t.latent + ": " + Number(t.value).toFixed(3); }).join("\n");
          s.addEventListener("click", function () { showDetail(i, tok, top); });
          box.appendChild(s);
        });
        var list = $("infer-latents");
        list.innerHTML = "";
        res.latents.forEach(function (l) { list.appendChild(latentItem(l, "max " + Number(l.max).toFixed(3))); });
        $("infer-status").textContent = res.unit + ": " + res.tokens.length + " tokens; click a token for its top latents";
      }).catch(function (err) { $("infer-status").textContent = "error: " + err.message; });
  });
})();
