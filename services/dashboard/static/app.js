// LabFlow dashboard: plain JS over /api/v1 (the session cookie set by POST /login authenticates it).
'use strict';

const $ = (selector) => document.querySelector(selector);
const DAY_MS = 86400000;
const state = { meta: null, charts: {}, departments: [], sort: { key: 'incidence', dir: -1 }, version: 0 };

class Unauthenticated extends Error {}

async function api(path) {
  const response = await fetch(path, { credentials: 'same-origin', headers: { Accept: 'application/json' } });
  if (response.status === 401) throw new Unauthenticated();
  const body = await response.json();
  if (!response.ok) {
    const detail = Array.isArray(body.detail) ? body.detail.map((d) => d.msg).join('; ') : body.detail;
    throw new Error(detail || response.statusText);
  }
  return body;
}

const isoDay = (date) => date.toISOString().slice(0, 10);
const addDays = (day, n) => isoDay(new Date(Date.parse(day) + n * DAY_MS));
const rate = (value) => (value === null || value === undefined ? '–' : value.toFixed(2));
const text = (value) => (value === null || value === undefined ? '–' : String(value));

function cell(row, value, className) {
  const td = document.createElement('td');
  td.textContent = value;
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

function showLogin(message) {
  $('#dashboard').hidden = true;
  $('#logout').hidden = true;
  $('#login').hidden = false;
  $('#login-error').textContent = message || '';
  $('#token').focus();
}

async function login(event) {
  event.preventDefault();
  const response = await fetch('/login', {
    method: 'POST', credentials: 'same-origin',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ token: $('#token').value }),
  });
  if (!response.ok) {
    showLogin('This token is not accepted.');
    return;
  }
  $('#token').value = '';
  await start();
}

async function logout() {
  await fetch('/logout', { method: 'POST', credentials: 'same-origin' });
  showLogin();
}

function filters() {
  return Object.fromEntries(new FormData($('#filters')).entries());
}

function fillCodes() {
  const { level } = filters();
  const select = $('#filters [name=code]');
  const options = {
    fra: [{ code: 'FR', name: 'France' }],
    reg: state.meta.regions.map((r) => ({ code: r.code, name: `${r.code} ${r.name}` })),
    dep: state.meta.departments.map((d) => ({ code: d.code, name: d.code })),
  }[level];
  select.replaceChildren(...options.map((o) => new Option(o.name, o.code)));
}

function initFilters() {
  const form = $('#filters');
  const ages = form.querySelector('[name=age]');
  ages.replaceChildren(...state.meta.age_classes.map((a) => new Option(a === '0' ? 'all ages' : a, a)));
  ages.value = '0';
  const last = state.meta.last_day || isoDay(new Date());
  form.querySelector('[name=to]').value = last;
  form.querySelector('[name=from]').value = addDays(last, -89);
  fillCodes();
  form.addEventListener('change', (event) => {
    if (event.target.name === 'level') fillCodes();
    refresh();
  });
}

function chart(id, label, color, days, values) {
  const target = $(`#${id}`);
  const data = [days.map((d) => Date.parse(d) / 1000), values];
  const width = Math.max(target.clientWidth, 320);
  if (state.charts[id]) {
    state.charts[id].setData(data);
  } else {
    state.charts[id] = new uPlot({
      width, height: 240,
      scales: { x: { time: true } },
      series: [{}, { label, stroke: color, width: 2, fill: `${color}22`, value: (u, v) => rate(v) }],
      axes: [{}, { size: 60 }],
    }, data, target);
  }
  target.dataset.points = String(values.length);
  target.dataset.last = rate(values[values.length - 1]);
}

function renderSeries(body) {
  const days = body.days.map((d) => d.day);
  chart('chart-incidence', 'incidence', '#c0392b', days, body.days.map((d) => d.incidence));
  chart('chart-positivity', 'positivity %', '#2c6fbb', days, body.days.map((d) => d.positivity));
  const select = $('#filters [name=code]');
  $('#series-title').textContent = select.options[select.selectedIndex]?.text || body.code;
  const rows = body.days.slice(-14).reverse().map((d) => {
    const tr = document.createElement('tr');
    tr.dataset.day = d.day;
    [d.day, text(d.p), text(d.t), text(d.p7), text(d.t7), rate(d.incidence), rate(d.positivity)]
      .forEach((v) => cell(tr, v));
    return tr;
  });
  $('#series-table tbody').replaceChildren(...rows);
}

function heat(incidence, max) {
  if (incidence === null || max <= 0) return '#eeeeee';
  const share = Math.min(incidence / max, 1);
  return `hsl(${Math.round(50 - 50 * share)}, 85%, ${Math.round(92 - 47 * share)}%)`;
}

function renderDepartments() {
  const { key, dir } = state.sort;
  const rows = [...state.departments].sort((a, b) => {
    const x = a[key] ?? -Infinity;
    const y = b[key] ?? -Infinity;
    return (x < y ? -1 : x > y ? 1 : 0) * dir || a.department.localeCompare(b.department);
  });
  const max = Math.max(0, ...rows.map((d) => d.incidence ?? 0));
  $('#departments-table tbody').replaceChildren(...rows.map((d) => {
    const tr = document.createElement('tr');
    tr.dataset.department = d.department;
    cell(tr, d.department);
    cell(tr, text(d.region));
    cell(tr, text(d.p7));
    cell(tr, text(d.t7));
    cell(tr, rate(d.incidence)).style.background = heat(d.incidence, max);
    cell(tr, rate(d.positivity));
    cell(tr, rate(d.incidence_previous_week));
    const change = d.incidence_change_pct;
    cell(tr, change === null ? '–' : `${change > 0 ? '+' : ''}${change.toFixed(1)}`, change > 0 ? 'up' : 'down');
    return tr;
  }));
  $('#tiles').replaceChildren(...state.departments.map((d) => {
    const tile = document.createElement('span');
    tile.textContent = d.department;
    tile.title = `${d.department}: incidence ${rate(d.incidence)}, positivity ${rate(d.positivity)} %`;
    tile.style.background = heat(d.incidence, max);
    return tile;
  }));
  document.querySelectorAll('#departments-table th').forEach((th) => {
    th.setAttribute('aria-sort', th.dataset.key === key ? (dir < 0 ? 'descending' : 'ascending') : 'none');
  });
}

function renderLabs(body) {
  const silent = new Map(body.silent.map((s) => [s.lab, s]));
  const list = $('#silent-labs');
  list.replaceChildren();
  if (body.silent.length) {
    const p = document.createElement('p');
    p.className = 'alert';
    p.textContent = `Silent for more than 24 h: ${body.silent
      .map((s) => `${s.lab} (last reception ${s.last_reception_day})`).join(', ')}`;
    list.appendChild(p);
  }
  const labs = [...body.period].sort((a, b) => Number(b.late) - Number(a.late) || a.lab.localeCompare(b.lab));
  $('#labs-table tbody').replaceChildren(...labs.map((l) => {
    const tr = document.createElement('tr');
    tr.dataset.lab = l.lab;
    const status = [l.late ? 'late' : '', silent.has(l.lab) ? 'silent' : ''].filter(Boolean);
    if (status.length) tr.className = status.join(' ');
    [l.lab, text(l.results), text(l.positives), text(l.median_delay_hours), text(l.p90_delay_hours),
      status.join(', ') || 'on time'].forEach((v) => cell(tr, v));
    return tr;
  }));
}

async function refresh() {
  const f = filters();
  const common = { age: f.age, sex: f.sex, kind: f.kind };
  const series = new URLSearchParams({ level: f.level, code: f.code, from: f.from, to: f.to, ...common });
  const map = new URLSearchParams({ day: f.to, ...common });
  const labs = new URLSearchParams({ from: addDays(f.to, -6), to: f.to });
  $('#series-csv').href = `/api/v1/indicators?${series}&format=csv`;
  $('#departments-csv').href = `/api/v1/map?${map}&format=csv`;
  $('#labs-csv').href = `/api/v1/labs/reporting?${labs}&view=days&format=csv`;
  $('#labs-period-csv').href = `/api/v1/labs/reporting?${labs}&view=period&format=csv`;
  $('#labs-silent-csv').href = `/api/v1/labs/reporting?${labs}&view=silent&format=csv`;
  $('#departments-day').textContent = f.to;
  $('#labs-period').textContent = `${labs.get('from')} → ${f.to}`;
  document.body.dataset.state = 'loading';
  $('#status').textContent = 'Loading…';
  try {
    const [s, m, l] = await Promise.all([
      api(`/api/v1/indicators?${series}`), api(`/api/v1/map?${map}`), api(`/api/v1/labs/reporting?${labs}`),
    ]);
    renderSeries(s);
    state.departments = m.departments;
    renderDepartments();
    renderLabs(l);
    $('#status').textContent = f.sex === 'all' ? '' : 'Incidence needs a population by sex: shown for all sexes only.';
    $('#status').classList.remove('error');
  } catch (error) {
    if (error instanceof Unauthenticated) return showLogin('Your session has ended: log in again.');
    $('#status').textContent = error.message;
    $('#status').classList.add('error');
  }
  state.version += 1;
  document.body.dataset.version = String(state.version);
  document.body.dataset.state = 'ready';
}

async function start() {
  try {
    state.meta = await api('/api/v1/meta');
  } catch (error) {
    if (error instanceof Unauthenticated) return showLogin();
    throw error;
  }
  $('#login').hidden = true;
  $('#dashboard').hidden = false;
  $('#logout').hidden = false;
  const { first_day: first, last_day: last } = state.meta;
  $('#data-range').textContent = last ? `Collection days with data: ${first} → ${last}` : 'No data yet';
  if (!$('#filters').dataset.ready) {
    initFilters();
    $('#filters').dataset.ready = 'yes';
  }
  await refresh();
}

$('#login-form').addEventListener('submit', login);
$('#logout').addEventListener('click', logout);
document.querySelectorAll('#departments-table th').forEach((th) => th.addEventListener('click', () => {
  const key = th.dataset.key;
  state.sort = { key, dir: state.sort.key === key ? -state.sort.dir : -1 };
  renderDepartments();
}));
start();
