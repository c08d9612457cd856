// Read numpy .npy files in Node.js, so latents saved by Python drive the JavaScript kits.

import { readFileSync } from 'node:fs';

/** Parse a numpy .npy file of little-endian float32 values in C order; return {data, shape}. */
export function readNpyFloat32(path) {
  const bytes = readFileSync(path);
  if (bytes.toString('latin1', 0, 6) !== '\x93NUMPY') throw new Error(`${path} is not a .npy file`);
  const major = bytes[6];
  const headerLength = major === 1 ? bytes.readUInt16LE(8) : bytes.readUInt32LE(8);
  const headerStart = major === 1 ? 10 : 12;
  const header = bytes.toString('latin1', headerStart, headerStart + headerLength);
  if (!/'descr':\s*'<f4'/.test(header)) throw new Error(`${path} must hold float32 values ('<f4'), header: ${header.trim()}`);
  if (/'fortran_order':\s*True/.test(header)) throw new Error(`${path} is in Fortran order; save a C-ordered array`);
  const shape = header.match(/'shape':\s*\(([^)]*)\)/)[1].split(',').filter((s) => s.trim()).map(Number);
  const offset = headerStart + headerLength;
  const data = new Float32Array(bytes.buffer.slice(bytes.byteOffset + offset, bytes.byteOffset + bytes.length));
  return { data, shape };
}
