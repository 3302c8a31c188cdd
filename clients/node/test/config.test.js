'use strict';
// The settings read from the environment (or constructor options), without a stack: the
// bearer token and its file, the TLS CA, and the errors a bad value gives.
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { Client, config } = require('../src/client');

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cookline-config-'));
test.after(() => fs.rmSync(dir, { recursive: true, force: true }));
const MISSING = path.join(dir, 'missing.pem');

function file(name, text) {
  const p = path.join(dir, name);
  fs.writeFileSync(p, text);
  return p;
}

test('the token comes from COOKLINE_AUTH_TOKEN, else from COOKLINE_AUTH_TOKEN_FILE trimmed', () => {
  const tokenFile = file('token', '  from-file\n');
  assert.equal(config.authToken({}), '');
  assert.equal(config.authToken({ COOKLINE_AUTH_TOKEN: 'from-env' }), 'from-env');
  assert.equal(config.authToken({ COOKLINE_AUTH_TOKEN: 'from-env', COOKLINE_AUTH_TOKEN_FILE: tokenFile }), 'from-env');
  assert.equal(config.authToken({ COOKLINE_AUTH_TOKEN: '', COOKLINE_AUTH_TOKEN_FILE: tokenFile }), 'from-file');
  assert.equal(config.authToken({ COOKLINE_AUTH_TOKEN_FILE: file('empty', '\n') }), '');
});

test('an unreadable token file or a token that is not printable ASCII is an error naming the variable', () => {
  assert.throws(() => config.authToken({ COOKLINE_AUTH_TOKEN_FILE: MISSING }),
    { message: `COOKLINE_AUTH_TOKEN_FILE: cannot read '${MISSING}': no such file or directory` });
  assert.throws(() => config.authToken({ COOKLINE_AUTH_TOKEN: 'a\nb' }), /^Error: COOKLINE_AUTH_TOKEN must be printable ASCII/);
  assert.throws(() => config.authToken({ COOKLINE_AUTH_TOKEN_FILE: file('bad-token', 'a\u00e9b') }),
    /^Error: COOKLINE_AUTH_TOKEN_FILE must be printable ASCII/);
});

test('COOKLINE_TLS_CA unset or blank means plaintext; unreadable or not PEM is an error naming it', () => {
  assert.equal(config.tlsCa({}), null);
  assert.equal(config.tlsCa({ COOKLINE_TLS_CA: '  ' }), null);
  assert.throws(() => config.tlsCa({ COOKLINE_TLS_CA: MISSING }),
    { message: `COOKLINE_TLS_CA: cannot read '${MISSING}': no such file or directory` });
  assert.throws(() => config.tlsCa({ COOKLINE_TLS_CA: dir }), /^Error: COOKLINE_TLS_CA: cannot read '.*': illegal operation on a directory$/);
  const notPem = file('not.pem', 'CERT');
  assert.throws(() => config.tlsCa({ COOKLINE_TLS_CA: notPem }), { message: `COOKLINE_TLS_CA: no PEM certificate in '${notPem}'` });
  const brokenPem = file('broken.pem', '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n');
  assert.throws(() => config.tlsCa({ COOKLINE_TLS_CA: brokenPem }), /^Error: COOKLINE_TLS_CA: no PEM certificate in/);
});

test('the Client refuses bad settings from the environment or its options, naming them', () => {
  assert.throws(() => new Client({ env: { COOKLINE_TLS_CA: MISSING } }), /^Error: COOKLINE_TLS_CA: cannot read/);
  assert.throws(() => new Client({ env: { COOKLINE_AUTH_TOKEN_FILE: MISSING } }), /^Error: COOKLINE_AUTH_TOKEN_FILE: cannot read/);
  assert.throws(() => new Client({ tlsCa: MISSING, env: {} }), { message: `tlsCa: cannot read '${MISSING}': no such file or directory` });
  assert.throws(() => new Client({ authToken: 'a\tb', env: {} }), /^Error: authToken must be printable ASCII/);
  // an option wins over the environment: a good option hides a bad variable
  new Client({ authToken: 'x', env: { COOKLINE_AUTH_TOKEN_FILE: MISSING } }).close();
});

test('a token over a plaintext channel is allowed (grpc-js would refuse call credentials there)', () => {
  new Client({ authToken: 'x', env: {} }).close();
});
