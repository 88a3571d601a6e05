// rate.html: blinded human ratings through the server (GET api/rate/next, POST api/rate, GET api/agreement).
(function () {
  "use strict";
  var KEY = "interpflow.rater";
  var task = null;
  function $(id) { return document.getElementById(id); }

  if (location.protocol === "file:") {
    $("server-note").hidden = false;
    document.querySelectorAll("form button, form input").forEach(function (el) { el.disabled = true; });
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

  function status(text) { $("rate-status").textContent = text; }
  function rater() { return $("rater").value.trim(); }

  function radio(name, value, label) {
    var l = document.createElement("label");
    var input = document.createElement("input");
    input.type = "radio";
    input.name = name;
    input.value = value;
    l.appendChild(input);
    l.appendChild(document.createTextNode(" " + label));
    return l;
  }

  function showTask(t) {
    task = t;
    $("rate-explanation").textContent = t.explanation;
    var box = $("rate-windows");
    box.innerHTML = "";
    t.windows.forEach(function (w, i) {
      var div = document.createElement("div");
      div.className = "rate-window";
      div.setAttribute("data-window", w.window);
      var text = document.createElement("div");
      text.className = "tokens";
      w.token_strs.forEach(function (s) {
        var sp = document.createElement("span");
        sp.className = "tok plain";
        sp.textContent = s.replace(/\n/g, "⏎");
        text.appendChild(sp);
      });
      var q = document.createElement("div");
      q.className = "rate-question";
      q.appendChild(document.createTextNode((i + 1) + ". Does this window fit the explanation? "));
      q.appendChild(radio(w.window, "yes", "yes"));
      q.appendChild(radio(w.window, "no", "no"));
      div.appendChild(text);
      div.appendChild(q);
      box.appendChild(div);
    });
    document.querySelectorAll("input[name=rating]").forEach(function (r) { r.checked = false; });
    $("rate-form").hidden = false;
    window.scrollTo(0, 0);
  }

  function next() {
    status("loading a task…");
    request("api/rate/next?rater=" + encodeURIComponent(rater())).then(function (t) {
      if (t.done) {
        $("rate-form").hidden = true;
        status("No tasks left for " + rater() + ". Thank you!");
        showAgreement();  // only now: it names explainers and scores, which would unblind the tasks
        return;
      }
      status("Rating as " + rater() + ".");
      showTask(t);
    }).catch(function (err) { status("error: " + err.message); });
  }

  function table(rows) {
    var t = document.createElement("table");
    if (!rows || !rows.length) return t;
    var cols = Object.keys(rows[0]);
    var head = t.createTHead().insertRow();
    cols.forEach(function (c) { var th = document.createElement("th"); th.textContent = c; head.appendChild(th); });
    var body = t.createTBody();
    rows.forEach(function (r) {
      var tr = body.insertRow();
      cols.forEach(function (c) {
        var v = r[c], td = tr.insertCell();
        td.textContent = typeof v === "number" && !Number.isInteger(v) ? v.toFixed(3) : (v === null ? "—" : String(v));
      });
    });
    return t;
  }

  function showAgreement() {
    request("api/agreement").then(function (a) {
      var box = $("agreement");
      box.innerHTML = "";
      var alpha = a.alpha || {};
      var p = document.createElement("p");
      p.textContent = "Krippendorff's alpha: " + Object.keys(alpha).map(function (k) {
        var v = alpha[k] && typeof alpha[k] === "object" ? alpha[k].alpha : alpha[k];
        return k + " " + (v === null || v === undefined ? "—" : Number(v).toFixed(3));
      }).join(" · ");
      box.appendChild(p);
      var h = document.createElement("h3"); h.textContent = "Scorers against the raters"; box.appendChild(h);
      box.appendChild(table(a.scorers));
      var h2 = document.createElement("h3"); h2.textContent = "Per latent"; box.appendChild(h2);
      box.appendChild(table(a.latents));
      $("agreement-section").hidden = false;
    }).catch(function (err) { status("agreement: " + err.message); });
  }

  $("show-agreement").addEventListener("click", showAgreement);
  $("rater").value = localStorage.getItem(KEY) || "";
  $("rater-form").addEventListener("submit", function (e) {
    e.preventDefault();
    if (!rater()) return;
    localStorage.setItem(KEY, rater());
    next();
  });

  $("rate-form").addEventListener("submit", function (e) {
    e.preventDefault();
    if (!task) return;
    var answers = {}, missing = 0;
    task.windows.forEach(function (w) {
      var picked = document.querySelector('input[name="' + CSS.escape(w.window) + '"]:checked');
      if (picked) answers[w.window] = picked.value === "yes"; else missing++;
    });
    var rating = document.querySelector("input[name=rating]:checked");
    if (missing || !rating) { status("Answer every window (" + missing + " left) and give a rating."); return; }
    var body = { rater: rater(), task: task.task, answers: answers, rating: parseInt(rating.value, 10) };
    request("api/rate", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) })
      .then(function () { next(); })
      .catch(function (err) { status("error: " + err.message); });
  });

  if (rater()) next();
})();
