import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { loadTfRuntime } from '../backbone/tfjs-engine.js';
import { MODEL_FORMAT, MODEL_FORMAT_VERSION, readManifest, readModelMethod } from '../model/manifest.js';
import { parameterCount, type AutoencoderConfig } from './architecture.js';
import { loadAutoencoder } from './evaluate.js';
import {
  AUTOENCODER_WEIGHTS_FILE, readAutoencoderManifest, writeAutoencoderManifest, writeAutoencoderWeights,
  type AutoencoderManifest,
} from './manifest.js';
import { ConvAutoencoder } from './model.js';

const quiet = pino({ level: 'silent' });
const rt = await loadTfRuntime(quiet);
const tf = rt.tf;
const cfg: AutoencoderConfig = { inputSize: 32, encoderChannels: [8, 16], latentChannels: 4 };
const per = 32 * 32 * 3;
const images = Float32Array.from({ length: 3 * per }, (_, i) => (Math.sin(i * 0.37) + 1) / 2);

function manifestFor(weights: AutoencoderManifest['weights']): AutoencoderManifest {
  return {
    format: MODEL_FORMAT, version: MODEL_FORMAT_VERSION, method: 'autoencoder', createdAt: new Date().toISOString(),
    category: 'bottle', frame: { resize: 256, crop: 224 },
    architecture: { ...cfg, parameters: parameterCount(cfg) }, weights, scoring: { sigma: 4, imageScore: 'max' },
    training: {
      images: 3, skipped: [], epochs: 2, batchSize: 2, learningRate: 1e-3, seed: 5, loss: [0.1, 0.05], backend: rt.backend,
      timings_ms: { train: 1 }, peak_rss_mib: 1,
    },
  };
}

/** A trained model saved to a fresh folder; returns the folder and its reconstruction of `images`. */
async function savedModel(): Promise<{ dir: string; recon: Float32Array }> {
  const dir = mkdtempSync(join(tmpdir(), 'patchcore-ae-'));
  const model = ConvAutoencoder.create(tf, cfg, 5);
  try {
    await model.train(images, 3, { epochs: 2, batchSize: 2, learningRate: 1e-3, seed: 5 });
    writeAutoencoderManifest(dir, manifestFor(writeAutoencoderWeights(dir, await model.parameters())));
    return { dir, recon: await model.reconstruct(images, 3) };
  } finally {
    model.dispose();
  }
}

test('save then load: the loaded model reconstructs bit for bit like the trained one', async () => {
  const { dir, recon } = await savedModel();
  assert.equal(readFileSync(join(dir, AUTOENCODER_WEIGHTS_FILE)).length, parameterCount(cfg) * 4);
  assert.equal(readModelMethod(dir), 'autoencoder');
  const loaded = await loadAutoencoder(dir, quiet);
  try {
    assert.deepEqual(loaded.manifest.architecture.encoderChannels, [8, 16]);
    assert.equal(loaded.backend, rt.backend);
    assert.deepEqual(await loaded.model.reconstruct(images, 3), recon);
  } finally {
    loaded.model.dispose();
  }
});

test('damaged weights are refused: wrong size, then wrong content', async () => {
  const { dir } = await savedModel();
  const file = join(dir, AUTOENCODER_WEIGHTS_FILE);
  const bytes = readFileSync(file);
  writeFileSync(file, bytes.subarray(0, bytes.length - 4));
  await assert.rejects(loadAutoencoder(dir, quiet), new RegExp(`has ${bytes.length - 4} bytes, expected ${bytes.length} \\(${parameterCount(cfg)} float32 parameters\\)`));
  bytes[100] ^= 0xff;
  writeFileSync(file, bytes);
  await assert.rejects(loadAutoencoder(dir, quiet), /autoencoder weights ".*autoencoder.f32" \(sha256 [0-9a-f]{12}\.\.\.\) are not the ones the manifest names/);
});

test('each method refuses the other\'s folder by name; a manifest without a method is a PatchCore model', async () => {
  const { dir } = await savedModel();
  assert.throws(() => readManifest(dir), /model folder ".*" holds an autoencoder model \(manifest method "autoencoder"\), not a PatchCore model/);

  const legacy = mkdtempSync(join(tmpdir(), 'patchcore-legacy-'));
  writeFileSync(join(legacy, 'manifest.json'), JSON.stringify({ format: MODEL_FORMAT, version: 1, recipe: 'paper' }));
  assert.equal(readModelMethod(legacy), 'patchcore');
  assert.throws(() => readAutoencoderManifest(legacy), /holds a patchcore model \(manifest method "patchcore"\), not an autoencoder model/);

  writeFileSync(join(legacy, 'manifest.json'), JSON.stringify({ format: MODEL_FORMAT, version: 1, method: 'vae' }));
  assert.throws(() => readModelMethod(legacy), /names an unknown method "vae" \(known: patchcore, autoencoder\)/);

  const m = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8'));
  m.architecture.latentChannels = 5;
  writeFileSync(join(dir, 'manifest.json'), JSON.stringify(m));
  await assert.rejects(loadAutoencoder(dir, quiet), /manifest says \d+ parameters, its architecture has \d+/);
  delete m.weights;
  writeFileSync(join(dir, 'manifest.json'), JSON.stringify(m));
  assert.throws(() => readAutoencoderManifest(dir), /model manifest ".*manifest.json" is invalid at weights/);
});
