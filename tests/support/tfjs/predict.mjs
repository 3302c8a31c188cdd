// Usage: node predict.mjs MODEL_DIR ROWS_JSON
// Loads MODEL_DIR/model.json (+ its weight shards) with @tensorflow/tfjs, the
// pure-JavaScript build a browser uses, predicts ROWS_JSON ([[f1, f2, ...], ...])
// and prints the class scores as JSON ([[p1, p2, ...], ...]).
import { readFileSync } from "node:fs";
import { join } from "node:path";
import * as tf from "@tensorflow/tfjs";

const [modelDir, rowsPath] = process.argv.slice(2);
const manifest = JSON.parse(readFileSync(join(modelDir, "model.json"), "utf8"));
const weightSpecs = manifest.weightsManifest.flatMap((group) => group.weights);
const shards = manifest.weightsManifest.flatMap((group) => group.paths).map((p) => readFileSync(join(modelDir, p)));
const joined = Buffer.concat(shards);
const weightData = joined.buffer.slice(joined.byteOffset, joined.byteOffset + joined.byteLength);

const model = await tf.loadLayersModel(tf.io.fromMemory({ modelTopology: manifest.modelTopology, weightSpecs, weightData }));
const rows = JSON.parse(readFileSync(rowsPath, "utf8"));
const scores = model.predict(tf.tensor2d(rows, undefined, "float32"));
process.stdout.write(JSON.stringify(await scores.array()) + "\n");
