// The latent index: a sortable, filterable, paged table over data/index-*.js.
//
// Rows live in data pages of up to 2000 rows, each a script that calls window.interpflowIndexPage(...):
// browsers refuse fetch() of file:// URLs, but load <script src> from disk. Unsorted and unfiltered, the
// table loads only the data pages the visible 100 rows come from. Sorting or filtering needs every row, so
// it loads all pages once; that is fine up to ~100k rows. A million-row run still works by paging through
// the data files without sorting, or by filtering on the server's search page.
(function () {
  "use strict";
  var cfg = window.interpflowConfig;
  if (!cfg) return;
  var DOM_ROWS = 100;
  var col = {};
  cfg.columns.forEach(function (c, i) { col[c] = i; });
  var numeric = {};
  cfg.numeric.forEach(function (c) { numeric[c] = true; });
  var pages = {}, waiting = {}, all = null;
  var state = { page: 0, sortCol: null, sortDir: 1 };

  window.interpflowIndexPage = function (payload) {
    pages[payload.page] = payload.rows;
    (waiting[payload.page] || []).forEach(function (cb) { cb(); });
    delete waiting[payload.page];
  };

  function pad(i) { return ("0000" + i).slice(-5); }

  function loadPage(i, cb) {
    if (pages[i]) { cb(); return; }
    if (waiting[i]) { waiting[i].push(cb); return; }
    waiting[i] = [cb];
    var s = document.createElement("script");
    s.src = "data/index-" + pad(i) + ".js";
    s.onerror = function () { setLoading("could not load " + s.src); };
    document.head.appendChild(s);
  }

  function loadPages(list, cb) {
    var left = list.length;
    if (!left) { cb(); return; }
    list.forEach(function (i) { loadPage(i, function () { if (--left === 0) cb(); }); });
  }

  function setLoading(text) { document.getElementById("loading").textContent = text || ""; }

  function filters() {
    var f = { eq: [] };
    Object.keys(cfg.facets).forEach(function (name) {
      var v = document.getElementById("f-" + name).value;
      if (v) f.eq.push([col[name], v]);
    });
    var freq = parseFloat(document.getElementById("min-frequency").value);
    if (!isNaN(freq)) f.freq = freq;
    var minScore = parseFloat(document.getElementById("min-score").value);
    var scoreCol = document.getElementById("min-score-col");
    if (!isNaN(minScore) && scoreCol && scoreCol.value) f.score = [col[scoreCol.value], minScore];
    var text = document.getElementById("text-filter").value.trim().toLowerCase();
    if (text) f.text = text;
    return f;
  }

  function active(f) { return f.eq.length || f.freq !== undefined || f.score || f.text || state.sortCol; }

  function keep(row, f) {
    for (var i = 0; i < f.eq.length; i++) if (String(row[f.eq[i][0]]) !== f.eq[i][1]) return false;
    if (f.freq !== undefined && !(row[col.frequency] >= f.freq)) return false;
    if (f.score && !(row[f.score[0]] !== null && row[f.score[0]] >= f.score[1])) return false;
    if (f.text && String(row[col.explanation] || "").toLowerCase().indexOf(f.text) < 0) return false;
    return true;
  }

  function compare(c, dir) {
    var i = col[c], isNum = numeric[c];
    return function (a, b) {
      var x = a[i], y = b[i];
      var xMissing = x === null || x === undefined || (isNum && isNaN(x));
      var yMissing = y === null || y === undefined || (isNum && isNaN(y));
      if (xMissing || yMissing) return xMissing === yMissing ? 0 : (xMissing ? 1 : -1); // empty last, both ways
      if (isNum) return dir * (x - y);
      return dir * String(x).localeCompare(String(y), undefined, { numeric: true });
    };
  }

  function everyRow() {
    if (!all) {
      all = [];
      for (var p = 0; p < cfg.n_pages; p++) all = all.concat(pages[p] || []);
    }
    return all;
  }

  function view(cb) {
    var f = filters();
    if (!active(f)) {
      var first = state.page * DOM_ROWS, last = Math.min(first + DOM_ROWS, cfg.n_rows) - 1;
      var need = [];
      for (var p = Math.floor(first / cfg.data_page_rows); p <= Math.floor(Math.max(last, 0) / cfg.data_page_rows); p++) need.push(p);
      loadPages(need, function () {
        var rows = [];
        for (var t = first; t <= last; t++) rows.push(pages[Math.floor(t / cfg.data_page_rows)][t % cfg.data_page_rows]);
        cb(rows, cfg.n_rows);
      });
      return;
    }
    var everyPage = [];
    for (var q = 0; q < cfg.n_pages; q++) everyPage.push(q);
    setLoading(cfg.n_pages > 1 ? "loading all rows…" : "");
    loadPages(everyPage, function () {
      var rows = everyRow().filter(function (r) { return keep(r, f); });
      if (state.sortCol) rows.sort(compare(state.sortCol, state.sortDir));
      var first = state.page * DOM_ROWS;
      cb(rows.slice(first, first + DOM_ROWS), rows.length);
    });
  }

  function fmt(v, c) {
    if (v === null || v === undefined) return "";
    if (!numeric[c]) return String(v);
    if (c === "latent" || c === "count") return String(v);
    if (c === "frequency") return v.toExponential(2);
    return Number(v).toFixed(3);
  }

  function cell(row, c) {
    var td = document.createElement("td");
    var v = row[col[c]];
    if (numeric[c]) td.className = "num";
    if (c === "latent") {
      var a = document.createElement("a");
      a.href = row[col.url];
      a.textContent = v;
      td.appendChild(a);
    } else if (c.indexOf("score.") === 0) {
      var name = c.slice(6), status = row[col["status." + name]], floor = row[col["floor." + name]];
      td.className = "num score";
      if (v !== null) td.appendChild(document.createTextNode(fmt(v, c)));
      else if (status) {
        var s = document.createElement("span");
        s.className = "status-bad small";
        s.textContent = status.replace("no_explanation: ", "no expl.: "); // the column is narrow
        s.title = status;
        td.appendChild(s);
      }
      if (floor !== null && floor !== undefined) {
        var d = document.createElement("div");
        d.className = "floor small";
        d.textContent = "floor " + Number(floor).toFixed(3);
        td.appendChild(d);
      }
    } else if (c === "explanation") {
      td.className = "explanation-cell";
      td.textContent = v === null ? "" : v;
      td.title = v === null ? "" : v;
    } else {
      td.textContent = fmt(v, c);
      if (c === "status" && v !== "ok") td.className = "status-bad";
    }
    return td;
  }

  function render() {
    view(function (rows, total) {
      setLoading("");
      var body = document.querySelector("#latents tbody");
      var frag = document.createDocumentFragment();
      rows.forEach(function (row) {
        var tr = document.createElement("tr");
        tr.className = "latent-row";
        cfg.display.forEach(function (d) { tr.appendChild(cell(row, d.col)); });
        frag.appendChild(tr);
      });
      body.innerHTML = "";
      body.appendChild(frag);
      var n = Math.max(1, Math.ceil(total / DOM_ROWS));
      var first = total ? state.page * DOM_ROWS + 1 : 0;
      document.getElementById("page-info").textContent =
        "rows " + first + "–" + (state.page * DOM_ROWS + rows.length) + " of " + total.toLocaleString() + " · page " + (state.page + 1) + " of " + n;
      document.getElementById("prev").disabled = state.page === 0;
      document.getElementById("next").disabled = state.page >= n - 1;
    });
  }

  document.querySelectorAll("#latents th[data-col]").forEach(function (th) {
    th.addEventListener("click", function () {
      var c = th.getAttribute("data-col");
      state.sortDir = state.sortCol === c ? -state.sortDir : (numeric[c] && c !== "latent" ? -1 : 1);
      state.sortCol = c;
      state.page = 0;
      document.querySelectorAll("#latents th").forEach(function (h) { h.classList.remove("asc", "desc"); });
      th.classList.add(state.sortDir > 0 ? "asc" : "desc");
      render();
    });
  });
  document.querySelectorAll("#filters select, #filters input").forEach(function (el) {
    el.addEventListener(el.tagName === "SELECT" ? "change" : "input", function () { state.page = 0; render(); });
  });
  document.getElementById("prev").addEventListener("click", function () { state.page--; render(); });
  document.getElementById("next").addEventListener("click", function () { state.page++; render(); });
  render();
})();
