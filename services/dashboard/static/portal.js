// LabFlow lab portal: one lab's own traffic, over /portal/api/v1 (the portal cookie set by POST
// /portal/login authenticates it; the server answers only for the lab of that token).
// French by default, English on the language switch; what it shares with the dashboard (the language
// choice among it) is in common.js.
'use strict';

const ACK_COLOURS = { aa: '#1b9e77', ae: '#e6ab02', ar: '#d95f02' };
const LATE_HOURS = 24;

// hintsFr: the issue catalogue's hints in French, by issue id (hints.fr.json, generated from the
// catalogue); a rejection carries its issue id and the English hint
const state = { session: null, traffic: null, rejections: null, hintsFr: {} };

// HL7 table 0357 (message error condition codes)
const CODES = {
  fr: {
    0: 'Message accepté', 100: 'Erreur de séquence de segments', 101: 'Champ obligatoire manquant',
    102: 'Erreur de type de donnée', 103: 'Valeur absente de la table', 200: 'Type de message non pris en charge',
    201: "Code d'événement non pris en charge", 202: 'Identifiant de traitement non pris en charge',
    203: 'Version non prise en charge', 204: 'Identifiant de clé inconnu', 205: 'Clé en double',
    206: 'Enregistrement verrouillé', 207: 'Erreur interne de l’application',
  },
  en: {
    0: 'Message accepted', 100: 'Segment sequence error', 101: 'Required field missing', 102: 'Data type error',
    103: 'Table value not found', 200: 'Unsupported message type', 201: 'Unsupported event code',
    202: 'Unsupported processing id', 203: 'Unsupported version id', 204: 'Unknown key identifier',
    205: 'Duplicate key identifier', 206: 'Application record locked', 207: 'Application internal error',
  },
};

i18n.messages = {
  fr: {
    'app.title': 'LabFlow — portail laboratoire', 'app.subtitle': 'portail laboratoire', logout: 'Se déconnecter',
    'login.title': 'Connexion du laboratoire', 'login.token': 'Jeton HTTP du laboratoire', 'login.submit': 'Se connecter',
    'login.help': "Le jeton avec lequel votre laboratoire envoie ses résultats (labflow labs token), ou une identité de votre fournisseur d'identité rattachée à votre laboratoire.",
    'login.refused': "Ce jeton n'ouvre aucun portail de laboratoire.", 'login.expired': 'Votre session a pris fin : reconnectez-vous.',
    lab: 'Laboratoire {lab}',
    'f.from': 'Du', 'f.to': 'Au', loading: 'Chargement…', 'error.load': 'Chargement impossible : {detail}',
    'summary.title': "Vue d'ensemble de la période",
    'summary.note': 'Messages comptés par jour de réception (UTC). AA : accepté ; AE : erreur à corriger puis renvoyer ; AR : refusé.',
    'tile.messages': 'Messages', 'tile.aa': 'Acceptés (AA)', 'tile.ae': 'Erreurs (AE)', 'tile.ar': 'Refusés (AR)',
    'tile.results': 'Résultats enregistrés', 'tile.last': 'Dernier message reçu', 'tile.median': 'Délai médian',
    never: 'aucun', hours: '{n} h',
    'days.title': 'Messages et résultats par jour', 'col.day': 'Jour', 'col.messages': 'Messages',
    'col.results': 'Résultats', 'col.positives': 'Positifs', 'col.median': 'Délai médian (h)', 'col.p90': 'Délai p90 (h)',
    'days.none': 'Aucun message sur la période.',
    'delays.title': 'Délai prélèvement → réception',
    'delays.summary': 'Médiane {median}, 90 % des résultats en {p90} au plus ({n} résultats). Les résultats doivent parvenir sous 24 h.',
    'delays.none': 'Aucun résultat enregistré sur la période.',
    'bucket.range': '{from} – {to} h', 'bucket.open': '≥ {from} h',
    'reasons.title': 'Motifs de rejet les plus fréquents', 'reasons.none': 'Aucun rejet sur la période.',
    'col.location': 'Emplacement', 'col.code': 'Code', 'col.rejections': 'Rejets', 'col.last_seen': 'Dernier',
    'rejections.title': 'Derniers messages rejetés',
    'rejections.note': "Chaque motif indique l'emplacement HL7 (segment-champ), le code d'erreur (table 0357) et ce qu'il faut corriger.",
    'rejections.none': 'Aucun message rejeté.',
    'col.received': 'Reçu le', 'col.control_id': 'Identifiant du message', 'col.reasons': 'Motifs', 'col.replay': 'Rejeu',
    hint: 'Conseil : {hint}', message: 'message',
    'replay.none': 'non rejoué', 'replay.done': 'rejoué {n} fois, dernier résultat {outcome} ({at})',
    'conformance.title': 'Conformité',
    'conformance.mode.test': 'Mode test : vos résultats passent tous les contrôles mais ne sont ni comptés, ni publiés, ni transmis au contact-tracing.',
    'conformance.mode.production': 'En production : vos résultats sont comptés.',
    'conformance.none': "Aucun rapport de conformité pour l'instant (labflow conformance report).",
    'conformance.passed': 'Dernier rapport ({at}) : réussi — {passed} scénarios réussis.',
    'conformance.failed': 'Dernier rapport ({at}) : non réussi — {passed} réussis, {failed} en échec, {missing} manquants.',
  },
  en: {
    'app.title': 'LabFlow — lab portal', 'app.subtitle': 'lab portal', logout: 'Log out',
    'login.title': 'Lab sign-in', 'login.token': "Your lab's HTTP token", 'login.submit': 'Sign in',
    'login.help': "The token your lab sends its results with (labflow labs token), or an identity from your identity provider linked to your lab.",
    'login.refused': 'This token opens no lab portal.', 'login.expired': 'Your session ended: sign in again.',
    lab: 'Lab {lab}',
    'f.from': 'From', 'f.to': 'To', loading: 'Loading…', 'error.load': 'Could not load: {detail}',
    'summary.title': 'Period overview',
    'summary.note': 'Messages counted by reception day (UTC). AA: accepted; AE: error to fix, then send again; AR: refused.',
    'tile.messages': 'Messages', 'tile.aa': 'Accepted (AA)', 'tile.ae': 'Errors (AE)', 'tile.ar': 'Refused (AR)',
    'tile.results': 'Results stored', 'tile.last': 'Last message received', 'tile.median': 'Median delay',
    never: 'none', hours: '{n} h',
    'days.title': 'Messages and results per day', 'col.day': 'Day', 'col.messages': 'Messages',
    'col.results': 'Results', 'col.positives': 'Positives', 'col.median': 'Median delay (h)', 'col.p90': 'p90 delay (h)',
    'days.none': 'No message in this period.',
    'delays.title': 'Collection → reception delay',
    'delays.summary': 'Median {median}, 90 % of results within {p90} ({n} results). Results are due within 24 h.',
    'delays.none': 'No result stored in this period.',
    'bucket.range': '{from} – {to} h', 'bucket.open': '≥ {from} h',
    'reasons.title': 'Most frequent rejection reasons', 'reasons.none': 'No rejection in this period.',
    'col.location': 'Location', 'col.code': 'Code', 'col.rejections': 'Rejections', 'col.last_seen': 'Last',
    'rejections.title': 'Latest rejected messages',
    'rejections.note': 'Each reason gives the HL7 location (segment-field), the error code (table 0357) and what to fix.',
    'rejections.none': 'No rejected message.',
    'col.received': 'Received', 'col.control_id': 'Message control id', 'col.reasons': 'Reasons', 'col.replay': 'Replay',
    hint: 'Hint: {hint}', message: 'message',
    'replay.none': 'not replayed', 'replay.done': 'replayed {n} time(s), last outcome {outcome} ({at})',
    'conformance.title': 'Conformance',
    'conformance.mode.test': 'Test mode: your results go through every check but are not counted, published or handed to contact tracing.',
    'conformance.mode.production': 'In production: your results count.',
    'conformance.none': 'No conformance report yet (labflow conformance report).',
    'conformance.passed': 'Latest report ({at}): passed — {passed} scenarios passed.',
    'conformance.failed': 'Latest report ({at}): not passed — {passed} passed, {failed} failed, {missing} missing.',
  },
};

// --- formatting (dates and counts: common.js) ------------------------------------------------------
function fmtTime(iso) {
  if (!iso) return t('never');
  return new Intl.DateTimeFormat(locale(), { dateStyle: 'short', timeStyle: 'short', timeZone: 'UTC' })
    .format(new Date(iso)) + ' UTC';
}
const hours = (n) => (n === null || n === undefined ? '–' : t('hours', { n: count(n) }));
function reasonLocation(reason) {
  if (!reason.segment) return t('message');
  let where = `${reason.segment}-${reason.field ?? ''}`;
  if (reason.component) where += `.${reason.component}`;
  return where.replace(/-$/, '');
}
const codeLabel = (code) => `${code} ${CODES[i18n.lang][Number(code)] ?? ''}`.trim();

// --- language and login ----------------------------------------------------------------------------
function showLab() {
  $('#lab').textContent = state.session ? t('lab', { lab: state.session.lab }) : '';
}

function forgetSession() {
  state.session = null;
  showLab();
  document.body.dataset.state = 'login';
}

// --- rendering -------------------------------------------------------------------------------------
function renderSummary() {
  const { days, delays, last_received_at: last } = state.traffic;
  const sum = (key) => days.reduce((total, d) => total + d[key], 0);
  const tiles = [
    ['messages', count(sum('messages'))], ['aa', count(sum('aa'))], ['ae', count(sum('ae'))],
    ['ar', count(sum('ar'))], ['results', count(sum('results'))], ['last', fmtTime(last)],
    ['median', hours(delays.median_hours)],
  ];
  const list = $('#summary');
  list.replaceChildren();
  for (const [key, value] of tiles) {
    const box = document.createElement('div');
    box.dataset.key = key;
    const dt = document.createElement('dt');
    dt.textContent = t(`tile.${key}`);
    const dd = document.createElement('dd');
    dd.textContent = value;
    box.append(dt, dd);
    list.appendChild(box);
  }
}

function renderDays() {
  const body = $('#days-table tbody');
  body.replaceChildren();
  const { days } = state.traffic;
  if (!days.length) {
    const row = body.insertRow();
    const td = cell(row, t('days.none'));
    td.colSpan = 9;
  }
  for (const d of [...days].reverse()) {
    const row = body.insertRow();
    row.dataset.day = d.day;
    if (d.median_delay_hours !== null && d.median_delay_hours >= LATE_HOURS) row.className = 'late';
    cell(row, fmtDay(d.day));
    for (const key of ['messages', 'aa', 'ae', 'ar', 'results', 'positives', 'median_delay_hours', 'p90_delay_hours']) {
      cell(row, count(d[key]));
    }
  }
  renderAckChart();
}

function renderAckChart() {
  const figure = $('#acks-chart');
  figure.replaceChildren();
  const { from, to } = state.traffic;
  const byDay = new Map(state.traffic.days.map((d) => [d.day, d]));
  const all = [];
  for (let day = from; day <= to; day = addDays(day, 1)) all.push(byDay.get(day) || { day, aa: 0, ae: 0, ar: 0 });
  const width = 900; const height = 180; const left = 40; const bottom = 22;
  const max = Math.max(1, ...all.map((d) => d.aa + d.ae + d.ar));
  const step = (width - left) / all.length;
  const chart = svg('svg', { viewBox: `0 0 ${width} ${height + bottom}`, role: 'img', 'aria-label': t('days.title') });
  chart.appendChild(svg('text', { x: 0, y: 12, 'font-size': 11, fill: '#5d6b7a' }, count(max)));
  chart.appendChild(svg('line', { x1: left, x2: width, y1: height, y2: height, stroke: '#d9dee4' }));
  all.forEach((d, i) => {
    let y = height;
    for (const key of ['aa', 'ae', 'ar']) {
      const h = (d[key] / max) * (height - 10);
      if (h > 0) {
        y -= h;
        const bar = svg('rect', { x: left + i * step + 1, y, width: Math.max(step - 2, 1), height: h, fill: ACK_COLOURS[key] });
        bar.appendChild(svg('title', {}, `${fmtDay(d.day)} ${key.toUpperCase()} ${count(d[key])}`));
        chart.appendChild(bar);
      }
    }
    if (all.length <= 31 || i % 7 === 0) {
      chart.appendChild(svg('text', { x: left + i * step + step / 2, y: height + 15, 'font-size': 10, 'text-anchor': 'middle', fill: '#5d6b7a' },
        fmtDay(d.day).slice(0, 5)));
    }
  });
  const legend = document.createElement('figcaption');
  legend.className = 'legend';
  for (const key of ['aa', 'ae', 'ar']) {
    const item = document.createElement('span');
    const swatch = document.createElement('i');
    swatch.style.background = ACK_COLOURS[key];
    item.append(swatch, t(`tile.${key}`));
    legend.appendChild(item);
  }
  figure.append(chart, legend);
}

function renderDelays() {
  const { delays } = state.traffic;
  const total = delays.buckets.reduce((n, b) => n + b.results, 0);
  $('#delays-summary').textContent = total
    ? t('delays.summary', { median: hours(delays.median_hours), p90: hours(delays.p90_hours), n: count(total) })
    : t('delays.none');
  const bars = $('#delay-buckets');
  bars.replaceChildren();
  const max = Math.max(1, ...delays.buckets.map((b) => b.results));
  for (const b of delays.buckets) {
    const label = document.createElement('span');
    label.textContent = b.to_hours === null ? t('bucket.open', { from: b.from_hours })
      : t('bucket.range', { from: b.from_hours, to: b.to_hours });
    const bar = document.createElement('div');
    bar.className = b.from_hours >= LATE_HOURS ? 'bar late' : 'bar';
    bar.style.width = `${(100 * b.results) / max}%`;
    const value = document.createElement('span');
    value.dataset.from = b.from_hours;
    value.textContent = count(b.results);
    bars.append(label, bar, value);
  }
}

function renderReasons() {
  const body = $('#reasons-table tbody');
  body.replaceChildren();
  const reasons = state.traffic.frequent_reasons;
  if (!reasons.length) cell(body.insertRow(), t('reasons.none')).colSpan = 4;
  for (const r of reasons) {
    const row = body.insertRow();
    cell(row, reasonLocation(r));
    cell(row, codeLabel(r.code), 'text');
    cell(row, count(r.rejections));
    cell(row, fmtTime(r.last_seen_at));
  }
}

function renderRejections() {
  const body = $('#rejections-table tbody');
  body.replaceChildren();
  const { rejections } = state.rejections;
  if (!rejections.length) cell(body.insertRow(), t('rejections.none')).colSpan = 5;
  for (const r of rejections) {
    const row = body.insertRow();
    row.dataset.rejection = r.rejection_id;
    cell(row, fmtTime(r.received_at));
    cell(row, r.ack_code, `ack-${r.ack_code}`);
    cell(row, r.message_control_id || '–', 'text');
    const reasons = cell(row, '', 'reasons');
    const list = document.createElement('ul');
    for (const reason of r.reasons) {
      const item = document.createElement('li');
      const where = document.createElement('code');
      // the catalogue's issue id, when the rejection carries it
      where.textContent = [reasonLocation(reason), reason.code, reason.kind].filter(Boolean).join(' · ');
      item.append(where, ` ${reason.text}`);
      // from the issue catalogue, when the rejection carries one; in French when the catalogue has it
      const text = (i18n.lang === 'fr' && state.hintsFr[reason.kind]) || reason.hint;
      if (text) {
        const hint = document.createElement('div');
        hint.className = 'hint';
        hint.textContent = t('hint', { hint: text });
        item.appendChild(hint);
      }
      list.appendChild(item);
    }
    reasons.appendChild(list);
    cell(row, r.replay ? t('replay.done', { n: r.replay.replays, outcome: r.replay.last_outcome, at: fmtTime(r.replay.last_replayed_at) })
      : t('replay.none'), 'text');
  }
}

function renderConformance() {
  // the lab's mode and its latest conformance report (SPEC §8.1); hidden for a lab the registry lacks
  const status = state.session.conformance;
  const panel = $('#conformance-panel');
  panel.hidden = !status;
  if (!status) return;
  const box = $('#conformance');
  box.replaceChildren();
  const line = (text, className) => {
    const p = document.createElement('p');
    p.textContent = text;
    if (className) p.className = className;
    box.appendChild(p);
  };
  line(t(`conformance.mode.${status.mode}`), 'mode');
  const report = status.report;
  if (!report) {
    line(t('conformance.none'), 'verdict');
    return;
  }
  const summary = report.summary || {};
  line(t(report.passed ? 'conformance.passed' : 'conformance.failed', {
    at: fmtTime(report.generated_at), passed: summary.passed ?? 0, failed: summary.failed ?? 0, missing: summary.missing ?? 0,
  }), 'verdict');
  if (report.not_passed.length) {
    const list = document.createElement('ul');
    for (const scenario of report.not_passed) {
      const item = document.createElement('li');
      const code = document.createElement('code');
      code.textContent = `${scenario.code} · ${scenario.status}`;
      item.append(code, ` ${scenario.title}${scenario.reasons.length ? ` — ${scenario.reasons.join('; ')}` : ''}`);
      list.appendChild(item);
    }
    box.appendChild(list);
  }
}

function render() {
  renderSummary();
  renderDays();
  renderDelays();
  renderReasons();
  renderRejections();
  renderConformance();
}

// --- loading ---------------------------------------------------------------------------------------
async function refresh() {
  const form = $('#period');
  const query = new URLSearchParams({ from: form.from.value, to: form.to.value });
  document.body.dataset.state = 'loading';
  $('#status').textContent = t('loading');
  try {
    [state.traffic, state.rejections] = await Promise.all([
      api(`/portal/api/v1/traffic?${query}`), api('/portal/api/v1/rejections?limit=50'),
    ]);
  } catch (error) {
    if (error instanceof Unauthenticated) { sessionView.showLogin(t('login.expired')); return; }
    $('#status').textContent = t('error.load', { detail: error.message });
    document.body.dataset.state = 'error';
    return;
  }
  $('#status').textContent = '';
  render();
  rendered();
  document.body.dataset.state = 'ready';
}

async function start() {
  const session = await sessionView.begin('/portal/api/v1/session');
  if (!session) return;
  state.session = session;
  const form = $('#period');
  form.to.value = state.session.today;
  form.from.value = addDays(state.session.today, -(state.session.default_days - 1));
  sessionView.showContent();
  showLab();
  await loadFrenchHints();  // before the first render: the page is never shown with hints to replace
  await refresh();
}

async function loadFrenchHints() {
  try {
    const response = await fetch('/static/hints.fr.json');
    if (response.ok) state.hintsFr = await response.json();
  } catch { /* the English hints the rejections carry are shown instead */ }
}

document.addEventListener('click', (event) => {
  const target = event.target.closest('#language button');
  if (!target) return;
  chooseLanguage(target.dataset.lang);
  showLab();
  if (state.traffic) {
    render();
    rendered();
  }
});
const sessionView = sessionControls('/portal', '#portal', start, forgetSession);
$('#period').addEventListener('change', () => refresh());
applyLanguage();
start();
