#!/usr/bin/env node
// Serve the demo page, onnxruntime-web from node_modules and one exported model on 127.0.0.1.
//
//   node serve.mjs path/to/generator.onnx [--port 8080]
//
// The page loads /model/generator.onnx and /model/generator.json (the .json file that distgan export
// writes beside the .onnx file). Nothing is fetched from outside this server.

import { createReadStream, existsSync, statSync } from 'node:fs';
import { createServer } from 'node:http';
import { dirname, extname, join, normalize, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const HERE = dirname(fileURLToPath(import.meta.url));
const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.wasm': 'application/wasm',
  '.onnx': 'application/octet-stream',
};

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { port: { type: 'string', default: '8080' }, host: { type: 'string', default: '127.0.0.1' } },
});
if (positionals.length !== 1) {
  console.error('usage: node serve.mjs path/to/generator.onnx [--port 8080]');
  process.exit(1);
}
const model = resolve(positionals[0]);
const sidecar = model.replace(/\.onnx$/, '') + '.json';
for (const path of [model, sidecar]) {
  if (!existsSync(path)) {
    console.error(`error: ${path} not found; export the model with distgan export`);
    process.exit(1);
  }
}

// URL prefix -> folder on disk. Paths are resolved inside their folder only.
const ROOTS = {
  '/ort/': join(HERE, 'node_modules', 'onnxruntime-web', 'dist'),
  '/lib/': join(HERE, '..', 'lib'),
  '/': HERE,
};
const FILES = { '/': join(HERE, 'index.html'), '/model/generator.onnx': model, '/model/generator.json': sidecar };

function locate(pathname) {
  if (FILES[pathname]) return FILES[pathname];
  for (const [prefix, root] of Object.entries(ROOTS)) {
    if (!pathname.startsWith(prefix)) continue;
    const file = normalize(join(root, decodeURIComponent(pathname.slice(prefix.length))));
    const outside = !file.startsWith(root + sep);
    // Only onnxruntime-web's dist folder is served from node_modules, through /ort/.
    const otherPackage = prefix === '/' && file.startsWith(join(HERE, 'node_modules') + sep);
    return outside || otherPackage ? null : file;
  }
  return null;
}

const server = createServer((request, response) => {
  const { pathname } = new URL(request.url, 'http://localhost');
  const file = locate(pathname);
  if (request.method !== 'GET' || !file || !existsSync(file) || !statSync(file).isFile()) {
    response.writeHead(request.method === 'GET' ? 404 : 405, { 'Content-Type': 'text/plain' });
    response.end(`not found: ${pathname}\n`);
    return;
  }
  response.writeHead(200, {
    'Content-Type': TYPES[extname(file)] || 'application/octet-stream',
    'Cache-Control': 'no-store',
    // Cross-origin isolation lets onnxruntime-web use SharedArrayBuffer and several threads.
    'Cross-Origin-Opener-Policy': 'same-origin',
    'Cross-Origin-Embedder-Policy': 'require-corp',
  });
  createReadStream(file).pipe(response);
});

server.listen(Number(values.port), values.host, () => {
  const { address, port } = server.address();
  console.log(`serving http://${address}:${port}/ (model ${model})`);
});
for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => server.close(() => process.exit(0)));
