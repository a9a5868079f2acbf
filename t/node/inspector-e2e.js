// Drives examples/inspector/ in headless Chromium for t/41-inspector.t.
//
//   node inspector-e2e.js BASE_URL SCREENSHOT USER_DATA_DIR
//
// Talks to the test over lines: prints "session <url>", "rows <json>",
// "sockets <n>", "done" (or "error <message>"), and waits for the test to
// write "posted <n>" after it sent webhooks.

'use strict';

const readline = require('readline');
const { chromium } = require('playwright-core');

const [base, screenshot, userDataDir] = process.argv.slice(2);

const lines = [];
const waiters = [];

readline.createInterface({ input: process.stdin }).on('line', (line) => {
  const w = waiters.shift();
  if (w) {
    w(line);
  } else {
    lines.push(line);
  }
});

function nextLine() {
  if (lines.length) {
    return Promise.resolve(lines.shift());
  }
  return new Promise((resolve) => waiters.push(resolve));
}

async function expectLine(want) {
  const line = await nextLine();
  if (line !== want) {
    throw new Error(`expected "${want}" from the test, got "${line}"`);
  }
}

function say(s) {
  process.stdout.write(s + '\n');
}

async function rows(page, n) {
  await page.waitForFunction(
    (n) => document.querySelectorAll('#requests .request').length >= n,
    n, { timeout: 15000 });

  return page.$$eval('#requests .request', (els) => els.map((el) => ({
    id: el.dataset.id,
    method: el.querySelector('.method').textContent,
    path: el.querySelector('.path').textContent,
    time: el.querySelector('.time').textContent,
    headers: el.querySelectorAll('tr').length,
    body: el.querySelector('.body').textContent,
  })));
}

async function main() {
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu',
      '--disable-background-networking', '--disable-component-update',
      '--disable-sync', '--no-first-run',
    ],
  });

  try {
    const page = context.pages()[0] || await context.newPage();
    let sockets = 0;

    page.on('websocket', () => { sockets++; });
    page.on('pageerror', (err) => say(`pageerror ${err.message}`));

    await page.goto(`${base}/inspector/`);
    await page.click('#create');
    await page.waitForFunction(
      () => document.querySelector('#status').textContent === 'live',
      null, { timeout: 15000 });

    say(`session ${await page.inputValue('#url')}`);

    await expectLine('posted 2');
    say(`rows ${JSON.stringify(await rows(page, 2))}`);

    await expectLine('posted 3');
    say(`rows ${JSON.stringify(await rows(page, 3))}`);

    await page.waitForFunction(
      () => document.querySelector('#status').textContent === 'live',
      null, { timeout: 15000 });

    say(`sockets ${sockets}`);
    say(`status ${await page.textContent('#status')}`);

    await page.screenshot({ path: screenshot, fullPage: true });
    say('done');

  } finally {
    await context.close();
  }
}

main().catch((err) => {
  say(`error ${String(err && err.stack || err).replace(/\n/g, ' | ')}`);
  process.exitCode = 1;
});
