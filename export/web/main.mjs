// The demo page: a grid of samples, a button for new latents and a slider that moves every sample
// along the spherical path from its latent to a second one. Everything runs in the browser with
// onnxruntime-web (WebAssembly), served by serve.mjs from node_modules.

import * as ort from '/ort/ort.wasm.min.mjs';

import { describeModel, makeFeeds, normalLatents, slerpRows, tileGrid, toPixels } from '/lib/generator.mjs';

const GRID_SAMPLES = 64;
const DISPLAY_SCALE = 3; // CSS pixels per image pixel. The canvas contains the images at their own size.

ort.env.wasm.wasmPaths = '/ort/';

const canvas = document.getElementById('grid');
const status = document.getElementById('status');
const newSamples = document.getElementById('new-samples');
const slider = document.getElementById('interpolation');
const classSelect = document.getElementById('class');

const state = { session: null, description: null, start: null, end: null, seed: 1, label: null };

async function render(z, count, label = state.label) {
  const feeds = makeFeeds(ort, z, count, state.description, label);
  const results = await state.session.run(feeds);
  const pixels = toPixels(results[state.session.outputNames[0]].data, state.description);
  const grid = tileGrid(pixels, count, state.description);
  canvas.width = grid.width;
  canvas.height = grid.height;
  canvas.style.width = `${grid.width * DISPLAY_SCALE}px`;
  canvas.style.height = `${grid.height * DISPLAY_SCALE}px`;
  canvas.getContext('2d').putImageData(new ImageData(grid.rgba, grid.width, grid.height), 0, 0);
}

function drawLatentPair() {
  const { zDim } = state.description;
  state.start = normalLatents(GRID_SAMPLES, zDim, state.seed++);
  state.end = normalLatents(GRID_SAMPLES, zDim, state.seed++);
}

async function showInterpolation() {
  const t = Number(slider.value) / 100;
  await render(slerpRows(state.start, state.end, state.description.zDim, t), GRID_SAMPLES);
  status.textContent = `${GRID_SAMPLES} samples, interpolation ${t.toFixed(2)}`;
}

async function start() {
  const sidecar = await (await fetch('/model/generator.json')).json();
  state.description = describeModel(sidecar);
  state.session = await ort.InferenceSession.create('/model/generator.onnx', { executionProviders: ['wasm'] });
  if (state.description.numClasses > 0) {
    const names = state.description.classNames;
    for (let k = 0; k < state.description.numClasses; k++) {
      classSelect.add(new Option(names[k] ?? String(k), String(k)));
    }
    classSelect.add(new Option('all classes', 'all'), 0);
    classSelect.value = 'all';
    document.getElementById('class-control').hidden = false;
  }
  drawLatentPair();
  await showInterpolation();

  newSamples.addEventListener('click', async () => {
    drawLatentPair();
    slider.value = '0';
    await showInterpolation();
  });
  slider.addEventListener('input', showInterpolation);
  classSelect.addEventListener('change', async () => {
    state.label = classSelect.value === 'all' ? null : Number(classSelect.value);
    await showInterpolation();
  });
  newSamples.disabled = false;
  slider.disabled = false;
}

// For tests and embedding apps: draw the given latents (a flat float32 array of count * z_dim).
window.distgan = {
  ready: start().catch((error) => {
    status.textContent = `error: ${error.message}`;
    throw error;
  }),
  render: (z, count, label = null) => render(Float32Array.from(z), count, label),
  description: () => state.description,
};
