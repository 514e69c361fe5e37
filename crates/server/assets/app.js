// ferrochat web chat page: one plain script, no framework, no build step.
// Talks to the same-origin OpenAI-compatible API (/v1/...).
'use strict';
(() => {
  // ---- strings
  // Every visible string of the page lives here.
  const STRINGS = {
    en: {
      appName: 'ferrochat',
      langToggle: '中文',
      langToggleTitle: 'Switch language',
      menu: 'Conversations',
      newChat: 'New chat',
      noConversations: 'No conversations yet',
      untitled: 'New chat',
      delete: 'Delete conversation',
      confirmDelete: 'Delete?',
      settings: 'Settings',
      model: 'Model',
      noModels: 'No models',
      compare: 'Compare',
      compareTitle: 'Ask for two answers and pick the better one',
      inputPlaceholder: 'Message ferrochat…',
      pickFirst: 'Pick the better answer to continue',
      send: 'Send',
      stop: 'Stop',
      disclaimer: 'Answers come from a small model and can be wrong.',
      emptyTitle: 'How can I help you today?',
      emptyAnswer: '(empty answer)',
      stopped: 'Stopped',
      truncated: 'Cut off at the token limit',
      copy: 'Copy',
      copied: 'Copied',
      edit: 'Edit',
      saveAndSubmit: 'Save & submit',
      cancel: 'Cancel',
      regenerate: 'Regenerate',
      retry: 'Retry',
      thumbsUp: 'Good answer',
      thumbsDown: 'Bad answer',
      commentPlaceholder: 'Tell us more (optional)',
      submit: 'Submit',
      thanks: 'Thanks for your feedback!',
      whichBetter: 'Which is better?',
      answerA: 'Answer A',
      answerB: 'Answer B',
      preferA: 'A is better',
      preferB: 'B is better',
      tie: 'About the same',
      systemPrompt: 'System prompt',
      systemHint: 'Applies to this conversation only.',
      systemPlaceholder: 'You are a helpful assistant.',
      sampling: 'Sampling',
      temperature: 'Temperature',
      topP: 'Top p',
      maxTokens: 'Max tokens',
      seed: 'Seed',
      seedPlaceholder: 'random',
      connection: 'Connection',
      apiKey: 'API key (optional)',
      apiKeyPlaceholder: 'sent as a Bearer token',
      close: 'Close',
      networkError: 'Could not reach the server.',
      dropped: 'The {n} oldest messages were left out to fit the model\'s context.',
      notFound: 'That conversation no longer exists.',
      saveFailed: 'Could not save the conversation: ',
      feedbackFailed: 'Could not send feedback: ',
      httpError: 'The server answered with status ',
      emptyNoFeedback: 'An empty answer cannot be rated; the choice is kept.',
    },
    zh: {
      appName: 'ferrochat',
      langToggle: 'English',
      langToggleTitle: '切换语言',
      menu: '对话列表',
      newChat: '新对话',
      noConversations: '还没有对话',
      untitled: '新对话',
      delete: '删除对话',
      confirmDelete: '确认删除？',
      settings: '设置',
      model: '模型',
      noModels: '没有模型',
      compare: '对比',
      compareTitle: '生成两个回答，选出更好的一个',
      inputPlaceholder: '给 ferrochat 发送消息…',
      pickFirst: '请先选出更好的回答',
      send: '发送',
      stop: '停止',
      disclaimer: '回答来自一个小模型，可能有误。',
      emptyTitle: '今天能帮你做些什么？',
      emptyAnswer: '（空回答）',
      stopped: '已停止',
      truncated: '已达到 token 上限',
      copy: '复制',
      copied: '已复制',
      edit: '编辑',
      saveAndSubmit: '保存并提交',
      cancel: '取消',
      regenerate: '重新生成',
      retry: '重试',
      thumbsUp: '好回答',
      thumbsDown: '不好的回答',
      commentPlaceholder: '补充说明（可选）',
      submit: '提交',
      thanks: '谢谢你的反馈！',
      whichBetter: '哪个回答更好？',
      answerA: '回答 A',
      answerB: '回答 B',
      preferA: 'A 更好',
      preferB: 'B 更好',
      tie: '差不多',
      systemPrompt: '系统提示词',
      systemHint: '只用于当前对话。',
      systemPlaceholder: '你是一个乐于助人的助手。',
      sampling: '采样',
      temperature: '温度',
      topP: 'Top p',
      maxTokens: '最大 token 数',
      seed: '随机种子',
      seedPlaceholder: '随机',
      connection: '连接',
      apiKey: 'API 密钥（可选）',
      apiKeyPlaceholder: '以 Bearer 令牌发送',
      close: '关闭',
      networkError: '无法连接服务器。',
      dropped: '为了放进模型的上下文，最早的 {n} 条消息没有发送。',
      notFound: '这个对话已不存在。',
      saveFailed: '保存对话失败：',
      feedbackFailed: '反馈发送失败：',
      httpError: '服务器返回状态码 ',
      emptyNoFeedback: '空回答无法评价；已保留你的选择。',
    },
  };

  const ICONS = {
    plus: '<path d="M12 5v14M5 12h14"/>',
    trash: '<path d="M3 6h18M8 6V4h8v2M19 6l-1 14H6L5 6M10 11v6M14 11v6"/>',
    up: '<path d="M7 10v11H3V10h4Z"/><path d="M7 10l4-8a3 3 0 0 1 3 3v4h5.5a2 2 0 0 1 2 2.4l-1.5 8A2 2 0 0 1 18 21H7"/>',
    down: '<g transform="rotate(180 12 12)"><path d="M7 10v11H3V10h4Z"/><path d="M7 10l4-8a3 3 0 0 1 3 3v4h5.5a2 2 0 0 1 2 2.4l-1.5 8A2 2 0 0 1 18 21H7"/></g>',
    regen: '<path d="M20 12a8 8 0 1 1-2.3-5.7L20 8.5"/><path d="M20 3.5v5h-5"/>',
    copy: '<rect x="9" y="9" width="12" height="12" rx="2"/><path d="M5 15H4a1 1 0 0 1-1-1V4a1 1 0 0 1 1-1h10a1 1 0 0 1 1 1v1"/>',
    check: '<path d="M5 12.5l4.5 4.5L19 7"/>',
    edit: '<path d="M12 20h9"/><path d="M16.5 3.5a2.1 2.1 0 0 1 3 3L7 19l-4 1 1-4Z"/>',
    send: '<path d="M12 19V5M5.5 11.5 12 5l6.5 6.5"/>',
    stop: '<rect x="7" y="7" width="10" height="10" rx="1.5" fill="currentColor"/>',
    sliders: '<path d="M4 21v-7M4 10V3M12 21v-9M12 8V3M20 21v-5M20 12V3M1 14h6M9 8h6M17 16h6"/>',
    menu: '<path d="M3 6h18M3 12h18M3 18h18"/>',
    compare: '<rect x="3" y="4" width="18" height="16" rx="2"/><path d="M12 4v16"/>',
    globe: '<circle cx="12" cy="12" r="9"/><path d="M3 12h18M12 3a14 14 0 0 1 0 18M12 3a14 14 0 0 0 0 18"/>',
    close: '<path d="M6 6l12 12M18 6 6 18"/>',
  };

  const DEFAULTS = { apiKey: '', model: '', temperature: 0.7, top_p: 1, max_tokens: 256, seed: '' };
  const LS_SETTINGS = 'ferrochat.settings';
  const LS_LANG = 'ferrochat.lang';

  const state = {
    lang: 'en',
    settings: { ...DEFAULTS },
    compare: false,
    models: [],
    list: [], // conversation summaries from the server, newest first
    conv: null, // the open conversation
    busy: false,
    abort: null,
    notice: null, // { text, retry }
    savePromise: Promise.resolve(),
    openToken: 0,
  };

  const $ = (sel) => document.querySelector(sel);
  const t = (key) => (STRINGS[state.lang] || STRINGS.en)[key] ?? STRINGS.en[key] ?? key;

  // ---- markdown
  // Safe by construction: the whole text is HTML-escaped first; the renderer
  // then only wraps escaped text in a fixed set of tags, and the only attributes
  // it writes are class="language-…" (from [\w#+.-]) and href for http(s) URLs.
  function escapeHtml(s) {
    return String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);
  }

  const FENCE_OPEN = /^ {0,3}(`{3,}|~{3,})\s*([\w#+.-]*)[^`]*$/;
  const HEADING = /^ {0,3}(#{1,6})\s+(.*?)(?:\s+#+)?\s*$/;
  const RULE = /^ {0,3}([-*_])(?:\s*\1){2,}\s*$/;
  const QUOTE = /^ {0,3}&gt;/;
  const LIST_ITEM = /^(\s*)([-*+]|\d{1,9}[.)])\s+(.*)$/;
  const BLANK = /^\s*$/;
  // A URL inside escaped text: '&' only starts an entity, and only &amp; belongs to a URL.
  const URL_BODY = '(?:[^\\s&()\\[\\]\\u0000]|&amp;)+';
  const LINK = new RegExp('\\[([^\\]\\n]+)\\]\\((https?:\\/\\/' + URL_BODY + ')\\)', 'g');
  const BARE_URL = new RegExp('(^|[^\\w/])(https?:\\/\\/' + URL_BODY + ')', 'g');

  function renderMarkdown(src) {
    const text = escapeHtml(String(src ?? '').replace(/\u0000/g, '')).replace(/\r\n?/g, '\n');
    return renderBlocks(text.split('\n'));
  }

  const startsBlock = (line) =>
    FENCE_OPEN.test(line) || HEADING.test(line) || RULE.test(line) || QUOTE.test(line) || LIST_ITEM.test(line);

  function renderBlocks(lines) {
    const out = [];
    let i = 0;
    while (i < lines.length) {
      const line = lines[i];
      let m;
      if (BLANK.test(line)) {
        i++;
      } else if ((m = line.match(FENCE_OPEN))) {
        const close = new RegExp('^ {0,3}' + (m[1][0] === '`' ? '`' : '~') + '{' + m[1].length + ',}\\s*$');
        const body = [];
        for (i++; i < lines.length && !close.test(lines[i]); i++) body.push(lines[i]);
        i++; // the closing fence (an unclosed fence, as while streaming, runs to the end)
        const cls = m[2] ? ` class="language-${m[2]}"` : '';
        out.push(`<pre><code${cls}>${body.join('\n')}</code></pre>`);
      } else if ((m = line.match(HEADING))) {
        const n = m[1].length;
        out.push(`<h${n}>${inline(m[2])}</h${n}>`);
        i++;
      } else if (RULE.test(line)) {
        out.push('<hr>');
        i++;
      } else if (QUOTE.test(line)) {
        const quoted = [];
        while (i < lines.length && QUOTE.test(lines[i])) quoted.push(lines[i++].replace(/^ {0,3}&gt; ?/, ''));
        out.push(`<blockquote>${renderBlocks(quoted)}</blockquote>`);
      } else if (LIST_ITEM.test(line)) {
        i = renderList(lines, i, out);
      } else {
        const para = [line.trim()];
        for (i++; i < lines.length && !BLANK.test(lines[i]) && !startsBlock(lines[i]); i++) para.push(lines[i].trim());
        out.push(`<p>${inline(para.join('\n')).replace(/\n/g, '<br>')}</p>`);
      }
    }
    return out.join('');
  }

  // After a blank line, a list goes on with an item at its indent or a deeper line.
  function continuesList(next, indent) {
    if (next === undefined || BLANK.test(next)) return false;
    const lead = next.match(/^\s*/)[0].length;
    return lead > indent || (lead === indent && LIST_ITEM.test(next));
  }

  function renderList(lines, i, out) {
    const first = lines[i].match(LIST_ITEM);
    const indent = first[1].length;
    const ordered = /\d/.test(first[2]);
    const items = [];
    while (i < lines.length) {
      const line = lines[i];
      const m = line.match(LIST_ITEM);
      const lead = line.match(/^\s*/)[0].length;
      if (m && lead === indent && /\d/.test(m[2]) === ordered) {
        items.push({ text: [m[3]], sub: [] });
        i++;
      } else if (!BLANK.test(line) && lead > indent) {
        const item = items[items.length - 1];
        if (item.sub.length || LIST_ITEM.test(line) || FENCE_OPEN.test(line)) item.sub.push(line);
        else item.text.push(line.trim());
        i++;
      } else if (BLANK.test(line) && continuesList(lines[i + 1], indent)) {
        const item = items[items.length - 1];
        if (item.sub.length) item.sub.push('');
        i++;
      } else {
        break;
      }
    }
    const lis = items.map((it) => {
      let sub = '';
      if (it.sub.length) {
        const cut = Math.min(...it.sub.filter((l) => !BLANK.test(l)).map((l) => l.match(/^\s*/)[0].length));
        sub = renderBlocks(it.sub.map((l) => l.slice(cut)));
      }
      return `<li>${inline(it.text.join('\n')).replace(/\n/g, '<br>')}${sub}</li>`;
    });
    const start = ordered ? parseInt(first[2], 10) : 1;
    const tag = ordered ? 'ol' : 'ul';
    out.push(`<${tag}${ordered && start !== 1 ? ` start="${start}"` : ''}>${lis.join('')}</${tag}>`);
    return i;
  }

  function inline(s) {
    const slots = [];
    const keep = (html) => `\u0000${slots.push(html) - 1}\u0000`;
    const link = (href, label) => keep(`<a href="${href}" target="_blank" rel="noopener noreferrer">${label}</a>`);
    s = s.replace(/(`+)([^`\n]|[^\n]*?[^`\n])\1(?!`)/g, (_, ticks, code) => keep(`<code>${code}</code>`));
    s = s.replace(LINK, (_, label, href) => link(href, emphasis(label)));
    s = s.replace(BARE_URL, (_, before, url) => {
      const trail = url.match(/[.,;:!?*_~]+$/);
      const bare = trail ? url.slice(0, -trail[0].length) : url;
      return before + link(bare, bare) + (trail ? trail[0] : '');
    });
    s = emphasis(s);
    const restore = (x) => x.replace(/\u0000(\d+)\u0000/g, (_, n) => restore(slots[+n]));
    return restore(s);
  }

  function emphasis(s) {
    // Inner spans never contain '<': the only '<' left in escaped text starts a tag made
    // here, so an emphasis never straddles another one's tags.
    const wrap = (tag) => (all, before, inner) => `${before}<${tag}>${inner}</${tag}>`;
    return s
      .replace(/(^|[^*])\*\*\*(?=[^\s*])([^<*\n]*?[^\s*<])\*\*\*(?!\*)/g, (all, before, inner) => `${before}<strong><em>${inner}</em></strong>`)
      .replace(/(^|[^*])\*\*(?=[^\s*])((?:[^<\n]*?[^\s<])?)\*\*(?!\*)/g, wrap('strong'))
      .replace(/(^|[^\w_])__(?=[^\s_])((?:[^<\n]*?[^\s<])?)__(?![\w_])/g, wrap('strong'))
      .replace(/(^|[^*\w])\*(?=[^\s*])((?:[^<*\n]*?[^\s*<])?)\*(?![*\w])/g, wrap('em'))
      .replace(/(^|[^\w_])_(?=[^\s_])((?:[^<_\n]*?[^\s_<])?)_(?![\w_])/g, wrap('em'))
      .replace(/(^|[^~])~~(?=[^\s~])((?:[^<\n]*?[^\s<])?)~~(?!~)/g, wrap('del'));
  }

  // ---- DOM helpers
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v == null || v === false) continue;
      if (k === 'class') el.className = v;
      else if (k === 'text') el.textContent = v;
      else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children.flat()) if (c != null && c !== false) el.append(c);
    return el;
  }

  const iconTemplate = document.createElement('template');
  function icon(name) {
    // Only constant markup from ICONS goes through innerHTML.
    iconTemplate.innerHTML = `<svg class="icon" viewBox="0 0 24 24" aria-hidden="true" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round">${ICONS[name] || ''}</svg>`;
    return iconTemplate.content.firstChild.cloneNode(true);
  }

  function iconButton(name, label, onclick, attrs = {}) {
    return h('button', { type: 'button', class: 'icon-btn', title: label, 'aria-label': label, onclick: guard(onclick), ...attrs }, icon(name));
  }

  // Event handlers never leave a rejected promise behind: failures become a notice.
  function guard(fn) {
    return (...args) => {
      try {
        const r = fn(...args);
        if (r && typeof r.then === 'function') r.catch((e) => showNotice(errorText(e)));
      } catch (e) {
        showNotice(errorText(e));
      }
    };
  }

  // ---- API
  class ApiError extends Error {
    constructor(message, status) {
      super(message);
      this.name = 'ApiError';
      this.status = status;
    }
  }

  function errorText(e) {
    if (e instanceof ApiError) return e.message;
    if (e instanceof TypeError) return t('networkError');
    return (e && e.message) || String(e);
  }

  async function api(path, { method = 'GET', body, signal } = {}) {
    const headers = {};
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (state.settings.apiKey) headers.Authorization = 'Bearer ' + state.settings.apiKey;
    const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal });
    if (!res.ok) {
      const text = await res.text().catch(() => '');
      let message = text.trim().slice(0, 300);
      try {
        const j = JSON.parse(text);
        if (j && j.error) message = String(j.error.message || j.error);
      } catch {
        /* not JSON: the text itself */
      }
      throw new ApiError(message || t('httpError') + res.status, res.status);
    }
    return res;
  }

  const STOP = Symbol('stop');

  // Server-sent events over fetch: lines may be split anywhere across reads.
  async function readSSE(res, onData) {
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buf = '';
    let data = [];
    const onLine = (line) => {
      if (line === '') {
        if (!data.length) return undefined;
        const d = data.join('\n');
        data = [];
        return onData(d);
      }
      if (line[0] === ':') return undefined;
      const c = line.indexOf(':');
      const field = c < 0 ? line : line.slice(0, c);
      let value = c < 0 ? '' : line.slice(c + 1);
      if (value[0] === ' ') value = value.slice(1);
      if (field === 'data') data.push(value);
      return undefined;
    };
    try {
      for (;;) {
        const { value, done } = await reader.read();
        buf += done ? decoder.decode() : decoder.decode(value, { stream: true });
        // Keep a trailing '\r' back: its '\n' may come in the next read.
        const cut = !done && buf.endsWith('\r') ? buf.length - 1 : buf.length;
        const lines = buf.slice(0, cut).split(/\r\n|\r|\n/);
        buf = lines.pop() + buf.slice(cut);
        if (done) lines.push(buf, '');
        for (const line of lines) if (onLine(line) === STOP) return;
        if (done) return;
      }
    } finally {
      reader.cancel().catch(() => {});
    }
  }

  async function readCompletion(res, answers, onUpdate) {
    const type = res.headers.get('content-type') || '';
    if (type.includes('application/json')) {
      // A server that ignored "stream": one JSON body.
      const j = await res.json();
      for (const ch of j.choices || []) {
        const a = answers[ch.index || 0];
        if (!a) continue;
        a.content = (ch.message && ch.message.content) || '';
        a.finish = ch.finish_reason || null;
        a.state = 'done';
      }
      onUpdate();
      return;
    }
    await readSSE(res, (d) => {
      if (d.trim() === '[DONE]') return STOP;
      let obj;
      try {
        obj = JSON.parse(d);
      } catch {
        return undefined; // not JSON: skip it
      }
      if (obj && obj.error) throw new ApiError(String(obj.error.message || obj.error));
      for (const ch of (obj && obj.choices) || []) {
        const a = answers[ch.index || 0];
        if (!a) continue;
        const piece = ch.delta && ch.delta.content;
        if (typeof piece === 'string') a.content += piece;
        if (ch.finish_reason) {
          a.finish = ch.finish_reason;
          a.state = 'done';
        }
      }
      onUpdate();
      return undefined;
    });
  }

  // ---- settings
  function loadSettings() {
    let saved = {};
    let lang = null;
    try {
      saved = JSON.parse(localStorage.getItem(LS_SETTINGS) || '{}') || {};
      lang = localStorage.getItem(LS_LANG);
    } catch {
      /* storage off or spoiled: defaults */
    }
    state.settings = { ...DEFAULTS, ...(typeof saved === 'object' ? saved : {}) };
    state.lang = lang === 'zh' || lang === 'en' ? lang : /^zh\b/i.test(navigator.language || '') ? 'zh' : 'en';
  }

  function storeSettings() {
    try {
      localStorage.setItem(LS_SETTINGS, JSON.stringify(state.settings));
      localStorage.setItem(LS_LANG, state.lang);
    } catch {
      /* storage off: settings last for this page only */
    }
  }

  function num(value, fallback, lo, hi, int) {
    const x = int ? parseInt(value, 10) : parseFloat(value);
    if (!Number.isFinite(x)) return fallback;
    return Math.min(hi, Math.max(lo, x));
  }

  function samplingBody() {
    const s = state.settings;
    const body = {
      temperature: num(s.temperature, DEFAULTS.temperature, 0, 2),
      top_p: num(s.top_p, DEFAULTS.top_p, 0, 1),
      max_tokens: num(s.max_tokens, DEFAULTS.max_tokens, 1, 1e6, true),
    };
    if (String(s.seed).trim() !== '' && Number.isFinite(parseInt(s.seed, 10))) body.seed = Math.max(0, parseInt(s.seed, 10));
    return body;
  }

  // ---- conversations
  function newId() {
    if (crypto.randomUUID) return crypto.randomUUID().replace(/-/g, '');
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
  }

  function makeTitle(text) {
    const chars = Array.from(String(text).replace(/\s+/g, ' ').trim());
    return chars.length > 40 ? chars.slice(0, 40).join('').trimEnd() + '…' : chars.join('');
  }

  const wire = (messages) =>
    messages.filter((m) => m._state !== 'streaming').map((m) => ({ role: m.role, content: m.content }));

  function promptFor(conv, upTo) {
    const msgs = wire(conv.messages.slice(0, upTo));
    return conv.system.trim() ? [{ role: 'system', content: conv.system }, ...msgs] : msgs;
  }

  function currentModel() {
    const picker = $('#model-picker');
    return (picker && picker.value) || state.conv.model || state.models[0] || '';
  }

  const pendingCompare = () => {
    const last = state.conv.messages[state.conv.messages.length - 1];
    return !!(last && last._compare && last._state === 'done');
  };

  function replaceHash(id) {
    const url = location.pathname + location.search + (id ? '#' + id : '');
    history.replaceState(null, '', url);
  }

  async function loadModels() {
    try {
      const j = await (await api('/v1/models')).json();
      state.models = ((j && j.data) || []).map((m) => String(m.id));
    } catch (e) {
      state.models = [];
      showNotice(errorText(e));
    }
    renderModelPicker();
  }

  async function loadConversations() {
    try {
      const j = await (await api('/v1/conversations')).json();
      state.list = ((j && j.data) || []).filter((c) => c && c.id);
    } catch (e) {
      showNotice(errorText(e));
    }
    renderSidebar();
  }

  function stopStreaming() {
    if (state.abort) state.abort.abort();
  }

  function newConversation() {
    stopStreaming();
    state.openToken++;
    state.conv = { id: newId(), title: '', model: state.settings.model || '', system: '', messages: [] };
    state.notice = null;
    replaceHash('');
    renderAll();
  }

  async function openConversation(id) {
    stopStreaming();
    const token = ++state.openToken;
    await state.savePromise; // a save still under way lands before we read it back
    let j;
    try {
      j = await (await api('/v1/conversations/' + encodeURIComponent(id))).json();
    } catch (e) {
      if (token !== state.openToken) return;
      if (e instanceof ApiError && e.status === 404) {
        newConversation();
        showNotice(t('notFound'));
        loadConversations();
      } else showNotice(errorText(e));
      return;
    }
    if (token !== state.openToken) return;
    const messages = (Array.isArray(j.messages) ? j.messages : [])
      .filter((m) => m && typeof m.content === 'string' && ['system', 'user', 'assistant'].includes(m.role))
      .map((m) => ({ role: m.role, content: m.content }));
    let system = typeof j.system === 'string' ? j.system : '';
    while (messages.length && messages[0].role === 'system') system = system || messages.shift().content;
    state.conv = { id: String(j.id || id), title: j.title || '', model: j.model || '', system, messages };
    state.notice = null;
    replaceHash(state.conv.id);
    document.body.classList.remove('sidebar-open');
    renderAll();
  }

  async function deleteConversation(id) {
    await state.savePromise;
    await api('/v1/conversations/' + encodeURIComponent(id), { method: 'DELETE' });
    state.list = state.list.filter((c) => c.id !== id);
    if (state.conv.id === id) newConversation();
    else renderSidebar();
    loadConversations();
  }

  function saveConversation(conv) {
    const messages = wire(conv.messages);
    if (!messages.length) return state.savePromise;
    const firstUser = messages.find((m) => m.role === 'user');
    conv.title = firstUser ? makeTitle(firstUser.content) : conv.title;
    const body = { title: conv.title, model: conv.model || currentModel(), system: conv.system, messages };
    const run = () =>
      api('/v1/conversations/' + encodeURIComponent(conv.id), { method: 'PUT', body }).then(() => {
        if (state.conv === conv) replaceHash(conv.id);
        return loadConversations();
      });
    state.savePromise = state.savePromise
      .then(run)
      .catch((e) => showNotice(t('saveFailed') + errorText(e)));
    return state.savePromise;
  }

  // ---- chatting
  function send() {
    const input = $('#message-input');
    const text = input.value.trim();
    if (!text || state.busy || pendingCompare()) return;
    input.value = '';
    autosize();
    state.conv.messages.push({ role: 'user', content: text });
    complete();
  }

  async function complete() {
    const conv = state.conv;
    const model = currentModel();
    conv.model = model;
    const compare = state.compare;
    const answers = Array.from({ length: compare ? 2 : 1 }, () => ({ content: '', finish: null, state: 'streaming' }));
    const prompt = promptFor(conv, conv.messages.length);
    const msg = { role: 'assistant', content: '', _state: 'streaming', _model: model, _answers: answers };
    if (compare) msg._compare = { answers, comment: '' };
    conv.messages.push(msg);
    state.notice = null;
    const ctrl = new AbortController();
    state.abort = ctrl;
    setBusy(true);
    renderMessages();
    scrollToBottom(true);

    // the server leaves out the oldest turns when the conversation outgrows the context
    const body = { model, messages: prompt, stream: true, truncation: 'auto', ...samplingBody() };
    if (compare) body.n = 2;
    let error = null;
    try {
      const res = await api('/v1/chat/completions', { method: 'POST', body, signal: ctrl.signal });
      const dropped = parseInt(res.headers.get('x-ferrochat-dropped-messages') || '0', 10);
      if (dropped > 0) state.notice = { text: t('dropped').replace('{n}', dropped), info: true };
      await readCompletion(res, answers, () => scheduleUpdate(msg));
    } catch (e) {
      if (e && e.name === 'AbortError') msg._stopped = true;
      else error = e;
    }
    if (state.abort === ctrl) state.abort = null;
    for (const a of answers) if (a.state !== 'done') a.state = 'done';
    msg.content = answers[0].content;
    msg._finish = answers[0].finish;
    msg._state = 'done';
    const keep = !error || answers.some((a) => a.content);
    if (!keep) conv.messages.splice(conv.messages.indexOf(msg), 1);
    setBusy(false);
    if (state.conv === conv) {
      if (error) state.notice = { text: errorText(error), retry: !keep };
      renderMessages();
      scrollToBottom(false);
    }
    if (keep) saveConversation(conv);
  }

  function regenerate() {
    const msgs = state.conv.messages;
    if (state.busy) return;
    if (msgs.length && msgs[msgs.length - 1].role === 'assistant') msgs.pop();
    if (!msgs.length || msgs[msgs.length - 1].role !== 'user') return;
    complete();
  }

  function submitEdit(msg, text) {
    const conv = state.conv;
    const i = conv.messages.indexOf(msg);
    if (i < 0 || state.busy || !text.trim()) return;
    conv.messages = conv.messages.slice(0, i);
    conv.messages.push({ role: 'user', content: text.trim() });
    complete();
  }

  // ---- feedback
  async function submitRating(msg) {
    const conv = state.conv;
    const fb = msg._fb;
    const i = conv.messages.indexOf(msg);
    if (!fb || fb.sending || i < 0) return;
    fb.sending = true;
    fb.error = '';
    rerender(msg);
    try {
      await state.savePromise; // the conversation exists on the server first
      await api('/v1/feedback/ratings', {
        method: 'POST',
        body: {
          conversation_id: conv.id,
          model: msg._model || conv.model || currentModel(),
          messages: promptFor(conv, i),
          answer: msg.content,
          rating: fb.rating,
          comment: fb.comment.trim(),
        },
      });
      msg._fb = { rating: fb.rating, sent: true };
      msg._thanks = true;
    } catch (e) {
      fb.sending = false;
      fb.error = t('feedbackFailed') + errorText(e);
    }
    if (state.conv === conv) rerender(msg);
  }

  async function choose(msg, preferred) {
    const conv = state.conv;
    const i = conv.messages.indexOf(msg);
    if (!msg._compare || i < 0) return;
    const answers = msg._compare.answers.map((a) => a.content);
    const comment = msg._compare.comment.trim();
    // The chosen answer is what the conversation keeps (A on a tie).
    msg.content = answers[preferred === 1 ? 1 : 0];
    msg._finish = msg._compare.answers[preferred === 1 ? 1 : 0].finish;
    msg._compare = null;
    const rateable = answers.every((a) => a.trim());
    if (!rateable) msg._note = 'emptyNoFeedback';
    renderMessages();
    const saved = saveConversation(conv);
    if (!rateable) return; // the server stores no comparison with an empty answer
    try {
      await saved;
      await api('/v1/feedback/comparisons', {
        method: 'POST',
        body: {
          conversation_id: conv.id,
          model: msg._model || conv.model || currentModel(),
          messages: promptFor(conv, i),
          answers,
          preferred,
          comment,
        },
      });
      msg._thanks = true;
      if (state.conv === conv) rerender(msg);
    } catch (e) {
      showNotice(t('feedbackFailed') + errorText(e));
    }
  }

  // ---- rendering
  function setBusy(busy) {
    state.busy = busy;
    $('#send').hidden = busy;
    $('#stop').hidden = !busy;
    document.body.classList.toggle('busy', busy);
    updateComposer();
  }

  function updateComposer() {
    const input = $('#message-input');
    const waiting = !!state.conv && pendingCompare();
    input.disabled = waiting;
    input.placeholder = waiting ? t('pickFirst') : t('inputPlaceholder');
    $('#send').disabled = waiting || !input.value.trim();
  }

  function autosize() {
    const input = $('#message-input');
    input.style.height = 'auto';
    input.style.height = Math.min(input.scrollHeight, 240) + 'px';
    updateComposer();
  }

  function applyStaticText() {
    document.documentElement.lang = state.lang === 'zh' ? 'zh-CN' : 'en';
    document.title = t('appName');
    for (const el of document.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
    for (const el of document.querySelectorAll('[data-i18n-placeholder]')) el.placeholder = t(el.dataset.i18nPlaceholder);
    for (const el of document.querySelectorAll('[data-i18n-title]')) {
      el.title = t(el.dataset.i18nTitle);
      el.setAttribute('aria-label', el.title);
    }
  }

  function renderAll() {
    applyStaticText();
    renderModelPicker();
    renderSidebar();
    renderMessages();
    syncSettingsForm();
    setBusy(state.busy);
  }

  function renderModelPicker() {
    const picker = $('#model-picker');
    const want = [state.conv && state.conv.model, state.settings.model].find((m) => m && state.models.includes(m));
    picker.replaceChildren(...state.models.map((id) => h('option', { value: id, text: id })));
    if (!state.models.length) picker.append(h('option', { value: '', text: t('noModels') }));
    picker.value = want || state.models[0] || '';
  }

  function renderSidebar() {
    const list = $('#conversation-list');
    if (!state.list.length) {
      list.replaceChildren(h('li', { class: 'conv-empty', text: t('noConversations') }));
      return;
    }
    list.replaceChildren(
      ...state.list.map((c) => {
        const del = iconButton('trash', t('delete'), (e) => {
          e.stopPropagation();
          if (del.classList.contains('confirm')) return deleteConversation(c.id);
          del.classList.add('confirm');
          del.replaceChildren(t('confirmDelete'));
          setTimeout(() => {
            if (!del.isConnected) return;
            del.classList.remove('confirm');
            del.replaceChildren(icon('trash'));
          }, 3000);
          return undefined;
        }, { 'data-testid': 'delete-conversation', class: 'icon-btn conv-delete' });
        const active = state.conv && c.id === state.conv.id;
        return h('li', {
          class: 'conv-item' + (active ? ' active' : ''),
          'data-testid': 'conversation-item',
          'data-id': c.id,
          'aria-current': active ? 'true' : null,
          tabindex: '0',
          title: c.title || t('untitled'),
          onclick: guard(() => openConversation(c.id)),
          onkeydown: (e) => {
            if (e.key === 'Enter' && e.target === e.currentTarget) guard(() => openConversation(c.id))();
          },
        }, h('span', { class: 'conv-title', text: c.title || t('untitled') }), del);
      }),
    );
  }

  function renderMessages() {
    const box = $('#messages');
    const conv = state.conv;
    const els = conv.messages.map((m, i) => messageView(m, i));
    if (!conv.messages.length) els.push(h('div', { class: 'empty-state' }, h('h1', { text: t('emptyTitle') })));
    if (state.notice) {
      const info = state.notice.info;
      els.push(h('div', info
        ? { class: 'notice info', role: 'status', 'data-testid': 'info' }
        : { class: 'notice', role: 'alert', 'data-testid': 'error' },
        h('span', { text: state.notice.text }),
        state.notice.retry && !state.busy
          ? h('button', { type: 'button', class: 'text-btn', 'data-testid': 'retry', text: t('retry'), onclick: guard(regenerate) })
          : null));
    }
    box.replaceChildren(...els);
    updateComposer();
  }

  function rerender(msg) {
    const i = state.conv.messages.indexOf(msg);
    if (i < 0 || !msg._el || !msg._el.isConnected) return renderMessages();
    const old = msg._el;
    old.replaceWith(messageView(msg, i));
    return undefined;
  }

  function showNotice(text) {
    state.notice = { text };
    if (state.conv) renderMessages();
  }

  function messageView(m, i) {
    const el = m.role === 'user' ? userView(m) : m._compare ? compareView(m) : assistantView(m, i);
    m._el = el;
    return el;
  }

  function userView(m) {
    if (m._editing) {
      const area = h('textarea', { class: 'edit-input', 'data-testid': 'edit-input', rows: '3' });
      area.value = m._draft ?? m.content;
      area.addEventListener('input', () => { m._draft = area.value; });
      const done = () => { m._editing = false; m._draft = null; rerender(m); };
      const submit = () => { m._editing = false; m._draft = null; submitEdit(m, area.value); };
      area.addEventListener('keydown', (e) => {
        if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) { e.preventDefault(); submit(); }
        if (e.key === 'Escape') done();
      });
      setTimeout(() => area.focus(), 0);
      return h('div', { class: 'msg user editing', 'data-testid': 'message', 'data-role': 'user', 'data-state': 'editing' },
        area,
        h('div', { class: 'edit-buttons' },
          h('button', { type: 'button', class: 'text-btn', text: t('cancel'), onclick: done }),
          h('button', { type: 'button', class: 'primary-btn', 'data-testid': 'edit-save', text: t('saveAndSubmit'), onclick: guard(submit) })));
    }
    return h('div', { class: 'msg user', 'data-testid': 'message', 'data-role': 'user', 'data-state': 'done' },
      h('div', { class: 'bubble', 'data-testid': 'message-content', text: m.content }),
      h('div', { class: 'actions' },
        copyButton(m),
        state.busy || pendingCompare() ? null : iconButton('edit', t('edit'), () => { m._editing = true; rerender(m); }, { 'data-testid': 'edit' })));
  }

  function copyButton(m) {
    const btn = iconButton('copy', t('copy'), () => {
      if (!navigator.clipboard) return undefined;
      return navigator.clipboard.writeText(m.content).then(() => {
        btn.replaceChildren(icon('check'));
        btn.title = t('copied');
        setTimeout(() => { btn.replaceChildren(icon('copy')); btn.title = t('copy'); }, 1500);
      }, () => {});
    }, { 'data-testid': 'copy' });
    return btn;
  }

  function contentBox(text, streaming) {
    const box = h('div', { class: 'content markdown', 'data-testid': 'message-content' });
    box.innerHTML = renderMarkdown(text); // renderMarkdown escapes everything it is given
    return h('div', { class: 'content-wrap' }, box,
      !streaming && !text ? h('div', { class: 'muted', text: t('emptyAnswer') }) : null);
  }

  function assistantView(m, i) {
    const streaming = m._state === 'streaming';
    const last = i === state.conv.messages.length - 1;
    const fb = m._fb || {};
    const notes = [];
    if (!streaming && m._stopped) notes.push(t('stopped'));
    if (!streaming && m._finish === 'length') notes.push(t('truncated'));
    const thumb = (rating) =>
      iconButton(rating, t(rating === 'up' ? 'thumbsUp' : 'thumbsDown'), () => {
        if (fb.sent || fb.sending) return;
        m._fb = fb.open && fb.rating === rating ? null : { rating, open: true, comment: fb.comment || '' };
        rerender(m);
        if (m._fb) setTimeout(() => { const c = m._el && m._el.querySelector('[data-testid="feedback-comment"]'); if (c) c.focus(); }, 0);
      }, {
        'data-testid': rating === 'up' ? 'thumbs-up' : 'thumbs-down',
        'aria-pressed': fb.rating === rating ? 'true' : 'false',
        disabled: fb.sent || fb.sending ? true : null,
        class: 'icon-btn' + (fb.rating === rating ? ' pressed' : ''),
      });
    let box = null;
    if (fb.open) {
      const comment = h('textarea', { class: 'feedback-comment', 'data-testid': 'feedback-comment', rows: '2', placeholder: t('commentPlaceholder') });
      comment.value = fb.comment || '';
      comment.addEventListener('input', () => { fb.comment = comment.value; });
      box = h('div', { class: 'feedback-box' },
        comment,
        fb.error ? h('div', { class: 'error-text', text: fb.error }) : null,
        h('div', { class: 'feedback-buttons' },
          h('button', { type: 'button', class: 'text-btn', text: t('cancel'), disabled: fb.sending || null, onclick: () => { m._fb = null; rerender(m); } }),
          h('button', { type: 'button', class: 'primary-btn', 'data-testid': 'feedback-submit', text: t('submit'), disabled: fb.sending || null, onclick: guard(() => submitRating(m)) })));
    }
    const el = h('div', {
      class: 'msg assistant', 'data-testid': 'message', 'data-role': 'assistant',
      'data-state': streaming ? 'streaming' : 'done', 'data-finish': m._finish || null,
      'data-empty': !streaming && !m.content.trim() ? 'true' : null,
    },
      contentBox(m.content, streaming),
      notes.length ? h('div', { class: 'muted note', text: notes.join(' · ') }) : null,
      m._note ? h('div', { class: 'muted note', text: t(m._note) }) : null,
      streaming ? null : h('div', { class: 'actions' + (last ? ' last' : '') },
        copyButton(m), m.content.trim() ? [thumb('up'), thumb('down')] : null,
        last && !state.busy ? iconButton('regen', t('regenerate'), regenerate, { 'data-testid': 'regenerate' }) : null),
      box,
      m._thanks ? h('div', { class: 'thanks', 'data-testid': 'feedback-thanks', role: 'status', text: t('thanks') }) : null);
    return el;
  }

  function compareView(m) {
    const streaming = m._state === 'streaming';
    const pane = (a, key, testid) =>
      h('div', {
        class: 'compare-pane', 'data-testid': testid, 'data-state': a.state, 'data-finish': a.finish || null,
        'data-empty': a.state !== 'streaming' && !a.content.trim() ? 'true' : null,
      },
        h('div', { class: 'pane-label', text: t(key) }), contentBox(a.content, a.state === 'streaming'));
    const [a, b] = m._compare.answers;
    let choices = null;
    if (!streaming) {
      const comment = h('input', { type: 'text', class: 'compare-comment', 'data-testid': 'compare-comment', placeholder: t('commentPlaceholder') });
      comment.value = m._compare.comment;
      comment.addEventListener('input', () => { m._compare.comment = comment.value; });
      const pick = (p, testid, key) =>
        h('button', { type: 'button', class: 'choice-btn', 'data-testid': testid, text: t(key), onclick: guard(() => choose(m, p)) });
      choices = h('div', { class: 'compare-choices' },
        h('div', { class: 'compare-question', text: t('whichBetter') }),
        h('div', { class: 'choice-row' }, pick(0, 'prefer-a', 'preferA'), pick(null, 'prefer-tie', 'tie'), pick(1, 'prefer-b', 'preferB')),
        h('div', { class: 'choice-row' }, comment,
          state.busy ? null : iconButton('regen', t('regenerate'), regenerate, { 'data-testid': 'regenerate' })));
    }
    return h('div', { class: 'msg compare', 'data-testid': 'compare', 'data-state': streaming ? 'streaming' : 'done' },
      h('div', { class: 'compare-grid' }, pane(a, 'answerA', 'compare-a'), pane(b, 'answerB', 'compare-b')),
      choices);
  }

  // Streaming updates touch only the answer being written, once per frame.
  function scheduleUpdate(msg) {
    if (msg._frame) return;
    msg._frame = requestAnimationFrame(() => {
      msg._frame = 0;
      if (!msg._el || !msg._el.isConnected || msg._state !== 'streaming') return;
      const stick = nearBottom();
      const answers = msg._answers;
      if (!msg._compare) msg.content = answers[0].content;
      const panes = msg._compare ? msg._el.querySelectorAll('.compare-pane') : [msg._el];
      panes.forEach((pane, k) => {
        pane.querySelector('.content').innerHTML = renderMarkdown(answers[k].content);
        if (msg._compare) pane.dataset.state = answers[k].state;
      });
      if (stick) scrollToBottom(true);
    });
  }

  function nearBottom() {
    const s = $('#scroll');
    return s.scrollHeight - s.scrollTop - s.clientHeight < 120;
  }

  function scrollToBottom(force) {
    const s = $('#scroll');
    if (force || nearBottom()) s.scrollTop = s.scrollHeight;
  }

  // ---- settings panel
  function syncSettingsForm() {
    const s = state.settings;
    $('#system-prompt').value = state.conv ? state.conv.system : '';
    $('#temperature').value = s.temperature;
    $('#top-p').value = s.top_p;
    $('#max-tokens').value = s.max_tokens;
    $('#seed').value = s.seed;
    $('#api-key').value = s.apiKey;
  }

  function toggleSettings(open) {
    const panel = $('#settings-panel');
    const show = open ?? panel.hidden;
    panel.hidden = !show;
    $('#settings-button').setAttribute('aria-expanded', String(show));
    if (show) {
      syncSettingsForm();
      $('#system-prompt').focus();
    }
  }

  function bindSettings() {
    const fields = { temperature: 'temperature', 'top-p': 'top_p', 'max-tokens': 'max_tokens', seed: 'seed' };
    for (const [id, key] of Object.entries(fields)) {
      $('#' + id).addEventListener('input', (e) => {
        state.settings[key] = e.target.value;
        storeSettings();
      });
    }
    const key = $('#api-key');
    key.addEventListener('input', () => { state.settings.apiKey = key.value.trim(); storeSettings(); });
    key.addEventListener('change', guard(() => {
      state.notice = null;
      renderMessages();
      return Promise.all([loadModels(), loadConversations()]);
    }));
    const sys = $('#system-prompt');
    sys.addEventListener('input', () => { state.conv.system = sys.value; });
    sys.addEventListener('change', () => { if (!state.busy && state.conv.messages.length) saveConversation(state.conv); });
  }

  // ---- start
  function bind() {
    for (const el of document.querySelectorAll('[data-icon]')) el.prepend(icon(el.dataset.icon));
    const input = $('#message-input');
    input.addEventListener('input', autosize);
    input.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && !e.shiftKey && !e.isComposing && e.keyCode !== 229) {
        e.preventDefault();
        send();
      }
    });
    $('#composer').addEventListener('submit', (e) => { e.preventDefault(); send(); });
    $('#stop').addEventListener('click', stopStreaming);
    $('#new-chat').addEventListener('click', () => { newConversation(); document.body.classList.remove('sidebar-open'); input.focus(); });
    $('#menu-button').addEventListener('click', () => document.body.classList.toggle('sidebar-open'));
    $('#scrim').addEventListener('click', () => document.body.classList.remove('sidebar-open'));
    $('#settings-button').addEventListener('click', () => { document.body.classList.remove('sidebar-open'); toggleSettings(); });
    $('#settings-close').addEventListener('click', () => toggleSettings(false));
    document.addEventListener('keydown', (e) => { if (e.key === 'Escape' && !$('#settings-panel').hidden) toggleSettings(false); });
    $('#lang-toggle').addEventListener('click', () => {
      state.lang = state.lang === 'zh' ? 'en' : 'zh';
      storeSettings();
      renderAll();
    });
    $('#model-picker').addEventListener('change', (e) => {
      state.settings.model = e.target.value;
      state.conv.model = e.target.value;
      storeSettings();
    });
    const cmp = $('#compare-toggle');
    cmp.addEventListener('click', () => {
      state.compare = !state.compare;
      cmp.setAttribute('aria-pressed', String(state.compare));
    });
    window.addEventListener('hashchange', () => {
      const id = location.hash.slice(1);
      if (id && id !== state.conv.id) guard(() => openConversation(id))();
    });
    bindSettings();
  }

  async function start() {
    loadSettings();
    bind();
    newConversation();
    const id = location.hash.slice(1);
    await Promise.all([loadModels(), loadConversations()]);
    if (/^[A-Za-z0-9_-]{1,64}$/.test(id)) await openConversation(id);
    document.body.dataset.ready = 'true';
  }

  window.ferrochat = { renderMarkdown, escapeHtml, strings: STRINGS };
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', () => guard(start)());
  else guard(start)();
})();
