#!/usr/bin/env node
'use strict';
// The remote walk-through: data on this machine, the stack on another. Uploads a CSV and an
// image folder (UploadDataset, through the gateway), trains a model on each by dataset name
// with a pipeline built as a PipelineSpec message, then predicts a few rows of each.
// Progress goes to stderr; stdout gets one JSON summary line
// {"health", "datasets": {...}, "runs": {...}, "predictions": {"csv": [...], "images": [...]}}.
// Exit code 0 only when both runs SUCCEEDED and every prediction came back.
//
//   node examples/remote.js CSV LABEL_COLUMN IMAGE_FOLDER [NAME_PREFIX]
//   COOKLINE_GATEWAY_ADDR=host:50050 COOKLINE_SERVE_ADDR=host:50050 node examples/remote.js data.csv label images/

const fs = require('node:fs');
const path = require('node:path');
const { Client } = require('../src/client');

/** The first data rows of a CSV, as numbers in the model's feature column order. */
function csvRows(file, columns, count) {
  const [header, ...lines] = fs.readFileSync(file, 'utf8').trim().split('\n');
  const names = header.split(',').map((h) => h.trim());
  return lines.slice(0, count).map((line) => {
    const cells = line.split(',');
    return columns.map((c) => Number(cells[names.indexOf(c)]));
  });
}

async function train(client, name, dataset, model) {
  // A pipeline as a message: no YAML, no file on the services' machine.
  const spec = {
    name,
    collect: { dataset: `${dataset.ref.name}@${dataset.ref.version}` },
    process: model === 'csv' ? [{ standardize: {} }, { shuffle: { buffer: 1000, seed: 7 } }] : [{ shuffle: { buffer: 1000, seed: 7 } }],
    train: { model: 'mlp', hidden_units: [16], epochs: model === 'csv' ? 40 : 10, batch_size: 16, learning_rate: 0.01 },
  };
  const run = await client.submitSpec(spec);
  console.error(`run ${run.run_id} (${name}) on ${spec.collect.dataset}`);
  return client.follow(run.run_id, (event) => {
    if (event.event === 'stage') console.error(`  ${event.stage.stage} ${event.stage.message}`);
  });
}

async function main() {
  const [csvFile, label, imageFolder, prefix = 'remote'] = process.argv.slice(2);
  if (!imageFolder) throw new Error('usage: remote.js CSV LABEL_COLUMN IMAGE_FOLDER [NAME_PREFIX]');
  const client = new Client();
  try {
    const health = await client.health('cookline.v1.PipelineService'); // the vendored grpc.health.v1
    if (health !== 'SERVING') throw new Error(`gateway health: ${health}`);
    const progress = (what) => (sent, total) => console.error(`  uploading ${what}: ${sent}/${total} bytes`);
    const csv = await client.upload(csvFile, `${prefix}-csv`, { label }, progress(csvFile));
    const images = await client.upload(imageFolder, `${prefix}-images`, { format: 'image-folder' }, progress(imageFolder));
    const datasets = { csv: `${csv.ref.name}@${csv.ref.version}`, images: `${images.ref.name}@${images.ref.version}` };
    console.error(`datasets ${JSON.stringify(datasets)}`);
    const runs = {};
    const predictions = {};
    for (const [kind, dataset] of [['csv', csv], ['images', images]]) {
      const final = await train(client, `${prefix}-${kind}-model`, dataset, kind);
      runs[kind] = { state: final.state, reason: final.reason, dataset: `${final.dataset.name}@${final.dataset.version}`, metrics: final.metrics };
      if (final.state !== 'RUN_STATE_SUCCEEDED') continue;
      const metadata = await client.modelMetadata(final.model.name);
      let inputs;
      if (kind === 'csv') inputs = csvRows(csvFile, metadata.feature_columns, 3);
      else { // the model takes image files as they are (encoded bytes), one per row
        const classes = fs.readdirSync(imageFolder).filter((d) => !d.startsWith('.')).sort();
        inputs = { image: classes.map((c) => fs.readFileSync(
          path.join(imageFolder, c, fs.readdirSync(path.join(imageFolder, c)).sort()[0]))) };
      }
      predictions[kind] = await client.predict(final.model.name, inputs);
    }
    console.log(JSON.stringify({ health, datasets, runs, predictions }));
    const ok = Object.values(runs).every((r) => r.state === 'RUN_STATE_SUCCEEDED')
      && predictions.csv?.length === 3 && predictions.images?.length > 0;
    return ok ? 0 : 1;
  } finally {
    client.close();
  }
}

main().then((code) => { process.exitCode = code; }, (err) => {
  console.error(`error ${err.code !== undefined ? `code ${err.code}: ` : ''}${err.details || err.message}`);
  process.exitCode = 2;
});
