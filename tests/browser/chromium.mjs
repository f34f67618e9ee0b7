// What the browser specs (dashboard.spec.mjs, portal.spec.mjs) share: Debian's chromium through
// playwright-core, in French, offline (whatever the app under test does not serve is aborted); a page
// error or an unexpected console error fails the spec; waiting for the page's `ready` state; and the
// end of a run (a screenshot and the reason on failure, exit code 1, the browser closed either way).
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const require = createRequire(new URL('../../services/dashboard/web/package.json', import.meta.url));
const { chromium } = require('playwright-core');

// the scenario written by the Python test that runs the spec (tests/e2e/test_*_browser.py)
export const loadScenario = () => JSON.parse(readFileSync(process.argv[2], 'utf8'));

// `expectedErrors`: the console errors the spec provokes on purpose (the 401s before logging in, …)
export async function openChromium(scenario, { viewport, expectedErrors, acceptDownloads = false }) {
  const profile = mkdtempSync(join(tmpdir(), 'labflow-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    acceptDownloads,
    locale: 'fr-FR',
    timezoneId: 'Europe/Paris',
    viewport,
    args: ['--headless', '--lang=fr-FR', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
  const page = context.pages()[0] || await context.newPage();
  const problems = [];
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
  page.on('console', (message) => {
    if (message.type() === 'error' && !expectedErrors.test(message.text())) problems.push(`console: ${message.text()}`);
  });
  await page.route('**/*', (route) => (route.request().url().startsWith(scenario.url)
    ? route.continue() : route.abort()));
  // the page has (re)rendered after version `after`: its new version
  const ready = (after) => rendered(page, after);
  return { context, page, problems, profile, ready };
}

async function rendered(page, after) {
  await page.waitForFunction((v) => document.body.dataset.state === 'ready'
    && Number(document.body.dataset.version || 0) > v, after, { timeout: 15000 });
  return Number(await page.getAttribute('body', 'data-version'));
}

// runs the spec's checks (which return what to print after `ok:`), then checks that the page had no
// problem; on a failure: a screenshot at scenario.screenshot, the reason, exit code 1
export async function run(scenario, browser, checks) {
  const { context, page, problems, profile } = browser;
  try {
    const shown = await checks();
    assert.deepEqual(problems, []);
    console.log(`ok: ${shown}`);
  } catch (error) {
    await page.screenshot({ path: scenario.screenshot, fullPage: true }).catch(() => {});
    console.error(error.stack || String(error));
    if (problems.length) console.error(problems.join('\n'));
    process.exitCode = 1;
  } finally {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
  }
}
