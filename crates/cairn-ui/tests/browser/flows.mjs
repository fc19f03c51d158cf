// The UI's main flows in a real browser (Debian's chromium, driven by playwright-core).
//
//   node flows.mjs URL REPO CAIRN [SCREENSHOT_DIR]
//
// URL: a running `cairn ui` for REPO; CAIRN: the binary, to run the pipeline while the page
// watches. Exits non-zero, naming the step, when a flow fails or the page logs an error.
import { chromium } from 'playwright-core';
import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const [url, repo, cairn, shots] = process.argv.slice(2);
if (!url || !repo || !cairn) {
  console.error('usage: node flows.mjs URL REPO CAIRN [SCREENSHOT_DIR]');
  process.exit(2);
}

// A fresh profile each time; the flags keep chromium off the network (it stalls here
// otherwise).
const browser = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), 'cairn-ui-')), {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'],
  viewport: { width: 1360, height: 860 },
});
const page = browser.pages()[0] || await browser.newPage();
const problems = [];
page.on('console', (m) => { if (m.type() === 'error') problems.push(`console: ${m.text()}`); });
page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
page.setDefaultTimeout(15000);

let step = 'start';
const shot = async (name) => { if (shots) await page.screenshot({ path: join(shots, `${name}.png`), fullPage: false }); };
const expect = (ok, message) => { if (!ok) throw new Error(message); };

try {
  step = 'the pipeline graph shows the stale stage, then turns fresh while `cairn run` works';
  await page.goto(`${url}/#/pipeline`);
  await page.waitForSelector('[data-stage="train"][data-state="stale"]');
  await page.click('[data-stage="train"]');
  await page.waitForSelector('#stage-panel >> text=Why it would run');
  const reasons = await page.textContent('#stage-panel');
  expect(/param `lr`.*changed/.test(reasons), `the panel does not say why train would run: ${reasons}`);
  const run = spawn(cairn, ['run', '-q'], { cwd: repo, stdio: 'inherit' });
  const ran = new Promise((resolve) => run.on('exit', resolve));
  await page.waitForSelector('[data-stage="train"][data-state="fresh"]', { timeout: 60000 });
  expect((await ran) === 0, '`cairn run` failed');
  await page.waitForSelector('#stage-panel >> text=Last materialization');
  await page.click('[data-stage="prepare"]');
  await page.waitForSelector('#checks [data-check="passed"]');
  await page.click('[data-stage="regions"]');
  await page.waitForSelector('.heat span.missing');
  await page.click('[data-stage="train"]');
  await page.waitForSelector('#stage-panel >> text=Last materialization');
  await shot('pipeline');

  step = 'runs: filter, sort, select and compare';
  await page.goto(`${url}/#/runs`);
  await page.waitForSelector('#runs tbody tr');
  const all = await page.locator('#runs tbody tr').count();
  expect(all >= 3, `expected at least 3 runs, saw ${all}`);
  await page.fill('#run-filter', 'metrics.acc > 0.85');
  await page.press('#run-filter', 'Enter');
  await page.waitForFunction((n) => { const k = document.querySelectorAll('#runs tbody tr').length; return k > 0 && k < n; }, all);
  const filtered = await page.locator('#runs tbody tr').count();
  expect(filtered >= 1 && filtered < all, `the filter kept ${filtered} of ${all}`);
  await page.fill('#run-filter', '');
  await page.press('#run-filter', 'Enter');
  await page.waitForFunction((n) => document.querySelectorAll('#runs tbody tr').length === n, all);
  await page.click('#runs th:has-text("acc")');
  await page.waitForSelector('#runs th:has-text("acc ▼")');
  const accs = await page.$$eval('#runs tbody tr', (rows) => rows.map((r) => r.children[6]?.textContent));
  const numbers = accs.filter((x) => x).map(Number);
  expect(numbers.every((x, i) => i === 0 || numbers[i - 1] >= x), `not sorted by acc descending: ${accs}`);
  await shot('runs');
  const boxes = page.locator('#runs tbody input[type=checkbox]');
  await boxes.nth(0).check();
  await boxes.nth(1).check();
  await page.click('#compare');
  await page.waitForSelector('#compare-params');
  const differs = await page.textContent('#compare-params');
  expect(differs.includes('lr'), `the comparison does not show lr differing: ${differs}`);
  await page.waitForSelector('#parallel polyline');
  await page.waitForFunction(() => [...document.querySelectorAll('img.chart-img')].some((i) => i.complete && i.naturalWidth > 0));
  await shot('compare');

  step = "MLflow's run link opens the run";
  const runId = await page.getAttribute('#compare-params thead a', 'href');
  await page.goto(`${url}/#/experiments/0/runs/${runId.split('/').pop()}`);
  await page.waitForSelector('h1:has-text("Run")');
  await page.waitForFunction(() => [...document.querySelectorAll('#charts img.chart-img')].some((i) => i.complete && i.naturalWidth > 0));

  step = 'lineage: from the model to its data';
  await page.goto(`${url}/#/models/churn`);
  await page.waitForSelector('[data-version="1"]');
  await page.click('[data-version="1"] >> text=lineage →');
  await page.waitForSelector('#lineage-graph [data-node="data/raw.csv"]');
  const lineage = await page.textContent('#lineage');
  expect(lineage.includes('data/raw.csv') || lineage.includes('raw.csv'), `the lineage does not reach the raw data: ${lineage.slice(0, 400)}`);
  await shot('lineage');

  step = 'registry: approve a version and move an alias';
  await page.goto(`${url}/#/models/churn`);
  await page.waitForSelector('[data-approve="1"]');
  await page.fill('[data-version="1"] input[name=comment]', 'checked the holdout metrics');
  await page.click('[data-approve="1"]');
  await page.waitForSelector('[data-version="1"] >> text=checked the holdout metrics');
  await page.fill('#alias-form input[name=alias]', 'staging');
  await page.fill('#alias-form input[name=reason]', 'ready for the canary');
  await page.click('#alias-form button[type=submit]');
  await page.waitForSelector('td:has-text("ready for the canary")');
  // Promote version 2, then roll back with one click.
  await page.fill('#alias-form input[name=alias]', 'production');
  await page.selectOption('#alias-form select[name=version]', '2');
  await page.fill('#alias-form input[name=reason]', 'try version 2');
  await page.click('#alias-form button[type=submit]');
  await page.waitForSelector('[data-rollback="production:1"]');
  await page.click('[data-rollback="production:1"]');
  await page.waitForSelector('td:has-text("roll back to version 1")');
  await page.selectOption('[data-rollout="production"] select', '2');
  await page.fill('[data-rollout="production"] input[name=weight]', '20');
  await page.click('[data-rollout="production"] >> text=Set canary');
  await page.waitForSelector('td:has-text("version 2 at 20%")');
  await shot('registry');
  await page.click('[data-rollout="production"] >> text=Clear');
  await page.waitForFunction(() => !document.body.textContent.includes('version 2 at 20%'));


  step = 'monitoring: the drift, the alert, and the requests behind it';
  await page.goto(`${url}/#/monitor/churn`);
  await page.waitForSelector('[data-version="1"] >> text=drifted');
  await page.waitForSelector('text=Latency p50 / p95 / p99');
  await page.waitForSelector('#drift-panels figure[data-feature="age"] svg rect');
  await shot('monitoring');
  await page.click('text=requests →');
  await page.waitForSelector('h1:has-text("Requests behind alert")');
  const traces = await page.locator('a[href^="#/trace/"]').count();
  expect(traces > 0, 'the alert lists no requests');
  await page.locator('a[href^="#/trace/"]').first().click();
  await page.waitForSelector('#trace');
  await page.waitForSelector('#lineage-graph [data-node="churn@1"]');

  step = 'a trace id in the search box';
  const id = (await page.textContent('h1 code')).trim();
  await page.goto(`${url}/#/runs`);
  await page.fill('#search-box', id);
  await page.press('#search-box', 'Enter');
  await page.waitForSelector(`h1:has-text("${id}")`);

  step = 'no errors in the console';
  expect(problems.length === 0, problems.join('\n'));
} catch (e) {
  console.error(`UI flow failed at: ${step}\n${e.message}`);
  if (problems.length) console.error(problems.join('\n'));
  if (shots) await page.screenshot({ path: join(shots, 'failure.png') }).catch(() => {});
  await browser.close();
  process.exit(1);
}
await browser.close();
console.log('all UI flows passed');
