// Shared helpers of the distgan embedding kit, with no dependencies, for the browser and Node.js.
//
// A generator exported by `distgan export` takes `z` float32 [batch, z_dim] (and `label` int64
// [batch] when num_classes > 0) and returns `image` float32 [batch, C, H, W] in [-1, 1], or uint8
// [batch, H, W, C] when exported with --postprocess uint8. The description sits in the ONNX
// metadata and, for runtimes whose API cannot read it, in the .json file beside the .onnx file.

export const GRID_PADDING = 2; // pixels between tiles, as distgan's Python grids

/** Read the model description from the parsed .json file written beside the ONNX file. */
export function describeModel(sidecar) {
  const metadata = sidecar.onnx ? sidecar.onnx.metadata : sidecar;
  if (!metadata || metadata.z_dim === undefined) {
    throw new Error('the model description has no z_dim; export the model with distgan export');
  }
  const description = {
    kind: metadata.kind,
    zDim: Number(metadata.z_dim),
    numClasses: Number(metadata.num_classes || 0),
    classNames: JSON.parse(metadata.class_names || '[]'),
    sampleShape: JSON.parse(metadata.sample_shape),
    layout: metadata.layout,
    dtype: metadata.dtype || 'float32',
    output: metadata.output,
  };
  if (description.kind !== 'image') {
    throw new Error(`this kit draws images; the model generates ${description.kind}`);
  }
  return description;
}

/** Return a function that draws uniform numbers in [0, 1) from a 32-bit seed (the mulberry32 generator). */
export function uniformSource(seed) {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Draw standard normal latents float32 [n * zDim] with the Box-Muller transform.
 * The same seed gives the same latents here, but not the same as numpy's generator in Python.
 */
export function normalLatents(n, zDim, seed) {
  const uniform = uniformSource(seed);
  const z = new Float32Array(n * zDim);
  for (let i = 0; i < z.length; i += 2) {
    const radius = Math.sqrt(-2 * Math.log(1 - uniform()));
    const angle = 2 * Math.PI * uniform();
    z[i] = radius * Math.cos(angle);
    if (i + 1 < z.length) z[i + 1] = radius * Math.sin(angle);
  }
  return z;
}

/** Interpolate every row of latents a and b [n * zDim] spherically at t in [0, 1]. */
export function slerpRows(a, b, zDim, t) {
  const out = new Float32Array(a.length);
  for (let row = 0; row < a.length; row += zDim) {
    let dot = 0;
    let normA = 0;
    let normB = 0;
    for (let k = 0; k < zDim; k++) {
      dot += a[row + k] * b[row + k];
      normA += a[row + k] ** 2;
      normB += b[row + k] ** 2;
    }
    const angle = Math.acos(Math.min(1, Math.max(-1, dot / Math.sqrt(normA * normB))));
    const sine = Math.sin(angle);
    // Nearly parallel rows: the straight line is as good and avoids dividing by ~0.
    const weightA = sine < 1e-6 ? 1 - t : Math.sin((1 - t) * angle) / sine;
    const weightB = sine < 1e-6 ? t : Math.sin(t * angle) / sine;
    for (let k = 0; k < zDim; k++) out[row + k] = weightA * a[row + k] + weightB * b[row + k];
  }
  return out;
}

/** Round half to even, as numpy's rint does, so pixels match distgan's Python grids exactly. */
function roundHalfEven(value) {
  const rounded = Math.round(value);
  return Math.abs(value % 1) === 0.5 && rounded % 2 !== 0 ? rounded - 1 : rounded;
}

/**
 * Convert the output tensor's data to uint8 pixels [n, H, W, C].
 * Float NCHW values in [-1, 1] map to 0..255 with float32 arithmetic; uint8 NHWC data is returned as it is.
 */
export function toPixels(data, description) {
  if (description.dtype === 'uint8') return Uint8Array.from(data);
  const [channels, height, width] = description.sampleShape;
  const plane = height * width;
  const count = data.length / (channels * plane);
  const pixels = new Uint8Array(data.length);
  for (let n = 0; n < count; n++) {
    for (let c = 0; c < channels; c++) {
      for (let p = 0; p < plane; p++) {
        const value = Math.fround(Math.fround(data[(n * channels + c) * plane + p] + 1) * 127.5);
        pixels[(n * plane + p) * channels + c] = Math.min(255, Math.max(0, roundHalfEven(value)));
      }
    }
  }
  return pixels;
}

/** Return [height, width, channels] of one image of the model's output. */
export function imageSize(description) {
  const shape = description.sampleShape;
  return description.layout === 'NHWC' ? shape : [shape[1], shape[2], shape[0]];
}

/**
 * Arrange uint8 images [n, H, W, C] in a grid of RGBA pixels on a black background.
 * Returns {width, height, rgba}; grayscale images are copied into R, G and B.
 */
export function tileGrid(pixels, count, description, columns = Math.ceil(Math.sqrt(count))) {
  const [height, width, channels] = imageSize(description);
  const rows = Math.ceil(count / columns);
  const gridWidth = columns * (width + GRID_PADDING) + GRID_PADDING;
  const gridHeight = rows * (height + GRID_PADDING) + GRID_PADDING;
  const rgba = new Uint8ClampedArray(gridWidth * gridHeight * 4);
  for (let i = 3; i < rgba.length; i += 4) rgba[i] = 255;
  for (let n = 0; n < count; n++) {
    const top = GRID_PADDING + Math.floor(n / columns) * (height + GRID_PADDING);
    const left = GRID_PADDING + (n % columns) * (width + GRID_PADDING);
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        const source = ((n * height + y) * width + x) * channels;
        const target = ((top + y) * gridWidth + left + x) * 4;
        for (let c = 0; c < 3; c++) rgba[target + c] = pixels[source + (channels === 1 ? 0 : c)];
      }
    }
  }
  return { width: gridWidth, height: gridHeight, rgba };
}

/** Build the feeds of one run: z, and label for a conditional model (one class for all rows, or cycling). */
export function makeFeeds(ort, z, count, description, label = null) {
  const feeds = { z: new ort.Tensor('float32', z, [count, description.zDim]) };
  if (label !== null && description.numClasses === 0) {
    throw new Error('this generator is unconditional and takes no label');
  }
  if (label !== null && !(Number.isInteger(label) && label >= 0 && label < description.numClasses)) {
    throw new Error(`label ${label} is out of range; use 0 to ${description.numClasses - 1}`);
  }
  if (description.numClasses > 0) {
    const labels = new BigInt64Array(count);
    for (let i = 0; i < count; i++) labels[i] = BigInt(label === null ? i % description.numClasses : label);
    feeds.label = new ort.Tensor('int64', labels, [count]);
  }
  return feeds;
}
