// A cookline model for TensorFlow.js: predict(raw input) -> {label, scores}.
//
// This folder was written by cookline's train service (export.tfjs). It holds the trained
// network (model.json + weights), preprocessing.json (the fitted preprocessing, class names and
// raw-input description) and this module, which turns the raw input the SavedModel takes into
// the network's input exactly as training did. It reads its own files (no other network access)
// and depends on @tensorflow/tfjs and, in Node only, pngjs and jpeg-js to decode images.
//
//   import { predict } from "cookline-model-NAME";
//   await predict("a sentence");            // a text model
//   await predict(fs.readFileSync("a.png")); // an image model: PNG or JPEG bytes
//   await predict({ sepal_length: 5.1, colour: "red" }); // a tabular model: column -> value
//
// See docs/tfjs.md in the cookline repository.
import * as tf from "@tensorflow/tfjs";

const HERE = new URL("./", import.meta.url);
const IS_NODE = typeof process !== "undefined" && process.versions != null && process.versions.node != null;

// --- layers TF.js has no faithful twin for ---------------------------------------------------------

const one = (inputs) => (Array.isArray(inputs) ? inputs[0] : inputs);

/** Keras' Resizing: bilinear with half-pixel centers (TF.js' Resizing layer aligns corners). */
class CooklineResizing extends tf.layers.Layer {
  constructor(config) {
    super(config);
    this.height = config.height;
    this.width = config.width;
  }
  computeOutputShape(shape) {
    return [shape[0], this.height, this.width, shape[3]];
  }
  call(inputs) {
    return tf.tidy(() => tf.image.resizeBilinear(one(inputs), [this.height, this.width], false, true));
  }
  getConfig() {
    return { ...super.getConfig(), height: this.height, width: this.width };
  }
}
CooklineResizing.className = "CooklineResizing";

/** Keras' GlobalAveragePooling1D: the average over the steps the Embedding's mask keeps. */
class CooklineGlobalAveragePooling1D extends tf.layers.Layer {
  constructor(config) {
    super(config);
    this.supportsMasking = true;
  }
  computeOutputShape(shape) {
    return [shape[0], shape[2]];
  }
  computeMask() {
    return null;
  }
  call(inputs, kwargs) {
    return tf.tidy(() => {
      const x = one(inputs);
      const mask = kwargs == null ? null : kwargs.mask;
      if (mask == null) return tf.mean(x, 1);
      const kept = tf.cast(tf.expandDims(one(mask), 2), x.dtype);
      return tf.div(tf.sum(tf.mul(x, kept), 1), tf.sum(kept, 1));
    });
  }
}
CooklineGlobalAveragePooling1D.className = "CooklineGlobalAveragePooling1D";

tf.serialization.registerClass(CooklineResizing);
tf.serialization.registerClass(CooklineGlobalAveragePooling1D);

// --- reading this folder ------------------------------------------------------------------------------

async function readBytes(base, name) {
  const url = new URL(name, base);
  if (url.protocol === "file:") {
    const fs = await import("node:fs/promises");
    const data = await fs.readFile(url);
    return data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength);
  }
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response.arrayBuffer();
}

const readJSON = async (base, name) => JSON.parse(new TextDecoder().decode(await readBytes(base, name)));

// --- the preprocessing (services/process/ops, deterministic ops only) -----------------------------

const f32 = Math.fround;

/** numpy's rint: round half to even. */
function rint(v) {
  const r = Math.round(v);
  return Math.abs(v % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

const toPixel = (v) => Math.min(255, Math.max(0, rint(v)));

/** Bilinear resize with half-pixel centers (tf.image.resize), rounded back to 8-bit pixels. */
function resizeBilinear(image, height, width) {
  if (image.height === height && image.width === width) return image;
  const { data, channels } = image;
  const axis = (outSize, inSize) => {
    const lo = new Int32Array(outSize), hi = new Int32Array(outSize), frac = new Float32Array(outSize);
    for (let i = 0; i < outSize; i++) {
      let center = f32(f32(f32(i + 0.5) * f32(inSize / outSize)) - 0.5);
      center = Math.min(Math.max(center, 0), inSize - 1);
      lo[i] = Math.floor(center);
      hi[i] = Math.min(lo[i] + 1, inSize - 1);
      frac[i] = f32(center - lo[i]);
    }
    return [lo, hi, frac];
  };
  const [y0, y1, fy] = axis(height, image.height);
  const [x0, x1, fx] = axis(width, image.width);
  const out = new Float32Array(height * width * channels);
  const at = (y, x, c) => data[(y * image.width + x) * channels + c];
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      for (let c = 0; c < channels; c++) {
        const top = f32(f32(at(y0[y], x0[x], c) * f32(1 - fx[x])) + f32(at(y0[y], x1[x], c) * fx[x]));
        const bottom = f32(f32(at(y1[y], x0[x], c) * f32(1 - fx[x])) + f32(at(y1[y], x1[x], c) * fx[x]));
        out[(y * width + x) * channels + c] = toPixel(f32(f32(top * f32(1 - fy[y])) + f32(bottom * fy[y])));
      }
    }
  }
  return { data: out, height, width, channels };
}

// ITU-R 601 luma, as tf.image.rgb_to_grayscale and the grayscale op.
const LUMA = [f32(0.2989), f32(0.587), f32(0.114)];

function grayscale(image) {
  if (image.channels === 1) return image;
  const n = image.height * image.width;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const p = i * image.channels;
    let v = f32(image.data[p] * LUMA[0]);
    v = f32(v + f32(image.data[p + 1] * LUMA[1]));
    out[i] = toPixel(f32(v + f32(image.data[p + 2] * LUMA[2])));
  }
  return { data: out, height: image.height, width: image.width, channels: 1 };
}

/** Decoded RGBA pixels ({data, width, height}) as the dataset's channels, as collect stores images:
 * RGB, or one channel by Pillow's integer luma (a gray image stays exactly as it is). */
function fromRGBA(rgba, channels) {
  const n = rgba.width * rgba.height;
  const out = new Float32Array(n * channels);
  for (let i = 0; i < n; i++) {
    const [r, g, b] = [rgba.data[i * 4], rgba.data[i * 4 + 1], rgba.data[i * 4 + 2]];
    if (channels === 1) out[i] = Math.floor((r * 19595 + g * 38470 + b * 7471 + 0x8000) / 65536);
    else out.set([r, g, b], i * 3);
  }
  return { data: out, height: rgba.height, width: rgba.width, channels };
}

/** Source positions and weights of an antialiased bilinear (triangle) resize along one axis,
 * as TensorFlow's ScaleAndTranslate (tf.image.resize(..., antialias=True)) computes them. */
function triangleSpans(outSize, inSize) {
  const scale = f32(outSize / inSize);
  const invScale = f32(1 / scale);
  const kernelScale = Math.max(invScale, 1);
  return Array.from({ length: outSize }, (_, x) => {
    const sample = f32(f32(x + 0.5) * invScale);
    if (sample < 0 || sample > inSize) return { start: 0, weights: [] };
    const start = Math.min(Math.max(Math.ceil(f32(sample - kernelScale - 0.5)), 0), inSize - 1);
    const end = Math.min(Math.max(Math.floor(f32(f32(sample + kernelScale) - 0.5)), 0), inSize - 1) + 1;
    const weights = [];
    let total = 0;
    for (let source = start; source < end; source++) {
      const w = Math.max(0, f32(1 - Math.abs(f32(f32(f32(source + 0.5) - sample) / kernelScale))));
      weights.push(w);
      total = f32(total + w);
    }
    const norm = Math.abs(total) >= 1000 * 1.1754943508222875e-38 ? f32(1 / total) : 0;
    return { start, weights: weights.map((w) => f32(w * norm)) };
  });
}

/** A raw image at the dataset's height and width (antialiased bilinear, rounded to 8-bit pixels),
 * as the exported model resizes an image of another size. */
function resizeAntialiased(image, height, width) {
  if (image.height === height && image.width === width) return image;
  const { channels } = image;
  const cols = triangleSpans(width, image.width), rows = triangleSpans(height, image.height);
  const middle = new Float32Array(image.height * width * channels); // columns first, then rows
  for (let y = 0; y < image.height; y++) {
    for (let x = 0; x < width; x++) {
      for (let c = 0; c < channels; c++) {
        let sum = 0;
        cols[x].weights.forEach((w, k) => { sum = f32(sum + f32(w * image.data[(y * image.width + cols[x].start + k) * channels + c])); });
        middle[(y * width + x) * channels + c] = sum;
      }
    }
  }
  const out = new Float32Array(height * width * channels);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      for (let c = 0; c < channels; c++) {
        let sum = 0;
        rows[y].weights.forEach((w, k) => { sum = f32(sum + f32(w * middle[((rows[y].start + k) * width + x) * channels + c])); });
        out[(y * width + x) * channels + c] = toPixel(sum);
      }
    }
  }
  return { data: out, height, width, channels };
}

const isBytes = (v) => v instanceof ArrayBuffer || ArrayBuffer.isView(v);

async function decodeImage(input) {
  if (input != null && input.data != null && input.width != null && input.height != null) return input; // RGBA pixels
  if (IS_NODE && typeof Blob !== "undefined" && input instanceof Blob) input = new Uint8Array(await input.arrayBuffer());
  if (!isBytes(input)) {
    if (!IS_NODE && typeof createImageBitmap === "function") return browserPixels(await createImageBitmap(input));
    throw new Error("image: expected PNG or JPEG bytes (Uint8Array, Buffer or ArrayBuffer)");
  }
  const bytes = input instanceof ArrayBuffer ? new Uint8Array(input) : new Uint8Array(input.buffer, input.byteOffset, input.byteLength);
  if (!IS_NODE) return browserPixels(await createImageBitmap(new Blob([bytes])));
  if (bytes[0] === 0x89 && bytes[1] === 0x50 && bytes[2] === 0x4e && bytes[3] === 0x47) {
    const { PNG } = (await import("pngjs")).default;
    return PNG.sync.read(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
  }
  if (bytes[0] === 0xff && bytes[1] === 0xd8) {
    const jpeg = (await import("jpeg-js")).default;
    return jpeg.decode(bytes, { useTArray: true, formatAsRGBA: true });
  }
  throw new Error("image: the bytes are not a PNG or JPEG image");
}

function browserPixels(bitmap) {
  const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
  const context = canvas.getContext("2d");
  context.drawImage(bitmap, 0, 0);
  return context.getImageData(0, 0, bitmap.width, bitmap.height);
}

// Σ at the end of a word (after a cased letter, not before one) lowercases to ς, as str.lower().
const FINAL_SIGMA = /(?<=\p{Cased}\p{Case_Ignorable}*)\u03a3(?!\p{Case_Ignorable}*\p{Cased})/gu;

/** The lowercased runs of word characters of a text, as training split it (Python's str.lower() and \w). */
function tokenizer(rule) {
  const pattern = new RegExp(`[${rule.class}]+`, "gu");
  const table = new Map(Object.entries(rule.lowercase).map(([cp, lowered]) => [Number(cp), lowered]));
  const lower = (text) => {
    let out = "";
    for (const ch of text.replace(FINAL_SIGMA, "\u03c2")) {
      const lowered = table.get(ch.codePointAt(0));
      out += lowered === undefined ? ch : lowered;
    }
    return out;
  };
  return (text) => lower(String(text)).match(pattern) || [];
}

function compile(pre) {
  const tokens = tokenizer(pre.tokens);
  const steps = pre.steps.map((step) => {
    if (step.op === "lookup" || step.op === "one_hot") {
      return { ...step, maps: step.tables.map((values) => new Map(values.map((v, i) => [v, i + 1]))) };
    }
    if (step.op === "vectorize_text") return { ...step, index: new Map(step.vocabulary.map((w, i) => [w, i])) };
    return step;
  });
  // f(value, k) on the op's columns (its k-th scoped column, or every column); the others pass through
  const scoped = (step, features, f) => {
    if (!step.indices) return features.map(f);
    const out = [...features];
    step.indices.forEach((j, k) => { out[j] = f(features[j], k); });
    return out;
  };
  const categoryIds = (step, values) => values.map((v, j) => (j < step.maps.length ? step.maps[j].get(v) || 0 : 0));
  const append = (row, columns) => {
    row.features = [...(row.features || []), ...columns];
    delete row.categorical;
  };
  const apply = (row) => {
    for (const step of steps) {
      const need = (name) => {
        if (row[name] == null) throw new Error(`${step.op}: the input has no ${name}`);
        return row[name];
      };
      switch (step.op) {
        case "standardize":
        case "min_max":
          row.features = scoped(step, need("features"), (v, k) => f32(f32(f32(v) - step.offset[k]) / step.scale[k]));
          break;
        case "fill_missing":
          row.features = scoped(step, need("features"), (v, k) =>
            (Number.isNaN(v) ? (step.values ? step.values[k] : step.constant) : v));
          break;
        case "lookup":
          append(row, categoryIds(step, need("categorical")));
          break;
        case "one_hot": {
          const ids = categoryIds(step, need("categorical")).slice(0, step.maps.length);
          append(row, step.maps.flatMap((map, j) => {
            const column = new Array(map.size + 1).fill(0);
            column[ids[j]] = 1;
            return column;
          }));
          break;
        }
        case "vectorize_text": {
          const text = need("text");
          const words = tokens(Array.isArray(text) ? text.join(" ") : text);
          delete row.text;
          if (step.mode === "int") {
            const ids = new Array(step.sequence_length).fill(0);
            words.slice(0, step.sequence_length).forEach((w, i) => { ids[i] = (step.index.has(w) ? step.index.get(w) : -1) + 2; });
            if (words.length === 0) ids[0] = 1; // no tokens: one unknown token, as in training (never all padding)
            row.tokens = ids;
          } else {
            const counts = new Array(step.vocabulary.length + 1).fill(0);
            for (const w of words) counts[(step.index.has(w) ? step.index.get(w) : -1) + 1] += 1;
            row.features = [...(row.features || []), ...counts.map((c, i) =>
              (step.mode === "multi_hot" ? Math.min(c, 1) : step.mode === "tf_idf" ? f32(c * step.weights[i]) : c))];
          }
          break;
        }
        case "resize":
          row.image = resizeBilinear(need("image"), step.height, step.width);
          break;
        case "grayscale":
          row.image = grayscale(need("image"));
          break;
        default:
          throw new Error(`preprocessing.json: unknown step ${step.op}`);
      }
    }
    return row;
  };
  return { tokens, apply };
}

/** The raw inputs of one row, by input name, from what the caller has. */
async function rawRow(pre, input) {
  const kinds = pre.inputs;
  const names = Object.keys(kinds);
  const row = {};
  if (names.length === 1 && names[0] === "image" && !(input != null && input.image != null)) input = { image: input };
  if (names.length === 1 && names[0] === "text" && typeof input === "string") input = { text: input };
  if (Array.isArray(input)) { // values in column order: numeric, then category, then text columns
    const columns = names.flatMap((n) => (kinds[n].columns || [n]).map((c) => [n, c]));
    if (input.length !== columns.length) {
      throw new Error(`input: ${input.length} values given, the model takes ${columns.length} (${columns.map((c) => c[1]).join(", ")})`);
    }
    input = Object.fromEntries(columns.map(([, c], i) => [c, input[i]]));
  }
  if (input == null || typeof input !== "object") throw new Error(`input: expected ${names.join(", ")}`);
  for (const name of names) {
    const kind = kinds[name];
    const columns = kind.columns || [];
    const value = name in input && !columns.includes(name) ? input[name] : undefined;
    if (kind.kind === "image") {
      if (value == null) throw new Error("input: image bytes are missing");
      const { height, width, channels } = kind.image;
      row.image = resizeAntialiased(fromRGBA(await decodeImage(value), channels), height, width);
    } else if (kind.kind === "text") {
      // one text, or one per text column (joined with a space, as training joins them)
      const text = value !== undefined ? value : columns.length ? columns.map((c) => input[c]) : undefined;
      const texts = Array.isArray(text) ? text : [text];
      texts.forEach((t, j) => {
        if (typeof t !== "string") throw new Error(`input: ${columns[j] || "text"} must be a string`);
      });
      row.text = Array.isArray(text) ? texts : text;
    } else {
      const values = value !== undefined ? Array.from(value) : columns.map((c) => {
        if (!(c in input)) throw new Error(`input: column ${c} is missing`);
        return input[c];
      });
      if (values.length !== columns.length) throw new Error(`input: ${name} takes ${columns.length} values, got ${values.length}`);
      if (kind.kind === "numeric") {
        // as serve: a missing value (NaN) only where the model fills it in, never infinity
        const fills = pre.steps.some((step) => step.op === "fill_missing");
        row.features = values.map((v, j) => {
          const missing = v === null || v === undefined || (typeof v === "string" && v.trim() === "");
          const number = missing ? NaN : typeof v === "number" ? v : Number(v);
          if (!missing && typeof v !== "number" && (typeof v !== "string" || Number.isNaN(number))) {
            throw new Error(`input: column ${columns[j]} must be a number, got ${JSON.stringify(v)}`);
          }
          if (Number.isNaN(number) && !fills) {
            throw new Error(`input: column ${columns[j]} is missing (NaN), and the model has no fill_missing op; send a number`);
          }
          if (number === Infinity || number === -Infinity) throw new Error(`input: column ${columns[j]}: infinity is not accepted`);
          return number;
        });
      } else {
        row.categorical = values.map((v) => (v === null || v === undefined ? "" : String(v).trim()));
      }
    }
  }
  return row;
}

/** The folder URL of `base`: a URL, a URL string, or (in Node) a path relative to the working directory. */
async function folderURL(base) {
  let href = base instanceof URL ? base.href : String(base);
  if (!/^[a-z][a-z0-9+.-]+:/i.test(href)) {
    if (typeof location !== "undefined") href = new URL(href, location.href).href;
    else {
      const [{ pathToFileURL }, { resolve }] = await Promise.all([import("node:url"), import("node:path")]);
      href = pathToFileURL(resolve(href)).href;
    }
  }
  return new URL(href.endsWith("/") ? href : `${href}/`);
}

/** Loads the model in the folder at `base` (default: this module's folder): a URL, or a path in Node. */
export async function load(base = HERE) {
  const folder = await folderURL(base);
  const [manifest, pre] = await Promise.all([readJSON(folder, "model.json"), readJSON(folder, "preprocessing.json")]);
  const weightSpecs = manifest.weightsManifest.flatMap((group) => group.weights);
  const shards = await Promise.all(manifest.weightsManifest.flatMap((group) => group.paths).map((p) => readBytes(folder, p)));
  const weightData = new Uint8Array(shards.reduce((n, s) => n + s.byteLength, 0));
  shards.reduce((offset, s) => (weightData.set(new Uint8Array(s), offset), offset + s.byteLength), 0);
  const model = await tf.loadLayersModel(tf.io.fromMemory({ modelTopology: manifest.modelTopology, weightSpecs, weightData: weightData.buffer }));
  const { tokens, apply } = compile(pre);
  const want = pre.model_input;
  const inputName = want.name;

  /** The network's input for one raw input (flat, row-major): what predict() feeds the model. */
  async function preprocess(input) {
    const row = apply(await rawRow(pre, input));
    const value = inputName === "image" ? row.image.data : row[inputName];
    const size = want.shape.reduce((a, b) => a * b, 1);
    if (value == null || value.length !== size) {
      throw new Error(`input: the preprocessing gave ${inputName} of ${value == null ? 0 : value.length} values, the network takes ${size}`);
    }
    return Array.from(value);
  }

  /** Predicts several raw inputs at once: [{label, scores}] in order. */
  async function predictBatch(inputs) {
    const rows = [];
    for (const input of inputs) rows.push(await preprocess(input));
    const flat = want.dtype === "int32" ? Int32Array.from(rows.flatMap((r) => Array.from(r)))
      : Float32Array.from(rows.flatMap((r) => Array.from(r)));
    const x = tf.tensor(flat, [rows.length, ...want.shape], want.dtype);
    const y = model.predict(x);
    const scores = await y.array();
    tf.dispose([x, y]);
    return scores.map((s) => ({ label: pre.class_names.length ? pre.class_names[s.indexOf(Math.max(...s))] : null, scores: s }));
  }

  return {
    model,
    classNames: pre.class_names,
    inputs: pre.inputs,
    tokens,
    preprocess,
    predictBatch,
    /** Predicts one raw input: {label, scores}; scores follow classNames (a regressor: [value], label null). */
    predict: async (input) => (await predictBatch([input]))[0],
  };
}

let loaded = null;

/** Predicts one raw input with the model in this folder: {label, scores}. */
export async function predict(input) {
  loaded = loaded || load();
  return (await loaded).predict(input);
}

export { tf };
