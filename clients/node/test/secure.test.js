'use strict';
// The bearer token and TLS against a live stack (tests/test_e2e_clients_secure.py starts one
// that demands COOKLINE_AUTH_TOKEN and speaks only TLS, and sets both for this process, plus
// COOKLINE_TEST_OTHER_CA: a CA that did not sign the servers' certificates). The checks that
// need a token or TLS are registered only when the stack has them; that Python test asserts
// each of them ran and passed. Against a plaintext stack without a token
// (tests/test_e2e_clients.py) a client carrying a token must still work.
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const { Client, config } = require('../src/client');

const env = process.env;
const TOKEN = config.authToken(env);
const CA = config.tlsCa(env);

/** A call to each service (gateway, serve) that passes auth and transport and is then NOT_FOUND. */
async function assertBothCallsAre(client, code) {
  const isCode = (err) => {
    assert.equal(err.code, code, `${err.code} ${err.details}`);
    return true;
  };
  await assert.rejects(client.getRun('no-such-run'), isCode);
  await assert.rejects(client.predict('no-such-model', [[1, 2, 3, 4]]), isCode);
}

async function withClient(options, fn) {
  const client = new Client(options);
  try {
    await fn(client);
  } finally {
    client.close();
  }
}

test('a live stack: token and TLS', async (t) => {
  for (const name of ['COOKLINE_GATEWAY_ADDR', 'COOKLINE_SERVE_ADDR']) {
    assert.ok(env[name], `${name} must point at a running stack`);
  }
  const addresses = { COOKLINE_GATEWAY_ADDR: env.COOKLINE_GATEWAY_ADDR, COOKLINE_SERVE_ADDR: env.COOKLINE_SERVE_ADDR };

  await t.test('a client with the settings from the environment passes', async () => {
    await withClient({}, (c) => assertBothCallsAre(c, grpc.status.NOT_FOUND));
  });

  await t.test('the same settings as constructor options pass, with no other environment', async () => {
    const options = { gateway: addresses.COOKLINE_GATEWAY_ADDR, serve: addresses.COOKLINE_SERVE_ADDR, env: {} };
    if (TOKEN) options.authToken = TOKEN;
    if (CA) options.tlsCa = env.COOKLINE_TLS_CA;
    await withClient(options, (c) => assertBothCallsAre(c, grpc.status.NOT_FOUND));
  });

  if (!TOKEN) {
    await t.test('a client carrying a token works against a stack that demands none', async () => {
      await withClient({ authToken: 'unneeded-token' }, (c) => assertBothCallsAre(c, grpc.status.NOT_FOUND));
    });
  }

  if (TOKEN) {
    await t.test('a client with a wrong token is UNAUTHENTICATED', async () => {
      await withClient({ authToken: `wrong-${TOKEN}` }, (c) => assertBothCallsAre(c, grpc.status.UNAUTHENTICATED));
    });

    await t.test('a client without a token is UNAUTHENTICATED', async () => {
      const noToken = { ...env, COOKLINE_AUTH_TOKEN: '', COOKLINE_AUTH_TOKEN_FILE: '' };
      await withClient({ env: noToken }, (c) => assertBothCallsAre(c, grpc.status.UNAUTHENTICATED));
    });

    await t.test('the token read from COOKLINE_AUTH_TOKEN_FILE passes', async () => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cookline-token-'));
      try {
        const file = path.join(dir, 'token');
        fs.writeFileSync(file, `${TOKEN}\n`);
        const fromFile = { ...env, COOKLINE_AUTH_TOKEN: '', COOKLINE_AUTH_TOKEN_FILE: file };
        await withClient({ env: fromFile }, (c) => assertBothCallsAre(c, grpc.status.NOT_FOUND));
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
    });
  }

  if (CA) {
    await t.test('a client without the CA (plaintext) cannot connect: UNAVAILABLE', async () => {
      await withClient({ env: { ...env, COOKLINE_TLS_CA: '' } }, (c) => assertBothCallsAre(c, grpc.status.UNAVAILABLE));
    });

    await t.test('a client trusting another CA cannot connect: UNAVAILABLE', async () => {
      assert.ok(env.COOKLINE_TEST_OTHER_CA, 'COOKLINE_TEST_OTHER_CA must name a CA that did not sign the servers');
      await withClient({ tlsCa: env.COOKLINE_TEST_OTHER_CA }, (c) => assertBothCallsAre(c, grpc.status.UNAVAILABLE));
    });
  }
});
