// An upstream OpenID provider for integration tests, built on oidc-provider.
//
// It knows one confidential client (our connector) and a few users, shows a plain HTML
// login form, grants consent without asking, and signs ID tokens with a fresh RS256 key.
// Started as `node tests/js/idp.mjs`; configured by IDP_* variables (see README.md).
// stdout carries exactly one line, `IDP_READY <issuer>`; everything else goes to stderr.
// Other test code may import startIdp() to run one in-process with more features.

import { generateKeyPairSync, randomBytes, timingSafeEqual } from 'node:crypto';
import { fstatSync, realpathSync } from 'node:fs';
import { createServer } from 'node:http';
import { fileURLToPath } from 'node:url';

import Provider from 'oidc-provider';

const DEFAULT_USERS = [
  {
    username: 'alice',
    password: 'alice-password',
    email: 'alice@example.com',
    groups: ['sre', 'dev'],
  },
];

function readConfig(env) {
  const required = ['IDP_CLIENT_ID', 'IDP_CLIENT_SECRET', 'IDP_REDIRECT_URI'];
  const missing = required.filter((name) => !env[name]);
  if (missing.length > 0) {
    throw new Error(`missing environment variables: ${missing.join(', ')}`);
  }
  const users = env.IDP_USERS ? JSON.parse(env.IDP_USERS) : DEFAULT_USERS;
  return {
    port: Number(env.IDP_PORT ?? 0),
    clientId: env.IDP_CLIENT_ID,
    clientSecret: env.IDP_CLIENT_SECRET,
    redirectUris: env.IDP_REDIRECT_URI.split(',').map((uri) => uri.trim()).filter(Boolean),
    users,
  };
}

function signingKey() {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = privateKey.export({ format: 'jwk' });
  return { ...jwk, kid: randomBytes(8).toString('hex'), alg: 'RS256', use: 'sig' };
}

function accountFinder(users) {
  return async function findAccount(_ctx, id) {
    const user = users.get(id);
    if (!user) return undefined;
    return {
      accountId: id,
      // oidc-provider keeps only the claims that the granted scopes allow.
      async claims() {
        return {
          sub: id,
          email: user.email,
          email_verified: true,
          name: user.name ?? id,
          preferred_username: id,
          groups: user.groups ?? [],
        };
      },
    };
  };
}

function connectorClient(config) {
  return {
    client_id: config.clientId,
    client_secret: config.clientSecret,
    redirect_uris: config.redirectUris,
    grant_types: ['authorization_code'],
    response_types: ['code'],
    // oidc-provider accepts client_secret_post as well for a client registered with basic.
    token_endpoint_auth_method: 'client_secret_basic',
  };
}

function providerConfig(clients, users, extra) {
  return {
    ...extra,
    clients,
    findAccount: accountFinder(users),
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name', 'preferred_username'],
      groups: ['groups'],
    },
    // The connector reads the user's email and groups from the ID token, as many IdPs
    // allow; by default oidc-provider would only put them in the userinfo answer.
    conformIdTokenClaims: false,
    features: { ...extra.features, devInteractions: { enabled: false } },
    interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
    jwks: { keys: [signingKey()] },
    cookies: { keys: [randomBytes(32).toString('hex')] },
    ttl: {
      AccessToken: 600, IdToken: 600, RefreshToken: 3600,
      Interaction: 600, Session: 3600, Grant: 3600,
    },
    renderError,
  };
}

function escapeHtml(text) {
  const entities = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };
  return String(text).replace(/[&<>"']/g, (c) => entities[c]);
}

async function renderError(ctx, out) {
  ctx.type = 'html';
  ctx.body = `<!DOCTYPE html><title>IdP error</title><h1>${escapeHtml(out.error)}</h1>`
    + `<p>${escapeHtml(out.error_description ?? '')}</p>`;
}

function loginPage(uid, message) {
  return `<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Sign in</title></head>
<body>
<h1>Test IdP sign-in</h1>
${message ? `<p class="error">${escapeHtml(message)}</p>` : ''}
<form method="post" action="/interaction/${escapeHtml(uid)}">
  <input type="text" name="username" autofocus required>
  <input type="password" name="password" required>
  <button type="submit">Sign in</button>
</form>
</body></html>`;
}

function sendHtml(res, status, html) {
  const headers = { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' };
  res.writeHead(status, headers);
  res.end(html);
}

async function readForm(req) {
  let body = '';
  for await (const chunk of req) {
    body += chunk;
    if (body.length > 64 * 1024) throw new Error('form too large');
  }
  return new URLSearchParams(body);
}

function passwordMatches(user, password) {
  if (!user) return false;
  const expected = Buffer.from(String(user.password));
  const given = Buffer.from(password);
  return expected.length === given.length && timingSafeEqual(expected, given);
}

// Consent is granted on the user's behalf: the tests are about the connector, not the IdP.
async function grantConsent(provider, details, req, res) {
  const { prompt, grantId, session, params } = details;
  const grant = grantId
    ? await provider.Grant.find(grantId)
    : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  const missing = prompt.details;
  if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes ?? {})) {
    grant.addResourceScope(indicator, scopes.join(' '));
  }
  const result = { consent: { grantId: await grant.save() } };
  await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: true });
}

async function showInteraction(provider, req, res) {
  const details = await provider.interactionDetails(req, res);
  if (details.prompt.name === 'consent') return grantConsent(provider, details, req, res);
  return sendHtml(res, 200, loginPage(details.uid));
}

async function submitLogin(provider, users, req, res) {
  const details = await provider.interactionDetails(req, res);
  const form = await readForm(req);
  const username = form.get('username') ?? '';
  if (!passwordMatches(users.get(username), form.get('password') ?? '')) {
    console.error(`idp: rejected sign-in for ${JSON.stringify(username)}`);
    return sendHtml(res, 401, loginPage(details.uid, 'invalid username or password'));
  }
  console.error(`idp: ${username} signed in`);
  const result = { login: { accountId: username } };
  await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: false });
}

// Our interaction routes sit beside oidc-provider's own, which handle everything else.
function requestHandler(provider, users) {
  const oidc = provider.callback();
  return async (req, res) => {
    const path = new URL(req.url, 'http://idp').pathname;
    if (!/^\/interaction\/[\w-]+$/.test(path)) return oidc(req, res);
    try {
      if (req.method === 'GET') return await showInteraction(provider, req, res);
      if (req.method === 'POST') return await submitLogin(provider, users, req, res);
      return sendHtml(res, 405, 'method not allowed');
    } catch (err) {
      console.error(`idp: interaction failed: ${err.message}`);
      if (!res.headersSent) sendHtml(res, 400, `interaction failed: ${escapeHtml(err.message)}`);
    }
  };
}

function logProviderErrors(provider) {
  const events = ['server_error', 'authorization.error', 'grant.error', 'registration.error'];
  for (const event of events) {
    provider.on(event, (_ctx, err) => {
      console.error(`idp: ${event}: ${err.message} ${err.error_description ?? ''}`.trimEnd());
    });
  }
}

// A parent that holds our stdin as a pipe ends us by dropping it, even if it dies
// without a signal. A terminal or /dev/null is not such a parent, so they are left alone.
function exitWhenStdinCloses() {
  const stat = fstatSync(0);
  if (!stat.isFIFO() && !stat.isSocket()) return;
  process.stdin.on('end', () => process.exit(0));
  process.stdin.on('close', () => process.exit(0));
  process.stdin.resume();
}

/**
 * Starts a provider on 127.0.0.1. `clients` are oidc-provider client metadata, `users`
 * as in IDP_USERS; `extra` is more oidc-provider configuration (its `features` are
 * merged). Returns { issuer, provider, close }.
 */
export async function startIdp({ port = 0, clients, users = DEFAULT_USERS, extra = {} }) {
  const server = createServer();
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', resolve);
  });

  // The issuer names the port, which is known only once the socket is bound.
  const issuer = `http://127.0.0.1:${server.address().port}`;
  const accounts = new Map(users.map((user) => [user.username, user]));
  const provider = new Provider(issuer, providerConfig(clients, accounts, extra));
  logProviderErrors(provider);
  server.on('request', requestHandler(provider, accounts));

  const close = () => new Promise((resolve) => {
    server.closeAllConnections();
    server.close(resolve);
  });
  return { issuer, provider, close };
}

async function main() {
  // oidc-provider prints its notices with console.info, which would break the
  // one-line stdout contract the Rust harness reads.
  console.info = console.error;
  console.log = console.error;

  const config = readConfig(process.env);
  const { issuer } = await startIdp({
    port: config.port,
    clients: [connectorClient(config)],
    users: config.users,
  });

  process.on('SIGTERM', () => process.exit(0));
  process.on('SIGINT', () => process.exit(0));
  exitWhenStdinCloses();
  process.stdout.write(`IDP_READY ${issuer}\n`);
}

// Run as a script, not imported? (Node resolves symlinks in import.meta.url, not in argv.)
if (process.argv[1] && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((err) => {
    console.error(`idp: ${err.message}`);
    process.exit(1);
  });
}
