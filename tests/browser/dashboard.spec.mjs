// The dashboard in a real browser (Debian's chromium through playwright-core).
//
//   node tests/browser/dashboard.spec.mjs <scenario.json>
//
// The scenario (written by tests/e2e/test_dashboard_browser.py): url, token, screenshot path and the
// numbers expected from the open-data files. Exits non-zero with the reason on the first failed check.
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

import { loadScenario, openChromium, run } from './chromium.mjs';

const scenario = loadScenario();
mkdirSync(scenario.downloads, { recursive: true });
// the 401s before logging in (and for the wrong token) are expected; any other error is not
const browser = await openChromium(scenario, {
  viewport: { width: 1400, height: 1000 }, acceptDownloads: true, expectedErrors: /status of 401/,
});
const { page, ready } = browser;

async function seriesRow(day) {
  return page.$$eval(`#series-table tr[data-day="${day}"] td`, (tds) => tds.map((td) => td.textContent));
}

// French numbers ("1 234,56") back to the files' format ("1234.56")
const plain = (value) => value.replace(/[\s\u202f\u00a0]/g, '').replace(',', '.');
const frenchDay = (iso) => iso.split('-').reverse().join('/');

async function shot(name, selector) {
  const path = join(scenario.artifacts, name);
  if (selector) await page.locator(selector).screenshot({ path });
  else await page.screenshot({ path, fullPage: true });
}

async function downloaded(selector, keepAs) {
  const [download] = await Promise.all([page.waitForEvent('download'), page.click(selector)]);
  const path = join(scenario.downloads, download.suggestedFilename());
  await download.saveAs(path);
  if (keepAs) await download.saveAs(join(scenario.artifacts, keepAs));
  return { name: download.suggestedFilename(), body: readFileSync(path) };
}

await run(scenario, browser, async () => {
  await page.goto(scenario.url);
  await page.waitForSelector('#login:not([hidden])');
  assert.equal(await page.getAttribute('html', 'lang'), 'fr', 'French by default');
  assert.equal(await page.textContent('#login h2'), 'Connexion');
  await page.fill('#token', 'not-a-token');
  await page.click('#login-form button');
  await page.waitForFunction(() => document.querySelector('#login-error').textContent.length > 0);

  await page.fill('#token', scenario.token);
  await page.click('#login-form button');
  let version = await ready(0);
  assert.equal(await page.isHidden('#login'), true);
  const ex = scenario.expected;

  // France on the last day: P and T of the national file, P7/T7 and rates over the 7 days, French format
  const fra = ex.fra;
  const fraRow = await seriesRow(fra.day);
  assert.ok(fraRow[0].startsWith(frenchDay(fra.day)), `French date in the table: ${fraRow[0]}`);
  assert.deepEqual(fraRow.slice(1).map(plain), fra.row.slice(1), 'national series row');
  assert.equal(await page.getAttribute('#chart-incidence', 'data-last'), fra.row[5], 'incidence chart');
  assert.equal(await page.getAttribute('#chart-incidence', 'data-points'), String(ex.points));
  assert.ok(await page.$('#chart-incidence canvas'), 'the chart is drawn');
  // daily axes: French day and month, no "12am"/"12pm", no US month/day
  for (const id of ['#chart-incidence', '#chart-positivity']) {
    const ticks = (await page.getAttribute(id, 'data-xticks')).split('|');
    assert.ok(ticks.length >= 3, `${id} has day ticks`);
    for (const tick of ticks) assert.match(tick, /^\d{1,2} [a-zéû]+\.?$/, `${id} tick ${tick}`);
  }
  // positivity from 0 with a sensible top (not autoscaled to the data's narrow band)
  assert.equal(await page.getAttribute('#chart-positivity', 'data-ymin'), '0');
  const ymax = Number(await page.getAttribute('#chart-positivity', 'data-ymax'));
  assert.ok(ymax <= 100 && ymax >= Number(fra.row[6]), `positivity axis top ${ymax}`);
  assert.equal(await page.getAttribute('#chart-incidence', 'data-ymin'), '0');

  // provisional days: marked in the table, the chart and a note that states the rule
  for (const day of ex.provisional_days.filter((d) => d <= fra.day)) {
    const row = await seriesRow(day);
    assert.ok(row.length && row[0].includes('provisoire'), `${day} is marked provisional: ${row[0]}`);
  }
  assert.ok(!(await seriesRow(ex.consolidated_day))[0].includes('provisoire'), 'consolidated day not marked');
  assert.equal(await page.getAttribute('#chart-incidence', 'data-provisional-from'),
    ex.provisional_days.filter((d) => d <= fra.day)[0]);
  assert.match(await page.textContent('#provisional-note'), /3 derniers jours de prélèvement .* provisoires/);

  // names, not codes: geography list, age classes, regions
  const ages = await page.$$eval('#filters [name=age] option', (os) => os.map((o) => o.textContent));
  assert.deepEqual([ages[0], ages[1], ages[ages.length - 1]], ['tous âges', '0–9 ans', '90 ans et +']);
  await page.selectOption('#filters [name=level]', 'reg');
  version = await ready(version);
  const regions = await page.$$eval('#filters [name=code] option', (os) => os.map((o) => o.textContent));
  assert.ok(regions.includes('Île-de-France') && regions.includes('Corse'), regions.join(', '));

  // the map: fixed thresholds in the legend, every metropolitan department and 8 overseas insets
  const legend = (await page.textContent('#map svg .legend')).replace(/[\u202f\u00a0]/g, ' ');
  for (const label of ['< 10', '10 – 50', '50 – 150', '150 – 250', '250 – 500', '500 – 1 000', '≥ 1 000',
    'moins de 20 positifs', 'aucun test']) assert.ok(legend.includes(label), `legend shows ${label}`);
  assert.equal(await page.$$eval('#map svg path[data-department]', (ps) => ps.length), 96);
  const insets = await page.$$eval('#map svg rect[data-department]', (rs) => rs.map((r) => r.dataset.department));
  assert.deepEqual(insets.sort(), ['971', '972', '973', '974', '975', '976', '977', '978']);
  assert.match(await page.textContent('#map svg'), /Guadeloupe.*Martinique.*Guyane.*La Réunion.*Mayotte/s);
  assert.equal(await page.getAttribute(`#map svg [data-department="${ex.small_department}"]`, 'data-small'), 'true');
  assert.match(await page.textContent('#map-note'), /10, 50, 150 et 250/);

  // ranking: the highest incidence is a small count (977): shown, marked, never first
  const ranking = await page.$$eval('#departments-table tbody tr', (trs) => trs.map((tr) => ({
    code: tr.dataset.department, small: tr.dataset.small, text: tr.children[1].textContent })));
  assert.equal(ranking.length, 104);
  assert.equal(ranking[0].code, ex.first_ranked, `first ranked: ${JSON.stringify(ranking[0])}`);
  assert.equal(ranking[0].small, 'false');
  assert.notEqual(ranking[0].code, ex.top_department);
  const small = ranking.find((r) => r.code === ex.small_department);
  assert.ok(small.text.includes('Saint-Barthélemy') && small.text.includes('peu de cas'), small.text);
  assert.ok(!/^\d/.test(ranking[0].text), `a name, not a code: ${ranking[0].text}`);
  await page.click('#departments-table th[data-key=incidence]');
  const ascending = await page.$$eval('#departments-table tbody tr', (trs) => trs.map((tr) => tr.dataset.small));
  assert.equal(ascending[0], 'false', 'ascending too, small counts come last');
  await page.click('#departments-table th[data-key=incidence]');
  await shot('dashboard-map.png', '#map-panel');

  // one department: the sliding file's values, in the table and the charts, under its name
  await page.selectOption('#filters [name=level]', 'dep');
  version = await ready(version);
  await page.selectOption('#filters [name=code]', ex.dep.code);
  version = await ready(version);
  const dep = ex.dep;
  assert.equal(await page.textContent('#series-title'), dep.name);
  assert.equal(await page.textContent('#ages-title'), dep.name);
  assert.deepEqual((await seriesRow(dep.day)).slice(1).map(plain), dep.row.slice(1), 'department series row');
  assert.equal(await page.getAttribute('#chart-incidence', 'data-last'), dep.row[5]);
  assert.equal(await page.getAttribute('#chart-positivity', 'data-last'), dep.row[6]);
  // the age × week heat map: 10 classes × 12 weeks, named classes
  assert.equal(await page.getAttribute('#ages', 'data-cells'), '120');
  const heat = await page.textContent('#ages svg');
  assert.ok(heat.includes('0–9 ans') && heat.includes('90 ans et +') && heat.includes('sem. du'), 'heat map labels');
  await shot('dashboard-ages.png', '#ages-panel');

  // compared with its region and France on one chart
  await page.selectOption('#compare-select', 'reg:94');
  await page.click('#compare-add');
  version = await ready(version);
  await page.selectOption('#compare-select', 'fra:FR');
  await page.click('#compare-add');
  version = await ready(version);
  assert.equal(await page.getAttribute('#chart-incidence', 'data-series'), '3');
  assert.deepEqual(await page.$$eval('#compare-list li', (lis) => lis.map((li) => li.firstChild.textContent)),
    ['Corse', 'France']);
  await shot('dashboard-department.png');

  // every chart exports as PNG and CSV
  const png = await downloaded('[data-export-png=incidence]', 'export-incidence.png');
  assert.ok(png.name.endsWith('.png') && png.body.subarray(1, 4).toString() === 'PNG', 'incidence PNG');
  const mapPng = await downloaded('[data-export-png=map]', 'export-map.png');
  assert.ok(mapPng.body.subarray(1, 4).toString() === 'PNG' && mapPng.body.length > 20000, 'map PNG');
  assert.equal((await downloaded('[data-export-png=ages]')).body.subarray(1, 4).toString(), 'PNG');
  const csv = (await downloaded('[data-export-csv=positivity]')).body.toString();
  assert.equal(csv.split('\n')[0], 'jour de prélèvement;provisoire;Corse-du-Sud (2A);Corse;France');
  assert.equal(csv.trim().split('\n').length, 1 + ex.points);

  // an age class changes the numbers again
  await page.selectOption('#filters [name=age]', dep.age);
  version = await ready(version);
  assert.deepEqual((await seriesRow(dep.day)).slice(1).map(plain), dep.age_row.slice(1), 'one age class');
  await page.selectOption('#filters [name=age]', '0');
  version = await ready(version);

  // labs: names from the registry, what each count means, the late one highlighted, the silent ones listed
  assert.equal(await page.getAttribute(`#labs-table tr[data-lab="${ex.late_lab}"]`, 'class'), 'late');
  const labText = await page.textContent(`#labs-table tr[data-lab="${ex.late_lab}"]`);
  assert.ok(labText.includes(`${ex.lab_names[ex.late_lab]} (${ex.late_lab})`) && labText.includes('en retard'), labText);
  const silent = await page.textContent('#silent-labs');
  for (const lab of ex.silent_labs) assert.ok(silent.includes(ex.lab_names[lab]), `${lab} listed as silent by name`);
  const definitions = await page.textContent('#labs-definitions');
  assert.match(definitions, /résultats enregistrés/i);
  assert.match(definitions, /n'est pas recompté/);

  // every view has a CSV link that downloads with the session cookie
  for (const id of ['#series-csv', '#departments-csv', '#ages-csv', '#labs-csv', '#labs-period-csv', '#labs-silent-csv']) {
    const href = await page.getAttribute(id, 'href');
    const body = await page.evaluate(async (url) => (await fetch(url)).text(), href);
    assert.ok(body.split('\n').length > 1 && body.includes(';'), `${id} is a CSV`);
  }
  await page.screenshot({ path: scenario.screenshot, fullPage: true });

  // English on the switch: ISO dates, English words, the same numbers
  await page.click('#language button[data-lang=en]');
  version = await ready(version);
  assert.equal(await page.getAttribute('html', 'lang'), 'en');
  assert.equal(await page.textContent('header h1 span'), 'epidemic dashboard');
  assert.equal((await seriesRow(dep.day))[0].split(' ')[0], dep.day, 'ISO dates in English');
  const enTicks = (await page.getAttribute('#chart-incidence', 'data-xticks')).split('|');
  for (const tick of enTicks) assert.match(tick, /^\d{1,2} [A-Z][a-z]{2,3}$/, `English tick ${tick}`);
  assert.ok((await page.textContent('#map svg .legend')).includes('≥ 1,000'));
  await shot('dashboard-en.png');
  await page.click('#language button[data-lang=fr]');
  version = await ready(version);
  assert.equal(await page.textContent('header h1 span'), 'tableau de bord épidémiologique');

  return scenario.screenshot;
});
