// Tests the harness itself, without the connector: a full authorization code + PKCE
// login at idp.mjs, with browser.mjs as the user's browser.
// Run with: node --test tests/js/selftest.mjs

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, createPublicKey, randomBytes, verify } from 'node:crypto';
import { once } from 'node:events';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { followLogin } from './browser.mjs';
import { startFakeMcp } from './fake-mcp.mjs';

const here = (file) => fileURLToPath(new URL(file, import.meta.url));
const CLIENT = { id: 'connector', secret: 'connector-secret' };
// Nothing listens here: the browser stops at the redirect and never fetches it.
const REDIRECT_URI = 'http://127.0.0.1:9/oauth/callback';
const ALICE = { username: 'alice', password: 'alice-password' };

let idp;

// Starts idp.mjs as the Rust harness does and waits for its one line on stdout.
async function startIdp() {
  const child = spawn(process.execPath, [here('./idp.mjs')], {
    env: {
      ...process.env,
      IDP_PORT: '0',
      IDP_CLIENT_ID: CLIENT.id,
      IDP_CLIENT_SECRET: CLIENT.secret,
      IDP_REDIRECT_URI: `${REDIRECT_URI}, http://localhost:9/other`,
    },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  const output = { stdout: '', stderr: '' };
  child.stdout.on('data', (chunk) => { output.stdout += chunk; });
  child.stderr.on('data', (chunk) => { output.stderr += chunk; });

  const deadline = Date.now() + 10_000;
  while (!output.stdout.includes('\n')) {
    if (child.exitCode !== null || Date.now() > deadline) {
      throw new Error(`idp did not start: ${output.stderr}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  const issuer = output.stdout.match(/^IDP_READY (\S+)\n/)[1];
  return { child, output, issuer };
}

function base64url(buffer) {
  return Buffer.from(buffer).toString('base64url');
}

function pkcePair() {
  const verifier = base64url(randomBytes(32));
  const challenge = base64url(createHash('sha256').update(verifier).digest());
  return { verifier, challenge };
}

async function getJson(url, init) {
  const response = await fetch(url, init);
  const body = await response.json();
  assert.equal(response.status, 200, JSON.stringify(body));
  return body;
}

// The browser part of the flow: returns what the client's callback would receive.
async function authorize(discovery, { login = followLogin } = {}) {
  const pkce = pkcePair();
  const state = base64url(randomBytes(16));
  const nonce = base64url(randomBytes(16));
  const url = new URL(discovery.authorization_endpoint);
  url.search = new URLSearchParams({
    response_type: 'code',
    client_id: CLIENT.id,
    redirect_uri: REDIRECT_URI,
    scope: 'openid email profile groups',
    state,
    nonce,
    code_challenge: pkce.challenge,
    code_challenge_method: 'S256',
  }).toString();

  const callback = new URL(await login(url.href, { ...ALICE, stopAt: REDIRECT_URI }));
  assert.equal(callback.searchParams.get('error'), null, callback.href);
  assert.equal(callback.searchParams.get('state'), state);
  assert.equal(callback.searchParams.get('iss'), discovery.issuer);
  return { code: callback.searchParams.get('code'), verifier: pkce.verifier, nonce };
}

async function exchangeCode(discovery, { code, verifier }, authMethod) {
  const form = new URLSearchParams({
    grant_type: 'authorization_code',
    code,
    redirect_uri: REDIRECT_URI,
    code_verifier: verifier,
  });
  const headers = { 'content-type': 'application/x-www-form-urlencoded' };
  if (authMethod === 'client_secret_basic') {
    const basic = Buffer.from(`${CLIENT.id}:${CLIENT.secret}`).toString('base64');
    headers.authorization = `Basic ${basic}`;
  } else {
    form.set('client_id', CLIENT.id);
    form.set('client_secret', CLIENT.secret);
  }
  return getJson(discovery.token_endpoint, { method: 'POST', headers, body: form });
}

// Checks the signature against the IdP's JWKS and returns the claims.
async function verifyIdToken(discovery, idToken) {
  const [header, payload, signature] = idToken.split('.');
  const { kid, alg } = JSON.parse(Buffer.from(header, 'base64url'));
  assert.equal(alg, 'RS256');
  const { keys } = await getJson(discovery.jwks_uri);
  const jwk = keys.find((key) => key.kid === kid);
  assert.ok(jwk, `no key ${kid} in the JWKS`);
  const signed = Buffer.from(`${header}.${payload}`);
  const ok = verify('RSA-SHA256', signed, createPublicKey({ key: jwk, format: 'jwk' }),
    Buffer.from(signature, 'base64url'));
  assert.ok(ok, 'ID token signature does not verify');
  return JSON.parse(Buffer.from(payload, 'base64url'));
}

// The CLI form of browser.mjs, as the Rust helper runs it.
async function browserCli(startUrl, { username, password, stopAt }) {
  const args = [here('./browser.mjs'), startUrl, stopAt, username, password];
  const child = spawn(process.execPath, args);
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk) => { stdout += chunk; });
  child.stderr.on('data', (chunk) => { stderr += chunk; });
  const [code] = await once(child, 'exit');
  assert.equal(code, 0, stderr);
  return stdout.trim();
}

before(async () => { idp = await startIdp(); });
after(() => { idp?.child.kill(); });

test('discovery names the issuer, RS256 and the scopes the connector asks for', async () => {
  const discovery = await getJson(`${idp.issuer}/.well-known/openid-configuration`);
  assert.equal(discovery.issuer, idp.issuer);
  assert.match(idp.issuer, /^http:\/\/127\.0\.0\.1:\d+$/);
  assert.ok(discovery.id_token_signing_alg_values_supported.includes('RS256'));
  for (const scope of ['openid', 'email', 'profile', 'groups']) {
    assert.ok(discovery.scopes_supported.includes(scope), scope);
  }
});

for (const authMethod of ['client_secret_basic', 'client_secret_post']) {
  test(`code + PKCE login, token request with ${authMethod}`, async () => {
    const discovery = await getJson(`${idp.issuer}/.well-known/openid-configuration`);
    const login = authMethod === 'client_secret_post' ? browserCli : followLogin;
    const grant = await authorize(discovery, { login });

    const tokens = await exchangeCode(discovery, grant, authMethod);
    const claims = await verifyIdToken(discovery, tokens.id_token);
    assert.equal(claims.iss, idp.issuer);
    assert.equal(claims.aud, CLIENT.id);
    assert.equal(claims.sub, 'alice');
    assert.equal(claims.nonce, grant.nonce);
    assert.equal(claims.email, 'alice@example.com');
    assert.deepEqual(claims.groups, ['sre', 'dev']);
    assert.equal(claims.preferred_username, 'alice');
  });
}

test('a wrong password is refused at the form', async () => {
  const discovery = await getJson(`${idp.issuer}/.well-known/openid-configuration`);
  const login = (url, options) => followLogin(url, { ...options, password: 'wrong' });
  await assert.rejects(authorize(discovery, { login }), /HTTP 401 .*invalid username or password/);
});

test('a code is not accepted without the client secret', async () => {
  const discovery = await getJson(`${idp.issuer}/.well-known/openid-configuration`);
  const grant = await authorize(discovery);
  const form = new URLSearchParams({
    grant_type: 'authorization_code',
    code: grant.code,
    redirect_uri: REDIRECT_URI,
    code_verifier: grant.verifier,
    client_id: CLIENT.id,
  });
  const response = await fetch(discovery.token_endpoint, { method: 'POST', body: form });
  assert.equal(response.status, 401);
  assert.equal((await response.json()).error, 'invalid_client');
});

test('stdout carries only the ready line, and the secret is never logged', () => {
  assert.equal(idp.output.stdout, `IDP_READY ${idp.issuer}\n`);
  assert.ok(!idp.output.stderr.includes(CLIENT.secret));
  assert.ok(!idp.output.stderr.includes(ALICE.password));
});

test('the IdP exits when its stdin closes', async () => {
  const other = await startIdp();
  const exited = once(other.child, 'exit');
  other.child.stdin.end();
  const [code] = await exited;
  assert.equal(code, 0);
});

// ts-client.mjs against a stand-in for the connector (fake-mcp.mjs), run as the Rust
// helper runs it: one JSON line per step on stdout.
async function tsClient(mcpUrl, password) {
  const child = spawn(process.execPath, [here('./ts-client.mjs'), mcpUrl], {
    env: { ...process.env, LOGIN_USER: ALICE.username, LOGIN_PASSWORD: password },
  });
  let stdout = '';
  child.stdout.on('data', (chunk) => { stdout += chunk; });
  child.stderr.resume();
  const [code] = await once(child, 'exit');
  return { code, steps: stdout.trim().split('\n').map((line) => JSON.parse(line)) };
}

test('ts-client logs in, calls whoami, refreshes and calls it again', async (t) => {
  const fake = await startFakeMcp();
  t.after(fake.close);
  const { code, steps } = await tsClient(fake.mcpUrl, ALICE.password);

  assert.deepEqual(steps.map((s) => s.step), ['connect', 'login', 'token', 'initialize',
    'tools/list', 'tools/call', 'refresh', 'tools/call', 'session/delete', 'done']);
  assert.ok(steps.every((s) => s.ok), JSON.stringify(steps));
  assert.equal(code, 0);
  const calls = steps.filter((s) => s.step === 'tools/call');
  assert.ok(calls.every((call) => JSON.parse(call.text).sub === 'alice'));
  assert.equal(steps.find((s) => s.step === 'refresh').refresh_token_rotated, true);
});

test('ts-client reports the step that failed and exits 1', async (t) => {
  const fake = await startFakeMcp();
  t.after(fake.close);
  const { code, steps } = await tsClient(fake.mcpUrl, 'wrong');

  assert.equal(code, 1);
  assert.deepEqual(steps.map((s) => [s.step, s.ok]), [['connect', true], ['login', false]]);
  assert.match(steps.at(-1).error, /invalid username or password/);
});
