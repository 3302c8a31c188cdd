#!/usr/bin/env node
'use strict';
// Classifies a sentence with a text model and an image file with an image model, sending
// them as they are (the model tokenizes the text and decodes the image itself). stdout gets
// one JSON line per answer: {"input", "label", "scores"}. Exit code 0 when both came back.
//
//   COOKLINE_SERVE_ADDR=host:50054 node examples/raw.js TEXT_MODEL "a sentence" IMAGE_MODEL picture.png

const fs = require('node:fs');
const { Client } = require('../src/client');

async function main() {
  const [textModel, sentence, imageModel, imageFile] = process.argv.slice(2);
  if (!imageFile) throw new Error('usage: raw.js TEXT_MODEL "a sentence" IMAGE_MODEL picture.png');
  const client = new Client();
  try {
    const [text] = await client.predict(textModel, { text: [sentence] });
    console.log(JSON.stringify({ input: sentence, ...text }));
    for await (const answer of client.predictStream(imageModel, { image: [fs.readFileSync(imageFile)] })) {
      if (answer.error) throw new Error(`${imageFile}: ${answer.error.message}`);
      console.log(JSON.stringify({ input: imageFile, ...answer.result }));
    }
    return 0;
  } finally {
    client.close();
  }
}

main().then((code) => { process.exitCode = code; }, (err) => {
  console.error(`error ${err.code !== undefined ? `code ${err.code}: ` : ''}${err.details || err.message}`);
  process.exitCode = 2;
});
