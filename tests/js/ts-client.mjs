// An end-to-end MCP client on the official TypeScript SDK, logging in with the SDK's own
// OAuth code: discovery, dynamic registration, PKCE, the token exchange and the refresh.
// browser.mjs plays the user's browser.
//
//   LOGIN_USER=alice LOGIN_PASSWORD=... node tests/js/ts-client.mjs <mcpUrl>
//
// stdout: one JSON line per step, `{"step":...,"ok":true,...}`, then `{"step":"done"}`.
// Exit code 0 only when every step succeeded; a failed step prints ok:false and its error.

import { randomBytes } from 'node:crypto';
import { createServer } from 'node:net';

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { UnauthorizedError } from '@modelcontextprotocol/sdk/client/auth.js';
import { StreamableHTTPClientTransport } from
  '@modelcontextprotocol/sdk/client/streamableHttp.js';

import { followLogin } from './browser.mjs';

// Keeps everything in memory, as a CLI client would keep it in a file, and records what
// the SDK did so the steps below can check it.
class RecordingProvider {
  constructor(redirectUrl) {
    this.redirectUrl = redirectUrl;
    this.authorizationUrls = [];
    this.tokenSaves = 0;
    this.expectedState = undefined;
  }

  get clientMetadata() {
    return {
      client_name: 'mcp-connector ts-client test',
      redirect_uris: [this.redirectUrl],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
    };
  }

  state() {
    this.expectedState = randomBytes(16).toString('base64url');
    return this.expectedState;
  }

  clientInformation() { return this.client; }
  saveClientInformation(client) { this.client = client; }
  tokens() { return this.currentTokens; }
  saveTokens(tokens) { this.currentTokens = tokens; this.tokenSaves += 1; }
  saveCodeVerifier(verifier) { this.verifier = verifier; }
  codeVerifier() { return this.verifier; }
  discoveryState() { return this.discovery; }
  saveDiscoveryState(state) { this.discovery = state; }

  redirectToAuthorization(url) { this.authorizationUrls.push(url); }

  invalidateCredentials(scope) {
    if (scope === 'all' || scope === 'client') this.client = undefined;
    if (scope === 'all' || scope === 'tokens') this.currentTokens = undefined;
    if (scope === 'all' || scope === 'verifier') this.verifier = undefined;
    if (scope === 'all' || scope === 'discovery') this.discovery = undefined;
  }
}

// The callback's port is never listened on: the browser stops at the redirect to it.
async function freeLoopbackPort() {
  const server = createServer();
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

function report(step, fields = {}) {
  process.stdout.write(`${JSON.stringify({ step, ok: true, ...fields })}\n`);
}

function check(condition, message) {
  if (!condition) throw new Error(message);
}

function newTransport(mcpUrl, provider) {
  return new StreamableHTTPClientTransport(new URL(mcpUrl), { authProvider: provider });
}

function newClient() {
  return new Client({ name: 'mcp-connector-ts-client', version: '0.0.0' });
}

// The first connect must be refused, and the SDK must hand us an authorization URL.
async function connectUnauthorized(mcpUrl, provider) {
  const transport = newTransport(mcpUrl, provider);
  try {
    await newClient().connect(transport);
  } catch (err) {
    check(err instanceof UnauthorizedError, `expected UnauthorizedError, got: ${err.message}`);
    check(provider.authorizationUrls.length === 1, 'the SDK did not start an authorization');
    return transport;
  }
  throw new Error('the MCP server accepted a request without a token');
}

// Checks the callback as RFC 6749 4.1.2 and RFC 9207 ask a client to.
function readCallback(callbackUrl, provider) {
  const params = new URL(callbackUrl).searchParams;
  const issuer = provider.discovery?.authorizationServerMetadata?.issuer;
  check(!params.has('error'), `authorization failed: ${params.get('error')} `
    + `${params.get('error_description') ?? ''}`);
  check(params.get('state') === provider.expectedState, 'state does not match');
  check(params.has('iss'), 'the callback has no iss (RFC 9207)');
  check(params.get('iss') === issuer, `iss ${params.get('iss')} is not the issuer ${issuer}`);
  check(params.get('code'), 'the callback has no code');
  return params.get('code');
}

async function callWhoami(client) {
  const result = await client.callTool({ name: 'whoami', arguments: {} });
  check(!result.isError, `whoami failed: ${JSON.stringify(result.content)}`);
  const text = result.content.filter((part) => part.type === 'text').map((part) => part.text);
  check(text.length > 0, `whoami returned no text: ${JSON.stringify(result.content)}`);
  return text.join('\n');
}

// The stored access token is replaced by garbage, so the next call gets a 401 and the
// SDK answers it with a refresh_token grant (auth() prefers refresh over a new login).
async function callAfterForcedRefresh(client, provider) {
  const before = provider.tokens();
  check(before?.refresh_token, 'the token answer had no refresh_token');
  const saves = provider.tokenSaves;
  const logins = provider.authorizationUrls.length;
  provider.currentTokens = { ...before, access_token: 'garbage-access-token' };

  const text = await callWhoami(client);
  const after = provider.tokens();
  check(provider.authorizationUrls.length === logins, 'the SDK fell back to a new login');
  check(provider.tokenSaves === saves + 1, 'the SDK did not refresh the tokens');
  check(after.access_token !== before.access_token, 'the refresh returned the old access token');
  return { text, refreshTokenRotated: after.refresh_token !== before.refresh_token };
}

async function run(mcpUrl, username, password) {
  const redirectUrl = `http://127.0.0.1:${await freeLoopbackPort()}/callback`;
  const provider = new RecordingProvider(redirectUrl);
  let step = 'connect';
  let client;

  try {
    const firstTransport = await connectUnauthorized(mcpUrl, provider);
    report(step, { client_id: provider.client?.client_id, redirect_uri: redirectUrl });

    step = 'login';
    const authorizationUrl = provider.authorizationUrls[0].href;
    const login = { username, password, stopAt: redirectUrl };
    const callback = await followLogin(authorizationUrl, login);
    const code = readCallback(callback, provider);
    report(step, { iss: new URL(callback).searchParams.get('iss') });

    step = 'token';
    await firstTransport.finishAuth(code);
    const tokens = provider.tokens();
    check(tokens?.access_token, 'no access token after finishAuth');
    report(step, { expires_in: tokens.expires_in, refresh_token: Boolean(tokens.refresh_token) });

    step = 'initialize';
    const transport = newTransport(mcpUrl, provider);
    client = newClient();
    await client.connect(transport);
    report(step, { server: client.getServerVersion(), session: Boolean(transport.sessionId) });

    step = 'tools/list';
    const { tools } = await client.listTools();
    const names = tools.map((tool) => tool.name);
    check(names.includes('whoami'), `no whoami tool in ${JSON.stringify(names)}`);
    report(step, { tools: names });

    step = 'tools/call';
    report(step, { tool: 'whoami', text: await callWhoami(client) });

    step = 'refresh';
    const refreshed = await callAfterForcedRefresh(client, provider);
    report(step, { refresh_token_rotated: refreshed.refreshTokenRotated });
    report('tools/call', { tool: 'whoami', after: 'refresh', text: refreshed.text });

    step = 'session/delete';
    await transport.terminateSession();
    report(step);

    await client.close();
    report('done');
    return true;
  } catch (err) {
    process.stdout.write(`${JSON.stringify({ step, ok: false, error: err.message })}\n`);
    console.error(`ts-client: ${step} failed:`, err);
    await client?.close().catch(() => {});
    return false;
  }
}

async function main() {
  const [mcpUrl] = process.argv.slice(2);
  const { LOGIN_USER: username, LOGIN_PASSWORD: password } = process.env;
  if (!mcpUrl || !username || !password) {
    console.error('usage: LOGIN_USER=... LOGIN_PASSWORD=... node ts-client.mjs <mcpUrl>');
    process.exit(2);
  }
  // Exit explicitly: an open SSE stream or keep-alive socket must not keep us running.
  process.exit((await run(mcpUrl, username, password)) ? 0 : 1);
}

await main();
