// The peer of the load runs: node's oidc-provider configured for the grant mcp-connector
// serves. Open dynamic client registration, the authorization code grant with PKCE (S256),
// rotating refresh tokens for public clients, and ES256 JWT access tokens for one resource
// through RFC 8707 resource indicators. Sign-in needs no form: /auth signs `alice` in and
// grants the request in one interaction, as mcp-connector does with --auto-login.
//
// Grants, sessions, codes and refresh tokens live in a Map (MapAdapter below), as the
// load driver's mcp-connector keeps its grant state in memory. oidc-provider's own
// development adapter is not used: it is an LRU of 1,000 entries, which forgets codes
// before a load run redeems them.
//
// Started by the load driver as `node bench/peer.mjs`, with PEER_PORT (default: any free
// port). stdout carries exactly one line, `PEER_READY <issuer>`; the peer exits when its
// stdin closes.

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';

// oidc-provider is installed for the tests (npm ci --prefix tests/js).
import Provider from '../tests/js/node_modules/oidc-provider/lib/index.js';

const USER = 'alice@example.com';
const SCOPE = 'mcp';

function es256Key() {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const jwk = privateKey.export({ format: 'jwk' });
  return { ...jwk, kid: randomBytes(8).toString('hex'), alg: 'ES256', use: 'sig' };
}

// Every model in one Map, each entry dropped once expired (on read, and by a sweep every
// 10 s); a grant's tokens are indexed in a Set so that revoking the grant is one lookup.
const entries = new Map();
const grants = new Map();

function live(key) {
  const entry = entries.get(key);
  if (entry && entry.expiresAt !== undefined && entry.expiresAt <= Date.now()) {
    entries.delete(key);
    return undefined;
  }
  return entry;
}

setInterval(() => {
  const now = Date.now();
  for (const [key, entry] of entries) {
    if (entry.expiresAt !== undefined && entry.expiresAt <= now) entries.delete(key);
  }
}, 10_000).unref();

class MapAdapter {
  constructor(model) {
    this.model = model;
  }

  key(id) {
    return `${this.model}:${id}`;
  }

  async upsert(id, payload, expiresIn) {
    const expiresAt = typeof expiresIn === 'number' ? Date.now() + expiresIn * 1000 : undefined;
    entries.set(this.key(id), { payload, expiresAt });
    if (this.model === 'Session') {
      entries.set(`sessionUid:${payload.uid}`, { payload: id, expiresAt });
    }
    if (payload.userCode) entries.set(`userCode:${payload.userCode}`, { payload: id, expiresAt });
    if (payload.grantId) {
      if (!grants.has(payload.grantId)) grants.set(payload.grantId, new Set());
      grants.get(payload.grantId).add(this.key(id));
    }
  }

  async find(id) {
    return live(this.key(id))?.payload;
  }

  async findByUid(uid) {
    const id = live(`sessionUid:${uid}`)?.payload;
    return id === undefined ? undefined : this.find(id);
  }

  async findByUserCode(userCode) {
    const id = live(`userCode:${userCode}`)?.payload;
    return id === undefined ? undefined : this.find(id);
  }

  async consume(id) {
    const entry = live(this.key(id));
    if (entry) entry.payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) {
    entries.delete(this.key(id));
  }

  async revokeByGrantId(grantId) {
    for (const key of grants.get(grantId) ?? []) entries.delete(key);
    grants.delete(grantId);
  }
}

function configuration(resource) {
  return {
    adapter: MapAdapter,
    clients: [],
    clientDefaults: {
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
      // The only key is ES256; oidc-provider's default for ID tokens is RS256.
      id_token_signed_response_alg: 'ES256',
    },
    responseTypes: ['code'],
    scopes: ['openid', 'offline_access'],
    features: {
      devInteractions: { enabled: false },
      registration: { enabled: true },
      revocation: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: async () => resource,
        useGrantedResource: async () => true,
        getResourceServerInfo: async (_ctx, indicator) => {
          if (indicator !== resource) throw new Provider.errors.InvalidTarget();
          return {
            scope: SCOPE,
            audience: resource,
            accessTokenTTL: 3600,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: 'ES256' } },
          };
        },
      },
    },
    // The same claims as mcp-connector's access tokens carry beyond the standard ones.
    extraTokenClaims: async () => ({ preferred_username: USER, groups: ['sre', 'dev'] }),
    // A refresh token for every code grant, as mcp-connector issues one (no offline_access
    // needed); rotation for public clients is oidc-provider's default.
    issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
    pkce: { required: () => true },
    findAccount: async (_ctx, id) => ({ accountId: id, claims: async () => ({ sub: id }) }),
    interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
    jwks: { keys: [es256Key()] },
    cookies: { keys: [randomBytes(32).toString('hex')] },
    ttl: {
      AccessToken: 3600,
      AuthorizationCode: 60,
      RefreshToken: 30 * 24 * 3600,
      Grant: 30 * 24 * 3600,
      Session: 24 * 3600,
      Interaction: 600,
    },
  };
}

// Signs the user in and grants what was asked, in one step.
async function finishInteraction(provider, req, res) {
  const { params } = await provider.interactionDetails(req, res);
  const grant = new provider.Grant({ accountId: USER, clientId: params.client_id });
  grant.addResourceScope(params.resource, SCOPE);
  if (String(params.scope ?? '').split(' ').includes('offline_access')) {
    grant.addOIDCScope('offline_access');
  }
  const result = { login: { accountId: USER }, consent: { grantId: await grant.save() } };
  await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: false });
}

async function main() {
  console.log = console.error;
  console.info = console.error;

  const server = createServer();
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(Number(process.env.PEER_PORT ?? 0), '127.0.0.1', resolve);
  });
  const issuer = `http://127.0.0.1:${server.address().port}`;
  const provider = new Provider(issuer, configuration(`${issuer}/mcp`));
  provider.on('server_error', (_ctx, err) => console.error(`peer: ${err.stack}`));

  const oidc = provider.callback();
  server.on('request', async (req, res) => {
    if (!req.url.startsWith('/interaction/')) return oidc(req, res);
    try {
      await finishInteraction(provider, req, res);
    } catch (err) {
      console.error(`peer: interaction failed: ${err.message}`);
      if (!res.headersSent) {
        res.writeHead(400);
        res.end();
      }
    }
  });

  process.on('SIGTERM', () => process.exit(0));
  process.stdin.on('end', () => process.exit(0));
  process.stdin.on('close', () => process.exit(0));
  process.stdin.resume();
  process.stdout.write(`PEER_READY ${issuer}\n`);
}

main().catch((err) => {
  console.error(`peer: ${err.message}`);
  process.exit(1);
});
