#!/usr/bin/env node
// Drive the demo page in headless Chromium and report what it drew.
//
//   node check.mjs MODEL.onnx --chromium /usr/bin/chromium --screenshot page.png
//       [--latents z.npy --canvas canvas.png]
//
// Starts serve.mjs on a free port of 127.0.0.1 and waits for the page to load the model. It then moves
// the interpolation slider, presses "New samples" and takes the screenshot. Given latents, it draws them
// and saves the canvas as a PNG. It prints one JSON line with the results and exits with 1 on any failure.

import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

import { chromium } from 'playwright-core';

import { readNpyFloat32 } from '../lib/npy.mjs';

const HERE = dirname(fileURLToPath(import.meta.url));
const PAGE_TIMEOUT_MS = 60_000; // loading the wasm runtime takes a few seconds on 2 CPU cores
const CHROMIUM_FLAGS = [
  '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync',
];

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    chromium: { type: 'string', default: '/usr/bin/chromium' },
    screenshot: { type: 'string', default: 'page.png' },
    latents: { type: 'string' },
    canvas: { type: 'string' },
    label: { type: 'string' },
  },
});
if (positionals.length !== 1) {
  console.error('usage: node check.mjs MODEL.onnx [--chromium PATH] [--screenshot page.png] [--latents z.npy --canvas canvas.png]');
  process.exit(1);
}

function startServer(model) {
  const server = spawn(process.execPath, [join(HERE, 'serve.mjs'), model, '--port', '0'], { stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    let output = '';
    server.stdout.on('data', (chunk) => {
      output += chunk;
      const match = output.match(/serving (http:\/\/127\.0\.0\.1:\d+\/)/);
      if (match) resolve({ server, url: match[1] });
    });
    server.on('exit', (code) => reject(new Error(`serve.mjs exited with code ${code} before serving`)));
  });
}

const canvasPng = () => document.getElementById('grid').toDataURL('image/png');
const canvasDigest = () => {
  const canvas = document.getElementById('grid');
  const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  let sum = 0;
  for (let i = 0; i < data.length; i++) sum = (sum * 31 + data[i]) % 1000000007;
  return `${canvas.width}x${canvas.height}:${sum}`;
};

async function main() {
  const { server, url } = await startServer(positionals[0]);
  const profile = mkdtempSync(join(tmpdir(), 'distgan-chromium-'));
  let context;
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath: values.chromium, headless: true, chromiumSandbox: false, args: CHROMIUM_FLAGS,
      viewport: { width: 1100, height: 1000 },
    });
    const page = context.pages()[0] ?? (await context.newPage());
    const consoleErrors = [];
    page.on('console', (message) => { if (message.type() === 'error') consoleErrors.push(message.text()); });
    page.on('pageerror', (error) => consoleErrors.push(error.message));
    page.setDefaultTimeout(PAGE_TIMEOUT_MS);

    await page.goto(url);
    await page.evaluate(() => window.distgan.ready);
    const report = { url, consoleErrors, crossOriginIsolated: await page.evaluate(() => crossOriginIsolated) };
    report.status = await page.textContent('#status');

    await page.evaluate(`window.canvasDigest = ${canvasDigest.toString()}`);
    const changedSince = (before) => page.waitForFunction((digest) => window.canvasDigest() !== digest, before)
      .then(() => true, () => false);

    // Move the slider as a user drags it: set the value and fire the input event.
    const first = await page.evaluate(canvasDigest);
    await page.$eval('#interpolation', (slider) => {
      slider.value = '50';
      slider.dispatchEvent(new Event('input'));
    });
    report.sliderChangedCanvas = await changedSince(first);
    await page.waitForFunction(() => document.getElementById('status').textContent.endsWith('0.50'));
    report.statusAfterSlider = await page.textContent('#status');

    const beforeClick = await page.evaluate(canvasDigest);
    await page.click('#new-samples');
    report.newSamplesChangedCanvas = await changedSince(beforeClick);
    await page.waitForFunction(() => document.getElementById('status').textContent.endsWith('0.00'));
    await page.screenshot({ path: values.screenshot });

    if (values.latents) {
      const { data, shape } = readNpyFloat32(values.latents);
      const label = values.label === undefined ? null : Number(values.label);
      await page.evaluate(([z, count, k]) => window.distgan.render(z, count, k), [Array.from(data), shape[0], label]);
      const png = await page.evaluate(canvasPng);
      writeFileSync(values.canvas, Buffer.from(png.split(',')[1], 'base64'));
      report.canvas = values.canvas;
    }
    console.log(JSON.stringify(report));
  } finally {
    if (context) await context.close();
    server.kill();
    rmSync(profile, { recursive: true, force: true });
  }
}

main().catch((error) => {
  console.error(`error: ${error.message}`);
  process.exit(1);
});
