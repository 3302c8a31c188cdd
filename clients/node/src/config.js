'use strict';
// Addresses, limits, the bearer token and the TLS CA from the same environment variables as
// the Python client (see docs/configuration.md), with the same defaults.

const fs = require('node:fs');
const { X509Certificate } = require('node:crypto');

/** host:port of a cookline service: COOKLINE_<SERVICE>_ADDR, else localhost:<default port>. */
function address(service, env = process.env) {
  const ports = { gateway: 50050, collect: 50051, process: 50052, train: 50053, serve: 50054 };
  if (!(service in ports)) throw new RangeError(`unknown service '${service}'`);
  return env[`COOKLINE_${service.toUpperCase()}_ADDR`] || `localhost:${ports[service]}`;
}

/** Largest gRPC message sent or received, in bytes (COOKLINE_MAX_MESSAGE_MB, default 64). */
function maxMessageBytes(env = process.env) {
  const mb = Number(env.COOKLINE_MAX_MESSAGE_MB || 64);
  if (!Number.isInteger(mb) || mb < 1 || mb > 2047) throw new RangeError('COOKLINE_MAX_MESSAGE_MB must be between 1 and 2047');
  return mb * 1024 * 1024;
}

/**
 * The contents of the file a setting names; `name` (the variable or option) is in the error.
 * Node's fs messages read "ENOENT: no such file or directory, open '<path>'": keep the reason,
 * as Python's strerror.
 */
function readSettingFile(name, file) {
  try {
    return fs.readFileSync(file);
  } catch (err) {
    const reason = /^E[A-Z]+: (.+?), \w+(?: '.*')?$/s.exec(err.message)?.[1] || err.message;
    throw new Error(`${name}: cannot read '${file}': ${reason}`);
  }
}

/** A token that can travel as a gRPC metadata value (printable ASCII), else an error naming `name`. */
function checkToken(name, token) {
  if (!/^[\x20-\x7e]*$/.test(token)) throw new Error(`${name} must be printable ASCII (it is sent as gRPC metadata)`);
  return token;
}

/**
 * Bearer token every call carries (COOKLINE_AUTH_TOKEN, or the file named by
 * COOKLINE_AUTH_TOKEN_FILE, surrounding whitespace stripped). '' means no authentication.
 */
function authToken(env = process.env) {
  if (env.COOKLINE_AUTH_TOKEN) return checkToken('COOKLINE_AUTH_TOKEN', env.COOKLINE_AUTH_TOKEN);
  const file = env.COOKLINE_AUTH_TOKEN_FILE;
  if (!file) return '';
  return checkToken('COOKLINE_AUTH_TOKEN_FILE', readSettingFile('COOKLINE_AUTH_TOKEN_FILE', file).toString('utf8').trim());
}

/** The PEM CA file `file` as a Buffer, checked to hold a certificate; `name` is in the errors. */
function readCa(name, file) {
  const pem = readSettingFile(name, file);
  try {
    if (!pem.includes('-----BEGIN CERTIFICATE-----')) throw new Error('no PEM block');
    new X509Certificate(pem); // eslint-disable-line no-new
  } catch {
    throw new Error(`${name}: no PEM certificate in '${file}'`);
  }
  return pem;
}

/**
 * PEM of the CA that servers are verified against (the file named by COOKLINE_TLS_CA), or
 * null: plaintext channels.
 */
function tlsCa(env = process.env) {
  const file = (env.COOKLINE_TLS_CA || '').trim();
  return file ? readCa('COOKLINE_TLS_CA', file) : null;
}

module.exports = { address, maxMessageBytes, authToken, tlsCa, readCa, checkToken };
