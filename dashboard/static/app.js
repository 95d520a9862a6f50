// The apipool dashboard: polls api/keys, api/totals, api/usage and
// api/clients and renders them. Data goes into the page as text nodes
// only (never as HTML), and the page runs under a
// Content-Security-Policy without inline script.
(function () {
  'use strict';

  var body = document.body;
  var cfg = {
    refresh: Number(body.dataset.refreshMs) || 3000,
    csrf: body.dataset.csrf || '',
    actions: body.dataset.actions === 'true'
  };
  var win = '1h';
  var timer = null;
  var seq = 0;
  var refreshes = 0;
  var charts = {};
  var statusRaw = [], statusOrder = []; // the stacked chart's own values, for its legend

  var statusColors = {
    'success': ['#2e7d32', '#a5d6a7'],
    'rate limited': ['#ef6c00', '#ffcc80'],
    'failed': ['#c62828', '#ef9a9a'],
    'no key available': ['#6a1b9a', '#ce93d8']
  };
  var palette = ['#1565c0', '#2e7d32', '#ef6c00', '#6a1b9a', '#00838f', '#ad1457', '#4e342e', '#558b2f', '#283593', '#9e9d24'];

  function $(id) { return document.getElementById(id); }

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function pct(v) { return v === null || v === undefined ? '-' : (v * 100).toFixed(1) + '%'; }
  function num(v) { return v === null || v === undefined ? '-' : String(v); }
  function cost4(v) { return v.toFixed(4); }
  // known shows a sum over the attempts whose value is known, with how
  // many are not: "1234 (+3 unknown)", or "unknown (3)" when none is
  // known. Unknown is never shown as zero; "-" is no attempt at all (or
  // a store that does not sum).
  function known(v, unknown, f) {
    if (v === null || v === undefined) return unknown ? 'unknown (' + unknown + ')' : '-';
    return (f ? f(v) : String(v)) + (unknown ? ' (+' + unknown + ' unknown)' : '');
  }
  function msText(v) {
    if (v === null || v === undefined) return '-';
    return v < 10 ? v.toFixed(2) + ' ms' : v < 1000 ? v.toFixed(1) + ' ms' : (v / 1000).toFixed(2) + ' s';
  }
  function clock(iso) {
    var d = new Date(iso);
    return d.toLocaleTimeString([], { hourCycle: 'h23' });
  }
  function inSeconds(iso) {
    var s = Math.round((new Date(iso).getTime() - Date.now()) / 1000);
    if (s <= 0) return 'now';
    if (s < 120) return 'in ' + s + 's';
    if (s < 7200) return 'in ' + Math.round(s / 60) + 'm';
    return 'in ' + Math.round(s / 3600) + 'h';
  }

  function setStatus(text, bad) {
    var s = $('status');
    s.textContent = text;
    s.className = bad ? 'error' : '';
  }

  // setActionStatus shows the outcome of an action or a probe in a line
  // of its own, which refreshes leave alone; it clears after a minute or
  // at the next action.
  var actionTimer = null;
  function setActionStatus(text, bad) {
    var s = $('action-status');
    clearTimeout(actionTimer);
    s.textContent = text;
    s.className = bad ? 'error' : '';
    s.hidden = !text;
    if (text) actionTimer = setTimeout(function () { setActionStatus(''); }, 60000);
  }

  function getJSON(path) {
    return fetch(path + '?window=' + encodeURIComponent(win), {
      cache: 'no-store', credentials: 'same-origin', headers: { 'Accept': 'application/json' }
    }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (j) {
        if (!r.ok) throw new Error(j.error || ('HTTP ' + r.status));
        return j;
      });
    });
  }

  function post(path) {
    return fetch(path, {
      method: 'POST', cache: 'no-store', credentials: 'same-origin',
      headers: { 'X-CSRF-Token': cfg.csrf, 'Accept': 'application/json' }
    }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (j) {
        if (!r.ok) throw new Error(j.error || ('HTTP ' + r.status));
        return j;
      });
    });
  }

  // stateCell shows the key's state and, for cooling and disabled keys,
  // until when and why.
  function stateCell(k) {
    var td = el('td', 'st');
    td.appendChild(el('span', 'state state-' + k.state, k.state));
    var detail = '';
    if (k.state === 'cooling' && k.cooling_until) {
      detail = 'until ' + clock(k.cooling_until) + ' (' + inSeconds(k.cooling_until) + ')';
      if (k.cooling_reason) detail += ': ' + k.cooling_reason;
    } else if (k.disabled) {
      detail = k.disabled_reason || 'disabled';
      if (k.disabled_at) detail += ' (since ' + clock(k.disabled_at) + ')';
      if (k.disabled_retry_at) detail += '; trial ' + inSeconds(k.disabled_retry_at);
    } else if (k.state !== 'active' && k.hold) {
      detail = k.hold + (k.hold_until ? ' until ' + clock(k.hold_until) + ' (' + inSeconds(k.hold_until) + ')' : '');
    } else if (k.state === 'limited') {
      detail = 'at a rate, in-flight or daily limit';
    }
    if (detail) td.appendChild(el('span', 'detail', detail));
    return td;
  }

  // The key table shows one page of the keys that match the search, in
  // the chosen order: at a thousand keys a refresh builds pageSize rows,
  // not a thousand.
  var pageSize = 50;
  var table = { keys: [], query: '', sort: '', dir: 1, page: 0 };

  function nullsLast(a, b) {
    if (a === b) return 0;
    if (a === null || a === undefined) return 1;
    if (b === null || b === undefined) return -1;
    return a < b ? -1 : 1;
  }
  var sorters = {
    id: function (k) { return k.id; },
    fingerprint: function (k) { return k.fingerprint; },
    state: function (k) { return k.state; },
    tier: function (k) { return k.tier; },
    breaker: function (k) { return k.breaker; },
    in_flight: function (k) { return k.in_flight; },
    quota_left: function (k) { return k.quota_left; },
    provider_remaining: function (k) { return k.provider_remaining; },
    requests: function (k) { return k.requests; },
    success_share: function (k) { return k.success_share; },
    rate_limited_share: function (k) { return k.rate_limited_share; },
    p50_ms: function (k) { return k.p50_ms; },
    p99_ms: function (k) { return k.p99_ms; },
    tokens: function (k) { return k.tokens; },
    cost: function (k) { return k.cost; }
  };

  function matches(k, q) {
    return (k.id + '\n' + k.fingerprint + '\n' + k.state + '\n' + k.breaker + '\n' +
      (k.cooling_reason || '') + '\n' + (k.disabled_reason || '') + '\n' + (k.hold || '')).toLowerCase().indexOf(q) >= 0;
  }

  var labels = ['ID', 'fingerprint', 'state', 'breaker', 'in flight', 'quota left today', 'provider remaining',
    'requests', 'success', 'rate limited', 'p50', 'p99', 'tier', 'tokens', 'cost', 'actions'];

  function keyRow(k) {
    var tr = el('tr');
    tr.dataset.key = k.id;
    tr.dataset.state = k.state;
    tr.appendChild(el('td', 'id', k.id));
    tr.appendChild(el('td', 'fp', k.fingerprint));
    tr.appendChild(stateCell(k));
    tr.appendChild(el('td', 'breaker', k.breaker));
    tr.appendChild(el('td', 'n inflight', k.in_flight));
    tr.appendChild(el('td', 'n quota', num(k.quota_left)));
    var rem = num(k.provider_remaining);
    if (k.provider_remaining !== null && k.provider_limit !== null) rem += ' / ' + k.provider_limit;
    if (k.provider_remaining !== null && k.provider_reset) rem += ' (reset ' + clock(k.provider_reset) + ')';
    if (k.provider_remaining === null && k.learned_limit) {
      // No count from the provider: the limit the pool learned from its 429s.
      rem = 'learned ' + k.learned_limit + (k.learned_window_ms === 60000 ? ' / min' : ' / s');
    }
    tr.appendChild(el('td', 'n remaining', rem));
    tr.appendChild(el('td', 'n requests', num(k.requests)));
    tr.appendChild(el('td', 'n success', pct(k.success_share)));
    tr.appendChild(el('td', 'n limited', pct(k.rate_limited_share)));
    tr.appendChild(el('td', 'n p50', msText(k.p50_ms)));
    tr.appendChild(el('td', 'n p99', msText(k.p99_ms)));
    tr.appendChild(el('td', 'n tier', k.tier));
    tr.appendChild(el('td', 'n tokens', known(k.tokens, k.tokens_unknown)));
    tr.appendChild(el('td', 'n cost', known(k.cost, k.cost_unknown, cost4)));
    if (cfg.actions) {
      var td = el('td', 'actions');
      var b = el('button', 'action', k.disabled ? 'enable' : 'disable');
      b.type = 'button';
      b.dataset.action = k.disabled ? 'enable' : 'disable';
      b.dataset.key = k.id;
      td.appendChild(b);
      tr.appendChild(td);
    }
    for (var i = 0; i < tr.cells.length; i++) tr.cells[i].dataset.label = labels[i];
    return tr;
  }

  // While a button of the table is pressed, refreshes leave its rows
  // alone: a row rebuilt between the press and the release would take
  // the click with it. The table is brought up to date after the click.
  var pressed = false, stale = false;
  document.querySelector('#keys tbody').addEventListener('pointerdown', function (ev) {
    if (ev.target.closest('button')) pressed = true;
  });
  function released() {
    if (!pressed) return;
    pressed = false;
    setTimeout(function () { // after the click that this release makes
      if (stale && !pressed) { stale = false; renderTable(); }
    }, 0);
  }
  document.addEventListener('pointerup', released, true);
  document.addEventListener('pointercancel', released, true);
  window.addEventListener('blur', released);

  function renderTable() {
    if (pressed) { stale = true; return; }
    var q = table.query.trim().toLowerCase();
    var list = q ? table.keys.filter(function (k) { return matches(k, q); }) : table.keys.slice();
    if (table.sort && sorters[table.sort]) {
      var f = sorters[table.sort], dir = table.dir;
      var idx = list.map(function (k, i) { return { k: k, v: f(k), i: i }; });
      idx.sort(function (a, b) {
        var c = a.v === null || a.v === undefined || b.v === null || b.v === undefined ? nullsLast(a.v, b.v) : nullsLast(a.v, b.v) * dir;
        return c || a.i - b.i;
      });
      list = idx.map(function (x) { return x.k; });
    }
    var pages = Math.max(1, Math.ceil(list.length / pageSize));
    if (table.page >= pages) table.page = pages - 1;
    if (table.page < 0) table.page = 0;
    var from = table.page * pageSize;
    var shown = list.slice(from, from + pageSize);
    var rows = document.createDocumentFragment();
    shown.forEach(function (k) { rows.appendChild(keyRow(k)); });
    document.querySelector('#keys tbody').replaceChildren(rows);
    var info = list.length ? (from + 1) + '–' + (from + shown.length) + ' of ' + list.length : 'no key';
    if (q) info += ' matching (' + table.keys.length + ' keys)';
    else info += ' keys';
    $('page-info').textContent = info;
    $('page-prev').disabled = table.page === 0;
    $('page-next').disabled = table.page >= pages - 1;
    $('keys-pager').hidden = list.length <= pageSize && table.page === 0;
    document.querySelectorAll('#keys thead button[data-sort]').forEach(function (b) {
      var on = b.dataset.sort === table.sort;
      b.parentNode.setAttribute('aria-sort', on ? (table.dir > 0 ? 'ascending' : 'descending') : 'none');
      b.dataset.dir = on ? (table.dir > 0 ? 'asc' : 'desc') : '';
    });
    moreRight();
  }

  // moreRight says, above the table, when columns are hidden to its
  // right (a screen between the card layout and the full table's width).
  function moreRight() {
    var sc = document.querySelector('section .scroll');
    $('keys-more').hidden = !(sc.scrollWidth - sc.clientWidth - sc.scrollLeft > 2);
  }

  function renderKeys(data) {
    table.keys = data.keys || [];
    renderTable();
    $('keys-note').textContent = data.stats_error ? 'Stats unavailable: ' + data.stats_error :
      (data.stats ? 'Requests, shares and latencies over the last ' + data.window + '.' : 'The pool answers no stats queries: usage columns show "-".');
    $('keys-note').className = data.stats_error ? 'note error' : 'note';
  }

  // The client table: one page of the clients that match the search, in
  // the chosen order, as the key table. Client names come from the
  // requests (the proxy's token names, or apipool.ContextWithClient):
  // text nodes only.
  var clients = { rows: [], query: '', sort: '', dir: 1, page: 0 };
  var clientSorters = {
    client: function (c) { return c.others ? null : c.no_client ? '' : c.client; },
    attempts: function (c) { return c.attempts; },
    input_tokens: function (c) { return c.input_tokens; },
    output_tokens: function (c) { return c.output_tokens; },
    cached_tokens: function (c) { return c.cached_tokens; },
    cost: function (c) { return c.cost; }
  };
  var clientLabels = ['client', 'attempts', 'tokens in', 'tokens out', 'cached', 'cost'];
  function clientName(c) {
    if (c.others) return '(' + c.others + ' other clients)';
    return c.no_client ? '(no client)' : c.client;
  }

  function clientRow(c) {
    var tr = el('tr');
    var td = el('td', 'client');
    if (c.others || c.no_client) td.appendChild(el('span', 'unnamed', clientName(c)));
    else td.textContent = c.client;
    tr.appendChild(td);
    tr.appendChild(el('td', 'n attempts', c.attempts));
    tr.appendChild(el('td', 'n tokens-in', known(c.input_tokens, c.tokens_unknown)));
    tr.appendChild(el('td', 'n tokens-out', known(c.output_tokens, c.tokens_unknown)));
    tr.appendChild(el('td', 'n cached', known(c.cached_tokens, c.tokens_unknown)));
    tr.appendChild(el('td', 'n cost', known(c.cost, c.cost_unknown, cost4)));
    for (var i = 0; i < tr.cells.length; i++) tr.cells[i].dataset.label = clientLabels[i];
    return tr;
  }

  function renderClientTable() {
    var q = clients.query.trim().toLowerCase();
    var list = q ? clients.rows.filter(function (c) { return clientName(c).toLowerCase().indexOf(q) >= 0; }) : clients.rows.slice();
    if (clients.sort && clientSorters[clients.sort]) {
      var f = clientSorters[clients.sort], dir = clients.dir;
      var idx = list.map(function (c, i) { return { c: c, v: f(c), i: i }; });
      idx.sort(function (a, b) {
        var c = a.v === null || a.v === undefined || b.v === null || b.v === undefined ? nullsLast(a.v, b.v) : nullsLast(a.v, b.v) * dir;
        return c || a.i - b.i;
      });
      list = idx.map(function (x) { return x.c; });
    }
    var pages = Math.max(1, Math.ceil(list.length / pageSize));
    if (clients.page >= pages) clients.page = pages - 1;
    if (clients.page < 0) clients.page = 0;
    var from = clients.page * pageSize;
    var shown = list.slice(from, from + pageSize);
    var rows = document.createDocumentFragment();
    shown.forEach(function (c) { rows.appendChild(clientRow(c)); });
    document.querySelector('#clients tbody').replaceChildren(rows);
    var info = list.length ? (from + 1) + '–' + (from + shown.length) + ' of ' + list.length : 'no client';
    info += q ? ' matching (' + clients.rows.length + ' rows)' : ' rows';
    $('cpage-info').textContent = info;
    $('cpage-prev').disabled = clients.page === 0;
    $('cpage-next').disabled = clients.page >= pages - 1;
    $('clients-pager').hidden = list.length <= pageSize && clients.page === 0;
    document.querySelectorAll('#clients thead button[data-sort]').forEach(function (b) {
      var on = b.dataset.sort === clients.sort;
      b.parentNode.setAttribute('aria-sort', on ? (clients.dir > 0 ? 'ascending' : 'descending') : 'none');
      b.dataset.dir = on ? (clients.dir > 0 ? 'asc' : 'desc') : '';
    });
  }

  function renderClients(data) {
    var rows = (data.clients || []).slice();
    if (data.others) {
      var o = {};
      Object.keys(data.others).forEach(function (k) { o[k] = data.others[k]; });
      o.others = data.others.clients;
      rows.push(o);
    }
    clients.rows = rows;
    renderClientTable();
    var note = $('clients-note');
    note.className = data.stats_error ? 'note error' : 'note';
    if (data.stats_error) note.textContent = 'Stats unavailable: ' + data.stats_error;
    else if (!data.stats) note.textContent = 'The pool answers no stats queries: no client table.';
    else if (!data.totals) note.textContent = 'The stats store does not sum tokens and cost (recorder.TotalsStats): no client table.';
    else {
      var t = 'Attempts, tokens and cost per client over the last ' + data.window +
        ' (a request retried on another key counts once per key tried). "(+n unknown)": n attempts did not state theirs; "unknown (n)": none of n did.';
      if (data.others) t = 'The ' + data.clients.length + ' busiest of ' + data.count + ' clients; the other ' + data.others.clients + ' are summed in one row. ' + t;
      note.textContent = t;
    }
  }

  function renderTotals(t) {
    $('t-rate-now').textContent = t.last_minute_per_second === null || t.last_minute_per_second === undefined ? '-' : t.last_minute_per_second.toFixed(2);
    $('t-rate').textContent = t.per_second === null || t.per_second === undefined ? '-' : t.per_second.toFixed(2);
    $('t-requests').textContent = num(t.requests);
    $('t-success').textContent = pct(t.success_share);
    $('t-limited').textContent = pct(t.rate_limited_share);
    $('t-waits').textContent = num(t.waits);
    $('t-nokey').textContent = num(t.no_key_errors);
    var parts = Object.keys(t.states).sort().map(function (s) { return t.states[s] + ' ' + s; });
    $('t-keys').textContent = t.keys + (parts.length ? ' (' + parts.join(', ') + ')' : '');
  }

  function size(id) {
    var w = $(id).clientWidth || 400;
    return { width: w, height: 240 };
  }

  // draw creates or updates a chart; it recreates it when its series
  // change (another key among the busiest, another window).
  function draw(id, sig, makeOpts, data) {
    var c = charts[id];
    if (c && c.sig === sig) {
      c.plot.setData(data);
      return;
    }
    if (c) c.plot.destroy();
    var opts = makeOpts();
    var s = size(id);
    opts.width = s.width;
    opts.height = s.height;
    charts[id] = { sig: sig, plot: new uPlot(opts, data, $(id)) };
  }

  function compact(v) {
    if (v === null || v === undefined) return '';
    var a = Math.abs(v);
    if (a >= 1e6) return +(v / 1e6).toFixed(1) + 'M';
    if (a >= 1e3) return +(v / 1e3).toFixed(1) + 'k';
    return +v.toFixed(2) + '';
  }
  // Times on the charts are 24-hour, as on the rest of the page (uPlot's
  // default is 12-hour with am/pm).
  function two(n) { return n < 10 ? '0' + n : String(n); }
  function hhmm(sec) {
    var d = new Date(sec * 1000);
    return two(d.getHours()) + ':' + two(d.getMinutes());
  }
  function dayTime(sec) {
    var d = new Date(sec * 1000);
    return d.getFullYear() + '-' + two(d.getMonth() + 1) + '-' + two(d.getDate()) + ' ' + hhmm(sec);
  }
  var xSeries = { value: function (self, v) { return v === null || v === undefined ? '-' : dayTime(v); } };
  var axes = [
    { stroke: '#5f6b76', grid: { stroke: '#eef0f2' }, ticks: { stroke: '#eef0f2' },
      values: function (self, vals) {
        return vals.map(function (v, i) {
          var d = new Date(v * 1000);
          // the first tick and each midnight also say the day
          if (i === 0 || (d.getHours() === 0 && d.getMinutes() === 0)) return hhmm(v) + '\n' + two(d.getMonth() + 1) + '-' + two(d.getDate());
          return hhmm(v);
        });
      } },
    { stroke: '#5f6b76', grid: { stroke: '#eef0f2' }, ticks: { stroke: '#eef0f2' }, size: 56,
      values: function (self, vals) { return vals.map(compact); } }
  ];

  function renderCharts(u) {
    // Requests by status, stacked: series i holds statuses 0..i added
    // up, drawn from the highest down so that each fills its own band.
    var n = u.by_status.length;
    var raw = u.by_status.map(function (s) { return s.values; });
    var stacked = [];
    var acc = u.times.map(function () { return 0; });
    for (var i = 0; i < n; i++) {
      acc = acc.map(function (v, j) { return v + (raw[i][j] || 0); });
      stacked.push(acc);
    }
    var order = [];
    for (var k = n - 1; k >= 0; k--) order.push(k);
    statusRaw = raw;
    statusOrder = order;
    var sdata = [u.times].concat(order.map(function (k) { return stacked[k]; }));
    draw('chart-status', u.window + '|' + u.by_status.map(function (s) { return s.name; }).join(','), function () {
      return {
        axes: axes,
        scales: { x: { time: true } },
        series: [xSeries].concat(order.map(function (k) {
          var name = u.by_status[k].name;
          var c = statusColors[name] || ['#455a64', '#b0bec5'];
          return {
            label: name, stroke: c[0], fill: c[1], width: 2, points: { show: false },
            value: function (self, v, si, idx) {
              var r = idx === null || idx === undefined ? null : (statusRaw[statusOrder[si - 1]] || [])[idx];
              return r === null || r === undefined ? '-' : r.toFixed(1);
            }
          };
        }))
      };
    }, sdata);

    var kdata = [u.times].concat(u.by_key.map(function (s) { return s.values; }));
    draw('chart-keys', u.window + '|' + u.by_key.map(function (s) { return s.name; }).join(','), function () {
      return {
        axes: axes,
        scales: { x: { time: true } },
        series: [xSeries].concat(u.by_key.map(function (s, i) {
          return { label: s.name, stroke: palette[i % palette.length], width: 2 };
        }))
      };
    }, kdata);

    var ldata = [u.latency_times].concat(u.latency.map(function (s) { return s.values; }));
    draw('chart-latency', u.window + '|' + u.latency.map(function (s) { return s.name; }).join(','), function () {
      return {
        axes: axes,
        scales: { x: { time: true } },
        series: [xSeries].concat(u.latency.map(function (s, i) {
          var p99 = /p99$/.test(s.name);
          return {
            label: s.name, stroke: palette[Math.floor(i / 2) % palette.length], width: 2,
            dash: p99 ? [6, 4] : undefined, points: { show: true, size: 8, width: 2 }, spanGaps: false
          };
        }))
      };
    }, ldata);
  }

  // refresh fetches the four APIs and renders each that answers: a
  // failing stats store (api/usage 503) must not take the key table
  // with it.
  function refresh() {
    clearTimeout(timer);
    var mine = ++seq;
    function settle(p) {
      return p.then(function (v) { return { ok: true, v: v }; }, function (e) { return { ok: false, e: e }; });
    }
    Promise.all([settle(getJSON('api/keys')), settle(getJSON('api/totals')), settle(getJSON('api/usage')), settle(getJSON('api/clients'))]).then(function (r) {
      if (mine !== seq) return;
      var t0 = performance.now();
      var errs = [];
      if (r[0].ok) renderKeys(r[0].v); else errs.push('keys: ' + r[0].e.message);
      if (r[1].ok) renderTotals(r[1].v); else errs.push('totals: ' + r[1].e.message);
      if (r[2].ok) {
        renderCharts(r[2].v);
        $('charts-note').textContent = '';
      } else {
        errs.push('charts: ' + r[2].e.message);
        $('charts-note').textContent = 'Charts unavailable: ' + r[2].e.message;
      }
      if (r[3].ok) renderClients(r[3].v);
      else {
        errs.push('clients: ' + r[3].e.message);
        $('clients-note').textContent = 'Clients unavailable: ' + r[3].e.message;
        $('clients-note').className = 'note error';
      }
      refreshes++;
      body.dataset.refreshes = String(refreshes);
      body.dataset.renderMs = (performance.now() - t0).toFixed(1); // for the browser tests
      var when = clock(new Date().toISOString());
      if (errs.length) setStatus('updated ' + when + ' with errors: ' + errs.join('; '), true);
      else setStatus('updated ' + when + ' · every ' + (cfg.refresh / 1000) + 's');
    }).catch(function (e) {
      if (mine !== seq) return;
      setStatus('error: ' + e.message, true);
    }).then(function () {
      if (mine !== seq) return;
      timer = setTimeout(refresh, cfg.refresh);
    });
  }

  $('key-search').addEventListener('input', function (ev) {
    table.query = ev.target.value;
    table.page = 0;
    renderTable();
  });
  document.querySelectorAll('#keys thead button[data-sort]').forEach(function (b) {
    b.addEventListener('click', function () {
      if (table.sort === b.dataset.sort) {
        if (table.dir > 0) table.dir = -1;
        else table.sort = ''; // third click: the pool's order again
      } else {
        table.sort = b.dataset.sort;
        table.dir = 1;
      }
      renderTable();
    });
  });
  document.querySelector('section .scroll').addEventListener('scroll', moreRight, { passive: true });
  $('page-prev').addEventListener('click', function () { table.page--; renderTable(); });
  $('page-next').addEventListener('click', function () { table.page++; renderTable(); });
  $('client-search').addEventListener('input', function (ev) {
    clients.query = ev.target.value;
    clients.page = 0;
    renderClientTable();
  });
  document.querySelectorAll('#clients thead button[data-sort]').forEach(function (b) {
    b.addEventListener('click', function () {
      if (clients.sort === b.dataset.sort) {
        if (clients.dir > 0) clients.dir = -1;
        else clients.sort = ''; // third click: the busiest first again
      } else {
        clients.sort = b.dataset.sort;
        clients.dir = 1;
      }
      renderClientTable();
    });
  });
  $('cpage-prev').addEventListener('click', function () { clients.page--; renderClientTable(); });
  $('cpage-next').addEventListener('click', function () { clients.page++; renderClientTable(); });

  // selectWindow shows the window named w (15m, 1h, 24h); the URL's
  // fragment keeps it across reloads (#15m).
  function selectWindow(w, fetchNow) {
    var found = false;
    document.querySelectorAll('#windows button').forEach(function (o) {
      var on = o.dataset.window === w;
      o.classList.toggle('on', on);
      found = found || on;
    });
    if (!found) return false;
    win = w;
    if (location.hash !== '#' + w) history.replaceState(null, '', '#' + w);
    if (fetchNow) refresh();
    return true;
  }
  document.querySelectorAll('#windows button').forEach(function (b) {
    b.addEventListener('click', function () { selectWindow(b.dataset.window, true); });
  });
  if (location.hash.length > 1) selectWindow(location.hash.slice(1), false);

  if (cfg.actions) {
    document.querySelector('#keys tbody').addEventListener('click', function (ev) {
      var b = ev.target.closest('button[data-action]');
      if (!b) return;
      b.disabled = true;
      post('api/keys/' + encodeURIComponent(b.dataset.key) + '/' + b.dataset.action).then(function () {
        setActionStatus(b.dataset.action + 'd ' + b.dataset.key);
        refresh();
      }).catch(function (e) { setActionStatus('error: ' + e.message, true); b.disabled = false; });
    });
    var probe = $('probe');
    if (probe) {
      probe.addEventListener('click', function () {
        probe.disabled = true;
        setActionStatus('probing…');
        post('api/probe').then(function (r) {
          var bad = (r.probes || []).filter(function (p) { return !p.usable; }).map(function (p) { return p.key_id; });
          setActionStatus('probed ' + (r.probes || []).length + ' keys' + (bad.length ? '; not usable: ' + bad.join(', ') : ''));
          refresh();
        }).catch(function (e) { setActionStatus('error: ' + e.message, true); }).then(function () { probe.disabled = false; });
      });
    }
  }

  var resizeTimer = null;
  window.addEventListener('resize', function () {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(function () {
      Object.keys(charts).forEach(function (id) { charts[id].plot.setSize(size(id)); });
      moreRight();
    }, 150);
  });

  refresh();
})();
