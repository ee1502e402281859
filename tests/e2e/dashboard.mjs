// Drives the real Control UI in headless Chromium against a running gateway, the way a
// user would: open the one URL with the token, send a chat message, then visit every page
// of the sidebar. Prints one JSON line: what was seen, and every failed RPC and error
// banner, so the Rust test (tests/tests/it/dashboard.rs) can judge.
//
// node dashboard.mjs <http-url> <token> <message> <expected-reply>
// E2E_MODULES: a node_modules folder holding playwright-core.
import { createRequire } from 'node:module';

const require = createRequire(`${process.env.E2E_MODULES}/`);
const { chromium } = require('playwright-core');
const [url, token, message, expected] = process.argv.slice(2);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
         '--disable-component-update', '--disable-sync'],
});
const result = { sequence: [], calls: 0, methods: {}, events: {}, failures: [], banners: [], pageErrors: [], pages: [] };
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
  await page.screenshot({ path: `${process.env.E2E_SCREENSHOT || '/tmp/dashboard.png'}.chat.png` });
  await banners();

  const links = await page.locator('nav a[href]').evaluateAll(
    (as) => [...new Set(as.map((a) => a.getAttribute('href')))]);
  for (const href of links) {
    if (!href || href.startsWith('http') || href.startsWith('#')) continue;
    where = href;
    result.pages.push(href);
    await page.goto(new URL(href, `${url}/`).toString());
    await page.waitForTimeout(2500);
    await banners();
  }
  await page.screenshot({ path: process.env.E2E_SCREENSHOT || '/tmp/dashboard.png' });
} catch (e) {
  result.error = String(e).slice(0, 500);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
