// The dashboard in a real browser (Debian's chromium through playwright-core).
//
//   node tests/browser/dashboard.spec.mjs <scenario.json>
//
// The scenario (written by tests/e2e/test_dashboard_browser.py): url, token, screenshot path and the
// numbers expected from the open-data files. Exits non-zero with the reason on the first failed check.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const require = createRequire(new URL('../../services/dashboard/web/package.json', import.meta.url));
const { chromium } = require('playwright-core');

const scenario = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const profile = mkdtempSync(join(tmpdir(), 'labflow-chromium-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  viewport: { width: 1400, height: 1000 },
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--no-first-run'],
});
const page = context.pages()[0] || await context.newPage();
const problems = [];
page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
// the 401s before logging in (and for the wrong token) are expected; any other error is not
page.on('console', (message) => {
  if (message.type() === 'error' && !message.text().includes('status of 401')) problems.push(`console: ${message.text()}`);
});
// offline: anything not served by the dashboard itself fails the test
await page.route('**/*', (route) => (route.request().url().startsWith(scenario.url)
  ? route.continue() : route.abort()));

async function ready(after) {
  await page.waitForFunction((v) => document.body.dataset.state === 'ready'
    && Number(document.body.dataset.version || 0) > v, after, { timeout: 15000 });
  return Number(await page.getAttribute('body', 'data-version'));
}

async function seriesRow(day) {
  return page.$$eval(`#series-table tr[data-day="${day}"] td`, (tds) => tds.map((td) => td.textContent));
}

try {
  await page.goto(scenario.url);
  await page.waitForSelector('#login:not([hidden])');
  await page.fill('#token', 'not-a-token');
  await page.click('#login-form button');
  await page.waitForFunction(() => document.querySelector('#login-error').textContent.length > 0);

  await page.fill('#token', scenario.token);
  await page.click('#login-form button');
  let version = await ready(0);
  assert.equal(await page.isHidden('#login'), true);

  // France on the last day: P and T of the national file, P7/T7 and rates over the 7 days
  const fra = scenario.expected.fra;
  assert.deepEqual(await seriesRow(fra.day), fra.row, 'national series row');
  assert.equal(await page.getAttribute('#chart-incidence', 'data-last'), fra.row[5], 'incidence chart');
  assert.equal(await page.getAttribute('#chart-incidence', 'data-points'), String(scenario.expected.points));
  assert.ok(await page.$('#chart-incidence canvas'), 'the chart is drawn');

  // one department: the sliding file's values, in the table and the charts
  await page.selectOption('#filters [name=level]', 'dep');
  version = await ready(version);
  await page.selectOption('#filters [name=code]', scenario.expected.dep.code);
  version = await ready(version);
  const dep = scenario.expected.dep;
  assert.equal(await page.textContent('#series-title'), dep.code);
  assert.deepEqual(await seriesRow(dep.day), dep.row, 'department series row');
  assert.equal(await page.getAttribute('#chart-incidence', 'data-last'), dep.row[5]);
  assert.equal(await page.getAttribute('#chart-positivity', 'data-last'), dep.row[6]);

  // an age class changes the numbers again
  await page.selectOption('#filters [name=age]', dep.age);
  version = await ready(version);
  assert.deepEqual(await seriesRow(dep.day), dep.age_row, 'department series row, one age class');

  // department table: every department, the highest incidence first; a click sorts ascending
  await page.selectOption('#filters [name=age]', '0');
  version = await ready(version);
  const departments = await page.$$eval('#departments-table tbody tr', (trs) => trs.map((tr) => tr.dataset.department));
  assert.equal(departments.length, 104);
  assert.equal(departments[0], scenario.expected.top_department);
  await page.click('#departments-table th[data-key=incidence]');
  const ascending = await page.$$eval('#departments-table tbody tr', (trs) => trs.map((tr) => tr.dataset.department));
  assert.equal(ascending[ascending.length - 1], scenario.expected.top_department);
  await page.click('#departments-table th[data-key=incidence]');

  // labs: the late one highlighted, the silent ones listed
  assert.equal(await page.getAttribute(`#labs-table tr[data-lab="${scenario.expected.late_lab}"]`, 'class'),
    'late');
  const silent = await page.textContent('#silent-labs');
  for (const lab of scenario.expected.silent_labs) assert.ok(silent.includes(lab), `${lab} listed as silent`);

  // every view has a CSV link that downloads with the session cookie
  for (const id of ['#series-csv', '#departments-csv', '#labs-csv', '#labs-period-csv', '#labs-silent-csv']) {
    const href = await page.getAttribute(id, 'href');
    const body = await page.evaluate(async (url) => (await fetch(url)).text(), href);
    assert.ok(body.split('\n').length > 1 && body.includes(';'), `${id} is a CSV`);
  }
  assert.deepEqual(problems, []);
  await page.screenshot({ path: scenario.screenshot, fullPage: true });
  console.log(`ok: ${scenario.screenshot}`);
} catch (error) {
  await page.screenshot({ path: scenario.screenshot, fullPage: true }).catch(() => {});
  console.error(error.stack || String(error));
  if (problems.length) console.error(problems.join('\n'));
  process.exitCode = 1;
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
