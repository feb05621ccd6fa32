// A real OpenID Connect provider (the `oidc-provider` package) for Rampart's tests.
//
// Configured by environment: OIDC_PORT, OIDC_CLIENT_ID, OIDC_CLIENT_SECRET, OIDC_REDIRECT_URI and
// OIDC_JWKS (a private JWKS, so a test can restart the provider with new keys: key rotation).
// Its sign-in page is a plain form: any address signs in; one starting with "unverified" comes back with
// `email_verified: false`, and "Cancel" denies consent. Grants are given without a consent page, as for
// a first-party client. PKCE (S256) is required for every client.
import http from 'node:http';

import Provider from 'oidc-provider';

const port = Number(process.env.OIDC_PORT);
const issuer = `http://127.0.0.1:${port}`;

// The subject is not the email address: Rampart must link users by subject.
function account(id) {
  const email = id.replace(/^sub-/, '');
  return {
    accountId: id,
    async claims() {
      return {
        sub: id,
        email,
        email_verified: !email.startsWith('unverified'),
        name: `Test ${email.split('@')[0]}`,
      };
    },
  };
}

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: process.env.OIDC_CLIENT_ID,
      client_secret: process.env.OIDC_CLIENT_SECRET,
      redirect_uris: [process.env.OIDC_REDIRECT_URI],
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    },
  ],
  jwks: JSON.parse(process.env.OIDC_JWKS),
  pkce: { required: () => true },
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'] },
  // Like Google: the scope's claims are in the ID token itself.
  conformIdTokenClaims: false,
  findAccount: async (ctx, id) => account(id),
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  features: { devInteractions: { enabled: false } },
  cookies: { keys: ['rampart-test-cookie-key'] },
  async loadExistingGrant(ctx) {
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId,
      accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope('openid email profile');
    await grant.save();
    return grant;
  },
});

function page(uid) {
  return `<!doctype html><html><head><title>Test provider: sign in</title></head><body>
<h1>Sign in to the test provider</h1>
<form method="post" action="/interaction/${uid}/login">
  <label>Email <input name="login" id="login" autofocus></label>
  <button type="submit" id="submit">Sign in</button>
</form>
<form method="post" action="/interaction/${uid}/abort"><button type="submit" id="cancel">Cancel</button></form>
</body></html>`;
}

async function body(req) {
  let data = '';
  for await (const chunk of req) data += chunk;
  return new URLSearchParams(data);
}

async function interaction(req, res, path) {
  const [, , uid, action] = path.split('/');
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) throw new Error('interaction mismatch');
  if (req.method === 'GET' && !action) {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end(page(uid));
    return;
  }
  if (req.method === 'POST' && action === 'login') {
    const login = (await body(req)).get('login') || '';
    await provider.interactionFinished(req, res, { login: { accountId: `sub-${login}` } }, { mergeWithLastSubmission: false });
    return;
  }
  if (req.method === 'POST' && action === 'abort') {
    const result = { error: 'access_denied', error_description: 'The user cancelled the sign-in.' };
    await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: false });
    return;
  }
  res.writeHead(404);
  res.end();
}

const callback = provider.callback();
const server = http.createServer((req, res) => {
  const path = new URL(req.url, issuer).pathname;
  if (path.startsWith('/interaction/')) {
    interaction(req, res, path).catch((err) => {
      res.writeHead(400, { 'content-type': 'text/plain' });
      res.end(String(err && err.message));
    });
    return;
  }
  callback(req, res);
});
server.listen(port, '127.0.0.1', () => {
  process.stdout.write(`ready ${issuer}\n`);
});
