'use strict';
// Runs the example program and the client against a live cookline stack, found through
// COOKLINE_GATEWAY_ADDR and COOKLINE_SERVE_ADDR (tests/test_e2e_clients.py starts one
// and sets them). Without them this fails: a live stack is required, never skipped.
const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const { execFile } = require('node:child_process');
const grpc = require('@grpc/grpc-js');
const { Client } = require('../src/client');

const EXAMPLE = path.resolve(__dirname, '..', 'examples', 'iris.js');

function runExample() {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [EXAMPLE], { timeout: 600_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`examples/iris.js failed (${err.code}): ${stderr}`));
      else resolve(stdout.trim().split('\n').map((line) => JSON.parse(line)));
    });
  });
}

test('a live stack', async (t) => {
  for (const name of ['COOKLINE_GATEWAY_ADDR', 'COOKLINE_SERVE_ADDR']) {
    assert.ok(process.env[name], `${name} must point at a running stack`);
  }
  const client = new Client();
  t.after(() => client.close());

  let summary;
  await t.test('the example program runs iris to SUCCEEDED and streams predictions', async () => {
    const lines = await runExample();
    summary = lines.at(-1);
    assert.equal(summary.state, 'RUN_STATE_SUCCEEDED');
    assert.ok(summary.metrics.val_accuracy >= 0.9, JSON.stringify(summary.metrics));
    assert.deepEqual(summary.predictions.map((p) => p.label), ['setosa', 'versicolor', 'virginica']);
    assert.deepEqual(lines.slice(0, -1).map((l) => l.id), ['0', '1', '2']);
  });

  await t.test('watch replays the run events in order from a sequence number', async () => {
    const events = [];
    for await (const event of client.watch(summary.run_id)) events.push(event);
    assert.deepEqual(events.map((e) => e.sequence), events.map((_, i) => i));
    assert.equal(events.at(-1).event, 'finished');
    assert.equal(events.filter((e) => e.event === 'train').length, 60);
    const tail = [];
    for await (const event of client.watch(summary.run_id, 5)) tail.push(event.sequence);
    assert.equal(tail[0], 5);
    assert.equal(tail.length, events.length - 5);
  });

  await t.test('unary predict decodes scores as probabilities', async () => {
    const rows = await client.predict('iris', [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]);
    assert.deepEqual(rows.map((r) => r.label), ['setosa', 'virginica']);
    for (const row of rows) {
      const total = Object.values(row.scores).reduce((a, b) => a + b, 0);
      assert.ok(Math.abs(total - 1) < 1e-4, `scores sum to ${total}`);
    }
    const metadata = await client.modelMetadata('iris');
    assert.deepEqual(metadata.feature_columns, ['sepal_length', 'sepal_width', 'petal_length', 'petal_width']);
  });

  await t.test('a malformed pipeline is INVALID_ARGUMENT naming the field', async () => {
    const bad = 'name: iris\ncollect: {source: x.csv, label: y}\ntrain: {model: mlp, epoch: 3}\n';
    await assert.rejects(client.submit(bad), (err) => {
      assert.equal(err.code, grpc.status.INVALID_ARGUMENT);
      assert.match(err.details, /train\.epoch/);
      return true;
    });
    await assert.rejects(client.submit('name: Iris!\n'), (err) => err.code === grpc.status.INVALID_ARGUMENT && /name/.test(err.details));
  });

  await t.test('a wrong-shaped prediction is INVALID_ARGUMENT naming the input', async () => {
    await assert.rejects(client.predict('iris', [[5.1, 3.5, 1.4]]), (err) => {
      assert.equal(err.code, grpc.status.INVALID_ARGUMENT);
      assert.match(err.details, /inputs\['features'\]: 3 features per row/);
      return true;
    });
  });

  await t.test('a bad row on a prediction stream gets an error and the stream goes on', async () => {
    const answers = [];
    for await (const a of client.predictStream('iris', [[5.1, 3.5, 1.4, 0.2], [1, 2], [6.7, 3.0, 5.2, 2.3]])) answers.push(a);
    assert.deepEqual(answers.map((a) => a.id), ['0', '1', '2']);
    assert.equal(answers[1].error.code, grpc.status.INVALID_ARGUMENT);
    assert.match(answers[1].error.message, /inputs\['features'\]/);
    assert.deepEqual([answers[0].result.label, answers[2].result.label], ['setosa', 'virginica']);
  });

  await t.test('unknown runs and models are NOT_FOUND', async () => {
    await assert.rejects(client.getRun('no-such-run'), (err) => err.code === grpc.status.NOT_FOUND);
    await assert.rejects(client.predict('no-such-model', [[1, 2, 3, 4]]), (err) => err.code === grpc.status.NOT_FOUND);
  });
});
