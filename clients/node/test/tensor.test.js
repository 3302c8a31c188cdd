'use strict';
// The tensor codec on its own: little-endian float32 bytes in, typed arrays out.
const test = require('node:test');
const assert = require('node:assert/strict');
const tensor = require('../src/tensor');

test('float32Matrix writes little-endian C-order bytes and its shape', () => {
  const t = tensor.float32Matrix([[1.5, -2], [3, 4.25]]);
  assert.deepEqual(t.shape, [2, 2]);
  assert.equal(t.dtype, 'DATA_TYPE_FLOAT32');
  assert.equal(t.content.length, 16);
  assert.equal(t.content.readFloatLE(0), 1.5);
  assert.equal(t.content.readFloatLE(4), -2);
  assert.equal(t.content.readFloatLE(12), 4.25);
});

test('toRows decodes what float32Matrix encodes, also from an unaligned buffer', () => {
  const t = tensor.float32Matrix([[1, 2, 3], [4, 5, 6]]);
  const unaligned = Buffer.concat([Buffer.from([0]), t.content]).subarray(1);
  assert.equal(unaligned.byteOffset % 4, 1);
  for (const content of [t.content, unaligned]) {
    const rows = tensor.toRows({ ...t, content });
    assert.deepEqual(rows.map((r) => Array.from(r)), [[1, 2, 3], [4, 5, 6]]);
  }
});

test('ragged rows and wrong dtypes are refused', () => {
  assert.throws(() => tensor.float32Matrix([[1, 2], [3]]), /row 1 has 1 values, expected 2/);
  assert.throws(() => tensor.toFloat32Array({ dtype: 'DATA_TYPE_INT32', content: Buffer.alloc(4) }), /expected DATA_TYPE_FLOAT32/);
});

test("a detector's boxes, labels and scores become detections per image, unused slots left out", () => {
  const { rowsFromResponse } = require('../src/client');
  const boxes = tensor.float32Matrix([[0.1, 0.2, 0.3, 0.4, 0, 0, 0, 0]]);
  const rows = rowsFromResponse({
    outputs: {
      boxes: { ...boxes, shape: [1, 2, 4] },
      scores: tensor.float32Matrix([[0.5, 0]]),
      labels: tensor.stringTensor(['circle', '']),
    },
    class_names: ['circle'],
  });
  assert.deepEqual(rows.map((r) => r.detections.map((d) => [d.label, d.score])), [[['circle', 0.5]]]);
  assert.deepEqual(rows[0].detections[0].box.map((v) => Math.round(v * 10) / 10), [0.1, 0.2, 0.3, 0.4]);
});
