'use strict';
// Raw inputs against a live serve: the example classifies a sentence and an image file, and
// the client sends strings and Buffers. tests/e2e/test_clients.py deploys a text model and an
// image model and names them in COOKLINE_RAW_TEXT_MODEL / COOKLINE_RAW_IMAGE_MODEL, with a bright
// PNG in COOKLINE_RAW_IMAGE_FILE. Without them this fails: never skipped.
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { execFile } = require('node:child_process');
const { Client } = require('../src/client');

const EXAMPLE = path.resolve(__dirname, '..', 'examples', 'raw.js');

test('raw inputs', async (t) => {
  const env = {};
  for (const name of ['COOKLINE_SERVE_ADDR', 'COOKLINE_RAW_TEXT_MODEL', 'COOKLINE_RAW_IMAGE_MODEL', 'COOKLINE_RAW_IMAGE_FILE']) {
    assert.ok(process.env[name], `${name} must be set (tests/e2e/test_clients.py sets it)`);
    env[name] = process.env[name];
  }
  const client = new Client();
  t.after(() => client.close());

  await t.test('the example classifies a sentence and an image file', async () => {
    const stdout = await new Promise((resolve, reject) => {
      execFile(process.execPath, [EXAMPLE, env.COOKLINE_RAW_TEXT_MODEL, 'A great film, I loved it.',
        env.COOKLINE_RAW_IMAGE_MODEL, env.COOKLINE_RAW_IMAGE_FILE], { timeout: 120_000 },
      (err, out, stderr) => (err ? reject(new Error(`examples/raw.js failed: ${stderr}`)) : resolve(out)));
    });
    const lines = stdout.trim().split('\n').map((line) => JSON.parse(line));
    assert.deepEqual(lines.map((l) => l.label), ['pos', 'pos']);
    assert.equal(lines[1].input, env.COOKLINE_RAW_IMAGE_FILE);
  });

  await t.test('the metadata names each input with its kind', async () => {
    const metadata = await client.modelMetadata(env.COOKLINE_RAW_IMAGE_MODEL);
    assert.equal(metadata.inputs.image.kind, 'INPUT_KIND_IMAGE');
    assert.equal(metadata.inputs.image.dtype, 'DATA_TYPE_STRING');
    assert.deepEqual(metadata.inputs.image.encodings, ['png', 'jpeg', 'gif', 'bmp']);
  });

  await t.test('strings and Buffers predict; a bad image is an error naming input and row', async () => {
    const texts = await client.predict(env.COOKLINE_RAW_TEXT_MODEL, { text: ['good, great', 'awful, bad'] });
    assert.deepEqual(texts.map((r) => r.label), ['pos', 'neg']);
    const png = fs.readFileSync(env.COOKLINE_RAW_IMAGE_FILE);
    const answers = [];
    for await (const a of client.predictStream(env.COOKLINE_RAW_IMAGE_MODEL, { image: [png, Buffer.from('no image')] })) {
      answers.push(a);
    }
    assert.equal(answers[0].result.label, 'pos');
    assert.equal(answers[1].error.code, 3);
    assert.match(answers[1].error.message, /inputs\['image'\] row 0: not an image/);
  });
});
