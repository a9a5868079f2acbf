// Drives examples/dashboard/ in headless Chromium for t/42-dashboard.t.
//
//   node dashboard-e2e.js USER_DATA_DIR
//
// Reads one command a line from stdin and answers each with one line,
// "ok <command> [result]" or "error <message>":
//
//   goto URL               load a page (redirects followed)
//   state NAME [MS]        wait until the page's status is NAME
//   items COLUMN N [MS]    wait until COLUMN lists N items, print all
//                          three columns as JSON, newest first
//   notice                 the notice's text, as a JSON string
//   info                   sockets opened, links shown, the cursor (JSON)
//   click SELECTOR         click, and wait for a navigation it starts
//   screenshot PATH        a full-page screenshot
//   quit                   close the browser and exit
//
// Besides, as they happen: "websocket <url>", "console <type> <text>" and
// "pageerror <message>".

'use strict';

const readline = require('readline');
const { chromium } = require('playwright-core');

const [userDataDir] = process.argv.slice(2);

function say(s) {
  process.stdout.write(s.replace(/\n/g, ' | ') + '\n');
}

async function columns(page) {
  return page.evaluate(() => {
    const out = {};
    for (const col of ['events', 'deliveries', 'issues']) {
      out[col] = Array.from(document.querySelectorAll(`#${col} .item`))
        .map((el) => ({
          title: el.querySelector('.title').textContent,
          badge: (el.querySelector('.badge') || {}).textContent || null,
          channel: el.dataset.channel,
          cursor: el.dataset.cursor,
          type: el.dataset.type,
          id: el.dataset.id || null,
          data: el.querySelector('.data').textContent,
        }));
    }
    return out;
  });
}

async function run(page, line) {
  const [verb, ...args] = line.trim().split(/\s+/);

  switch (verb) {

  case 'goto': {
    await page.goto(args[0], { timeout: 15000 });
    return page.url();
  }

  case 'state': {
    const ms = Number(args[1] || 15000);
    try {
      await page.waitForFunction(
        (s) => document.querySelector('#status').dataset.state === s,
        args[0], { timeout: ms });
    } catch (err) {
      const now = await page.evaluate(
        () => document.querySelector('#status').dataset.state);
      throw new Error(`status "${now}", not "${args[0]}", after ${ms} ms`);
    }
    return args[0];
  }

  case 'items': {
    const [col, n, ms] = args;
    try {
      await page.waitForFunction(
        ([c, k]) => document.querySelectorAll(`#${c} .item`).length >= k,
        [col, Number(n)], { timeout: Number(ms || 15000) });
    } catch (err) {
      throw new Error(`fewer than ${n} ${col}: `
                      + JSON.stringify(await columns(page)));
    }
    return JSON.stringify(await columns(page));
  }

  case 'notice': {
    return JSON.stringify(await page.evaluate(
      () => document.querySelector('#notice').hidden
            ? '' : document.querySelector('#notice-text').textContent));
  }

  case 'info': {
    return JSON.stringify(await page.evaluate(() => ({
      sockets: window.dashboard.sockets,
      cursor: window.dashboard.cursor,
      org: document.querySelector('#org').textContent,
      signIn: !document.querySelector('#sign-in').hidden,
      signOut: !document.querySelector('#sign-out').hidden,
      retry: !document.querySelector('#retry').hidden,
    })));
  }

  case 'click': {
    await Promise.all([
      page.waitForNavigation({ timeout: 15000 }),
      page.click(args[0], { timeout: 5000 }),
    ]);
    return page.url();
  }

  case 'screenshot': {
    await page.screenshot({ path: args[0], fullPage: true });
    return args[0];
  }

  default:
    throw new Error(`unknown command "${verb}"`);
  }
}

async function main() {
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    viewport: { width: 1280, height: 800 },
    args: [
      '--headless', '--no-sandbox', '--disable-gpu',
      '--disable-background-networking', '--disable-component-update',
      '--disable-sync', '--no-first-run',
    ],
  });

  try {
    const page = context.pages()[0] || await context.newPage();

    page.on('websocket', (ws) => say(`websocket ${ws.url()}`));
    page.on('console', (m) => say(`console ${m.type()} ${m.text()}`));
    page.on('pageerror', (err) => say(`pageerror ${err.message}`));

    say('ready');

    const rl = readline.createInterface({ input: process.stdin });

    for await (const line of rl) {
      if (line.trim() === '') {
        continue;
      }
      if (line.trim() === 'quit') {
        break;
      }

      const verb = line.trim().split(/\s+/)[0];

      try {
        const result = await run(page, line);
        say(`ok ${verb}${result === undefined ? '' : ' ' + result}`);
      } catch (err) {
        say(`error ${verb}: ${String(err && err.message || err)}`);
      }
    }

  } finally {
    await context.close();
  }
}

main().catch((err) => {
  say(`error ${String(err && err.stack || err)}`);
  process.exitCode = 1;
});
