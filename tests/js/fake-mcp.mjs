// A stand-in for the connector, so ts-client.mjs can be tested without it: an OAuth
// server (oidc-provider, through startIdp) with dynamic registration, resource
// indicators and rotating refresh tokens, and beside it a protected MCP server on the
// SDK with a `whoami` tool. Only selftest.mjs uses it.

import { randomUUID } from 'node:crypto';
import { createServer } from 'node:http';

import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { isInitializeRequest } from '@modelcontextprotocol/sdk/types.js';

import { startIdp } from './idp.mjs';

function authorizationServerConfig(resource) {
  return {
    scopes: ['openid', 'offline_access', 'mcp'],
    // MCP clients rarely ask for offline_access, and the connector issues refresh
    // tokens regardless; this stand-in does the same.
    issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
    features: {
      registration: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: async () => resource,
        useGrantedResource: async () => true,
        getResourceServerInfo: async (_ctx, indicator) => {
          if (indicator !== resource) throw new Error(`unknown resource ${indicator}`);
          return { scope: 'mcp', accessTokenFormat: 'opaque' };
        },
      },
    },
  };
}

function sendJson(res, status, body, headers = {}) {
  res.writeHead(status, { 'content-type': 'application/json', ...headers });
  res.end(JSON.stringify(body));
}

async function readJson(req) {
  let body = '';
  for await (const chunk of req) body += chunk;
  return body ? JSON.parse(body) : undefined;
}

function whoamiServer() {
  const server = new McpServer({ name: 'fake-mcp', version: '0.0.0' });
  server.registerTool('whoami', { description: 'who the token names' }, async (extra) => ({
    content: [{ type: 'text', text: JSON.stringify(extra.authInfo.extra) }],
  }));
  return server;
}

// Opaque tokens are looked up in the provider itself: both halves share one process.
async function verifiedToken(provider, req, resource) {
  const match = /^Bearer (\S+)$/.exec(req.headers.authorization ?? '');
  const token = match && await provider.AccessToken.find(match[1]);
  if (!token || token.isExpired || token.aud !== resource) return undefined;
  return {
    token: match[1],
    clientId: token.clientId,
    scopes: token.scope.split(' '),
    extra: { sub: token.accountId, client_id: token.clientId },
  };
}

async function handleMcp(state, req, res) {
  const auth = await verifiedToken(state.provider, req, state.resource);
  if (!auth) {
    const challenge = `Bearer resource_metadata="${state.metadataUrl}"`;
    return sendJson(res, 401, { error: 'invalid_token' }, { 'www-authenticate': challenge });
  }
  req.auth = auth;

  const body = req.method === 'POST' ? await readJson(req) : undefined;
  let transport = state.sessions.get(req.headers['mcp-session-id']);
  if (!transport && isInitializeRequest(body)) {
    transport = new StreamableHTTPServerTransport({
      sessionIdGenerator: randomUUID,
      onsessioninitialized: (id) => state.sessions.set(id, transport),
    });
    await whoamiServer().connect(transport);
  }
  if (!transport) return sendJson(res, 404, { error: 'unknown session' });
  await transport.handleRequest(req, res, body);
}

/** Starts both halves; returns { mcpUrl, close }. */
export async function startFakeMcp() {
  const http = createServer();
  await new Promise((resolve) => http.listen(0, '127.0.0.1', resolve));
  const base = `http://127.0.0.1:${http.address().port}`;
  const resource = `${base}/mcp`;

  const idp = await startIdp({ clients: [], extra: authorizationServerConfig(resource) });
  const metadataUrl = `${base}/.well-known/oauth-protected-resource/mcp`;
  const metadata = {
    resource,
    authorization_servers: [idp.issuer],
    bearer_methods_supported: ['header'],
    scopes_supported: ['mcp'],
  };
  const state = { provider: idp.provider, resource, metadataUrl, sessions: new Map() };

  http.on('request', (req, res) => {
    const path = new URL(req.url, base).pathname;
    if (path === '/.well-known/oauth-protected-resource/mcp') return sendJson(res, 200, metadata);
    if (path === '/mcp') {
      return handleMcp(state, req, res).catch((err) => sendJson(res, 500, { error: err.message }));
    }
    return sendJson(res, 404, { error: 'not_found' });
  });

  const close = async () => {
    http.closeAllConnections();
    await Promise.all([new Promise((resolve) => http.close(resolve)), idp.close()]);
  };
  return { mcpUrl: resource, close };
}
