// Usage: node predict.mjs PACKAGE_DIR INPUTS_JSON
// Imports the cookline TF.js export in PACKAGE_DIR (its index.js, as an app that installed it would)
// and prints what it answers, as JSON, one entry per input of INPUTS_JSON ({error: message} when the
// module throws), a list whose items are:
//   a string                    -> predict(sentence)
//   {"file": path}              -> predict(the file's bytes), e.g. a PNG
//   an array or {column: value} -> predict(row)
//   {"network": nested array}   -> the network alone on its own input (no preprocessing): {scores}
//   {"tokens": string}          -> the tokens the module splits the string into: {tokens}
//   {"preprocess": item}        -> the network's input the module makes of item (any of the above): {input}
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const [packageDir, inputsPath] = process.argv.slice(2);
const cookline = await import(pathToFileURL(join(packageDir, "index.js")).href);
const model = await cookline.load();
const out = [];
const raw = (item) => (item != null && item.file !== undefined ? readFileSync(item.file) : item);
for (const item of JSON.parse(readFileSync(inputsPath, "utf8"))) {
  try {
    out.push(await answer(item));
  } catch (error) {
    out.push({ error: error.message });
  }
}
process.stdout.write(JSON.stringify(out) + "\n");

async function answer(item) {
  if (item != null && item.preprocess !== undefined) {
    return { input: await model.preprocess(raw(item.preprocess)) };
  } else if (item != null && item.network !== undefined) {
    const want = model.model.inputs[0].dtype;
    const y = model.model.predict(cookline.tf.tensor(item.network, undefined, want));
    return { scores: (await y.array())[0] };
  } else if (item != null && item.tokens !== undefined) {
    return { tokens: model.tokens(item.tokens) };
  }
  return model.predict(raw(item));
}
