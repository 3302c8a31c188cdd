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

// Same policy as the Python client: transparently retry calls that never reached the peer.
const RETRY_SERVICE_CONFIG = JSON.stringify({
  methodConfig: [{
    name: [{}],
    retryPolicy: {
      maxAttempts: 5, initialBackoff: '0.2s', maxBackoff: '3s', backoffMultiplier: 2,
      retryableStatusCodes: ['UNAVAILABLE'],
    },
  }],
});

/** The cookline.v1 package loaded from the .proto files. */
function loadProtos(protoDir = PROTO_DIR) {
  const files = ['gateway.proto', 'serve.proto'].map((f) => path.join(protoDir, 'cookline', 'v1', f));
  const definition = protoLoader.loadSync(files, {
    keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true, includeDirs: [protoDir],
  });
  return grpc.loadPackageDefinition(definition).cookline.v1;
}

/** Prediction rows as {label, scores: {class: probability}} from a PredictResponse. */
function rowsFromResponse(response) {
  const labels = tensor.toStrings(response.outputs.label);
  return tensor.toRows(response.outputs.scores).map((scores, i) => ({
    label: labels[i],
    scores: Object.fromEntries(response.class_names.map((name, j) => [name, scores[j]])),
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
    const v1 = loadProtos(protoDir);
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
    this.pipelines = new v1.PipelineService(gateway || config.address('gateway', env), credentials, options);
    this.serve = new v1.ServeService(serve || config.address('serve', env), credentials, options);
  }

  close() {
    this.pipelines.close();
    this.serve.close();
  }

  // --- runs ----------------------------------------------------------------

  /** Starts a run of a pipeline file's text; relative paths resolve against baseDir on the services' side. */
  async submit(pipeline, baseDir = '') {
    return (await unary(this.pipelines, 'SubmitRun', { pipeline, base_dir: baseDir }, 60)).run;
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

module.exports = { Client, loadProtos, rowsFromResponse, tensor, config };
