// Drives the real Control UI in headless Chromium against a running gateway, the way a
// user would: open the one URL with the token, send a chat message, then visit every page
// reachable from the sidebar by clicking. Prints one JSON line: what was seen, and every failed RPC and error
// banner, so the Rust test (tests/tests/it/dashboard.rs) can judge.
//
// node dashboard.mjs <http-url> <token> <message> <expected-reply> [<provider to pick>]
// E2E_MODULES: a node_modules folder holding playwright-core.
import { createRequire } from 'node:module';

const require = createRequire(`${process.env.E2E_MODULES}/`);
const { chromium } = require('playwright-core');
const [url, token, message, expected, pick] = process.argv.slice(2);
// A bound, so a UI with generated links cannot make the walk endless.
const MAX_PAGES = 70;
// Pages the UI routes to from its command palette and buttons rather than links.
const UNLINKED = ['/usage', '/nodes', '/skills', '/sessions', '/tasks', '/channels', '/config',
  '/activity', '/model-setup', '/model-providers', '/worktrees', '/meetings', '/memory-import'];

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
         '--disable-component-update', '--disable-sync'],
});
const result = { patches: [], sequence: [], calls: 0, methods: {}, events: {}, failures: [], banners: [], pageErrors: [], pages: [] };
try {
  const page = await browser.newPage();
  const pending = new Map();
  let where = 'start';
  page.on('pageerror', (e) => result.pageErrors.push(`${where}: ${String(e).slice(0, 300)}`));
  page.on('websocket', (ws) => {
    ws.on('framesent', (f) => {
      try {
        const m = JSON.parse(f.payload);
        if (m.type === 'req') {
          pending.set(m.id, m.method);
          result.calls++;
          if (result.sequence.length < 80) result.sequence.push(`${Date.now() % 100000} ${m.method}`);
          result.methods[m.method] = (result.methods[m.method] || 0) + 1;
        }
      } catch {}
    });
    ws.on('framereceived', (f) => {
      try {
        const m = JSON.parse(f.payload);
        if (m.type === 'event' && result.sequence.length < 80 && m.event !== 'tick') {
          result.sequence.push(`${Date.now() % 100000} <- ${m.event} ${m.payload?.stream || ''}`);
        }
        if (m.type === 'event') {
          result.events[m.event] = (result.events[m.event] || 0) + 1;
        }
        if (m.type === 'res' && pending.get(m.id) === 'sessions.patch') {
          result.patches.push({ ok: m.ok, model: m.payload?.resolved?.model ?? null });
        }
        if (m.type === 'res' && m.ok === false) {
          result.failures.push({ page: where, method: pending.get(m.id),
            code: m.error?.code, message: String(m.error?.message).slice(0, 200) });
        }
      } catch {}
    });
  });
  const banners = async () => {
    const shown = page.locator('[role="alert"], .callout.danger, .error-banner').filter({ visible: true });
    for (const text of await shown.allInnerTexts()) {
      if (text.trim()) result.banners.push({ page: where, text: text.trim().slice(0, 200) });
    }
  };

  where = 'chat';
  await page.goto(`${url}/#token=${encodeURIComponent(token)}`);
  const box = page.locator('textarea').first();
  await box.waitFor({ timeout: 20000 });
  await page.waitForTimeout(2000);
  const send = page.getByRole('button', { name: /^send/i }).first();
  await box.fill(message);
  result.sendEnabled = await send.isEnabled({ timeout: 5000 }).catch(() => false);
  if (result.sendEnabled) await send.click();
  else await box.press('Enter');
  result.replySeen = await page.getByText(expected, { exact: false }).first()
    .waitFor({ timeout: 20000 }).then(() => true, () => false);
  // Once the reply is in, the message typed is shown once (the UI matches its own copy to
  // the stored message by the send's idempotency key).
  await page.waitForTimeout(1500);
  // (The session's title, named after its first message, is not a message.)
  result.messageShownIn = await page.getByText(message, { exact: true }).evaluateAll(
    (xs) => xs.map((x) => `${x.tagName}.${x.className.toString().slice(0, 60)}`));
  result.messageShown = result.messageShownIn.filter((w) => !w.includes('session-title')).length;
  await page.screenshot({ path: `${process.env.E2E_SCREENSHOT || '/tmp/dashboard.png'}.chat.png` });
  await banners();

  // The model picker: choose the other provider's model for this session; the next message
  // is answered by it.
  if (pick) {
    await page.locator('summary.chat-controls__model-trigger').click();
    await page.getByRole('button', { name: new RegExp(`^${pick} models`, 'i') }).click();
    await page.getByRole('listbox', { name: new RegExp(`^${pick} models`, 'i') })
      .getByRole('option').first().click();
    await page.waitForTimeout(1000);
    result.pickedModel = await page.locator('summary.chat-controls__model-trigger')
      .getAttribute('aria-label');
    const again = `${message} again`;
    const composer = page.locator('textarea').filter({ visible: true }).first();
    await composer.fill(again);
    await composer.press('Enter');
    result.secondReplySeen = await page.getByText(`echo: ${again}`, { exact: false }).first()
      .waitFor({ timeout: 20000 }).then(() => true, () => false);
    await banners();
  }

  // Every page a user can reach by clicking: the sidebar's, then the links those pages
  // show (settings sections, tabs), breadth first.
  const inApp = async () => (await page.locator('a[href]').evaluateAll(
    (as) => as.map((a) => a.getAttribute('href'))))
    .filter((h) => h && h.startsWith('/') && !h.startsWith('//'))
    .map((h) => h.split(/[?#]/)[0]);
  const queue = [...new Set((await page.locator('nav a[href]').evaluateAll(
    (as) => as.map((a) => a.getAttribute('href')))).filter((h) => h && h.startsWith('/'))),
    ...UNLINKED];
  const seen = new Set(queue);
  while (queue.length && result.pages.length < MAX_PAGES) {
    const href = queue.shift();
    where = href;
    result.pages.push(href);
    await page.goto(new URL(href, `${url}/`).toString());
    await page.waitForTimeout(2000);
    await banners();
    if (href === '/channels') {
      // What the channels page shows of the configured accounts.
      result.channelsText = (await page.locator('body').innerText()).slice(0, 6000);
    }
    for (const next of await inApp()) {
      if (!seen.has(next)) { seen.add(next); queue.push(next); }
    }
  }
  await page.screenshot({ path: process.env.E2E_SCREENSHOT || '/tmp/dashboard.png' });
} catch (e) {
  result.error = String(e).slice(0, 500);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
