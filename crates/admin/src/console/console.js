// proxyfleet console: renders the admin API's event stream (GET /api/events) and calls its
// mutating routes with the operator's bearer token. Plain JavaScript, no dependencies.
//
// Data flow: the server sends `history` (the last five minutes of samples) when the stream
// opens, then a `tick` per second ({status, sample, activity}). Every tick re-renders from
// `state`; table rows are updated in place, keyed by id, so a button the operator (or a
// test) is about to click is never replaced under the pointer.
'use strict';

(() => {
  const TOKEN_KEY = 'proxyfleet.token';
  const WINDOW_SECONDS = 300;
  const CONFIRM_MS = 5000;
  const PALETTE = ['#0972d3', '#e07f14', '#037f0c', '#8c4fff', '#d91515', '#00a1c9', '#b0084d', '#5f6b7a'];

  const state = {
    status: null,
    activity: [],
    samples: [],
    token: sessionStorage.getItem(TOKEN_KEY) || '',
    verified: false,
    confirm: null, // {id, until}: the instance whose Terminate awaits a second click
    pending: new Set(), // instances whose terminate call is in flight
    colors: new Map(),
  };

  const $ = (id) => document.getElementById(id);

  // ---- DOM helpers (text only: nothing from the server is ever parsed as HTML) ----

  function el(tag, props, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (k === 'class') e.className = v;
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else if (k in e) e[k] = v;
      else e.setAttribute(k, v);
    }
    for (const c of children.flat()) {
      if (c !== null && c !== undefined && c !== false) e.append(c instanceof Node ? c : String(c));
    }
    return e;
  }

  const KINDS = {
    Healthy: 'ok', InService: 'ok', Successful: 'ok', Live: 'ok', Reachable: 'ok',
    Unhealthy: 'bad', Failed: 'bad', Lost: 'bad', Unreachable: 'bad',
    Initial: 'wait', Pending: 'wait', InProgress: 'wait',
    Draining: 'warn', Terminating: 'warn', WaitingForConnectionDraining: 'warn',
    Unused: 'muted', Cancelled: 'muted', Terminated: 'muted',
  };

  function badge(word) {
    return el('span', { class: `badge badge-${KINDS[word] || 'muted'}` }, word);
  }

  function duration(seconds) {
    const s = Math.max(0, Math.floor(seconds));
    if (s < 60) return `${s}s`;
    if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
    if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
    return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
  }

  function clock(unix) {
    if (unix === null || unix === undefined) return '–';
    const d = new Date(unix * 1000);
    const pad = (n) => String(n).padStart(2, '0');
    const time = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
    const today = new Date();
    if (d.toDateString() === today.toDateString()) return time;
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${time}`;
  }

  function rate(v) {
    return v >= 100 ? v.toFixed(0) : v.toFixed(1);
  }

  // Keeps one <tr> per key, in the order of `items`: rows are created once and updated.
  function syncRows(tbody, items, key, create, update) {
    const old = new Map([...tbody.rows].map((r) => [r.dataset.key, r]));
    items.forEach((item, i) => {
      const k = key(item);
      let row = old.get(k);
      if (!row) {
        row = create(item);
        row.dataset.key = k;
      }
      update(row, item);
      if (tbody.children[i] !== row) tbody.insertBefore(row, tbody.children[i] || null);
    });
    while (tbody.children.length > items.length) tbody.lastElementChild.remove();
  }

  function cells(row, n) {
    while (row.cells.length < n) row.append(el('td'));
    return row.cells;
  }

  function set(cell, ...content) {
    cell.replaceChildren(...content.flat()
      .filter((c) => c !== null && c !== undefined && c !== false)
      .map((c) => (c instanceof Node ? c : String(c))));
  }

  // ---- Notices ----

  function notice(kind, text) {
    $('notice').className = `notice notice-${kind}`;
    $('notice').hidden = false;
    $('notice-text').textContent = text;
  }

  // ---- API calls ----

  function authHeaders() {
    return state.token ? { Authorization: `Bearer ${state.token}` } : {};
  }

  async function call(method, path, body) {
    const headers = authHeaders();
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
    });
    let data = null;
    try { data = await response.json(); } catch (_) { /* not JSON */ }
    if (!response.ok) {
      const error = new Error((data && data.error) || `HTTP ${response.status}`);
      error.status = response.status;
      throw error;
    }
    return data;
  }

  const REFUSED = '401 Unauthorized: the admin API refused the token. It is in STATE_DIR/admin.token, and every start of up writes a new one.';

  // A mutating call; a 401 takes the page back to read-only.
  async function act(what, method, path, body) {
    try {
      await call(method, path, body);
      return true;
    } catch (e) {
      if (e.status === 401) {
        forget();
        notice('error', `${what}: ${REFUSED}`);
      } else {
        notice('error', `${what} failed (HTTP ${e.status || '?'}): ${e.message}`);
      }
      return false;
    }
  }

  // ---- The token ----

  function admin() {
    return state.token !== '' && state.verified;
  }

  function renderMode() {
    const on = admin();
    $('mode').textContent = on ? 'Admin' : 'Read-only';
    $('mode').className = `mode ${on ? 'mode-admin' : 'mode-ro'}`;
    $('token-input').hidden = on;
    $('token-use').hidden = on;
    $('token-forget').hidden = !on;
    $('ro-hint').hidden = on;
    render();
  }

  async function verify(token, quiet) {
    state.token = token;
    try {
      await call('GET', '/api/token');
      state.verified = true;
      sessionStorage.setItem(TOKEN_KEY, token);
      if (!quiet) notice('ok', 'Token accepted: scaling and terminating are enabled in this tab.');
      // A console locked by read_requires_token can read now.
      if (readsNeedToken) connect();
    } catch (e) {
      if (e.status === 401) {
        forget();
        notice('error', REFUSED);
      } else {
        // Not a verdict on the token (e.g. up is restarting): keep it, stay read-only.
        state.verified = false;
        notice('error', `Cannot check the token now: ${e.message}`);
      }
    }
    renderMode();
  }

  function forget() {
    state.token = '';
    state.verified = false;
    sessionStorage.removeItem(TOKEN_KEY);
    renderMode();
    // The stream holds the token in its URL: a locked console stops reading.
    if (readsNeedToken) connect();
  }

  // ---- Rendering ----

  function render() {
    const s = state.status;
    if (!s) return;
    renderTier(s);
    renderLoadBalancers(s);
    renderGroups(s);
    renderTargets(s);
    renderInstances(s);
    renderActivity();
    drawCharts();
  }

  // A tier of agents only (`proxyfleet agent`): its controller, hosts and etcd members.
  function renderTier(s) {
    const t = s.tier;
    $('tier-panel').hidden = !t;
    if (!t) return;
    const leader = t.leader ? `controller ${t.leader.host} (term ${t.leader.term})` : 'no controller';
    const stale = t.connected ? '' : ' · store unreachable: last state seen';
    $('tier-summary').textContent = `${leader} · ${t.store} · revision ${t.revision} · answered by ${t.this_host}${stale}`;
    const hosts = el('table', { class: 'table' },
      el('thead', {}, el('tr', {},
        ['Host', 'Zone', 'Address', 'Roles', 'State', 'Up', 'Nodes'].map((h) => el('th', {}, h)))),
      el('tbody', {}, t.hosts.map((h) => el('tr', {},
        el('td', {}, h.id),
        el('td', {}, h.zone),
        el('td', { class: 'mono' }, h.address),
        el('td', {}, h.roles.join(', ')),
        el('td', {}, badge(h.live ? 'Live' : 'Lost')),
        el('td', { class: 'num' }, duration(h.announced_ms_ago / 1000)),
        el('td', { class: 'mono' }, (h.nodes || []).join(', '))))));
    const parts = [hosts];
    if (t.etcd.length > 0) {
      parts.push(el('table', { class: 'table' },
        el('thead', {}, el('tr', {},
          ['etcd member', 'State', 'Raft', 'Revision', 'Error'].map((h) => el('th', {}, h)))),
        el('tbody', {}, t.etcd.map((m) => el('tr', {},
          el('td', { class: 'mono' }, m.endpoint),
          el('td', {}, badge(m.reachable ? 'Reachable' : 'Unreachable')),
          el('td', {}, m.leader ? 'leader' : ''),
          el('td', { class: 'num' }, m.revision),
          el('td', {}, m.error || ''))))));
    }
    $('tier').replaceChildren(...parts);
  }

  function renderLoadBalancers(s) {
    const box = $('lbs');
    if (s.load_balancers.length === 0) {
      box.replaceChildren(el('p', { class: 'empty' }, 'No load balancers.'));
      return;
    }
    box.replaceChildren(...s.load_balancers.map((lb) => el('div', { class: 'lb' },
      el('h3', {}, lb.name, el('span', { class: 'count' }, lb.cross_zone ? 'cross-zone on' : 'cross-zone off')),
      el('table', { class: 'table' },
        el('thead', {}, el('tr', {},
          ['Node', 'Address', 'Listeners', 'Active', 'Accepted', 'Refused', 'Failed', 'Full'].map((h, i) =>
            el('th', { class: i >= 3 ? 'num' : '' }, h)))),
        el('tbody', {}, lb.nodes.map((n) => el('tr', {},
          el('td', {}, `${lb.name}/${n.zone}`),
          el('td', { class: 'mono' }, n.address),
          el('td', {}, n.listeners.map((l) => el('div', { class: 'mono' }, `:${l.port} → ${l.target_group}`))),
          el('td', { class: 'num' }, n.active),
          el('td', { class: 'num' }, n.accepted),
          el('td', { class: 'num' }, n.refused),
          el('td', { class: 'num' }, n.failed),
          el('td', { class: 'num' }, n.full ?? 0))))))));
  }

  // Groups are updated in place: the desired-capacity field keeps what the operator typed.
  function renderGroups(s) {
    const box = $('groups');
    if (s.groups.length === 0) {
      box.replaceChildren(el('p', { class: 'empty' }, 'No groups.'));
      return;
    }
    box.querySelectorAll(':scope > p.empty').forEach((p) => p.remove());
    const names = new Set(s.groups.map((g) => g.name));
    for (const div of [...box.children]) if (!names.has(div.dataset.group)) div.remove();
    for (const g of s.groups) {
      let div = box.querySelector(`:scope > [data-group="${CSS.escape(g.name)}"]`);
      if (!div) {
        div = groupBox(g);
        box.append(div);
      }
      const inService = s.instances.filter((i) => i.group === g.name && i.lifecycle === 'InService').length;
      div.querySelector('.kv').replaceChildren(...[
        ['In service', `${inService} / ${g.desired}`],
        ['Desired', g.desired], ['Min', g.min], ['Max', g.max],
        ['Zones', g.zones.join(', ')],
        g.backoff_seconds !== null ? ['Launch back-off', `next try in ${duration(g.backoff_seconds)}`] : null,
        g.replacements_held ? ['Replacements held', g.replacements_held] : null,
        g.refresh ? ['Instance refresh', g.refresh] : null,
      ].filter(Boolean).map(([k, v]) => el('div', {}, el('dt', {}, k), el('dd', {}, v))));
      const input = div.querySelector('input');
      input.min = g.min;
      input.max = g.max;
      if (document.activeElement !== input && input.dataset.dirty !== '1') input.value = g.desired;
      input.disabled = !admin();
      div.querySelector('button').disabled = !admin();
      div.querySelector('button').title = admin() ? '' : 'Read-only: enter the admin token to scale';
    }
  }

  function groupBox(g) {
    const input = el('input', { type: 'number', value: g.desired, 'aria-label': `desired capacity of ${g.name}` });
    input.addEventListener('input', () => { input.dataset.dirty = '1'; });
    const button = el('button', { class: 'btn btn-small', type: 'button' }, 'Set desired');
    button.addEventListener('click', async () => {
      const desired = Number(input.value);
      button.disabled = true;
      if (await act(`Scale ${g.name}`, 'POST', `/api/groups/${encodeURIComponent(g.name)}/scale`, { desired })) {
        notice('ok', `Group ${g.name}: desired capacity set to ${desired}.`);
        input.dataset.dirty = '';
      }
      button.disabled = !admin();
    });
    const div = el('div', { class: 'group' }, el('h3', {}, g.name), el('dl', { class: 'kv' }),
      el('div', { class: 'scale' }, el('span', { class: 'sub' }, 'Desired capacity'), input, button));
    div.dataset.group = g.name;
    return div;
  }

  function renderTargets(s) {
    const nodes = [...new Set(s.targets.flatMap((t) => t.nodes.map((n) => n.node)))].sort();
    const heads = ['Target', 'Group', 'Zone', 'Health', ...nodes.map((n) => `on ${n}`), 'Active', 'New flows', 'Connect failures'];
    const headRow = $('targets-head');
    if (headRow.dataset.heads !== heads.join('\n')) {
      headRow.dataset.heads = heads.join('\n');
      headRow.replaceChildren(...heads.map((h, i) => el('th', { class: i >= heads.length - 3 ? 'num' : '' }, h)));
      $('targets').tBodies[0].replaceChildren();
    }
    const healthy = s.targets.filter((t) => t.health === 'Healthy').length;
    $('targets-summary').textContent = `${healthy} healthy of ${s.targets.length}`;
    $('targets-empty').hidden = s.targets.length > 0;
    syncRows($('targets').tBodies[0], s.targets, (t) => `${t.group} ${t.id}`, () => el('tr'), (row, t) => {
      const c = cells(row, heads.length);
      set(c[0], el('span', { class: 'mono' }, t.id));
      set(c[1], t.group);
      set(c[2], t.zone);
      set(c[3], badge(t.health));
      c[3].className = 'target-health';
      nodes.forEach((name, i) => {
        const h = t.nodes.find((n) => n.node === name);
        set(c[4 + i], h ? [badge(h.health), el('span', { class: 'reason' }, `${h.reason || '–'} · ${duration(h.for_seconds)}`)] : '–');
      });
      const base = 4 + nodes.length;
      [t.active_flows, t.new_flows, t.connect_failures].forEach((v, i) => {
        c[base + i].className = 'num';
        set(c[base + i], v);
      });
    });
  }

  function renderInstances(s) {
    const list = s.instances;
    const live = list.filter((i) => i.lifecycle === 'InService').length;
    $('instances-summary').textContent = `${live} in service of ${list.length}`;
    $('instances-empty').hidden = list.length > 0;
    if (state.confirm && Date.now() > state.confirm.until) state.confirm = null;
    syncRows($('instances').tBodies[0], list, (i) => i.id, instanceRow, (row, i) => {
      const c = row.cells;
      set(c[0], el('span', { class: 'mono' }, i.id));
      set(c[1], i.group);
      set(c[2], i.zone);
      set(c[3], el('span', { class: 'mono' }, `${i.address}:${i.port}`));
      set(c[4], badge(i.lifecycle));
      c[4].className = 'lifecycle';
      set(c[5], badge(i.health), i.reason ? el('span', { class: 'reason' }, i.reason) : null);
      set(c[6], duration(i.uptime_seconds));
      set(c[7], i.pid || '–');
      set(c[8], i.protected ? 'nftables' : 'none');
      const button = c[9].firstChild;
      const confirming = state.confirm && state.confirm.id === i.id;
      const pending = state.pending.has(i.id);
      const serving = i.lifecycle === 'Pending' || i.lifecycle === 'InService';
      button.disabled = !admin() || !serving || pending;
      button.textContent = pending ? 'Terminating…' : confirming ? 'Confirm terminate' : 'Terminate';
      button.className = `btn btn-small terminate ${confirming ? 'btn-confirm' : 'btn-danger'}`;
      button.title = admin() ? (serving ? 'Terminate; the group launches a replacement' : 'Already leaving service')
        : 'Read-only: enter the admin token to terminate';
    });
  }

  function instanceRow(i) {
    const button = el('button', { type: 'button', class: 'btn btn-small btn-danger terminate' }, 'Terminate');
    button.addEventListener('click', () => terminate(i.id));
    const row = el('tr');
    cells(row, 10);
    row.cells[9].append(button);
    return row;
  }

  async function terminate(id) {
    if (!state.confirm || state.confirm.id !== id || Date.now() > state.confirm.until) {
      state.confirm = { id, until: Date.now() + CONFIRM_MS };
      render();
      setTimeout(render, CONFIRM_MS + 50);
      return;
    }
    state.confirm = null;
    state.pending.add(id);
    render();
    if (await act(`Terminate ${id}`, 'POST', `/api/instances/${encodeURIComponent(id)}/terminate`, { decrement_desired: false })) {
      notice('ok', `Terminating ${id}: it is deregistered and drained, and the group launches a replacement.`);
    }
    state.pending.delete(id);
    render();
  }

  function renderActivity() {
    const list = state.activity;
    $('activity-empty').hidden = list.length > 0;
    syncRows($('activity').tBodies[0], list, (a) => String(a.id), () => el('tr'), (row, a) => {
      const c = cells(row, 6);
      set(c[0], badge(a.status));
      set(c[1], a.description);
      set(c[2], el('span', { class: 'sub' }, a.cause));
      set(c[3], a.group);
      set(c[4], clock(a.start));
      set(c[5], a.end === null ? '–' : clock(a.end));
    });
  }

  // ---- Charts (own drawing on <canvas>) ----

  function seriesColor(key) {
    if (!state.colors.has(key)) state.colors.set(key, PALETTE[state.colors.size % PALETTE.length]);
    return state.colors.get(key);
  }

  function drawCharts() {
    const groups = new Set(state.samples.flatMap((s) => s.targets.map((t) => t.group)));
    const label = (t) => (groups.size > 1 ? `${t.group} ${t.id}` : t.id);
    drawChart($('chart-new'), $('legend-new'), (t) => t.new_flows_per_second, label, (v) => `${rate(v)}/s`, false);
    drawChart($('chart-active'), $('legend-active'), (t) => t.active_flows, label, (v) => String(v), true);
  }

  // The step between the y axis's four grid lines: 1, 2, 2.5 or 5 times a power of ten, so
  // the labels are round; whole numbers for counts.
  function gridStep(top, integer) {
    const x = Math.max(top / 4, integer ? 1 : 0.25);
    const p = 10 ** Math.floor(Math.log10(x));
    const multiples = integer ? [1, 2, 5, 10] : [1, 2, 2.5, 5, 10];
    return multiples.map((m) => m * p).find((c) => c >= x);
  }

  function drawChart(canvas, legend, value, label, format, integer) {
    const samples = state.samples;
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth;
    const h = canvas.clientHeight;
    if (w === 0 || h === 0) return;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    canvas.dataset.samples = samples.length; // what is drawn, for tests and the curious
    const g = canvas.getContext('2d');
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, h);

    const end = samples.length ? samples[samples.length - 1].time : Date.now() / 1000;
    const start = end - WINDOW_SECONDS;
    // Series by target, with a gap (null) where a sample does not have it.
    const series = new Map();
    samples.forEach((s, i) => {
      for (const t of s.targets) {
        const key = `${t.group} ${t.id}`;
        if (!series.has(key)) series.set(key, { label: label(t), points: new Array(samples.length).fill(null) });
        series.get(key).points[i] = value(t);
      }
    });
    // Stacked: each target's band sits on the ones before it, so equal values do not hide
    // each other and the top edge is the balancer's total.
    const base = new Array(samples.length).fill(0);
    for (const s of series.values()) {
      s.base = base.slice();
      s.points.forEach((v, i) => { base[i] += v || 0; });
    }
    let top = Math.max(0, ...base);
    const step = gridStep(top, integer);
    top = step * 4;

    const pad = { left: 44, right: 8, top: 8, bottom: 20 };
    const pw = w - pad.left - pad.right;
    const ph = h - pad.top - pad.bottom;
    const x = (t) => pad.left + ((t - start) / WINDOW_SECONDS) * pw;
    const y = (v) => pad.top + ph - (v / top) * ph;

    g.font = '11px system-ui, "DejaVu Sans", sans-serif';
    g.lineWidth = 1;
    g.fillStyle = '#5f6b7a';
    g.textBaseline = 'middle';
    g.textAlign = 'right';
    for (let i = 0; i <= 4; i++) {
      const v = step * i;
      const yy = Math.round(y(v)) + 0.5;
      g.strokeStyle = i === 0 ? '#b4bbc3' : '#e9ebed';
      g.beginPath();
      g.moveTo(pad.left, yy);
      g.lineTo(w - pad.right, yy);
      g.stroke();
      g.fillText(String(Number(v.toFixed(2))), pad.left - 6, yy);
    }
    g.textBaseline = 'top';
    g.textAlign = 'center';
    for (let m = 5; m >= 0; m--) {
      const xx = x(end - m * 60);
      g.fillText(m === 0 ? 'now' : `-${m}m`, Math.min(Math.max(xx, pad.left + 8), w - pad.right - 12), h - pad.bottom + 5);
    }

    g.lineWidth = 1.5;
    g.lineJoin = 'round';
    for (const [key, s] of series) {
      const color = seriesColor(key);
      // One band per run of samples that have the target.
      let run = [];
      const flush = () => {
        if (run.length === 0) return;
        const upper = run.map((i) => [x(samples[i].time), y(s.base[i] + s.points[i])]);
        const lower = run.map((i) => [x(samples[i].time), y(s.base[i])]).reverse();
        g.beginPath();
        [...upper, ...lower].forEach(([px, py], j) => (j ? g.lineTo(px, py) : g.moveTo(px, py)));
        g.closePath();
        g.globalAlpha = 0.22;
        g.fillStyle = color;
        g.fill();
        g.globalAlpha = 1;
        g.beginPath();
        upper.forEach(([px, py], j) => (j ? g.lineTo(px, py) : g.moveTo(px, py)));
        g.strokeStyle = color;
        g.stroke();
        run = [];
      };
      s.points.forEach((v, i) => (v === null ? flush() : run.push(i)));
      flush();
    }

    // The legend: every target with its latest value (targets gone show their last one).
    legend.replaceChildren(...[...series].map(([key, s]) => {
      const last = [...s.points].reverse().find((v) => v !== null);
      const present = s.points[s.points.length - 1] !== null;
      const swatch = el('span', { class: 'swatch' });
      swatch.style.background = seriesColor(key);
      const item = el('span', { class: 'key' }, swatch, el('span', { class: 'mono' }, s.label),
        el('span', { class: 'value' }, present ? format(last) : 'gone'));
      item.dataset.series = s.label;
      return item;
    }));
  }

  // ---- The event stream ----

  function connection(kind, text) {
    $('conn').className = `conn conn-${kind}`;
    $('conn-text').textContent = text;
    $('main').classList.toggle('stale', kind === 'down');
  }

  function addSample(sample) {
    const last = state.samples[state.samples.length - 1];
    if (last && sample.time <= last.time) return; // already had it (stream start overlap)
    state.samples.push(sample);
    const oldest = sample.time - WINDOW_SECONDS;
    while (state.samples.length && state.samples[0].time < oldest) state.samples.shift();
  }

  // With admin.read_requires_token the stream needs the token too. EventSource cannot send
  // headers, so then (and only then) the token rides in the URL as ?access_token=; the
  // server logs no request targets. Whether reads need it is learnt from a cheap read.
  let source = null;
  let readsNeedToken = false;

  async function connect() {
    if (source) { source.close(); source = null; }
    try {
      // Without the token on purpose: a 401 is the answer to "do reads need it?".
      const probe = await fetch('/api/history', { method: 'HEAD', cache: 'no-store' });
      readsNeedToken = probe.status === 401;
      if (readsNeedToken && !admin()) {
        connection('down', 'Locked: reading needs the admin token');
        notice('info', 'This stack sets admin.read_requires_token: enter the admin token (STATE_DIR/admin.token) to see it.');
        return;
      }
    } catch (_) {
      connection('down', 'Disconnected; retrying…');
      setTimeout(connect, 5000);
      return;
    }
    const url = readsNeedToken && admin()
      ? `/api/events?access_token=${encodeURIComponent(state.token)}`
      : '/api/events';
    const es = new EventSource(url);
    source = es;
    es.addEventListener('history', (e) => {
      state.samples = JSON.parse(e.data).samples;
    });
    es.addEventListener('tick', (e) => {
      const tick = JSON.parse(e.data);
      state.status = tick.status;
      state.activity = tick.activity;
      if (tick.sample) addSample(tick.sample);
      connection('live', `Live · ${clock(Date.now() / 1000)}`);
      render();
    });
    es.addEventListener('error', () => {
      if (es !== source) return;
      if (es.readyState === EventSource.CLOSED) {
        // Refused (e.g. 503: too many consoles, 401: the token changed): try again later.
        connection('down', 'Disconnected; retrying…');
        setTimeout(connect, 5000);
      } else {
        connection('down', 'Reconnecting… (a restarted up listens on a new address: see its output)');
      }
    });
  }

  // ---- Start ----

  $('token-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const token = $('token-input').value.trim();
    $('token-input').value = '';
    if (token) verify(token, false);
  });
  $('token-forget').addEventListener('click', () => {
    forget();
    notice('info', 'Token forgotten: the console is read-only.');
  });
  $('notice-close').addEventListener('click', () => { $('notice').hidden = true; });
  window.addEventListener('resize', drawCharts);

  renderMode();
  // The token first (if this tab kept one), so the stream can use it when reads need it.
  (state.token ? verify(state.token, true) : Promise.resolve()).then(connect);
})();
