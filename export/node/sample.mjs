#!/usr/bin/env node
// Write a PNG grid of samples from a distgan generator.onnx with onnxruntime-node.
//
//   node sample.mjs generator.onnx --n 16 --seed 0 --out grid.png
//   node sample.mjs generator.onnx --latents z.npy --out grid.png   (float32 [n, z_dim] from numpy)
//
// The model description is read from the .json file that distgan export writes beside the .onnx file.

import { readFileSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

import ort from 'onnxruntime-node';
import { PNG } from 'pngjs';

import { describeModel, imageSize, makeFeeds, normalLatents, tileGrid, toPixels } from '../lib/generator.mjs';
import { readNpyFloat32 } from '../lib/npy.mjs';

const USAGE = 'usage: node sample.mjs MODEL.onnx [--n N] [--seed S] [--latents z.npy] [--label K] [--columns C] --out grid.png';

function parseOptions(argv) {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      n: { type: 'string', default: '16' },
      seed: { type: 'string', default: '0' },
      latents: { type: 'string' },
      label: { type: 'string' },
      columns: { type: 'string' },
      out: { type: 'string', default: 'samples.png' },
    },
  });
  if (positionals.length !== 1) throw new Error(USAGE);
  return { model: positionals[0], ...values };
}

async function main() {
  const options = parseOptions(process.argv.slice(2));
  const sidecarPath = options.model.replace(/\.onnx$/, '') + '.json';
  const description = describeModel(JSON.parse(readFileSync(sidecarPath, 'utf8')));

  let z;
  let count;
  if (options.latents) {
    const { data, shape } = readNpyFloat32(options.latents);
    if (shape.length !== 2 || shape[1] !== description.zDim) {
      throw new Error(`latents must have shape [n, ${description.zDim}], got [${shape}]`);
    }
    [z, count] = [data, shape[0]];
  } else {
    count = Number.parseInt(options.n, 10);
    if (!(count >= 1)) throw new Error(`--n must be at least 1, got ${options.n}`);
    z = normalLatents(count, description.zDim, Number.parseInt(options.seed, 10));
  }
  const label = options.label === undefined ? null : Number(options.label);

  const session = await ort.InferenceSession.create(options.model, { executionProviders: ['cpu'] });
  const results = await session.run(makeFeeds(ort, z, count, description, label));
  const pixels = toPixels(results[session.outputNames[0]].data, description);
  const columns = options.columns ? Number.parseInt(options.columns, 10) : undefined;
  const grid = tileGrid(pixels, count, description, columns);

  const png = new PNG({ width: grid.width, height: grid.height });
  png.data = Buffer.from(grid.rgba.buffer);
  const channels = imageSize(description)[2];
  writeFileSync(options.out, PNG.sync.write(png, { colorType: channels === 1 ? 0 : 2 }));
  console.log(`wrote ${options.out} (${count} samples, ${grid.width}x${grid.height} pixels, onnxruntime-node ${ort.env.versions.node})`);
}

main().catch((error) => {
  console.error(`error: ${error.message}`);
  process.exit(1);
});
