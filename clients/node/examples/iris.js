#!/usr/bin/env node
'use strict';
// Submits examples/iris.yaml, follows the run's events and streams predictions for a
// few rows. Progress goes to stderr; stdout gets one JSON line per prediction, then a
// summary line {"run_id", "state", "metrics", "predictions"}. Exit code 0 only when the
// run SUCCEEDED and every prediction came back.
//
//   COOKLINE_GATEWAY_ADDR=host:50050 COOKLINE_SERVE_ADDR=host:50054 node examples/iris.js [pipeline.yaml]

const path = require('node:path');
const { Client } = require('../src/client');

const ROWS = [[5.1, 3.5, 1.4, 0.2], [5.9, 3.0, 4.2, 1.5], [6.7, 3.0, 5.2, 2.3]];

async function main() {
  const file = process.argv[2] || path.resolve(__dirname, '..', '..', '..', 'examples', 'iris.yaml');
  const client = new Client();
  try {
    const run = await client.submitFile(file);
    console.error(`run ${run.run_id} (${run.pipeline.name}) submitted`);
    const final = await client.follow(run.run_id, (event) => {
      if (event.event === 'stage') console.error(`${event.stage.stage} ${event.stage.finished ? 'finished' : 'started'} ${event.stage.message}`);
      if (event.event === 'train' && event.train.epoch % 10 === 0) console.error(`epoch ${event.train.epoch} loss=${event.train.metrics.loss.toFixed(4)}`);
    });
    console.error(`run ${final.run_id} ${final.state} ${final.reason}`);
    const predictions = [];
    if (final.state === 'RUN_STATE_SUCCEEDED') {
      for await (const answer of client.predictStream(final.model.name, ROWS)) {
        console.log(JSON.stringify(answer));
        if (answer.result) predictions.push(answer.result);
      }
    }
    console.log(JSON.stringify({ run_id: final.run_id, state: final.state, metrics: final.metrics, predictions }));
    return final.state === 'RUN_STATE_SUCCEEDED' && predictions.length === ROWS.length ? 0 : 1;
  } finally {
    client.close();
  }
}

main().then((code) => { process.exitCode = code; }, (err) => {
  console.error(`error ${err.code !== undefined ? `code ${err.code}: ` : ''}${err.details || err.message}`);
  process.exitCode = 2;
});
