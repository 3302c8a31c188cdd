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
const zlib = require('node:zlib');
const { Client } = require('../src/client');

/** Pixels of an 8-bit grayscale or RGB, non-interlaced PNG (what the example folders hold), as numbers. */
function pngPixels(file) {
  const data = fs.readFileSync(file);
  let offset = 8;
  let width; let height; let channels; const idat = [];
  while (offset < data.length) {
    const length = data.readUInt32BE(offset);
    const type = data.toString('latin1', offset + 4, offset + 8);
    const body = data.subarray(offset + 8, offset + 8 + length);
    if (type === 'IHDR') {
      width = body.readUInt32BE(0); height = body.readUInt32BE(4);
      if (body[8] !== 8 || body[12] !== 0 || ![0, 2].includes(body[9])) throw new Error(`${file}: only 8-bit gray/RGB PNGs`);
      channels = body[9] === 0 ? 1 : 3;
    } else if (type === 'IDAT') idat.push(body);
    offset += 12 + length;
  }
  const raw = zlib.inflateSync(Buffer.concat(idat));
  const stride = width * channels;
  const out = new Uint8Array(height * stride);
  for (let y = 0; y < height; y += 1) {
    const filter = raw[y * (stride + 1)];
    for (let x = 0; x < stride; x += 1) {
      const v = raw[y * (stride + 1) + 1 + x];
      const a = x >= channels ? out[y * stride + x - channels] : 0;
      const b = y > 0 ? out[(y - 1) * stride + x] : 0;
      const c = x >= channels && y > 0 ? out[(y - 1) * stride + x - channels] : 0;
      const p = a + b - c; const pa = Math.abs(p - a); const pb = Math.abs(p - b); const pc = Math.abs(p - c);
      const predictor = [0, a, b, (a + b) >> 1, pa <= pb && pa <= pc ? a : pb <= pc ? b : c][filter];
      out[y * stride + x] = (v + predictor) & 0xff;
    }
  }
  return Array.from(out);
}

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
      else {
        const classes = fs.readdirSync(imageFolder).filter((d) => !d.startsWith('.')).sort();
        const files = classes.map((c) => path.join(imageFolder, c, fs.readdirSync(path.join(imageFolder, c)).sort()[0]));
        // a model that takes image files gets them as they are (encoded bytes); an older one, pixels
        inputs = metadata.inputs.image ? { image: files.map((f) => fs.readFileSync(f)) } : files.map(pngPixels);
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
