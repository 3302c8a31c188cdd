'use strict';
// A small Node.js client of a cookline stack, for front-end engineers:
//
//   const { Client } = require('cookline-client');
//   const client = new Client();                       // COOKLINE_GATEWAY_ADDR / COOKLINE_SERVE_ADDR
//                                                      // (+ COOKLINE_AUTH_TOKEN, COOKLINE_TLS_CA)
//   const run = await client.submitFile('examples/iris.yaml');
//   for await (const event of client.watch(run.run_id)) console.log(event.event);
//   for await (const r of client.predictStream('iris', [[5.1, 3.5, 1.4, 0.2]])) console.log(r);
//   await client.predict('reviews', { text: ['a great film'] });                 // raw inputs by name
//   await client.predict('digits', { image: [fs.readFileSync('7.png')] });       // image files as Buffers
//
// Runs go to the gateway, predictions to serve. The .proto files are loaded at run time
// from protos/ (no generated code); field names stay as in the protos (snake_case).

const fs = require('node:fs');
const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const config = require('./config');
const tensor = require('./tensor');

const PROTO_DIR = path.resolve(__dirname, '..', '..', '..', 'protos');
const TERMINAL_STATES = new Set(['RUN_STATE_SUCCEEDED', 'RUN_STATE_FAILED', 'RUN_STATE_CANCELLED']);

// Same service config as the Python client (docs/scaling.md "Replicas and retries"): round robin
// over every address a target resolves to, and UNAVAILABLE retried with backoff.
const RETRY_SERVICE_CONFIG = JSON.stringify({
  loadBalancingConfig: [{ round_robin: {} }],
  methodConfig: [{
    name: [{}],
    retryPolicy: {
      maxAttempts: 5, initialBackoff: '0.2s', maxBackoff: '3s', backoffMultiplier: 2,
      retryableStatusCodes: ['UNAVAILABLE'],
    },
  }],
});

// Bytes of a file per UploadDataset message (well under the default 64 MiB message limit).
const UPLOAD_CHUNK = 1 << 20;

/** Every package loaded from the .proto files: cookline.v1 and the vendored grpc.health.v1. */
function loadPackages(protoDir = PROTO_DIR) {
  const files = ['gateway.proto', 'serve.proto', 'collect.proto'].map((f) => path.join(protoDir, 'cookline', 'v1', f));
  files.push(path.join(protoDir, 'grpc', 'health', 'v1', 'health.proto'));
  const definition = protoLoader.loadSync(files, {
    keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true, includeDirs: [protoDir],
  });
  return grpc.loadPackageDefinition(definition);
}

/** The cookline.v1 package loaded from the .proto files. */
function loadProtos(protoDir = PROTO_DIR) {
  return loadPackages(protoDir).cookline.v1;
}

/** (name in the upload, local path) of a file, or of every file under a folder (hidden ones skipped), sorted. */
function uploadFiles(source) {
  if (fs.statSync(source).isFile()) return [[path.basename(source), source]];
  const out = [];
  const walk = (dir, prefix) => {
    for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
      if (entry.name.startsWith('.')) continue;
      const full = path.join(dir, entry.name);
      if (entry.isDirectory()) walk(full, `${prefix}${entry.name}/`);
      else out.push([`${prefix}${entry.name}`, full]);
    }
  };
  walk(source, '');
  return out.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
}

/** Prediction rows as {label, scores: {class: probability}} from a PredictResponse; a detector's as
 * {detections: [{label, score, box: [ymin, xmin, ymax, xmax]}, ...]} per image, best first. */
function rowsFromResponse(response) {
  if (response.outputs.boxes) return detectionsFromResponse(response);
  const labels = tensor.toStrings(response.outputs.label);
  return tensor.toRows(response.outputs.scores).map((scores, i) => ({
    label: labels[i],
    scores: Object.fromEntries(response.class_names.map((name, j) => [name, scores[j]])),
  }));
}

function detectionsFromResponse(response) {
  const [rows, slots] = response.outputs.boxes.shape.map(Number);
  const boxes = tensor.toFloat32Array(response.outputs.boxes);
  const scores = tensor.toFloat32Array(response.outputs.scores);
  const labels = tensor.toStrings(response.outputs.labels);
  return Array.from({ length: rows }, (_, i) => ({
    detections: Array.from({ length: slots }, (_, j) => i * slots + j)
      .filter((k) => labels[k] !== '') // unused slots have label ""
      .map((k) => ({ label: labels[k], score: scores[k], box: Array.from(boxes.subarray(k * 4, k * 4 + 4)) })),
  }));
}

function unary(stub, method, request, timeoutS) {
  return new Promise((resolve, reject) => {
    stub[method](request, { deadline: Date.now() + timeoutS * 1000 }, (err, response) => (err ? reject(err) : resolve(response)));
  });
}

/**
 * An interceptor adding `authorization: Bearer <token>` to every call, as the Python client
 * does. Not call credentials: grpc-js composes those only with TLS channel credentials, and
 * the token travels over plaintext channels too (a stack with a token but no TLS), as Python's.
 */
function bearerToken(token) {
  const value = `Bearer ${token}`;
  return (options, nextCall) => new grpc.InterceptingCall(nextCall(options), {
    start(metadata, listener, next) {
      metadata.set('authorization', value);
      next(metadata, listener);
    },
  });
}

class Client {
  /**
   * @param {object} [options]
   * @param {string} [options.gateway] host:port of the gateway (default COOKLINE_GATEWAY_ADDR)
   * @param {string} [options.serve] host:port of serve (default COOKLINE_SERVE_ADDR)
   * @param {string} [options.authToken] bearer token every call carries (default COOKLINE_AUTH_TOKEN,
   *   else the file COOKLINE_AUTH_TOKEN_FILE); none: calls carry no token
   * @param {string} [options.tlsCa] path of a PEM CA file: TLS, verifying the servers against it
   *   (default COOKLINE_TLS_CA); none: plaintext
   * @param {object} [options.env] environment to read the settings from (default process.env)
   */
  constructor({ gateway, serve, authToken, tlsCa, env = process.env, protoDir } = {}) {
    const packages = loadPackages(protoDir);
    const v1 = packages.cookline.v1;
    const limit = config.maxMessageBytes(env);
    const token = authToken ? config.checkToken('authToken', authToken) : config.authToken(env);
    const ca = tlsCa ? config.readCa('tlsCa', tlsCa) : config.tlsCa(env);
    const options = {
      'grpc.max_send_message_length': limit,
      'grpc.max_receive_message_length': limit,
      'grpc.service_config': RETRY_SERVICE_CONFIG,
      interceptors: token ? [bearerToken(token)] : [],
    };
    const credentials = ca ? grpc.credentials.createSsl(ca) : grpc.credentials.createInsecure();
    const gatewayAddr = gateway || config.address('gateway', env);
    const serveAddr = serve || config.address('serve', env);
    this.pipelines = new v1.PipelineService(gatewayAddr, credentials, options);
    this.serve = new v1.ServeService(serveAddr, credentials, options);
    // uploads and the dataset catalog go through the gateway (it forwards them to collect)
    this.datasets = new v1.CollectService(gatewayAddr, credentials, options);
    this.healthStubs = {
      gateway: new packages.grpc.health.v1.Health(gatewayAddr, credentials, options),
      serve: new packages.grpc.health.v1.Health(serveAddr, credentials, options),
    };
  }

  close() {
    this.pipelines.close();
    this.serve.close();
    this.datasets.close();
    Object.values(this.healthStubs).forEach((stub) => stub.close());
  }

  /** grpc.health.v1 status of `service` ('' = the whole server) on the gateway or serve: 'SERVING', ... */
  async health(service = '', on = 'gateway') {
    return (await unary(this.healthStubs[on], 'Check', { service }, 30)).status;
  }

  // --- datasets ------------------------------------------------------------

  /**
   * Uploads a local file or folder as dataset `name`, read as `source` says (a CollectSpec:
   * format and its options, e.g. {label: 'species'} for a CSV, {format: 'image-folder'}), exactly
   * as collect reads the same files on its own disk. `onProgress(sent, total)` sees the bytes
   * sent. Resolves to the published DatasetInfo (same files and options: same version).
   */
  upload(source, name, spec = {}, onProgress = () => {}) {
    const files = uploadFiles(source);
    const total = files.reduce((sum, [, full]) => sum + fs.statSync(full).size, 0);
    return new Promise((resolve, reject) => {
      const call = this.datasets.UploadDataset({ deadline: Date.now() + 3600_000 }, (err, response) => (
        err ? reject(err) : resolve(response.dataset)));
      const write = (message) => new Promise((ok) => { if (call.write(message)) ok(); else call.once('drain', ok); });
      (async () => {
        await write({ dataset: name, source: { ...spec, source: '' } });
        let sent = 0;
        for (const [rel, full] of files) {
          const handle = await fs.promises.open(full, 'r');
          try {
            let first = true;
            for (;;) {
              const buffer = Buffer.alloc(UPLOAD_CHUNK);
              const { bytesRead } = await handle.read(buffer, 0, UPLOAD_CHUNK, null);
              if (bytesRead === 0 && !first) break;
              first = false;
              await write({ file: { path: rel, data: buffer.subarray(0, bytesRead) } });
              sent += bytesRead;
              onProgress(sent, total);
              if (bytesRead === 0) break;
            }
          } finally {
            await handle.close();
          }
        }
        call.end();
      })().catch((err) => { call.cancel(); reject(err); });
    });
  }

  /** A stored dataset version's description (version '' = the newest). */
  async getDataset(name, version = '') {
    return (await unary(this.datasets, 'GetDataset', { dataset: { name, version } }, 30)).dataset;
  }

  // --- runs ----------------------------------------------------------------

  /** Starts a run of a pipeline file's text; relative paths resolve against baseDir on the services' side. */
  async submit(pipeline, baseDir = '') {
    return (await unary(this.pipelines, 'SubmitRun', { pipeline, base_dir: baseDir }, 60)).run;
  }

  /**
   * Starts a run of a pipeline built as a cookline.v1.PipelineSpec message (a plain object with the
   * proto's field names), validated like a file: e.g. {name: 'iris', collect: {dataset: 'iris'},
   * process: [{standardize: {}}], train: {model: 'mlp', epochs: 20}}.
   */
  async submitSpec(spec, baseDir = '') {
    return (await unary(this.pipelines, 'SubmitRun', { spec, base_dir: baseDir }, 60)).run;
  }

  /** Submits a pipeline file, sending its folder as the base directory (like the Python client). */
  async submitFile(file) {
    const text = await fs.promises.readFile(file, 'utf8');
    return this.submit(text, path.dirname(path.resolve(file)));
  }

  /** A run's events until it ends; reconnects after the last event seen if the stream breaks. */
  async *watch(runId, fromSequence = 0, retries = 5) {
    let next = fromSequence;
    let failures = 0;
    for (;;) {
      try {
        for await (const response of this.pipelines.WatchRun({ run_id: runId, from_sequence: next })) {
          failures = 0;
          next = response.event.sequence + 1;
          yield response.event;
        }
        return;
      } catch (err) {
        failures += 1;
        if (err.code !== grpc.status.UNAVAILABLE || failures > retries) throw err;
      }
    }
  }

  async getRun(runId) {
    return (await unary(this.pipelines, 'GetRun', { run_id: runId }, 30)).run;
  }

  /** Watches a run to its end and returns its final record. `onEvent` sees every event. */
  async follow(runId, onEvent = () => {}) {
    let final = null;
    for await (const event of this.watch(runId)) {
      onEvent(event);
      if (event.event === 'finished') final = event.finished;
    }
    return final && TERMINAL_STATES.has(final.state) ? final : this.getRun(runId);
  }

  // --- predictions ---------------------------------------------------------

  async modelMetadata(model, version = 0) {
    return (await unary(this.serve, 'GetModelMetadata', { model: { name: model, version } }, 120)).metadata;
  }

  /**
   * A PredictRequest. `inputs`: the model's raw inputs by name (see modelMetadata().inputs),
   * e.g. { text: ['a sentence'] }, { image: [buffer] }, { features: [[1, 2]], categorical: [['red']] };
   * or bare rows of numbers for "features".
   */
  static predictRequest(model, inputs, version = 0) {
    const named = Array.isArray(inputs) ? { features: inputs } : inputs;
    return {
      model: { name: model, version },
      inputs: Object.fromEntries(Object.entries(named).map(([name, values]) => [name, tensor.inputTensor(values)])),
    };
  }

  /** Predicts rows of raw inputs (see predictRequest) with one unary call: [{label, scores}, ...]. */
  async predict(model, inputs, version = 0) {
    return rowsFromResponse(await unary(this.serve, 'Predict', Client.predictRequest(model, inputs, version), 120));
  }

  /**
   * Streams one PredictStream message per row and yields {id, result} or {id, error: {code, message}}
   * per row, in order. A rejected row does not end the stream. `inputs` as predict() takes them.
   */
  async *predictStream(model, inputs, version = 0) {
    const call = this.serve.PredictStream();
    const named = Array.isArray(inputs) ? { features: inputs } : inputs;
    const count = Object.values(named)[0].length;
    for (let i = 0; i < count; i += 1) {
      const row = Object.fromEntries(Object.entries(named).map(([name, values]) => [name, [values[i]]]));
      call.write({ correlation_id: String(i), request: Client.predictRequest(model, row, version) });
    }
    call.end();
    for await (const response of call) {
      if (response.outcome === 'error') yield { id: response.correlation_id, error: response.error };
      else yield { id: response.correlation_id, result: rowsFromResponse(response.result)[0] };
    }
  }
}

module.exports = { Client, loadProtos, loadPackages, uploadFiles, rowsFromResponse, tensor, config };
