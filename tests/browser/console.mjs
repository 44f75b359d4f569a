// The auditor console in headless Chromium, driven by Playwright (playwright-core from npm,
// Debian's /usr/bin/chromium): open /console with the auditor's client certificate, search,
// page, filter, open a record and wait for its inclusion proof to verify in the browser,
// check the chart, and save a full-page screenshot. tests/e2e/console.rs runs this against
// the real gateway and then checks the screenshot's pixels; `tests/run` provisions the
// browser and Playwright and exports where they are.
//
//   node tests/browser/console.mjs --origin https://localhost:PORT \
//     --cert auditor.crt --key auditor.key --screenshot console.png \
//     [--boxes console.json] [--expect-outcomes allow,deny,pending]
//
// Environment: COUNTERSIGN_PLAYWRIGHT_DIR (the npm prefix holding node_modules/playwright-core),
// COUNTERSIGN_CHROMIUM (default /usr/bin/chromium). The gateway's server certificate is
// verified by Playwright's client-certificate proxy with Node's CA store: give the test CA in
// NODE_EXTRA_CA_CERTS (no ignoreHTTPSErrors anywhere).
//
// Exit status 0 when every check passed; 1 with "console.mjs: FAILED: ..." on stderr when one
// failed; 2 for bad arguments or a missing Playwright/Chromium.

import { createRequire } from 'node:module';
import { existsSync, writeFileSync } from 'node:fs';
import path from 'node:path';

// The whole run, browser start to screenshot; the Rust test's own bound is above it.
const RUN_TIMEOUT_MS = 45_000;
// Any one wait for the page (a search, a proof check, the chart).
const STEP_TIMEOUT_MS = 15_000;
// The Chromium flags this closed network needs (/work/.library/env/machines/rust.md):
// without the background-networking ones Chromium keeps dialling Google's hosts. Playwright
// adds --headless itself and starts every browser on a fresh temporary profile
// (--user-data-dir), deleted at close.
const CHROMIUM_FLAGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

class CheckFailed extends Error {}

function fail(message) {
  throw new CheckFailed(message);
}

function parseArguments(argv) {
  const options = { expectOutcomes: ['allow', 'deny'] };
  const names = {
    '--origin': 'origin',
    '--cert': 'cert',
    '--key': 'key',
    '--screenshot': 'screenshot',
    '--boxes': 'boxes',
    '--expect-outcomes': 'expectOutcomes',
  };
  for (let i = 0; i < argv.length; i += 2) {
    const name = names[argv[i]];
    if (!name || argv[i + 1] === undefined) {
      console.error(`console.mjs: unknown or incomplete argument ${argv[i]}`);
      process.exit(2);
    }
    options[name] = name === 'expectOutcomes' ? argv[i + 1].split(',') : argv[i + 1];
  }
  if (!options.origin || !options.screenshot) {
    console.error('console.mjs: --origin and --screenshot are required');
    process.exit(2);
  }
  if (Boolean(options.cert) !== Boolean(options.key)) {
    console.error('console.mjs: --cert and --key go together');
    process.exit(2);
  }
  options.origin = new URL(options.origin).origin;
  options.boxes ??= `${options.screenshot}.json`;
  return options;
}

function loadPlaywright() {
  const directory = process.env.COUNTERSIGN_PLAYWRIGHT_DIR;
  if (!directory || !existsSync(path.join(directory, 'node_modules', 'playwright-core'))) {
    console.error(
      `console.mjs: playwright-core not found under COUNTERSIGN_PLAYWRIGHT_DIR=${directory ?? '(unset)'}; ` +
        '`bash tests/run` installs it',
    );
    process.exit(2);
  }
  return createRequire(path.join(directory, 'package.json'))('playwright-core');
}

function step(name) {
  console.log(`console.mjs: ${name}`);
}

// Waits until `predicate(page state)` holds in the page; fails with `what` and the page's
// status lines when it does not within the step bound.
async function waitInPage(page, what, predicate, argument) {
  try {
    await page.waitForFunction(predicate, argument, { timeout: STEP_TIMEOUT_MS, polling: 50 });
  } catch (error) {
    const statuses = await page
      .evaluate(() =>
        ['search-status', 'chart-status', 'proof-status']
          .map((id) => `${id}: ${document.getElementById(id)?.textContent ?? '(missing)'}`)
          .join('; '),
      )
      .catch(() => '(page unreadable)');
    fail(`${what} (waited ${STEP_TIMEOUT_MS} ms; ${statuses}; ${error.message.split('\n')[0]})`);
  }
}

async function search(page, filters, expectedPage = 1) {
  await page.selectOption('#filter-outcome', filters.outcome ?? '');
  await page.selectOption('#filter-limit', String(filters.limit ?? 25));
  await page.click('#search-button');
  await waitInPage(
    page,
    `search ${JSON.stringify(filters)} did not finish`,
    (expected) => {
      const status = document.getElementById('search-status');
      return (
        status.classList.contains('error') || status.textContent.startsWith(`Page ${expected}:`)
      );
    },
    expectedPage,
  );
  return readResults(page);
}

async function readResults(page) {
  const status = await page.textContent('#search-status');
  if (await page.$eval('#search-status', (element) => element.classList.contains('error'))) {
    fail(`the search failed in the page: ${status}`);
  }
  const rows = await page.$$eval('#results-body tr', (rows) =>
    rows.map((row) => ({
      recordId: row.dataset.recordId,
      outcome: row.dataset.outcome,
      sequence: Number(row.dataset.sequence),
    })),
  );
  return { status, rows };
}

async function run(options, problems) {
  const { chromium } = loadPlaywright();
  const executablePath = process.env.COUNTERSIGN_CHROMIUM || '/usr/bin/chromium';
  if (!existsSync(executablePath)) {
    console.error(`console.mjs: no Chromium at ${executablePath}; \`bash tests/run\` installs it`);
    process.exit(2);
  }
  step(`launching ${executablePath}`);
  const browser = await chromium.launch({
    executablePath,
    headless: true,
    chromiumSandbox: false,
    args: CHROMIUM_FLAGS,
    timeout: STEP_TIMEOUT_MS,
  });
  try {
    const context = await browser.newContext({
      viewport: { width: 1400, height: 900 },
      deviceScaleFactor: 1,
      // Presented by Playwright's TLS proxy for this origin only; the proxy verifies the
      // gateway's certificate against NODE_EXTRA_CA_CERTS.
      clientCertificates: options.cert
        ? [{ origin: options.origin, certPath: options.cert, keyPath: options.key }]
        : [],
    });
    const page = await context.newPage();
    // A script error or a CSP violation is a failure even when the checks below pass.
    page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
    page.on('console', (message) => {
      if (message.type() === 'error') problems.push(`console error: ${message.text()}`);
    });

    step(`opening ${options.origin}/console`);
    const response = await page.goto(`${options.origin}/console`, {
      waitUntil: 'load',
      timeout: STEP_TIMEOUT_MS,
    });
    const body = (await page.textContent('body').catch(() => '')) ?? '';
    if (body.includes('Playwright client-certificate error')) {
      fail(`TLS to the gateway failed in Playwright's proxy: ${body.trim().slice(0, 300)}`);
    }
    if (!response || response.status() !== 200) {
      fail(`GET /console answered ${response?.status()}: ${body.trim().slice(0, 300)}`);
    }
    const csp = response.headers()['content-security-policy'] ?? '';
    if (!csp.includes("script-src 'self'")) fail(`no strict CSP on /console: ${csp}`);

    step('waiting for the chart');
    await waitInPage(page, 'the chart did not render', () => {
      const status = document.getElementById('chart-status');
      return status.classList.contains('error') || document.getElementById('outcome-chart');
    });
    if (await page.$eval('#chart-status', (element) => element.classList.contains('error'))) {
      fail(`the chart failed: ${await page.textContent('#chart-status')}`);
    }

    step('search, first page of 10, then the next page');
    const first = await search(page, { limit: 10 });
    if (first.rows.length === 0) fail(`the first search returned no rows (${first.status})`);
    if (await page.isEnabled('#next-page')) {
      await page.click('#next-page');
      await waitInPage(page, 'the next page did not load', () =>
        document.getElementById('search-status').textContent.startsWith('Page 2:') ||
        document.getElementById('search-status').classList.contains('error'),
      );
      const second = await readResults(page);
      const lastOfFirst = first.rows[first.rows.length - 1].sequence;
      if (second.rows.length === 0) fail('the next page is empty although one was announced');
      if (second.rows[0].sequence <= lastOfFirst) {
        fail(`page 2 starts at sequence ${second.rows[0].sequence}, not after ${lastOfFirst}`);
      }
    } else if (first.rows.length === 10) {
      fail('10 rows on a page of 10 but no next page offered');
    }

    step('filter: outcome deny');
    const denied = await search(page, { outcome: 'deny', limit: 25 });
    if (denied.rows.length === 0) fail(`no denied records found (${denied.status})`);
    const notDenied = denied.rows.filter((row) => row.outcome !== 'deny');
    if (notDenied.length) fail(`outcome=deny returned ${JSON.stringify(notDenied)}`);

    step('search everything (the screenshot shows this page)');
    const all = await search(page, { limit: 25 });
    if (all.rows.length === 0) fail(`the search returned no rows (${all.status})`);
    // A denied transfer's decision: old enough to be in a checkpoint (the first rows are the
    // oldest), and the more interesting record to show.
    const chosen = all.rows.find((row) => row.outcome === 'deny') ?? all.rows[0];

    step(`opening record ${chosen.sequence} (${chosen.outcome})`);
    await page.click(`#results-body tr[data-record-id="${chosen.recordId}"]`);
    await waitInPage(page, 'the proof check did not finish', () =>
      ['verified', 'pending', 'failed'].includes(
        document.getElementById('proof-status').dataset.status,
      ),
    );
    const proofStatus = await page.$eval('#proof-status', (element) => ({
      status: element.dataset.status,
      text: element.textContent,
    }));
    if (proofStatus.status !== 'verified' || !proofStatus.text.startsWith('verified')) {
      fail(`record ${chosen.sequence}: proof ${proofStatus.status}: ${proofStatus.text}`);
    }
    console.log(`console.mjs: proof: ${proofStatus.text}`);

    step('checking the chart');
    const chart = await page.$eval('#outcome-chart', (svg) => ({
      bars: Array.from(svg.querySelectorAll('#chart-bars rect.bar'), (bar) => ({
        outcome: bar.dataset.outcome,
        count: Number(bar.dataset.count),
        height: Number(bar.getAttribute('height')),
      })),
      legend: Array.from(svg.querySelectorAll('#chart-legend .legend-item'), (item) =>
        item.textContent.trim(),
      ),
      axisTitles: Array.from(svg.querySelectorAll('.axis-title'), (title) => title.textContent),
    }));
    const outcomesDrawn = new Set(
      chart.bars.filter((bar) => bar.count > 0 && bar.height > 0).map((bar) => bar.outcome),
    );
    if (outcomesDrawn.size < 2) fail(`the chart draws bars for ${[...outcomesDrawn]} only`);
    const missing = options.expectOutcomes.filter((outcome) => !outcomesDrawn.has(outcome));
    if (missing.length) fail(`no bars for ${missing} (drawn: ${[...outcomesDrawn]})`);
    for (const outcome of ['allow', 'deny', 'pending', 'error']) {
      if (!chart.legend.some((item) => item.startsWith(outcome))) {
        fail(`the legend lacks ${outcome}: ${chart.legend}`);
      }
    }
    if (chart.axisTitles.length < 2) fail(`axis titles missing: ${chart.axisTitles}`);

    if (problems.length) fail(problems.join('\n  '));

    // Where things are on the screenshot, in its pixels (deviceScaleFactor 1), for the
    // pixel checks of tests/e2e/console.rs.
    const boxes = await page.evaluate(() => {
      const box = (selector) => {
        const element = document.querySelector(selector);
        if (!element) return null;
        const rect = element.getBoundingClientRect();
        return {
          x: Math.round(rect.left + window.scrollX),
          y: Math.round(rect.top + window.scrollY),
          width: Math.round(rect.width),
          height: Math.round(rect.height),
        };
      };
      return {
        chart: box('#outcome-chart'),
        chart_bars: box('#chart-bars'),
        results: box('#results'),
        results_body: box('#results-body'),
        detail: box('#detail'),
        proof_status: box('#proof-status'),
      };
    });
    await page.screenshot({ path: options.screenshot, fullPage: true });
    writeFileSync(
      options.boxes,
      JSON.stringify(
        {
          boxes,
          outcomes_drawn: [...outcomesDrawn].sort(),
          rows: all.rows.length,
          opened: chosen,
          proof: proofStatus,
        },
        null,
        2,
      ),
    );
    console.log(`console.mjs: screenshot ${options.screenshot}, boxes ${options.boxes}`);
    await context.close();
  } finally {
    await browser.close();
  }
}

const options = parseArguments(process.argv.slice(2));
const problems = [];
const deadline = setTimeout(() => {
  console.error(`console.mjs: FAILED: the run took longer than ${RUN_TIMEOUT_MS} ms`);
  process.exit(1);
}, RUN_TIMEOUT_MS);
try {
  await run(options, problems);
  clearTimeout(deadline);
  console.log('console.mjs: all checks passed');
} catch (error) {
  clearTimeout(deadline);
  const message = error instanceof CheckFailed ? error.message : error.stack || String(error);
  console.error(`console.mjs: FAILED: ${message}`);
  process.exit(1);
}
