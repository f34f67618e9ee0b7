// The lab portal in a real browser (Debian's chromium through playwright-core).
//
//   node tests/browser/portal.spec.mjs <scenario.json>
//
// The scenario (written by tests/e2e/test_portal_browser.py): url, artifacts folder, and for labs a and b
// their token, what they sent and what they must never see (the other lab, its message ids, identities).
// Exits non-zero with the reason on the first failed check.
import assert from 'node:assert/strict';
import { join } from 'node:path';

import { loadScenario, openChromium, run } from './chromium.mjs';

const scenario = loadScenario();
// 401s (before logging in, a wrong token, the staff API) and 403s are expected; any other error is not
const browser = await openChromium(scenario, { viewport: { width: 1300, height: 900 }, expectedErrors: /status of 40[13]/ });
const { page, ready } = browser;
const plain = (value) => value.replace(/[\s\u202f\u00a0]/g, '');
const tile = async (key) => plain(await page.textContent(`#summary [data-key="${key}"] dd`));

async function login(token) {
  await page.waitForSelector('#login:not([hidden])');
  await page.fill('#token', token);
  await page.click('#login-form button');
  return ready(0);
}

// what the lab's session can fetch from inside the page: the portal API (whatever it asks for) and the
// staff dashboard's API
async function fetched(paths) {
  return page.evaluate(async (list) => Promise.all(list.map(async (path) => {
    const response = await fetch(path, { credentials: 'same-origin' });
    return { path, status: response.status, body: await response.text() };
  })), paths);
}

async function checkLab(lab, shotName) {
  assert.equal(await page.textContent('#lab'), `Laboratoire ${lab.lab}`);
  assert.equal(await tile('messages'), String(lab.messages), 'messages');
  assert.equal(await tile('aa'), String(lab.aa), 'AA');
  assert.equal(await tile('ae'), String(lab.ae), 'AE');
  assert.equal(await tile('ar'), String(lab.ar), 'AR');
  assert.equal(await tile('results'), String(lab.results), 'results stored');
  assert.notEqual(await tile('last'), 'aucun', 'a last message received');
  const ids = await page.$$eval('#rejections-table tbody tr td:nth-child(3)', (tds) => tds.map((td) => td.textContent));
  assert.deepEqual([...ids].sort(), lab.rejected, 'the lab’s rejected messages, all of them, only them');
  const days = await page.$$eval('#days-table tbody tr', (rows) => rows.map((r) => r.dataset.day));
  assert.ok(days.length >= 2, `per-day rows: ${days}`);
  const text = await page.textContent('body');
  for (const forbidden of lab.forbidden) {
    assert.ok(!text.includes(forbidden), `the page shows ${forbidden}`);
  }
  // the lab's session opens nothing else: naming the other lab changes nothing, the staff API is closed
  const other = lab.forbidden[0];
  const answers = await fetched([
    `/portal/api/v1/traffic?lab=${other}`, `/portal/api/v1/rejections?lab=${other}&limit=200`,
    '/api/v1/labs/reporting', `/api/v1/labs/reporting?format=csv`,
  ]);
  for (const { path, status, body } of answers) {
    if (path.startsWith('/api/')) {
      assert.equal(status, 401, `${path} with a lab's session`);
      continue;
    }
    assert.equal(status, 200, path);
    assert.equal(JSON.parse(body).lab, lab.lab, path);
    for (const forbidden of lab.forbidden) assert.ok(!body.includes(forbidden), `${path} returns ${forbidden}`);
  }
  if (shotName) await page.screenshot({ path: join(scenario.artifacts, shotName), fullPage: true });
}

await run(scenario, browser, async () => {
  const a = scenario.a;
  const b = scenario.b;
  await page.goto(`${scenario.url}/portal`);
  await page.waitForSelector('#login:not([hidden])');
  assert.equal(await page.getAttribute('html', 'lang'), 'fr', 'French by default');
  assert.equal(await page.textContent('#login h2'), 'Connexion du laboratoire');
  // another lab's id with A's secret, and a made-up token: refused
  const secret = a.token.slice(a.token.lastIndexOf('.') + 1);
  for (const wrong of [`${b.lab}.${secret}`, 'not-a-token']) {
    await page.fill('#token', wrong);
    await page.click('#login-form button');
    await page.waitForFunction(() => document.querySelector('#login-error').textContent.length > 0);
    assert.equal(await page.textContent('#login-error'), "Ce jeton n'ouvre aucun portail de laboratoire.");
    await page.evaluate(() => { document.querySelector('#login-error').textContent = ''; });
  }

  let version = await login(a.token);
  await checkLab(a, 'portal.png');
  // reasons: location, 0357 code, text; replay status
  const replayed = page.locator('#rejections-table tbody tr', { hasText: scenario.replayed });
  // reasons: location, 0357 code, the catalogue's issue id, text and its fix hint
  assert.match(await replayed.locator('td.reasons').textContent(), /PID-3.1 · 102 · INS_INVALID PID-3: INS key .*Conseil : Envoyez le matricule de 15 caractères/);
  assert.match(await replayed.locator('td:last-child').textContent(), /^rejoué 1 fois, dernier résultat AE/);
  const ar = page.locator('#rejections-table tbody tr', { hasText: 'ALPHA-AR-0' });
  assert.match(await ar.locator('td.reasons').textContent(), /MSH-9.1 · 200 · UNSUPPORTED_MESSAGE_TYPE MSH-9: unsupported message type .*Conseil : Envoyez les résultats en ORU\^R01/);
  assert.equal(await ar.locator('td:last-child').textContent(), 'non rejoué');
  const reasons = await page.$$eval('#reasons-table tbody tr', (rows) => rows.map((r) => [...r.cells].slice(0, 3).map((c) => c.textContent)));
  assert.deepEqual(reasons, [['PID-3', '102 Erreur de type de donnée', '2'], ['MSH-9', '200 Type de message non pris en charge', '1']]);
  assert.match(await page.textContent('#delays-summary'), /^Médiane 6 h/);
  // onboarding (SPEC §8.1): the lab's mode and its latest conformance report, its own only
  assert.equal(await page.textContent('#conformance .mode'), 'En production : vos résultats sont comptés.');
  assert.equal(await page.textContent('#conformance .verdict'), "Aucun rapport de conformité pour l'instant (labflow conformance report).");

  await page.click('#language button[data-lang=en]');
  version = await ready(version);
  assert.equal(await page.textContent('#rejections-panel h2'), 'Latest rejected messages');
  assert.equal(await page.textContent('#lab'), `Lab ${a.lab}`);
  // the English page gives the hint the rejection carries, the French one the catalogue's translation
  assert.match(await replayed.locator('td.reasons').textContent(), /Hint: Send the 15-character matricule/);
  await page.screenshot({ path: join(scenario.artifacts, 'portal-en.png'), fullPage: true });
  await page.click('#language button[data-lang=fr]');
  await ready(version);

  await page.click('#logout');
  await page.waitForSelector('#login:not([hidden])');
  assert.equal((await fetched(['/portal/api/v1/session']))[0].status, 401, 'logged out');
  await login(b.token);
  await checkLab(b, 'portal-lab-b.png');
  // lab B's delays are late (30 h and more): the day rows say so
  assert.ok((await page.$$('#days-table tbody tr.late')).length >= 1, 'late days marked');

  return join(scenario.artifacts, 'portal.png');
});
