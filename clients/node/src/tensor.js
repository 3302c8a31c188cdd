'use strict';
// cookline.v1.Tensor <-> JavaScript typed arrays. A Tensor's `content` holds raw
// little-endian, C-order values, so float32 data maps straight onto a Float32Array.
// grpc-js hands back `content` as a Buffer that is a slice of the message, whose
// byteOffset need not be a multiple of 4: a Float32Array over it would throw, so
// toFloat32Array copies once to align it (a view only when already aligned).

const os = require('node:os');

const LITTLE_ENDIAN_HOST = os.endianness() === 'LE';

/** A float32 Tensor message of shape [rows, columns] from an array of equal-length rows. */
function float32Matrix(rows) {
  const columns = rows.length ? rows[0].length : 0;
  const values = new Float32Array(rows.length * columns);
  rows.forEach((row, i) => {
    if (row.length !== columns) throw new RangeError(`row ${i} has ${row.length} values, expected ${columns}`);
    values.set(row, i * columns);
  });
  const content = LITTLE_ENDIAN_HOST
    ? Buffer.from(values.buffer, values.byteOffset, values.byteLength)
    : littleEndianBytes(values);
  return { dtype: 'DATA_TYPE_FLOAT32', shape: [rows.length, columns], content };
}

function littleEndianBytes(values) {
  const view = new DataView(new ArrayBuffer(values.length * 4));
  values.forEach((v, i) => view.setFloat32(i * 4, v, true));
  return Buffer.from(view.buffer);
}

/** The values of a float32 Tensor as a Float32Array (a view when the bytes are aligned). */
function toFloat32Array(tensor) {
  if (tensor.dtype !== 'DATA_TYPE_FLOAT32') throw new TypeError(`expected DATA_TYPE_FLOAT32, got ${tensor.dtype}`);
  const bytes = tensor.content;
  if (bytes.length % 4 !== 0) throw new RangeError(`content has ${bytes.length} bytes, not a multiple of 4`);
  const n = bytes.length / 4;
  if (LITTLE_ENDIAN_HOST && bytes.byteOffset % 4 === 0) return new Float32Array(bytes.buffer, bytes.byteOffset, n);
  if (LITTLE_ENDIAN_HOST) return new Float32Array(Uint8Array.from(bytes).buffer); // one copy to align
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  return Float32Array.from({ length: n }, (_, i) => view.getFloat32(i * 4, true));
}

/** A 2-d float32 Tensor as an array of Float32Array rows (views into one buffer). */
function toRows(tensor) {
  const [rows, columns] = tensor.shape.map(Number);
  const values = toFloat32Array(tensor);
  return Array.from({ length: rows }, (_, i) => values.subarray(i * columns, (i + 1) * columns));
}

/** One raw value of a string input as bytes: a Buffer/Uint8Array as is (image files), text as UTF-8. */
function toBytes(value) {
  if (Buffer.isBuffer(value)) return value;
  if (value instanceof Uint8Array) return Buffer.from(value.buffer, value.byteOffset, value.byteLength);
  return Buffer.from(String(value), 'utf8');
}

/**
 * A DATA_TYPE_STRING Tensor from raw values: [v, ...] gives shape [rows] (texts, image
 * files), [[v, ...], ...] gives [rows, columns] (category columns).
 */
function stringTensor(values) {
  const nested = values.length > 0 && Array.isArray(values[0]);
  const columns = nested ? values[0].length : 0;
  const flat = nested ? values.flatMap((row, i) => {
    if (row.length !== columns) throw new RangeError(`row ${i} has ${row.length} values, expected ${columns}`);
    return row;
  }) : values;
  return { dtype: 'DATA_TYPE_STRING', shape: nested ? [values.length, columns] : [values.length],
    string_values: flat.map(toBytes) };
}

function isRawValue(value) {
  return typeof value === 'string' || value instanceof Uint8Array;
}

/**
 * The Tensor of one named input from its raw values: rows of numbers -> float32 [rows, d];
 * strings or Buffers ([rows] or [rows, columns]) -> DATA_TYPE_STRING.
 */
function inputTensor(values) {
  const first = values.length && Array.isArray(values[0]) ? values[0][0] : values[0];
  return isRawValue(first) ? stringTensor(values) : float32Matrix(values);
}

/** The values of a DATA_TYPE_STRING tensor as JavaScript strings (UTF-8). */
function toStrings(tensor) {
  return tensor.string_values.map((b) => Buffer.from(b).toString('utf8'));
}

module.exports = { float32Matrix, stringTensor, inputTensor, toFloat32Array, toRows, toStrings };
