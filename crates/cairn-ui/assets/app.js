// Cairn's web UI: one page, hash routes, its data from /api/v1. No framework, no build step.
// Data from the API is only ever set with textContent; the only HTML parsed is the server's own
// rendered fragments (/ui/fragments, every value escaped there), and charts of metric histories
// are SVG images the server draws.
'use strict';

const main = document.getElementById('main');
const SVG = 'http://www.w3.org/2000/svg';
const STATES = ['fresh', 'stale', 'running', 'restored', 'failed', 'never_run'];
const GRAPH_LIMIT = 2000;
let who = { user: '', actions: false };
let timer = null; // the current page's refresh timer
let route = 0; // bumps on every navigation: stale answers are dropped

// ---- helpers -------------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v);
  }
  for (const c of children.flat()) if (c) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

class ApiError extends Error {
  constructor(status, body) {
    const e = (body && body.error) || {};
    super(e.message || `HTTP ${status}`);
    this.hint = e.hint;
  }
}

async function api(path, options) {
  const response = await fetch('/api/v1' + path, options);
  const body = await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

function post(path, body) {
  return api(path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
}

function errorBox(e) {
  return h('div', { class: 'error', role: 'alert' }, e.message, e.hint ? h('div', { class: 'muted' }, 'Hint: ' + e.hint) : null);
}

function show(...nodes) {
  main.replaceChildren(...nodes.filter((n) => n !== null && n !== undefined && n !== false));
}

function time(ms) {
  return ms ? new Date(ms).toISOString().replace('T', ' ').slice(0, 19) : '';
}

function num(v) {
  if (v === null || v === undefined) return '';
  if (typeof v !== 'number') return String(v);
  return Math.abs(v) >= 1e5 || (v !== 0 && Math.abs(v) < 1e-3) ? v.toExponential(3) : String(+v.toFixed(4));
}

function short(id) {
  return id ? id.slice(0, 8) : '';
}

function badge(state) {
  return h('span', { class: 'badge state-' + state }, state.replace('_', ' '));
}

function kv(pairs) {
  return h('dl', { class: 'kv' }, pairs.filter(([, v]) => v !== undefined && v !== null && v !== '').flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
}

function every(ms, fn) {
  clearInterval(timer);
  timer = setInterval(fn, ms);
}

// ---- routing -------------------------------------------------------------------------

const routes = [
  [/^#\/?$/, () => pipelinePage()],
  [/^#\/pipeline$/, () => pipelinePage()],
  [/^#\/runs$/, () => runsPage()],
  [/^#\/runs\/([^/]+)$/, (m) => runPage(m[1])],
  [/^#\/experiments\/[^/]+\/runs\/([^/]+)/, (m) => runPage(m[1])],
  [/^#\/experiments(\/[^/]+)?$/, () => runsPage()],
  [/^#\/compare\/(.+)$/, (m) => comparePage(m[1].split(','))],
  [/^#\/models$/, () => modelsPage()],
  [/^#\/models\/([^/]+)(\/versions\/\d+)?$/, (m) => modelPage(m[1])],
  [/^#\/monitor\/([^/]+)$/, (m) => monitorPage(m[1])],
  [/^#\/alerts$/, () => alertsPage()],
  [/^#\/alerts\/([^/]+)$/, (m) => alertPage(m[1])],
  [/^#\/lineage\/(.+)$/, (m) => lineagePage(m[1])],
  [/^#\/trace\/([^/]+)$/, (m) => tracePage(m[1])],
];

function navigate() {
  route += 1;
  clearInterval(timer);
  const hash = location.hash || '#/pipeline';
  const section = hash.split('/')[1] || 'pipeline';
  for (const a of document.querySelectorAll('nav a')) {
    const on = a.dataset.nav === section || (section === 'experiments' && a.dataset.nav === 'runs') ||
      (section === 'compare' && a.dataset.nav === 'runs') || (section === 'monitor' && a.dataset.nav === 'models');
    a.classList.toggle('active', on);
    if (on) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  for (const [pattern, page] of routes) {
    const m = hash.match(pattern);
    if (m) {
      const mine = route;
      Promise.resolve(page(m.map((x) => (x ? decodeURIComponent(x) : x)))).catch((e) => {
        if (mine === route) show(errorBox(e));
      });
      return;
    }
  }
  show(h('h1', {}, 'Not found'), h('p', {}, 'No page at ', h('code', {}, hash), '.'));
}

function current(mine) {
  return mine === route;
}

document.getElementById('search').addEventListener('submit', async (event) => {
  event.preventDefault();
  const q = document.getElementById('search-box').value.trim();
  if (!q) return;
  // A trace id, a run, a model, or else a tracked path.
  const tries = [
    [`/trace/${encodeURIComponent(q)}`, `#/trace/${encodeURIComponent(q)}`],
    [`/runs/${encodeURIComponent(q)}`, `#/runs/${encodeURIComponent(q)}`],
    [`/models/${encodeURIComponent(q)}/versions`, `#/models/${encodeURIComponent(q)}`],
  ];
  for (const [path, target] of tries) {
    try {
      await api(path);
      location.hash = target;
      return;
    } catch (_) { /* try the next kind */ }
  }
  location.hash = '#/lineage/' + encodeURIComponent(q);
});

// ---- pipeline ------------------------------------------------------------------------

let selectedStage = null;
let stageFilter = '';

async function pipelinePage() {
  const mine = route;
  const render = async () => {
    const graph = await api('/pipeline');
    if (!current(mine)) return;
    drawPipeline(graph);
    every(graph.running ? 1000 : 5000, () => render().catch(() => {}));
  };
  await render();
}

function drawPipeline(graph) {
  const counts = {};
  for (const st of graph.stages) counts[st.state] = (counts[st.state] || 0) + 1;
  const legend = h('div', { class: 'legend', 'aria-label': 'States' },
    STATES.filter((st) => counts[st]).map((st) => h('span', {}, badge(st), ' ', counts[st])));
  const title = h('h1', {}, 'Pipeline ', graph.running ? h('span', { class: 'badge state-running', id: 'run-live' }, 'running ' + short(graph.running)) : null);
  const filter = h('input', { type: 'search', placeholder: 'Show stages whose name contains…', value: stageFilter, 'aria-label': 'Filter stages',
    oninput: (e) => { stageFilter = e.target.value; drawPipeline(graph); document.querySelector('.toolbar input').focus(); } });
  const parts = [title, graph.error ? errorBox({ message: graph.error }) : null, h('div', { class: 'toolbar' }, filter), legend];
  let stages = graph.stages.map((st, i) => ({ ...st, i }));
  if (stageFilter) stages = stages.filter((st) => st.name.includes(stageFilter));
  if (stages.length > GRAPH_LIMIT) {
    parts.push(h('div', { class: 'card', id: 'too-many' },
      `This pipeline has ${stages.length} stages, more than the ${GRAPH_LIMIT} a graph shows at once. `,
      'Type part of a stage name above to choose a subset.'));
    show(...parts);
    return;
  }
  const keep = new Set(stages.map((st) => st.i));
  const svg = graphSvg(graph, keep);
  const panel = h('aside', { class: 'card', id: 'stage-panel', 'aria-live': 'polite' });
  const sel = graph.stages.find((st) => st.name === selectedStage);
  if (sel) stagePanel(panel, sel); else panel.append(h('p', { class: 'muted' }, 'Select a stage to see why it would run, its last materialization and its log.'));
  parts.push(h('div', { class: 'layout' }, h('div', { class: 'graph-wrap' }, svg), panel));
  show(...parts);
}

function graphSvg(graph, keep) {
  const { positions, width, height } = graph.layout;
  const W = 180, H = 40, pad = 12;
  const svg = s('svg', { width: width + 2 * pad, height: height + 2 * pad, role: 'img', 'aria-label': 'Pipeline graph', id: 'graph' });
  const index = new Map(graph.stages.map((st, i) => [st.name, i]));
  for (const [from, to] of graph.edges) {
    const a = index.get(from), b = index.get(to);
    if (!keep.has(a) || !keep.has(b)) continue;
    const [x1, y1] = positions[a], [x2, y2] = positions[b];
    const sx = x1 + W + pad, sy = y1 + H / 2 + pad, ex = x2 + pad, ey = y2 + H / 2 + pad, mx = (sx + ex) / 2;
    svg.append(s('path', { class: 'edge', d: `M${sx},${sy} C${mx},${sy} ${mx},${ey} ${ex},${ey}` }));
  }
  graph.stages.forEach((st, i) => {
    if (!keep.has(i)) return;
    const [x, y] = positions[i];
    const label = st.name.length > 24 ? st.name.slice(0, 23) + '…' : st.name;
    const node = s('g', {
      class: 'node' + (st.name === selectedStage ? ' selected' : ''), transform: `translate(${x + pad},${y + pad})`,
      tabindex: 0, role: 'button', 'data-stage': st.name, 'data-state': st.state, 'aria-label': `${st.name}: ${st.state.replace('_', ' ')}`,
      onclick: () => { selectedStage = st.name; drawPipeline(graph); },
      onkeydown: (e) => { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); selectedStage = st.name; drawPipeline(graph); } },
    }, s('title', {}, `${st.name} — ${st.state.replace('_', ' ')}`),
    s('rect', { width: W, height: H, fill: `var(--${st.state === 'never_run' ? 'never' : st.state})` }),
    s('text', { x: 10, y: 25 }, label));
    svg.append(node);
  });
  return svg;
}

function heatMap(parts) {
  const bar = h('div', { class: 'heat', role: 'img', 'aria-label': `${parts.total} partitions` });
  for (const [first, last, count, state] of parts.ranges) {
    const span = h('span', { class: state, title: `${first} … ${last}: ${count} ${state}` });
    span.style.flexGrow = String(count);
    bar.append(span);
  }
  return bar;
}

function stagePanel(panel, st) {
  const last = st.last;
  panel.append(
    h('h2', {}, st.name, ' ', badge(st.state)),
    st.reasons.length ? h('div', {}, h('strong', {}, 'Why it would run'), h('ul', {}, st.reasons.map((r) => h('li', {}, r)))) : h('p', { class: 'muted' }, 'Up to date: nothing it depends on changed.'),
    h('div', {}, h('strong', {}, 'Command'), h('pre', { class: 'mono' }, st.cmd.join('\n'))),
    st.deps.length ? h('div', {}, h('strong', {}, 'Reads'), h('ul', {}, st.deps.map((d) => h('li', {}, h('a', { href: '#/lineage/' + encodeURIComponent(d) }, d))))) : null,
    h('div', {}, h('strong', {}, 'Writes'), h('ul', {}, st.outs.map((o) => h('li', {},
      h('a', { href: '#/lineage/' + encodeURIComponent(o.path) }, o.path), ' ',
      o.digest ? h('code', { title: o.digest }, o.digest.slice(0, 12)) : h('span', { class: 'muted' }, 'not recorded'))))),
    last ? h('div', {}, h('strong', {}, 'Last materialization'), kv([
      ['run', h('a', { href: '#/runs/' + last.run_id }, short(last.run_id))], ['action', last.action],
      ['started', time(last.start_time)], ['duration', (last.wall_ms / 1000).toFixed(2) + ' s'],
      ['CPU', last.cpu_ms != null ? (last.cpu_ms / 1000).toFixed(2) + ' s' : null],
      ['max memory', last.max_rss_kb != null ? (last.max_rss_kb / 1024).toFixed(1) + ' MiB' : null],
    ])) : h('p', { class: 'muted' }, 'No recorded run has run or restored it yet.'),
    last && last.error ? h('div', { class: 'error' }, last.error) : null,
    st.checks.length ? h('div', {}, h('strong', {}, 'Checks'), h('ul', { id: 'checks' }, st.checks.map((c) =>
      h('li', { 'data-check': c.state }, h('span', { class: 'badge state-' + (c.state === 'passed' ? 'fresh' : c.state === 'failed' ? 'failed' : 'never_run') }, c.state.replace('_', ' ')), ' ', c.name, c.message ? h('div', { class: 'muted' }, c.message) : null)))) : null,
    st.parts ? h('div', {}, h('strong', {}, `Partitions (${st.parts.total})`), heatMap(st.parts)) : null,
  );
  const log = h('pre', { class: 'log', 'aria-label': 'Log' }, '…');
  panel.append(h('div', {}, h('strong', {}, 'Log'), log));
  api(`/pipeline/stages/${encodeURIComponent(st.name)}/log`).then((r) => { log.textContent = r.log || '(empty)'; }, (e) => { log.textContent = e.message; });
}

// ---- runs ----------------------------------------------------------------------------

const runsState = { filter: '', order: '-start_time', columns: null, selected: new Set() };

async function runsPage() {
  const mine = route;
  const filter = h('input', { type: 'search', id: 'run-filter', value: runsState.filter, 'aria-label': 'Filter runs',
    placeholder: "MLflow filter: metrics.acc > 0.9 and params.lr = '0.01'" });
  const form = h('form', { class: 'toolbar', onsubmit: (e) => { e.preventDefault(); runsState.filter = filter.value; runsPage(); } },
    filter, h('button', { type: 'submit' }, 'Filter'),
    h('button', { type: 'button', id: 'compare', onclick: () => {
      if (runsState.selected.size >= 2) location.hash = '#/compare/' + [...runsState.selected].join(',');
    } }, 'Compare selected'));
  const status = h('p', { class: 'muted', 'aria-live': 'polite' });
  const tableWrap = h('div', { class: 'scroll' });
  const chooser = h('details', { class: 'card' }, h('summary', {}, 'Columns'));
  const more = h('button', { id: 'more' }, 'Load more');
  show(h('h1', {}, 'Runs'), form, chooser, status, tableWrap, h('p', {}, more));
  let rows = [];
  let token = null;
  let page = null;
  // The column chooser's keys come once, beside the first page (not with every page).
  const keys = api('/runs/keys');
  const load = async () => {
    const q = new URLSearchParams({ max_results: '100', order_by: runsState.order });
    if (runsState.filter) q.set('filter', runsState.filter);
    if (token) q.set('page_token', token);
    page = await api('/runs?' + q);
    if (!current(mine)) return;
    rows = rows.concat(page.runs);
    token = page.next_page_token;
    if (!runsState.columns) {
      const seen = (kind) => [...new Set(page.runs.flatMap((r) => Object.keys(r[kind])))].sort();
      runsState.columns = new Set([...seen('metrics').slice(0, 6).map((k) => 'metrics.' + k), ...seen('params').slice(0, 4).map((k) => 'params.' + k)]);
    }
    draw();
    keys.then((k) => { if (current(mine)) drawChooser(chooser, k, draw); }, () => {});
  };
  const draw = () => {
    status.textContent = `${rows.length} of ${page.total} runs`;
    more.hidden = !token;
    tableWrap.replaceChildren(runsTable(rows));
  };
  more.addEventListener('click', () => load().catch((e) => status.replaceChildren(errorBox(e))));
  try { await load(); } catch (e) { status.replaceChildren(errorBox(e)); }
}

function drawChooser(chooser, runKeys, redraw) {
  const keys = [...runKeys.metrics.map((k) => 'metrics.' + k), ...runKeys.params.map((k) => 'params.' + k)];
  chooser.replaceChildren(h('summary', {}, `Columns (${runsState.columns.size} of ${keys.length})`),
    h('div', { class: 'actions' }, keys.map((k) => h('label', {}, h('input', {
      type: 'checkbox', checked: runsState.columns.has(k),
      onchange: (e) => { if (e.target.checked) runsState.columns.add(k); else runsState.columns.delete(k); redraw(); },
    }), ' ', k))));
}

function runsTable(rows) {
  const cols = [...runsState.columns];
  const sortBy = (key) => () => { runsState.order = runsState.order === '-' + key ? key : '-' + key; runsPage(); };
  const arrow = (key) => (runsState.order === key ? ' ▲' : runsState.order === '-' + key ? ' ▼' : '');
  const th = (label, key) => h('th', { class: 'sortable', tabindex: 0, scope: 'col', onclick: sortBy(key), onkeydown: (e) => { if (e.key === 'Enter') sortBy(key)(); } }, label + arrow(key));
  return h('table', { id: 'runs' },
    h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, h('span', { class: 'hidden' }, 'Select')), th('Run', 'name'), th('Started', 'start_time'),
      h('th', { scope: 'col' }, 'Status'), h('th', { scope: 'col' }, 'User'), h('th', { scope: 'col' }, 'Commit'),
      cols.map((c) => th(c.replace(/^(metrics|params)\./, ''), c)))),
    h('tbody', {}, rows.map((r) => h('tr', { 'data-run': r.run_id },
      h('td', {}, h('input', { type: 'checkbox', 'aria-label': 'select ' + r.name, checked: runsState.selected.has(r.run_id),
        onchange: (e) => { if (e.target.checked) runsState.selected.add(r.run_id); else runsState.selected.delete(r.run_id); } })),
      h('td', {}, h('a', { href: '#/runs/' + r.run_id }, r.name || short(r.run_id))),
      h('td', {}, time(r.start_time)), h('td', {}, r.status), h('td', {}, r.user), h('td', { class: 'mono' }, (r.commit || '').slice(0, 8)),
      cols.map((c) => {
        const [kind, ...rest] = c.split('.');
        const key = rest.join('.');
        const v = kind === 'metrics' ? r.metrics[key] : r.params[key];
        return h('td', { class: kind === 'metrics' ? 'num' : '' }, kind === 'metrics' ? num(v) : (v ?? ''));
      })))));
}

async function runPage(id) {
  const mine = route;
  const run = await api('/runs/' + encodeURIComponent(id));
  if (!current(mine)) return;
  const charts = h('div', { class: 'grid', id: 'charts' });
  show(
    h('h1', {}, 'Run ', run.name || short(run.run_id), ' ', h('span', { class: 'badge state-' + (run.status === 'FINISHED' ? 'fresh' : run.status === 'RUNNING' ? 'running' : run.status === 'FAILED' ? 'failed' : 'never_run') }, run.status)),
    h('div', { class: 'card' }, kv([['id', h('code', {}, run.run_id)], ['started', time(run.start_time)], ['ended', time(run.end_time)], ['user', run.user],
      ['commit', run.commit ? h('code', {}, run.commit + (run.dirty ? ' (dirty)' : '')) : null], ['parent', run.parent ? h('a', { href: '#/runs/' + run.parent }, short(run.parent)) : null]])),
    h('div', { class: 'grid' },
      h('div', { class: 'card' }, h('h2', {}, 'Params'), table(['param', 'value'], Object.entries(run.params))),
      h('div', { class: 'card' }, h('h2', {}, 'Metrics'), table(['metric', 'latest'], Object.entries(run.metrics).map(([k, v]) => [k, num(v)])))),
    run.stages.length ? h('div', { class: 'card' }, h('h2', {}, 'Stages'), table(['stage', 'action', 'wall', 'CPU', 'max memory'],
      run.stages.map((st) => [st.stage, st.action, (st.wall_ms / 1000).toFixed(2) + ' s', st.cpu_ms != null ? (st.cpu_ms / 1000).toFixed(2) + ' s' : '', st.max_rss_kb != null ? (st.max_rss_kb / 1024).toFixed(1) + ' MiB' : '']))) : null,
    h('h2', {}, 'Metric histories'), charts);
  charts.replaceChildren(...Object.keys(run.metrics).map((k) => h('div', { class: 'card' }, h('strong', {}, k), historyChart([run.run_id], k))));
  if (run.status === 'RUNNING') every(2000, () => { runPage(id).catch(() => {}); });
}

// A metric's history for some runs, drawn on the server (the rendering `cairn plots show`
// uses) from at most 1,000 points per run.
function historyChart(runs, key) {
  const q = new URLSearchParams({ runs: runs.join(','), key, points: '1000' });
  return h('img', { class: 'chart-img', src: '/ui/chart/history.svg?' + q, alt: `${key} over steps` });
}

// A server-rendered fragment (every value escaped there) placed in `into`.
async function fragment(path, into) {
  const response = await fetch(path);
  const text = await response.text();
  if (!response.ok) {
    let body = null;
    try { body = JSON.parse(text); } catch (_) { /* not JSON */ }
    throw new ApiError(response.status, body);
  }
  const t = document.createElement('template');
  t.innerHTML = text;
  into.replaceChildren(t.content);
}

function table(headers, rows) {
  return h('table', {}, h('thead', {}, h('tr', {}, headers.map((x) => h('th', { scope: 'col' }, x)))),
    h('tbody', {}, rows.map((r) => h('tr', {}, r.map((c) => h('td', {}, c))))));
}

const PALETTE = ['#0072B2', '#E69F00', '#009E73', '#D55E00', '#CC79A7', '#56B4E9', '#F0E442', '#000000']; // render::COLOURS

// Lines on shared axes (each series [[x, y], ...]), drawn as SVG; `time`: x is epoch ms.
function lineChart(series, { time: isTime = false } = {}) {
  const W = 480, H = 200, L = 48, B = 22;
  let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
  for (const { points } of series) for (const [x, y] of points) {
    if (!Number.isFinite(y)) continue;
    x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y);
  }
  const svg = s('svg', { class: 'chart', viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': 'chart' });
  if (!Number.isFinite(x0)) return svg;
  if (x1 === x0) x1 = x0 + (isTime ? 60000 : 1);
  if (y1 === y0) { y1 += 1; y0 -= 1; }
  const xLabel = (x) => (isTime ? new Date(x).toISOString().slice(11, 16) : num(x));
  const sx = (x) => L + (x - x0) / (x1 - x0) * (W - L - 8), sy = (y) => 8 + (1 - (y - y0) / (y1 - y0)) * (H - B - 8);
  svg.append(s('line', { class: 'axis', x1: L, y1: H - B, x2: W - 8, y2: H - B }), s('line', { class: 'axis', x1: L, y1: 8, x2: L, y2: H - B }),
    s('text', { x: 2, y: 14 }, num(y1)), s('text', { x: 2, y: H - B }, num(y0)), s('text', { x: L, y: H - 4 }, xLabel(x0)), s('text', { x: W - 50, y: H - 4 }, xLabel(x1)));
  series.forEach(({ label, points }, i) => {
    const d = points.filter(([, y]) => Number.isFinite(y)).map(([x, y], j) => `${j ? 'L' : 'M'}${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join('');
    const color = PALETTE[i % PALETTE.length];
    svg.append(s('path', { d, fill: 'none', stroke: color, 'stroke-width': 1.5 }, s('title', {}, label)));
    // A series of one point (a final metric) is a dot.
    if (points.length === 1) svg.append(s('circle', { cx: sx(points[0][0]), cy: sy(points[0][1]), r: 3.5, fill: color }, s('title', {}, label)));
  });
  return svg;
}

async function comparePage(ids) {
  const mine = route;
  const cmp = await api('/compare?runs=' + ids.map(encodeURIComponent).join(','));
  if (!current(mine)) return;
  let all = false;
  const tables = h('div', {});
  const drawTables = () => {
    const rows = (items, fmt) => items.filter((x) => all || x.differs).map((x) => h('tr', { class: x.differs ? 'differs' : '' }, h('th', { scope: 'row' }, x.key), x.values.map((v) => h('td', { class: 'num' }, fmt(v)))));
    const head = h('tr', {}, h('th', {}, ''), cmp.runs.map((r, i) => h('th', { scope: 'col' }, h('span', { class: 'badge' }, i + 1), ' ', h('a', { href: '#/runs/' + r.run_id }, r.name || short(r.run_id)))));
    tables.replaceChildren(
      h('h2', {}, 'Params'), h('div', { class: 'scroll' }, h('table', { id: 'compare-params' }, h('thead', {}, head.cloneNode(true)), h('tbody', {}, rows(cmp.params, (v) => v ?? '—')))),
      h('h2', {}, 'Metrics'), h('div', { class: 'scroll' }, h('table', { id: 'compare-metrics' }, h('thead', {}, head), h('tbody', {}, rows(cmp.metrics, (v) => (v == null ? '—' : num(v)))))));
  };
  const toggle = h('label', {}, h('input', { type: 'checkbox', onchange: (e) => { all = e.target.checked; drawTables(); } }), ' show values that are the same');
  const charts = h('div', { class: 'grid' });
  show(h('h1', {}, `Compare ${cmp.runs.length} runs`), toggle, tables, h('h2', {}, 'Parallel coordinates'), parallel(cmp), h('h2', {}, 'Metric histories'), charts);
  drawTables();
  charts.replaceChildren(...cmp.metrics.map((m) => h('div', { class: 'card' }, h('strong', {}, m.key),
    historyChart(cmp.runs.filter((r) => m.key in r.metrics).map((r) => r.run_id), m.key))));
}

// Parallel coordinates over numeric params and metrics: one axis each, one line per run.
function parallel(cmp) {
  const axes = [...cmp.params.filter((p) => p.values.every((v) => v !== null && !isNaN(+v))).map((p) => ({ key: p.key, values: p.values.map(Number) })),
    ...cmp.metrics.map((m) => ({ key: m.key, values: m.values }))];
  const W = Math.max(360, axes.length * 140), H = 220;
  const svg = s('svg', { class: 'chart', viewBox: `0 0 ${W} ${H}`, id: 'parallel', role: 'img', 'aria-label': 'parallel coordinates' });
  if (axes.length < 2) return h('p', { class: 'muted' }, 'Parallel coordinates need two numeric params or metrics.');
  const x = (i) => 40 + i * (W - 80) / (axes.length - 1);
  axes.forEach((a, i) => {
    const vals = a.values.filter((v) => v !== null);
    a.min = Math.min(...vals); a.max = Math.max(...vals);
    svg.append(s('line', { class: 'axis', x1: x(i), y1: 20, x2: x(i), y2: H - 30 }), s('text', { x: x(i) - 30, y: H - 10 }, a.key.slice(0, 18)));
  });
  cmp.runs.forEach((r, j) => {
    const pts = axes.map((a, i) => {
      const v = a.values[j];
      if (v === null) return null;
      const t = a.max === a.min ? 0.5 : (v - a.min) / (a.max - a.min);
      return `${x(i)},${(H - 30 - t * (H - 50)).toFixed(1)}`;
    }).filter(Boolean);
    svg.append(s('polyline', { points: pts.join(' '), fill: 'none', stroke: PALETTE[j % PALETTE.length], 'stroke-width': 2 }, s('title', {}, r.name || r.run_id)));
  });
  return svg;
}

// ---- registry ------------------------------------------------------------------------

async function modelsPage() {
  const mine = route;
  const models = await api('/models');
  if (!current(mine)) return;
  show(h('h1', {}, 'Models'), models.length ? table(['model', 'latest', 'aliases', 'monitoring'], models.map((m) => [
    h('a', { href: '#/models/' + encodeURIComponent(m.name) }, m.name), m.latest_version ?? '',
    Object.entries(m.aliases).map(([a, v]) => `${a} → ${v}`).join(', '),
    h('a', { href: '#/monitor/' + encodeURIComponent(m.name) }, 'monitor')])) : h('p', { class: 'muted' }, 'No registered models yet: `cairn model register`.'));
}

async function modelPage(name) {
  const mine = route;
  const base = `/models/${encodeURIComponent(name)}`;
  const [versions, history, aliases] = await Promise.all([api(`${base}/versions`), api(`${base}/history`), api(`${base}/aliases`)]);
  if (!current(mine)) return;
  const message = h('div', { 'aria-live': 'polite', id: 'action-result' });
  const act = (fn) => async () => {
    try {
      await fn();
      await modelPage(name);
      document.getElementById('action-result').replaceChildren(h('p', { class: 'muted' }, 'Done.'));
    } catch (e) { message.replaceChildren(errorBox(e)); }
  };
  const off = who.actions ? null : 'Actions need your identity: use a loopback `cairn ui` or the CLI.';
  const aliasForm = h('form', { class: 'card toolbar', id: 'alias-form', onsubmit: (e) => {
    e.preventDefault();
    const f = e.target;
    act(() => post(`/models/${encodeURIComponent(name)}/aliases/${encodeURIComponent(f.alias.value)}`, { version: +f.version.value, reason: f.reason.value }))();
  } },
  h('strong', {}, 'Move an alias'), h('label', {}, 'alias ', h('input', { name: 'alias', required: true, value: 'production', size: 12 })),
  h('label', {}, 'to version ', h('select', { name: 'version' }, versions.map((v) => h('option', { value: v.version }, v.version)))),
  h('label', {}, 'reason ', h('input', { name: 'reason', size: 24 })), h('button', { class: 'primary', type: 'submit', disabled: !!off, title: off }, 'Move'));
  // Only an alias's latest move can be rolled back.
  const latestMove = {};
  history.forEach((e, i) => { if (latestMove[e.alias] === undefined || history[latestMove[e.alias]].time_ms <= e.time_ms) latestMove[e.alias] = i; });
  const rollback = (e) => h('button', { type: 'button', disabled: !!off, title: off || `point ${e.alias} back at version ${e.previous}`, 'data-rollback': `${e.alias}:${e.previous}`,
    onclick: act(() => post(`${base}/aliases/${encodeURIComponent(e.alias)}`, { version: e.previous, reason: `roll back to version ${e.previous}` })) }, 'Roll back');
  show(h('h1', {}, name, ' ', h('a', { href: '#/monitor/' + encodeURIComponent(name), class: 'muted' }, 'monitoring →')), message,
    h('h2', {}, 'Aliases'), aliases.length ? h('div', { class: 'scroll' }, table(['alias', 'version', 'policy', 'canary', 'shadows', 'traffic'],
      aliases.map((a) => [a.alias, a.version,
        a.policy ? [`${a.policy.approvals} approval(s)`, ...a.policy.require].join('; ') : 'none',
        a.canary ? `version ${a.canary} at ${a.weight}%` : '—', a.shadows.length ? a.shadows.join(', ') : '—', rolloutForm(base, a, versions, off, act)]))) : h('p', { class: 'muted' }, 'No aliases yet.'),
    aliasForm,
    h('h2', {}, 'Versions'), ...versions.slice().reverse().map((v) => versionCard(name, v, off, act)),
    h('h2', {}, 'Alias history'), table(['time', 'alias', 'version', 'from', 'by', 'reason', ''],
      history.map((e, i) => [e.time, e.alias, e.version ?? 'removed', e.previous ?? '', e.user, e.reason,
        i === latestMove[e.alias] && e.previous != null && e.version != null ? rollback(e) : ''])));
}

// Set a canary (and its share of traffic) on an alias, or clear the rollout.
function rolloutForm(base, a, versions, off, act) {
  const canary = h('select', { name: 'canary', 'aria-label': `canary for ${a.alias}` },
    versions.filter((v) => v.version !== a.version).map((v) => h('option', { value: v.version, selected: v.version === a.canary }, v.version)));
  const weight = h('input', { name: 'weight', type: 'number', min: 0, max: 100, value: a.canary ? a.weight : 10, size: 4, 'aria-label': `canary weight for ${a.alias}` });
  const url = `${base}/rollouts/${encodeURIComponent(a.alias)}`;
  return h('span', { class: 'actions', 'data-rollout': a.alias },
    canary, weight, '%',
    h('button', { type: 'button', disabled: !!off || !canary.options.length, title: off, onclick: act(() => post(url, { canary: +canary.value, weight: +weight.value })) }, 'Set canary'),
    a.canary || a.shadows.length ? h('button', { type: 'button', disabled: !!off, title: off, onclick: act(() => post(url, { clear: true })) }, 'Clear') : null);
}

function versionCard(name, v, off, act) {
  const comment = h('input', { name: 'comment', placeholder: 'what you checked', size: 28, 'aria-label': `approval comment for version ${v.version}` });
  const approve = h('button', { type: 'button', disabled: !!off, title: off, 'data-approve': v.version, onclick: act(() => {
    if (!comment.value.trim()) throw new Error('An approval needs a comment saying what was checked.');
    return post(`/models/${encodeURIComponent(name)}/versions/${v.version}/approve`, { comment: comment.value });
  }) }, 'Approve');
  const lineage = v.lineage && typeof v.lineage === 'object' ? v.lineage : {};
  return h('div', { class: 'card', 'data-version': v.version },
    h('strong', {}, `Version ${v.version}`), ' ', v.aliases.map((a) => h('span', { class: 'badge state-fresh' }, a)), ' ',
    h('span', { class: 'muted' }, `${v.runtime} · by ${v.user} · ${time(v.creation_time)}`),
    kv([['digest', h('code', {}, v.digest)], ['run', v.run_id ? h('a', { href: '#/runs/' + v.run_id }, short(v.run_id)) : null],
      ['commit', lineage.commit ? h('code', {}, lineage.commit) : null], ['training-data profile', v.profile ? h('code', {}, v.profile.slice(0, 16)) : null],
      ['signature', v.signature ? h('code', {}, JSON.stringify(v.signature).slice(0, 300)) : null],
      ['approvals', v.approvals.map((a) => `${a.user}: ${a.comment}`).join('; ')]]),
    v.run_id ? h('p', {}, h('a', { href: '#/lineage/' + encodeURIComponent(`${name}@${v.version}`) }, 'lineage →')) : null,
    h('div', { class: 'actions' }, comment, approve));
}

// ---- monitoring ----------------------------------------------------------------------

async function monitorPage(model) {
  const mine = route;
  const [reports, alerts] = await Promise.all([api('/monitor/' + encodeURIComponent(model)), api('/alerts?all=true&model=' + encodeURIComponent(model))]);
  if (!current(mine)) return;
  const panels = h('div', { class: 'card drift-panels', id: 'drift-panels' }, h('p', { class: 'muted' }, 'Loading histograms…'));
  show(h('h1', {}, 'Monitoring ', model), reports.length ? null : h('p', { class: 'muted' }, 'No logged predictions yet.'),
    reports.length > 1 ? h('div', { class: 'card' }, h('h2', {}, 'Versions side by side'), versionsTable(reports)) : null,
    ...reports.map(versionReport), h('h2', {}, 'Alerts'), alertsTable(alerts),
    h('h2', {}, 'Drift per feature: training data and production'), panels);
  if (reports.length) await fragment('/ui/fragments/monitor/' + encodeURIComponent(model), panels);
  every(10000, () => monitorPage(model).catch(() => {}));
}

function totals(r) {
  const requests = r.traffic.reduce((a, w) => a + w.requests, 0);
  const errors = r.traffic.reduce((a, w) => a + w.errors, 0);
  const p95 = r.traffic.length ? Math.max(...r.traffic.map((w) => w.p95_ms)) : null;
  return { requests, errors, p95 };
}

// Canary against baseline: every served version's traffic, errors, latency, drift and quality.
function versionsTable(reports) {
  return h('div', { class: 'scroll' }, table(['version', 'roles', 'requests', 'error rate', 'worst p95', 'drifted features', 'quality'], reports.map((r) => {
    const t = totals(r);
    return [r.version, Object.entries(r.roles).map(([k, v]) => `${k} ${v}`).join(', '), t.requests,
      t.requests ? (100 * t.errors / t.requests).toFixed(1) + '%' : '', t.p95 == null ? '' : t.p95.toFixed(2) + ' ms',
      r.drift ? `${r.drift.drifted_features} (${Math.round(r.drift.share * 100)}%)` : '—',
      r.quality ? Object.entries(r.quality).filter(([k]) => k !== 'task').map(([k, v]) => `${k} ${num(v)}`).join(', ') : '—'];
  })));
}

function versionReport(r) {
  const windows = r.windows || [];
  const peak = Math.max(1, ...windows.map((w) => w[1] ?? w.rows));
  const traffic = h('div', { class: 'bars', role: 'img', 'aria-label': 'rows per minute' }, windows.map((w) => {
    const span = h('span', { title: `${time(w.start_ms)}: ${w.rows} rows, ${w.drifted_share == null ? '' : Math.round(w.drifted_share * 100) + '% drifted'}` });
    span.style.height = `${(100 * w.rows) / peak}%`;
    return span;
  }));
  const drift = r.drift ? r.drift.features : [];
  return h('div', { class: 'card', 'data-version': r.version },
    h('h2', {}, `Version ${r.version}`, ' ', r.drift ? h('span', { class: 'badge ' + (r.drift.drifted ? 'state-failed' : 'state-fresh') }, r.drift.drifted ? 'drifted' : 'no drift') : null),
    kv([['predictions', r.predictions], ['rows', r.rows], ['failed requests', r.failed_requests],
      ['reference', r.reference ? `${r.reference.source ?? ''} (${r.reference.rows ?? '?'} rows)` : 'none recorded'],
      ['quality', r.quality ? Object.entries(r.quality).map(([k, v]) => `${k} ${num(v)}`).join(', ') : null]]),
    h('div', { class: 'grid' },
      h('div', {}, h('strong', {}, 'Rows per minute (profiled)'), traffic),
      h('div', {}, h('strong', {}, 'Latency p50 / p95 / p99 (ms)'), lineChart(['p50_ms', 'p95_ms', 'p99_ms'].map((k) => ({ label: k, points: r.traffic.map((w) => [w.start_ms, w[k]]) })), { time: true })),
      h('div', {}, h('strong', {}, 'Error rate (%)'), lineChart([{ label: 'errors', points: r.traffic.map((w) => [w.start_ms, (100 * w.errors) / Math.max(1, w.requests)]) }], { time: true })),
      r.quality_windows.length ? h('div', {}, h('strong', {}, 'Live quality from labels'), lineChart(['accuracy', 'precision', 'recall', 'mae', 'rmse'].filter((k) => r.quality_windows.some((w) => w.quality[k] != null))
        .map((k) => ({ label: k, points: r.quality_windows.filter((w) => w.quality[k] != null).map((w) => [w.start_ms, w.quality[k]]) })), { time: true })) : null),
    drift.length ? h('div', { class: 'scroll' }, table(['feature', 'kind', 'statistic', 'score', 'threshold', 'drifted', 'reference rows', 'current rows'],
      drift.map((f) => [f.feature, f.kind, f.method, num(f.score), num(f.threshold), f.drifted ? 'yes' : 'no', f.reference_rows, f.current_rows]))) : null,

    r.failures.length ? table(['failure', 'requests'], r.failures.map((f) => [f.reason, f.requests])) : null);
}

function alertsTable(alerts) {
  if (!alerts.length) return h('p', { class: 'muted' }, 'No alerts.');
  return table(['opened', 'model', 'rule', 'value', 'state', 'requests'], alerts.map((a) => [time(a.opened_ms), `${a.model}@${a.version}`, a.rule,
    `${a.metric} ${num(a.value)} ${a.op} ${num(a.threshold)}`, a.resolved_ms ? 'resolved' : 'open',
    h('a', { href: '#/alerts/' + a.id }, `${a.requests_total} requests →`)]));
}

async function alertsPage() {
  const mine = route;
  const alerts = await api('/alerts?all=true');
  if (!current(mine)) return;
  show(h('h1', {}, 'Alerts'), alertsTable(alerts));
}

async function alertPage(id) {
  const mine = route;
  const found = await api(`/alerts/${encodeURIComponent(id)}/requests`);
  if (!current(mine)) return;
  show(h('h1', {}, 'Requests behind alert ', h('code', {}, id)), table(['time', 'version', 'trace', 'values'], found.requests.map((r) => [
    time(r.time_ms), r.version, h('a', { href: '#/trace/' + r.trace_id }, r.trace_id), JSON.stringify(r.values).slice(0, 200)])));
}

// ---- lineage and trace ---------------------------------------------------------------

// A JSON value as a nested list: digests in code, run ids linked.
function tree(value, key) {
  if (value === null || typeof value !== 'object') {
    const text = String(value);
    const link = key === 'run_id' || key === 'run' ? h('a', { href: '#/runs/' + text }, text) : /^(blake3:)?[0-9a-f]{64}$/.test(text) ? h('code', {}, text) : text;
    return key !== undefined ? h('li', {}, h('span', { class: 'muted' }, key + ': '), link) : link;
  }
  const entries = Array.isArray(value) ? value.map((v, i) => [String(i), v]) : Object.entries(value);
  const list = h('ul', { class: 'tree' }, entries.map(([k, v]) => tree(v, k)));
  return key !== undefined ? h('li', {}, h('strong', {}, key), list) : list;
}

// Lineage as a graph, newest on the left and raw data on the right: each node a box with its
// name and digest (or stage), an edge from each node to what it was made from.
function lineageGraph(root) {
  const columns = [];
  const nodes = [];
  const edges = [];
  const visit = (node, depth) => {
    const id = nodes.length;
    nodes.push({ ...node, depth });
    (columns[depth] = columns[depth] || []).push(id);
    for (const input of node.children || []) edges.push([id, visit(input, depth + 1)]);
    return id;
  };
  visit(root, 0);
  const W = 230, H = 46, GX = 60, GY = 14, pad = 8;
  const row = new Map();
  columns.forEach((ids) => ids.forEach((id, i) => row.set(id, i)));
  const tallest = Math.max(...columns.map((c) => c.length));
  const svg = s('svg', { width: columns.length * (W + GX) + pad, height: tallest * (H + GY) + pad, role: 'img', 'aria-label': 'lineage graph', id: 'lineage-graph' });
  const at = (id) => [pad + nodes[id].depth * (W + GX), pad + row.get(id) * (H + GY)];
  for (const [a, b] of edges) {
    const [x1, y1] = at(a), [x2, y2] = at(b);
    const sx = x1 + W, sy = y1 + H / 2, ex = x2, ey = y2 + H / 2, mx = (sx + ex) / 2;
    svg.append(s('path', { class: 'edge', d: `M${sx},${sy} C${mx},${sy} ${mx},${ey} ${ex},${ey}` }));
  }
  nodes.forEach((n, id) => {
    const [x, y] = at(id);
    const g = s('g', { class: 'node', transform: `translate(${x},${y})`, 'data-node': n.label },
      s('title', {}, [n.label, n.sub, n.digest].filter(Boolean).join('\n')),
      s('rect', { width: W, height: H, fill: `var(--${n.kind || 'fresh'})` }),
      s('text', { x: 8, y: 18 }, n.label.length > 30 ? n.label.slice(0, 29) + '…' : n.label),
      s('text', { x: 8, y: 36, class: 'sub' }, (n.sub || (n.digest || '').replace('blake3:', '').slice(0, 16)).slice(0, 34)));
    if (n.href) g.addEventListener('click', () => { location.hash = n.href; });
    svg.append(g);
  });
  return h('div', { class: 'graph-wrap' }, svg);
}

// A tracked path's lineage (`/api/v1/lineage`) as graph nodes.
function pathNodes(node) {
  return {
    label: node.path || '?', digest: node.digest, kind: node.stage ? 'restored' : 'never',
    sub: node.stage ? `stage ${node.stage}` : null, href: node.path ? '#/lineage/' + encodeURIComponent(node.path) : null,
    children: (node.inputs || []).map(pathNodes),
  };
}

// A model version's lineage: the version, the run that made it, the data and code it read.
function versionNodes(label, digest, runId, lineage) {
  const inputs = ((lineage && lineage.inputs) || []).map((i) => ({ label: i.path, digest: i.digest, kind: 'never', href: '#/lineage/' + encodeURIComponent(i.path) }));
  const commit = lineage && lineage.commit ? `commit ${lineage.commit.slice(0, 10)}${lineage.dirty ? ' (dirty)' : ''}` : null;
  const run = runId ? [{ label: `run ${short(runId)}`, sub: commit, kind: 'running', href: '#/runs/' + runId, children: inputs }] : inputs;
  return { label, digest, kind: 'fresh', children: run };
}

async function lineagePage(path) {
  const mine = route;
  const at = path.lastIndexOf('@');
  if (at > 0) {
    const versions = await api(`/models/${encodeURIComponent(path.slice(0, at))}/versions`);
    const v = versions.find((x) => String(x.version) === path.slice(at + 1));
    if (!current(mine)) return;
    if (!v) throw new Error(`no version ${path.slice(at + 1)} of ${path.slice(0, at)}`);
    show(h('h1', {}, 'Lineage of ', h('code', {}, path)), lineageGraph(versionNodes(path, v.digest, v.run_id, v.lineage)),
      h('h2', {}, 'Details'), h('div', { class: 'card', id: 'lineage' }, tree({ digest: v.digest, run_id: v.run_id, lineage: v.lineage })));
    return;
  }
  const lineage = await api('/lineage?path=' + encodeURIComponent(path));
  if (!current(mine)) return;
  show(h('h1', {}, 'Lineage of ', h('code', {}, path)), lineage.commit ? h('p', { class: 'muted' }, `at commit ${lineage.commit}${lineage.dirty ? ' (with uncommitted changes)' : ''}`) : null,
    lineageGraph(pathNodes(lineage)), h('h2', {}, 'Details'), h('div', { class: 'card', id: 'lineage' }, tree(lineage)));
}

async function tracePage(id) {
  const mine = route;
  const t = await api('/trace/' + encodeURIComponent(id));
  if (!current(mine)) return;
  show(h('h1', {}, 'Prediction ', h('code', {}, t.trace_id)),
    h('div', { class: 'card' }, kv([['time', time(t.time_ms)], ['model', h('a', { href: '#/models/' + encodeURIComponent(t.model) }, `${t.model}@${t.version}`)],
      ['role', t.role], ['protocol', t.protocol], ['status', t.status], ['latency', (t.latency_us / 1000).toFixed(2) + ' ms'], ['error', t.error]])),
    lineageGraph({ label: `prediction ${t.trace_id.slice(0, 12)}`, sub: `${t.protocol}, ${t.status}`, kind: 'stale',
      children: [versionNodes(`${t.model}@${t.version}`, t.model_version && t.model_version.digest, t.model_version && t.model_version.run_id, t.lineage)] }),
    h('div', { class: 'card', id: 'trace' }, tree({ inputs: t.inputs, outputs: t.outputs, model_version: t.model_version, lineage: t.lineage, shadows: t.shadows })));
}

// ---- start ---------------------------------------------------------------------------

window.addEventListener('hashchange', navigate);
api('/whoami').then((w) => {
  who = w;
  document.getElementById('who').textContent = w.actions ? `acting as ${w.user}` : 'read-only';
}).catch(() => {}).finally(navigate);
