// The apipool dashboard: polls api/keys, api/totals and api/usage and
// renders them. Data goes into the page as text nodes only (never as
// HTML), and the page runs under a Content-Security-Policy without
// inline script.
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
  function msText(v) {
    if (v === null || v === undefined) return '-';
    return v < 10 ? v.toFixed(2) + ' ms' : v < 1000 ? v.toFixed(1) + ' ms' : (v / 1000).toFixed(2) + ' s';
  }
  function clock(iso) {
    var d = new Date(iso);
    return d.toLocaleTimeString([], { hour12: false });
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

  function renderKeys(data) {
    var tbody = document.querySelector('#keys tbody');
    var rows = document.createDocumentFragment();
    data.keys.forEach(function (k) {
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
      tr.appendChild(el('td', 'n remaining', rem));
      tr.appendChild(el('td', 'n requests', num(k.requests)));
      tr.appendChild(el('td', 'n success', pct(k.success_share)));
      tr.appendChild(el('td', 'n limited', pct(k.rate_limited_share)));
      tr.appendChild(el('td', 'n p50', msText(k.p50_ms)));
      tr.appendChild(el('td', 'n p99', msText(k.p99_ms)));
      if (cfg.actions) {
        var td = el('td', 'actions');
        var b = el('button', 'action', k.disabled ? 'enable' : 'disable');
        b.type = 'button';
        b.dataset.action = k.disabled ? 'enable' : 'disable';
        b.dataset.key = k.id;
        td.appendChild(b);
        tr.appendChild(td);
      }
      rows.appendChild(tr);
    });
    tbody.replaceChildren(rows);
    $('keys-note').textContent = data.stats_error ? data.stats_error :
      (data.stats ? 'Requests, shares and latencies over the last ' + data.window + '.' : 'The pool answers no stats queries: usage columns show "-".');
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
  var axes = [
    { stroke: '#5f6b76', grid: { stroke: '#eef0f2' }, ticks: { stroke: '#eef0f2' } },
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
        series: [{}].concat(order.map(function (k) {
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
        series: [{}].concat(u.by_key.map(function (s, i) {
          return { label: s.name, stroke: palette[i % palette.length], width: 2 };
        }))
      };
    }, kdata);

    var ldata = [u.latency_times].concat(u.latency.map(function (s) { return s.values; }));
    draw('chart-latency', u.window + '|' + u.latency.map(function (s) { return s.name; }).join(','), function () {
      return {
        axes: axes,
        scales: { x: { time: true } },
        series: [{}].concat(u.latency.map(function (s, i) {
          var p99 = /p99$/.test(s.name);
          return {
            label: s.name, stroke: palette[Math.floor(i / 2) % palette.length], width: 2,
            dash: p99 ? [6, 4] : undefined, points: { show: true, size: 8, width: 2 }, spanGaps: false
          };
        }))
      };
    }, ldata);
  }

  function refresh() {
    clearTimeout(timer);
    var mine = ++seq;
    Promise.all([getJSON('api/keys'), getJSON('api/totals'), getJSON('api/usage')]).then(function (r) {
      if (mine !== seq) return;
      renderKeys(r[0]);
      renderTotals(r[1]);
      renderCharts(r[2]);
      refreshes++;
      body.dataset.refreshes = String(refreshes);
      setStatus('updated ' + new Date().toLocaleTimeString([], { hour12: false }) + ' · every ' + (cfg.refresh / 1000) + 's');
    }).catch(function (e) {
      if (mine !== seq) return;
      setStatus('error: ' + e.message, true);
    }).then(function () {
      if (mine !== seq) return;
      timer = setTimeout(refresh, cfg.refresh);
    });
  }

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
        setStatus(b.dataset.action + 'd ' + b.dataset.key);
        refresh();
      }).catch(function (e) { setStatus('error: ' + e.message, true); b.disabled = false; });
    });
    var probe = $('probe');
    if (probe) {
      probe.addEventListener('click', function () {
        probe.disabled = true;
        setStatus('probing…');
        post('api/probe').then(function (r) {
          var bad = (r.probes || []).filter(function (p) { return !p.usable; }).map(function (p) { return p.key_id; });
          setStatus('probed ' + (r.probes || []).length + ' keys' + (bad.length ? '; not usable: ' + bad.join(', ') : ''));
          refresh();
        }).catch(function (e) { setStatus('error: ' + e.message, true); }).then(function () { probe.disabled = false; });
      });
    }
  }

  var resizeTimer = null;
  window.addEventListener('resize', function () {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(function () {
      Object.keys(charts).forEach(function (id) { charts[id].plot.setSize(size(id)); });
    }, 150);
  });

  refresh();
})();
