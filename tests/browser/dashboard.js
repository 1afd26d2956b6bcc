// Opens weir's dashboard in Debian's headless Chromium and checks it the
// way an operator would look at it: it connects, the numbers move, and
// (with a stalled sink) the stage where backpressure starts is highlighted.
// Usage: node dashboard.js URL SCREENSHOT.png STAGE
// Prints one JSON line with what it saw; exits 1 when a check fails.
'use strict';

const { chromium } = require('playwright-core');

async function main() {
  const [url, screenshot, stage] = process.argv.slice(2);
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
  });
  const seen = {};
  try {
    const page = await browser.newPage({ viewport: { width: 1400, height: 1100 } });
    const errors = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    await page.goto(url);
    await page.waitForFunction(() => document.getElementById('conn').textContent === 'live', null, { timeout: 15000 });
    // the numbers move: two views a second apart differ, and events flowed in
    const first = await page.textContent('#at');
    await page.waitForFunction((t) => document.getElementById('at').textContent !== t, first, { timeout: 10000 });
    await page.waitForFunction(() => {
      const n = Number(document.getElementById('events-in').textContent.replace(/,/g, ''));
      return n > 0;
    }, null, { timeout: 15000 });
    seen.events_in = await page.textContent('#events-in');
    seen.nodes = await page.$$eval('#graph .node', (ns) => ns.map((n) => [n.dataset.id, n.dataset.backpressure]));
    // the stalled sink is highlighted as where backpressure starts
    await page.waitForSelector(`#graph .node.bottleneck[data-id="${stage}"]`, { timeout: 30000 });
    seen.bottleneck = await page.textContent('#bottleneck');
    seen.nodes_stalled = await page.$$eval('#graph .node', (ns) => ns.map((n) => [n.dataset.id, n.dataset.backpressure]));
    seen.rows = {
      shards: await page.$$eval('#shards tr', (r) => r.length - 1),
      steps: await page.$$eval('#steps tr', (r) => r.length - 1),
      sinks: await page.$$eval('#sinks tr', (r) => r.length - 1),
    };
    await page.screenshot({ path: screenshot, fullPage: true });
    seen.errors = errors;
    console.log(JSON.stringify(seen));
    if (errors.length) process.exitCode = 1;
  } finally {
    await browser.close();
  }
}

main().catch((e) => {
  console.error(String(e && e.stack || e));
  process.exit(1);
});
