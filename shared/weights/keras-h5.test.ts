import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import h5wasm from 'h5wasm/node';
import { defaultDatasetDir, sharedDir } from '../paths.js';
import { KerasWeights } from './keras-h5.js';

const SHARED_WEIGHTS = join(sharedDir(), 'weights', 'resnet50_imagenet_keras_conv1-conv4.h5');
const SHARED_SHA256 = '570e1bfca26ed46e5f1c0f872da76df005755b56a74f34bfd29a687adc836d41';
const tmp = mkdtempSync(join(tmpdir(), 'keras-h5-test-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

test('reads the shared ResNet-50 weights by layer name', async () => {
  const w = await KerasWeights.open(SHARED_WEIGHTS);
  try {
    assert.equal(w.sha256, SHARED_SHA256);
    const layers = w.layerNames();
    assert.equal(layers.length, 86);
    assert.equal(layers[0], 'conv1_conv');
    assert.equal(layers[1], 'conv1_bn');
    assert.equal(layers.at(-1), 'conv4_block6_3_bn');
    const kernel = w.get('conv1_conv', 'kernel', [7, 7, 3, 64]);
    assert.equal(kernel.length, 7 * 7 * 3 * 64);
    assert.ok(kernel.some((v) => v !== 0) && kernel.every(Number.isFinite));
    const variance = w.get('conv4_block6_3_bn', 'moving_variance', [1024]);
    assert.ok(variance.every((v) => v > 0), 'BN variances are positive');
    assert.deepEqual(w.shape('conv3_block1_0_conv', 'kernel'), [1, 1, 256, 512]);
    // Each call returns a private copy.
    w.get('conv1_conv', 'bias')[0] = 1e9;
    assert.notEqual(w.get('conv1_conv', 'bias')[0], 1e9);
  } finally {
    w.close();
  }
});

test('a missing layer is named, with the layers the file has', async () => {
  const w = await KerasWeights.open(SHARED_WEIGHTS);
  try {
    assert.throws(
      () => w.get('conv5_block1_1_conv', 'kernel'),
      (err: Error) => {
        assert.match(err.message, /^weights file ".*resnet50_imagenet_keras_conv1-conv4\.h5" has no layer "conv5_block1_1_conv"; it has 86 layers: /);
        assert.match(err.message, /conv1_conv, conv1_bn, .*, \.\.\., .*conv4_block6_3_bn$/);
        return true;
      },
    );
    assert.throws(() => w.get('conv1_bn', 'kernel'), {
      message: /^layer conv1_bn in weights file ".*" has no weight "kernel" \(it has .*moving_variance.*\)$/,
    });
  } finally {
    w.close();
  }
});

test('a shape mismatch names layer, weight and both shapes', async () => {
  const w = await KerasWeights.open(SHARED_WEIGHTS);
  try {
    assert.throws(() => w.get('conv2_block1_1_conv', 'kernel', [1, 1, 64, 32]), {
      message: 'layer conv2_block1_1_conv kernel has shape [1,1,64,64], expected [1,1,64,32]',
    });
    assert.throws(() => w.get('conv2_block1_1_bn', 'gamma', [32]), {
      message: 'layer conv2_block1_1_bn gamma has shape [64], expected [32]',
    });
  } finally {
    w.close();
  }
});

test('a missing file and a non-HDF5 file are rejected with the path', async () => {
  const missing = join(tmp, 'nope.h5');
  await assert.rejects(KerasWeights.open(missing), { message: `weights file "${missing}" does not exist` });
  const png = join(tmp, 'image.h5');
  copyFileSync(join(defaultDatasetDir('bottle'), 'train', 'good', '000.png'), png);
  await assert.rejects(KerasWeights.open(png), { message: `weights file "${png}" is not an HDF5 file` });
  await assert.rejects(KerasWeights.open(tmp), { message: `weights file "${tmp}" is not a file` });
});

test('accepts other save_weights spellings: no ":0", extra nesting, weightless and conv5 layers', async () => {
  const path = join(tmp, 'variant.h5');
  await h5wasm.ready;
  const f = new h5wasm.File(path, 'w');
  const kernel = Float32Array.from({ length: 2 * 2 * 3 }, (_, i) => i);
  f.create_group('input_1');
  f.create_group('conv1_pad');
  // h5wasm creates one group level per call.
  const groups = (path: string) => path.split('/').forEach((_, i, parts) => f.create_group(parts.slice(0, i + 1).join('/')));
  groups('conv1_conv/conv1_conv');
  f.create_dataset({ name: 'conv1_conv/conv1_conv/kernel', data: kernel, shape: [1, 1, 3, 4] });
  f.create_dataset({ name: 'conv1_conv/conv1_conv/bias', data: new Float32Array([1, 2, 3, 4]), shape: [4] });
  groups('conv1_bn/model/conv1_bn');
  for (const name of ['gamma', 'beta', 'moving_mean', 'moving_variance']) {
    f.create_dataset({ name: `conv1_bn/model/conv1_bn/${name}:0`, data: new Float64Array([0.5, 1.5]), shape: [2] });
  }
  groups('conv5_block3_3_bn/conv5_block3_3_bn');
  f.create_dataset({ name: 'conv5_block3_3_bn/conv5_block3_3_bn/gamma:0', data: new Float32Array([1]), shape: [1] });
  f.create_attribute('layer_names', ['input_1', 'conv1_pad', 'conv1_conv', 'conv1_bn', 'conv5_block3_3_bn']);
  f.close();

  const w = await KerasWeights.open(path);
  try {
    assert.deepEqual(w.layerNames(), ['conv1_conv', 'conv1_bn', 'conv5_block3_3_bn']);
    assert.deepEqual([...w.get('conv1_conv', 'kernel', [1, 1, 3, 4])], [...kernel]);
    assert.deepEqual([...w.get('conv1_conv', 'bias', [4])], [1, 2, 3, 4]);
    const variance = w.get('conv1_bn', 'moving_variance', [2]);
    assert.ok(variance instanceof Float32Array);
    assert.deepEqual([...variance], [0.5, 1.5]);
    assert.throws(() => w.get('conv1_pad', 'kernel'), /has no layer "conv1_pad"/);
  } finally {
    w.close();
  }
});
