import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { pino } from 'pino';
import { loadTfRuntime } from '../backbone/tfjs-engine.js';
import { DEFAULT_FRAME_SPEC, decodeImage } from '../image/index.js';
import { defaultDatasetDir } from '../paths.js';
import {
  DEFAULT_AUTOENCODER_CONFIG, checkConfig, initialParameters, layerSpecs, parameterCount, parameterSpecs,
} from './architecture.js';
import { ConvAutoencoder } from './model.js';
import { toAutoencoderInput } from './preprocess.js';

const rt = await loadTfRuntime(pino({ level: 'silent' }));
const tf = rt.tf;
const cfg = DEFAULT_AUTOENCODER_CONFIG;
const size = cfg.inputSize;
const per = size * size * 3;

// Four real normal bottles, framed like the model input (256 resize, 224 crop) and brought to 128x128.
const trainDir = join(defaultDatasetDir('bottle'), 'train/good');
const files = readdirSync(trainDir).sort().slice(0, 4);
const bottles = new Float32Array(files.length * per);
for (let i = 0; i < files.length; i++) {
  const img = await decodeImage(readFileSync(join(trainDir, files[i])), files[i]);
  bottles.set(toAutoencoderInput(img, DEFAULT_FRAME_SPEC, size).input, i * per);
}

test('architecture: 4 halving levels down to 8x8, mirrored decoder, kernel and bias per layer', () => {
  const layers = layerSpecs(cfg);
  assert.deepEqual(layers.map((l) => l.name), ['enc1', 'enc2', 'enc3', 'enc4', 'code', 'uncode', 'dec1', 'dec2', 'dec3', 'out']);
  assert.deepEqual(layers.map((l) => l.outChannels), [32, 64, 128, 128, 16, 128, 128, 64, 32, 3]);
  const specs = parameterSpecs(cfg);
  assert.equal(specs.length, 20);
  assert.deepEqual(specs[0], { name: 'enc1/kernel', shape: [4, 4, 3, 32] });
  assert.deepEqual(specs[19], { name: 'out/bias', shape: [3] });
  assert.equal(parameterCount(cfg), specs.reduce((s, p) => s + p.shape.reduce((a, b) => a * b, 1), 0));
  assert.throws(() => checkConfig({ ...cfg, inputSize: 120 }), /inputSize 120 is not divisible by 2\^4/);
  assert.throws(() => checkConfig({ ...cfg, encoderChannels: [] }), /1 to 6 levels, got 0/);
});

test('forward: [n, 128, 128, 3] in, the same shape out, values strictly inside (0, 1)', async () => {
  const model = ConvAutoencoder.create(tf, cfg, 0);
  try {
    const out = await model.reconstruct(bottles.subarray(0, 2 * per), 2);
    assert.equal(out.length, 2 * per);
    assert.ok(out.every((v) => v > 0 && v < 1));
    const x = tf.zeros([1, 64, 64, 3]) as import('@tensorflow/tfjs').Tensor4D;
    assert.throws(() => model.forward(x), /autoencoder input must be \[n, 128, 128, 3\], got \[1, 64, 64, 3\]/);
    x.dispose();
    await assert.rejects(model.reconstruct(bottles, 3), /got 196608 values, expected 3x128x128x3/);
  } finally {
    model.dispose();
  }
});

test('the seed decides the initial weights and the training: same seed, same bits; another seed, other weights', async () => {
  const a = initialParameters(cfg, 7);
  assert.deepEqual(initialParameters(cfg, 7), a);
  assert.notDeepEqual(initialParameters(cfg, 8)[0], a[0]);
  // He-uniform bound for enc1: sqrt(6 / (4*4*3)).
  const bound = Math.sqrt(6 / 48);
  assert.ok(a[0].every((v) => Math.abs(v) <= bound) && a[0].some((v) => Math.abs(v) > bound * 0.9));
  assert.ok(a[1].every((v) => v === 0));

  const run = async (seed: number) => {
    const m = ConvAutoencoder.create(tf, cfg, seed);
    try {
      const loss = await m.train(bottles, files.length, { epochs: 2, batchSize: 2, learningRate: 1e-3, seed });
      return { loss, params: await m.parameters() };
    } finally {
      m.dispose();
    }
  };
  const first = await run(3);
  const second = await run(3);
  assert.deepEqual(second.loss, first.loss);
  second.params.forEach((p, i) => assert.deepEqual(p, first.params[i], `parameter ${parameterSpecs(cfg)[i].name}`));
  const other = await run(4);
  assert.notDeepEqual(other.params[0], first.params[0]);
});

test('training on real bottles lowers the reconstruction loss, epoch after epoch', async () => {
  const tensorsBefore = tf.memory().numTensors;
  const model = ConvAutoencoder.create(tf, cfg, 0);
  try {
    const x = tf.tensor4d(bottles, [files.length, size, size, 3]);
    const probe = model.loss(x);
    const before = (await probe.data())[0];
    tf.dispose([x, probe]);
    const loss = await model.train(bottles, files.length, { epochs: 4, batchSize: 2, learningRate: 1e-3, seed: 0 });
    assert.equal(loss.length, 4);
    assert.ok(loss.every((l) => Number.isFinite(l) && l > 0));
    for (let i = 1; i < loss.length; i++) assert.ok(loss[i] < loss[i - 1], `epoch losses ${loss.join(', ')}`);
    assert.ok(loss[3] < 0.5 * before, `loss ${loss[3]} vs ${before} before training`);
    assert.equal(tf.memory().numTensors - tensorsBefore, 20, 'only the 20 parameters stay allocated after training');
  } finally {
    model.dispose();
  }
});

test('training refuses bad settings by name', async () => {
  const model = ConvAutoencoder.create(tf, cfg, 0);
  try {
    const opts = { epochs: 1, batchSize: 2, learningRate: 1e-3, seed: 0 };
    await assert.rejects(model.train(bottles, 5, opts), /got 196608 values for 5 images of 128x128x3/);
    await assert.rejects(model.train(bottles, 4, { ...opts, epochs: 0 }), /epochs must be a positive integer, got 0/);
    await assert.rejects(model.train(bottles, 4, { ...opts, learningRate: -1 }), /learning rate must be positive, got -1/);
  } finally {
    model.dispose();
  }
  await assert.rejects(model.parameters(), /autoencoder model was disposed/);
});
