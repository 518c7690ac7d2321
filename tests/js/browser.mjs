// A scripted browser for login flows: it follows redirects, keeps cookies, fills and
// submits login (and consent) forms, and stops at the redirect that would take it to
// the client's own callback, which it never fetches.
//
//   import { followLogin } from './browser.mjs';
//   const callback = await followLogin(url, { username, password, stopAt });
//
// CLI: node tests/js/browser.mjs <startUrl> <stopAt> <user> <pass>  (prints the final URL)

import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const MAX_STEPS = 30;
// A server that hangs is reported as such, well before the caller's own time limit.
const REQUEST_TIMEOUT_MS = 15_000;
const USERNAME_FIELDS = ['login', 'username', 'email', 'user'];

// A cookie jar keyed by host, path and name. Ports are ignored, as browsers do, and
// Secure is ignored because every test server is plain http on loopback.
class CookieJar {
  #cookies = new Map();

  store(url, response) {
    for (const header of response.headers.getSetCookie()) {
      const cookie = parseSetCookie(header, url);
      const key = `${cookie.host} ${cookie.path} ${cookie.name}`;
      if (cookie.expired) this.#cookies.delete(key);
      else this.#cookies.set(key, cookie);
    }
  }

  header(url) {
    const now = Date.now();
    const matching = [...this.#cookies.values()].filter((c) =>
      c.host === url.hostname && pathMatches(c.path, url.pathname) && !(c.expires < now));
    return matching.map((c) => `${c.name}=${c.value}`).join('; ');
  }
}

function parseSetCookie(header, url) {
  const [pair, ...attributes] = header.split(';').map((part) => part.trim());
  const eq = pair.indexOf('=');
  const cookie = {
    name: pair.slice(0, eq),
    value: pair.slice(eq + 1),
    host: url.hostname,
    path: defaultCookiePath(url.pathname),
    expires: undefined,
    expired: false,
  };
  for (const attribute of attributes) {
    const [key, value = ''] = attribute.split('=');
    const name = key.toLowerCase();
    if (name === 'path' && value.startsWith('/')) cookie.path = value;
    if (name === 'expires') cookie.expires = Date.parse(value);
    if (name === 'max-age') cookie.expires = Date.now() + Number(value) * 1000;
  }
  cookie.expired = cookie.expires !== undefined && cookie.expires <= Date.now();
  return cookie;
}

// RFC 6265 5.1.4: the directory of the request path.
function defaultCookiePath(pathname) {
  const slash = pathname.lastIndexOf('/');
  return slash <= 0 ? '/' : pathname.slice(0, slash);
}

function pathMatches(cookiePath, requestPath) {
  if (requestPath === cookiePath) return true;
  if (!requestPath.startsWith(cookiePath)) return false;
  return cookiePath.endsWith('/') || requestPath[cookiePath.length] === '/';
}

function decodeEntities(text) {
  const named = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" };
  return text.replace(/&(#x[0-9a-f]+|#\d+|\w+);/gi, (whole, code) => {
    if (code[0] !== '#') return named[code.toLowerCase()] ?? whole;
    const hex = code[1] === 'x' || code[1] === 'X';
    return String.fromCodePoint(parseInt(code.slice(hex ? 2 : 1), hex ? 16 : 10));
  });
}

function attributes(tag) {
  const found = {};
  const pattern = /([\w:-]+)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'>]+)))?/g;
  for (const [, name, dq, sq, bare] of tag.replace(/^<\w+/, '').matchAll(pattern)) {
    found[name.toLowerCase()] = decodeEntities(dq ?? sq ?? bare ?? '');
  }
  return found;
}

// Enough of HTML for login pages: every <form> with its inputs and named buttons.
function parseForms(html, pageUrl) {
  return [...html.matchAll(/<form\b[^>]*>[\s\S]*?<\/form>/gi)].map(([formHtml]) => {
    const form = attributes(formHtml.match(/^<form\b[^>]*>/i)[0]);
    const fields = [...formHtml.matchAll(/<(input|button)\b[^>]*>/gi)]
      .map(([tag, element]) => fieldOf(element.toLowerCase(), attributes(tag)));
    return {
      action: new URL(form.action || pageUrl, pageUrl),
      method: (form.method || 'get').toUpperCase(),
      fields,
    };
  });
}

// A button without a type submits its form; an input without one is text.
function fieldOf(element, attrs) {
  const type = (attrs.type || (element === 'button' ? 'submit' : 'text')).toLowerCase();
  return { ...attrs, type, name: attrs.name ?? '', value: attrs.value ?? '' };
}

function isPasswordField(field) {
  return field.type === 'password' || field.name === 'password';
}

// Fills what a person would: the user name, the password, the hidden fields as they
// are, and the first named submit button (some servers read which one was pressed).
function fillForm(form, username, password) {
  const values = new URLSearchParams();
  let pressed = false;
  for (const field of form.fields) {
    if (!field.name) continue;
    if (field.type === 'submit') {
      if (!pressed) values.append(field.name, field.value);
      pressed = true;
    } else if (isPasswordField(field)) {
      values.append(field.name, password);
    } else if (field.type !== 'hidden' && USERNAME_FIELDS.includes(field.name.toLowerCase())) {
      values.append(field.name, username);
    } else if (isSent(field)) {
      values.append(field.name, field.value);
    }
  }
  return values;
}

function isSent(field) {
  if (field.type === 'button' || field.type === 'reset') return false;
  if (field.type === 'checkbox' || field.type === 'radio') return 'checked' in field;
  return true;
}

function textOf(html) {
  return html.replace(/<[^>]*>/g, ' ').replace(/\s+/g, ' ').trim().slice(0, 300);
}

/**
 * Drives a login that starts at startUrl and returns the first redirect target that
 * starts with stopAt (the client's callback, with its code and state).
 */
export async function followLogin(startUrl, { username, password, stopAt }) {
  const jar = new CookieJar();
  const submitted = new Set();
  let request = { url: new URL(startUrl), method: 'GET', body: undefined };

  for (let step = 0; step < MAX_STEPS; step++) {
    const response = await send(jar, request);
    const location = response.headers.get('location');

    if (response.status >= 300 && response.status < 400 && location) {
      await response.body?.cancel();
      const next = new URL(location, request.url);
      if (next.href.startsWith(stopAt)) return next.href;
      request = redirected(request, next, response.status);
      continue;
    }

    const body = await response.text();
    if (!response.ok) {
      throw new Error(`HTTP ${response.status} at ${request.url.href}: ${textOf(body)}`);
    }
    const form = pickForm(parseForms(body, request.url));
    if (!form) {
      throw new Error(`no form and no redirect at ${request.url.href}: ${textOf(body)}`);
    }

    // The same form coming back means it was refused (a wrong password, usually). The
    // kind is part of the key, since some servers post login and consent to one URL.
    const kind = form.fields.some(isPasswordField) ? 'login' : 'consent';
    const key = `${kind} form ${form.method} ${form.action.href}`;
    if (submitted.has(key)) throw new Error(`${key} came back: ${textOf(body)}`);
    submitted.add(key);
    request = submission(form, fillForm(form, username, password));
  }
  throw new Error(`gave up after ${MAX_STEPS} steps without reaching ${stopAt}`);
}

async function send(jar, { url, method, body }) {
  const headers = { accept: 'text/html,application/json;q=0.9,*/*;q=0.8' };
  const cookies = jar.header(url);
  if (cookies) headers.cookie = cookies;
  if (body) headers['content-type'] = 'application/x-www-form-urlencoded';
  const signal = AbortSignal.timeout(REQUEST_TIMEOUT_MS);
  const response = await fetch(url, { method, body, headers, redirect: 'manual', signal });
  jar.store(url, response);
  return response;
}

// 307 and 308 repeat the request as it was; the others turn it into a GET.
function redirected(request, next, status) {
  if (status === 307 || status === 308) return { ...request, url: next };
  return { url: next, method: 'GET', body: undefined };
}

// A login form (one with a password field) first, else the first form: a consent page.
function pickForm(forms) {
  return forms.find((form) => form.fields.some(isPasswordField)) ?? forms[0];
}

function submission(form, values) {
  if (form.method === 'POST') return { url: form.action, method: 'POST', body: values.toString() };
  const url = new URL(form.action);
  url.search = values.toString();
  return { url, method: 'GET', body: undefined };
}

async function cli(args) {
  if (args.length !== 4) {
    console.error('usage: node browser.mjs <startUrl> <stopAt> <user> <pass>');
    process.exit(2);
  }
  const [startUrl, stopAt, username, password] = args;
  try {
    console.log(await followLogin(startUrl, { username, password, stopAt }));
  } catch (err) {
    console.error(`browser: ${err.message}`);
    process.exit(1);
  }
}

// Run as a script, not imported? (Node resolves symlinks in import.meta.url, not in argv.)
if (process.argv[1] && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url)) {
  await cli(process.argv.slice(2));
}
