// Browser test of ferrochat's web chat page, in Debian's Chromium through playwright-core.
//
//   node tests/browser/chat_page.mjs <base-url> <sqlite-db-path>
//
// (after `npm install` in tests/browser). It drives the page against a running server:
// sends a message and waits for the streamed answer, rates it, compares two answers,
// regenerates, edits and resends, switches and deletes conversations, toggles the
// language, unit-tests the markdown renderer against injected markup, and finally reads
// the feedback rows back from the server's SQLite database. The model behind the server
// may be tiny and untrained: answers are gibberish and may be empty, so the test only
// relies on answers finishing, and regenerates (a few times) when it needs a non-empty one.
// Prints a PASS/FAIL line per step and "browser: N passed, N failed"; exits non-zero on any
// failure, and within 60 s whatever happens.
import { execFileSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const GLOBAL_TIMEOUT_MS = 60_000;
const WAIT_MS = 15_000;
const MAX_TRIES = 8; // generations to try when a non-empty answer is needed

const [baseUrl, dbPath] = process.argv.slice(2);
if (!baseUrl || !dbPath) {
  console.error('usage: node tests/browser/chat_page.mjs <base-url> <sqlite-db-path>');
  process.exit(2);
}

let passed = 0;
let failed = 0;
let browser = null;
let finished = false;

async function finish() {
  if (finished) return;
  finished = true;
  console.log(`browser: ${passed} passed, ${failed} failed`);
  if (browser) await Promise.race([browser.close().catch(() => {}), new Promise((r) => setTimeout(r, 3000))]);
  process.exit(failed || !passed ? 1 : 0);
}

setTimeout(() => {
  failed++;
  console.log(`FAIL global timeout: the test did not finish within ${GLOBAL_TIMEOUT_MS / 1000} s`);
  finish();
}, GLOBAL_TIMEOUT_MS);

let blocked = null; // the first failed critical step: later critical steps are skipped
let page = null;

async function step(name, fn, { critical = true } = {}) {
  if (finished) return;
  if (critical && blocked) {
    console.log(`SKIP ${name} (after: ${blocked})`);
    return;
  }
  const started = Date.now();
  try {
    const detail = await fn();
    if (finished) return;
    passed++;
    console.log(`PASS ${name}${detail ? ` — ${detail}` : ''} (${Date.now() - started} ms)`);
  } catch (e) {
    if (finished) return; // the global timeout has already ended the run
    failed++;
    console.log(`FAIL ${name}: ${(e && e.message ? e.message : String(e)).split('\n')[0]}`);
    if (critical) {
      blocked = name;
      if (page) {
        const shot = join(tmpdir(), 'ferrochat-chat-page-failure.png');
        await page.screenshot({ path: shot, timeout: 3000 }).then(() => console.log(`     screenshot: ${shot}`), () => {});
      }
    }
  }
}

function check(cond, message) {
  if (!cond) throw new Error(message);
}

const sel = {
  assistant: '[data-testid="message"][data-role="assistant"]',
  user: '[data-testid="message"][data-role="user"]',
};

// Waits until nothing streams and the stop button is gone; fails if the page shows an error.
async function waitIdle() {
  await page.waitForFunction(
    () => !document.querySelector('[data-state="streaming"]') && document.querySelector('[data-testid="stop"]').hidden,
    null,
    { timeout: WAIT_MS },
  );
  await page.getByTestId('stop').waitFor({ state: 'hidden', timeout: WAIT_MS });
  const error = page.getByTestId('error');
  if (await error.count()) throw new Error(`the page shows an error: ${await error.first().innerText()}`);
}

// Runs `action`, which starts a generation, and waits for the answer(s) to finish.
async function generate(action) {
  const response = page.waitForResponse((r) => r.url().endsWith('/v1/chat/completions'), { timeout: WAIT_MS });
  await action();
  const r = await response;
  check(r.status() === 200, `POST /v1/chat/completions answered ${r.status()}`);
  await waitIdle();
}

async function send(text) {
  await page.getByTestId('message-input').fill(text);
  await generate(() => page.getByTestId('send').click());
}

const lastAssistant = () => page.locator(sel.assistant).last();

const PY_CHECK = `
import json, os, sqlite3, sys
path, comment, a, b = sys.argv[1:5]
if not os.path.exists(path):
    print(json.dumps({"error": "no database file at " + path})); sys.exit(0)
con = sqlite3.connect(path, timeout=10)
out = {
    "ratings": con.execute("SELECT rating, comment FROM ratings WHERE comment = ?", (comment,)).fetchall(),
    "comparisons": con.execute(
        "SELECT preferred FROM comparisons WHERE answer_a = ? AND answer_b = ?", (a, b)).fetchall(),
    "comparisons_total": con.execute("SELECT COUNT(*) FROM comparisons").fetchone()[0],
    "conversations": con.execute("SELECT COUNT(*) FROM conversations").fetchone()[0],
}
print(json.dumps(out))
`;

async function main() {
  const run = Date.now().toString(36);
  const systemPrompt = `You are ferrochat (test ${run}).`;
  const firstText = `Hello from the browser test ${run}`;
  const comment = `helpful 很好 ${run}`;
  let rated = null; // the rating request body
  let compared = null; // the comparison request body
  let convId = '';

  browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const context = await browser.newContext({ locale: 'en-US', viewport: { width: 1280, height: 900 } });
  page = await context.newPage();
  page.setDefaultTimeout(WAIT_MS);
  const pageErrors = [];
  const consoleErrors = [];
  page.on('pageerror', (e) => pageErrors.push(e.message));
  page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });

  await step('page loads', async () => {
    const r = await page.goto(baseUrl, { waitUntil: 'load' });
    check(r && r.ok(), `GET ${baseUrl} answered ${r && r.status()}`);
    await page.waitForSelector('body[data-ready="true"]', { timeout: WAIT_MS });
    const models = await page.getByTestId('model-picker').locator('option').allTextContents();
    check(models.length > 0 && models[0], 'the model picker has no models');
    for (const id of ['new-chat', 'message-input', 'send', 'compare-toggle', 'lang-toggle', 'settings']) {
      check(await page.getByTestId(id).count() === 1, `no element with data-testid=${id}`);
    }
    return `models: ${models.join(', ')}`;
  });

  await step('markdown renderer escapes HTML', async () => {
    const result = await page.evaluate(() => {
      const r = window.ferrochat && window.ferrochat.renderMarkdown;
      if (typeof r !== 'function') return { error: 'window.ferrochat.renderMarkdown is missing' };
      const evil = [
        '<img src=x onerror=alert(1)>',
        'hi <script>alert(1)</script> there',
        '**<img src=x onerror=alert(1)>** and `<script>x</script>`',
        '```html\n<img src=x onerror=alert(1)>\n<script>alert(1)</script>\n```',
        '- <img src=x onerror=alert(1)>\n- [x](javascript:alert(1))',
        '# <svg onload=alert(1)>',
        '[click](https://example.com/" onmouseover="alert(1)) <a href="javascript:alert(1)">a</a>',
        '<iframe src="https://example.com"></iframe> <style>body{display:none}</style>',
      ];
      const allowedTags = new Set(['P', 'BR', 'STRONG', 'EM', 'DEL', 'CODE', 'PRE', 'H1', 'H2', 'H3', 'H4', 'H5', 'H6',
        'UL', 'OL', 'LI', 'A', 'BLOCKQUOTE', 'HR']);
      const problems = [];
      for (const text of evil) {
        const html = r(text);
        if (/<\s*(img|script|svg|iframe|style)\b/i.test(html)) problems.push(`raw tag in ${JSON.stringify(html)}`);
        const tpl = document.createElement('template');
        tpl.innerHTML = html;
        for (const el of tpl.content.querySelectorAll('*')) {
          if (!allowedTags.has(el.tagName)) problems.push(`<${el.tagName.toLowerCase()}> from ${JSON.stringify(text)}`);
          for (const attr of el.attributes) {
            const ok = (attr.name === 'href' && el.tagName === 'A' && /^https?:\/\//.test(attr.value)) ||
              (['target', 'rel'].includes(attr.name) && el.tagName === 'A') ||
              (attr.name === 'class' && /^language-[\w#+.-]+$/.test(attr.value)) || (attr.name === 'start' && el.tagName === 'OL');
            if (!ok) problems.push(`attribute ${attr.name}="${attr.value}" on <${el.tagName.toLowerCase()}>`);
          }
        }
      }
      const escaped = r('<img src=x onerror=alert(1)>');
      if (!escaped.includes('&lt;img')) problems.push(`the tag is not shown as text: ${escaped}`);
      // and it still renders markdown
      const md = r('# Title\n\n**bold** *it* `code` [link](https://example.com/?a=1&b=2)\n\n- one\n- two\n\n1. first\n\n```rust\nfn main() {}\n```');
      for (const want of ['<h1>Title</h1>', '<strong>bold</strong>', '<em>it</em>', '<code>code</code>',
        '<a href="https://example.com/?a=1&amp;b=2"', '<ul><li>one</li><li>two</li></ul>', '<ol><li>first</li></ol>',
        '<pre><code class="language-rust">fn main() {}</code></pre>']) {
        if (!md.includes(want)) problems.push(`expected ${want} in ${md}`);
      }
      return { problems };
    });
    check(!result.error, result.error);
    check(result.problems.length === 0, result.problems.slice(0, 3).join('; '));
    return 'no element or attribute injected; markdown still rendered';
  }, { critical: false });

  await step('settings: max_tokens 32 and a system prompt', async () => {
    await page.getByTestId('settings').click();
    await page.getByTestId('max-tokens').fill('32');
    await page.getByTestId('system-prompt').fill(systemPrompt);
    await page.getByTestId('settings-close').click();
    await page.locator('#settings-panel').waitFor({ state: 'hidden' });
    const stored = await page.evaluate(() => JSON.parse(localStorage.getItem('ferrochat.settings') || '{}'));
    check(String(stored.max_tokens) === '32', `max_tokens stored as ${stored.max_tokens}`);
  });

  await step('send a message; the answer streams and finishes', async () => {
    const request = page.waitForRequest((r) => r.url().endsWith('/v1/chat/completions'));
    await send(firstText);
    const body = (await request).postDataJSON();
    check(body.stream === true && body.max_tokens === 32, `request: stream=${body.stream} max_tokens=${body.max_tokens}`);
    check(body.messages[0].role === 'system' && body.messages[0].content === systemPrompt, 'the system prompt was not sent first');
    check(await page.locator(sel.user).first().innerText() === firstText, 'the user message is not shown');
    check(await page.locator(sel.assistant).count() === 1, 'expected one assistant message');
    check(await lastAssistant().getAttribute('data-state') === 'done', 'the answer is not marked done');
    const text = await lastAssistant().getByTestId('message-content').innerText();
    return `answer: ${JSON.stringify(text.slice(0, 60))}`;
  });

  await step('thumbs up with a comment; thanks after the server stored it', async () => {
    let tries = 1;
    while (await lastAssistant().getAttribute('data-empty') === 'true') {
      check(tries < MAX_TRIES, `${MAX_TRIES} answers in a row were empty`);
      tries++;
      await generate(() => lastAssistant().getByTestId('regenerate').click());
    }
    const msg = lastAssistant();
    await msg.getByTestId('thumbs-up').click();
    await msg.getByTestId('feedback-comment').fill(comment);
    const response = page.waitForResponse((r) => r.url().endsWith('/v1/feedback/ratings'));
    await msg.getByTestId('feedback-submit').click();
    const r = await response;
    check(r.status() === 201, `POST /v1/feedback/ratings answered ${r.status()}: ${await r.text()}`);
    await msg.getByTestId('feedback-thanks').waitFor({ state: 'visible' });
    rated = r.request().postDataJSON();
    check(rated.rating === 'up' && rated.comment === comment, 'the rating request lacks the rating or the comment');
    check(rated.messages[0].role === 'system' && rated.messages.at(-1).role === 'user' &&
      rated.messages.at(-1).content === firstText, 'the rated prompt is not system + the conversation up to the user turn');
    check(rated.answer.trim() !== '', 'the rated answer is empty');
    return `after ${tries} generation(s)`;
  });

  await step('compare mode: two answers side by side, pick A, thanks', async () => {
    const toggle = page.getByTestId('compare-toggle');
    await toggle.click();
    check(await toggle.getAttribute('aria-pressed') === 'true', 'the compare toggle is not pressed');
    const request = page.waitForRequest((r) => r.url().endsWith('/v1/chat/completions'));
    await send(`Compare these ${run}`);
    check((await request).postDataJSON().n === 2, 'the compare request did not ask for n: 2');
    let tries = 1;
    for (;;) {
      await page.locator('[data-testid="compare"][data-state="done"]').waitFor();
      const empty = await page.locator('[data-testid="compare"] [data-empty="true"]').count();
      if (!empty) break;
      check(tries < MAX_TRIES, `${MAX_TRIES} comparisons in a row had an empty answer`);
      tries++;
      await generate(() => page.getByTestId('compare').getByTestId('regenerate').click());
    }
    await page.getByTestId('compare-a').waitFor({ state: 'visible' });
    await page.getByTestId('compare-b').waitFor({ state: 'visible' });
    const aHtml = await page.getByTestId('compare-a').getByTestId('message-content').innerHTML();
    const response = page.waitForResponse((r) => r.url().endsWith('/v1/feedback/comparisons'));
    await page.getByTestId('prefer-a').click();
    const r = await response;
    check(r.status() === 201, `POST /v1/feedback/comparisons answered ${r.status()}: ${await r.text()}`);
    await lastAssistant().getByTestId('feedback-thanks').waitFor({ state: 'visible' });
    compared = r.request().postDataJSON();
    check(compared.preferred === 0 && compared.answers.length === 2, 'the comparison request is not preferred: 0 with two answers');
    check(compared.messages.at(-1).content === `Compare these ${run}`, 'the compared prompt does not end with the user turn');
    check(await page.getByTestId('compare').count() === 0, 'the comparison is still shown after the choice');
    check(await lastAssistant().getByTestId('message-content').innerHTML() === aHtml, 'the kept answer is not answer A');
    await toggle.click();
    check(await toggle.getAttribute('aria-pressed') === 'false', 'the compare toggle did not turn off');
    return `after ${tries} comparison(s)`;
  });

  await step('regenerate the last answer', async () => {
    const before = await page.locator(sel.assistant).count();
    await generate(() => lastAssistant().getByTestId('regenerate').click());
    check(await page.locator(sel.assistant).count() === before, 'regenerate changed the number of answers');
  });

  await step('edit the first message and resend: the conversation is cut after it', async () => {
    const edited = `Edited question ${run}`;
    await page.locator(sel.user).first().getByTestId('edit').click();
    await page.getByTestId('edit-input').fill(edited);
    await generate(() => page.getByTestId('edit-save').click());
    check(await page.locator(sel.user).count() === 1, 'expected one user message after the edit');
    check(await page.locator(sel.assistant).count() === 1, 'expected one answer after the edit');
    check(await page.locator(sel.user).first().innerText() === edited, 'the edited text is not shown');
  });

  await step('conversation list: new chat, then switch back (loaded from the server)', async () => {
    await page.waitForFunction(() => location.hash.length > 1);
    convId = await page.evaluate(() => location.hash.slice(1));
    const item = page.locator(`[data-testid="conversation-item"][data-id="${convId}"]`);
    await item.waitFor();
    await page.getByTestId('new-chat').click();
    check(await page.locator('[data-testid="message"]').count() === 0, 'a new chat is not empty');
    check(await page.getByTestId('system-prompt').inputValue() === '', 'a new chat kept the old system prompt');
    await item.click();
    await page.locator(sel.user).first().waitFor();
    const shown = await page.locator(sel.user).first().innerText();
    check(shown === `Edited question ${run}`, `the reopened conversation shows ${JSON.stringify(shown)}`);
    check(await page.locator(sel.assistant).count() === 1, 'the reopened conversation lacks its answer');
    check(await page.getByTestId('system-prompt').inputValue() === systemPrompt, 'the system prompt did not come back');
  });

  await step('language toggle: English <-> Chinese', async () => {
    const zhSend = await page.evaluate(() => window.ferrochat.strings.zh.send);
    const enSend = await page.evaluate(() => window.ferrochat.strings.en.send);
    check(await page.getByTestId('send').getAttribute('aria-label') === enSend, 'the page does not start in English');
    await page.getByTestId('lang-toggle').click();
    check((await page.getAttribute('html', 'lang')).startsWith('zh'), 'html lang is not zh after the toggle');
    check(await page.getByTestId('send').getAttribute('aria-label') === zhSend, 'the send button is not in Chinese');
    check(/[\u4e00-\u9fff]/.test(await page.getByTestId('new-chat').innerText()), 'the new-chat button is not in Chinese');
    await page.getByTestId('lang-toggle').click();
    check(await page.getByTestId('send').getAttribute('aria-label') === enSend, 'the page did not switch back to English');
  });

  await step('an answer stored with markup in it is shown as text, never run', async () => {
    const id = `xss${run}`.replace(/[^A-Za-z0-9_-]/g, '').slice(0, 60);
    const evil = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script> **still bold**';
    const status = await page.evaluate(async ({ id, evil }) => {
      const r = await fetch(`/v1/conversations/${id}`, {
        method: 'PUT',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ title: 'xss', model: 'chat', system: '', messages: [
          { role: 'user', content: '<b>hi</b>' }, { role: 'assistant', content: evil }] }),
      });
      return r.status;
    }, { id, evil });
    check(status === 200, `PUT answered ${status}`);
    await page.evaluate((id) => { location.hash = id; }, id);
    const answer = page.locator('[data-testid="message"][data-role="assistant"]').last();
    await answer.waitFor();
    await page.waitForFunction(() => document.body.innerText.includes('onerror'));
    const found = await page.evaluate(() => ({
      xss: window.__xss,
      imgs: document.querySelectorAll('#messages img, [data-testid="message"] img').length,
      scripts: document.querySelectorAll('[data-testid="message"] script').length,
      bold: [...document.querySelectorAll('[data-testid="message"] strong')].some((e) => e.textContent === 'still bold'),
      userBold: [...document.querySelectorAll('[data-testid="message"][data-role="user"] b')].length,
    }));
    check(found.xss === undefined, `the injected script ran (window.__xss = ${found.xss})`);
    check(found.imgs === 0 && found.scripts === 0, `markup became elements: ${JSON.stringify(found)}`);
    check(found.userBold === 0, 'the user\'s markup became an element');
    check(found.bold, 'markdown around it was not rendered');
    await page.getByTestId('new-chat').click();
    return 'the tags show as text, no element, nothing ran';
  });

  await step('delete a conversation', async () => {
    await page.getByTestId('new-chat').click();
    await send(`To be deleted ${run}`);
    await page.waitForFunction((old) => location.hash.length > 1 && location.hash.slice(1) !== old, convId);
    const id = await page.evaluate(() => location.hash.slice(1));
    const item = page.locator(`[data-testid="conversation-item"][data-id="${id}"]`);
    await item.waitFor();
    const response = page.waitForResponse((r) => r.request().method() === 'DELETE');
    await item.getByTestId('delete-conversation').click();
    await item.getByTestId('delete-conversation').click(); // the second click confirms
    check((await response).status() === 200, 'DELETE did not answer 200');
    await item.waitFor({ state: 'detached' });
    check(await page.locator('[data-testid="message"]').count() === 0, 'the deleted conversation is still shown');
    check(await page.locator(`[data-testid="conversation-item"][data-id="${convId}"]`).count() === 1,
      'the other conversation went too');
  });

  await step('feedback rows are in the database', async () => {
    const out = execFileSync('python3', ['-c', PY_CHECK, dbPath, comment, compared.answers[0], compared.answers[1]],
      { encoding: 'utf8', timeout: 15_000 });
    const rows = JSON.parse(out);
    check(!rows.error, rows.error);
    check(rows.ratings.some(([rating, c]) => rating === 'up' && c === comment), `no 'up' rating with the comment: ${out.trim()}`);
    check(rows.comparisons.length >= 1, `no comparison row with the two answers (table has ${rows.comparisons_total})`);
    check(rows.comparisons.some(([p]) => p === 0), `the comparison row's preferred is not 0: ${JSON.stringify(rows.comparisons)}`);
    check(rows.conversations >= 1, 'no conversation row');
    return `${rows.ratings.length} rating(s), ${rows.comparisons.length} comparison(s), ${rows.conversations} conversation(s)`;
  });

  await step('no page errors and no console errors', async () => {
    check(pageErrors.length === 0, `page errors: ${pageErrors.slice(0, 3).join(' | ')}`);
    check(consoleErrors.length === 0, `console errors: ${consoleErrors.slice(0, 3).join(' | ')}`);
  }, { critical: false });
}

main().catch((e) => {
  failed++;
  console.log(`FAIL ${e && e.message ? e.message.split('\n')[0] : e}`);
}).finally(finish);
