'use strict';
// Addresses and limits from the same environment variables as the Python client
// (see the README's env-var table), with the same defaults.

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

module.exports = { address, maxMessageBytes };
