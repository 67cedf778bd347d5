import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { availableParallelism } from 'node:os';
import { pino } from 'pino';
import { defaultWeightsPath } from '../paths.js';
import { batchItem, nhwc, type NhwcTensor } from '../tensor.js';
import { readReference, relativeMaxError, REFERENCE_IMAGES, type ReferenceArray } from '../../test/helpers/reference.js';
import { BACKBONE_LAYERS, createBackbone, type BackboneEngine } from './engine.js';
import { loadTfRuntime } from './tfjs-engine.js';

const logger = pino({ level: 'silent' });
const IMAGES = REFERENCE_IMAGES;
const SHAPES: Record<string, [number, number, number]> = {
  conv2_block3_out: [56, 56, 256],
  conv3_block4_out: [28, 28, 512],
  conv4_block6_out: [14, 14, 1024],
};



let engine: BackboneEngine;
const inputs = new Map<string, NhwcTensor>();

before(async () => {
  engine = await createBackbone({ engine: 'tfjs', weightsPath: defaultWeightsPath(), logger });
  for (const img of IMAGES) inputs.set(img, nhwc(readReference(img, 'input').data, 1, 224, 224, 3));
});
after(() => engine?.dispose());

test('block outputs match the independent reference within 1e-3 (both images)', async (t) => {
  assert.equal(engine.name, 'tfjs');
  const rt = await loadTfRuntime(logger);
  t.diagnostic(`backend ${rt.backend} ${rt.wasmBuild ?? ''} threads ${rt.threads ?? '-'}`);
  if (rt.backend === 'wasm' && availableParallelism() > 1 && !process.env.PATCHCORE_TFJS_THREADS) {
    // The threaded build needs shims (wasm-threads.ts); a silent fallback would halve the speed.
    assert.equal(rt.wasmBuild, 'threaded-simd');
    assert.ok(rt.threads! > 1);
  }
  for (const img of IMAGES) {
    const out = await engine.run(inputs.get(img)!, [...BACKBONE_LAYERS]);
    assert.deepEqual(Object.keys(out).sort(), [...BACKBONE_LAYERS].sort());
    for (const layer of BACKBONE_LAYERS) {
      const got = out[layer];
      assert.deepEqual([got.n, got.h, got.w, got.c], [1, ...SHAPES[layer]], `${img} ${layer} shape`);
      const err = relativeMaxError(got.data, readReference(img, layer as ReferenceArray).data);
      t.diagnostic(`${img} ${layer}: max|a-b|/max|b| = ${err.toExponential(2)}`);
      assert.ok(err <= 1e-3, `${img} ${layer}: relative error ${err}`);
    }
  }
});

test('each item of a batch matches its own reference', async () => {
  const [a, b] = IMAGES.map((img) => inputs.get(img)!);
  const batch = new Float32Array(a.data.length * 2);
  batch.set(a.data, 0);
  batch.set(b.data, a.data.length);
  const out = await engine.run(nhwc(batch, 2, 224, 224, 3), ['conv3_block4_out']);
  assert.deepEqual(Object.keys(out), ['conv3_block4_out']);
  const got = out.conv3_block4_out;
  assert.equal(got.n, 2);
  for (const [i, img] of IMAGES.entries()) {
    const err = relativeMaxError(batchItem(got, i).data, readReference(img, 'conv3_block4_out').data);
    assert.ok(err <= 1e-3, `batch item ${i} (${img}): relative error ${err}`);
  }
});

test('any size divisible by 16 works; only requested layers come back', async () => {
  const x = nhwc(Float32Array.from({ length: 64 * 96 * 3 }, (_, i) => ((i * 7919) % 255) - 120), 1, 64, 96, 3);
  const out = await engine.run(x, ['conv2_block3_out', 'conv4_block6_out']);
  assert.deepEqual(Object.keys(out), ['conv2_block3_out', 'conv4_block6_out']);
  assert.deepEqual([out.conv2_block3_out.h, out.conv2_block3_out.w, out.conv2_block3_out.c], [16, 24, 256]);
  assert.deepEqual([out.conv4_block6_out.h, out.conv4_block6_out.w, out.conv4_block6_out.c], [4, 6, 1024]);
  assert.ok(out.conv4_block6_out.data.every((v) => v >= 0 && Number.isFinite(v)), 'block outputs are ReLU outputs');
});

test('no tensor outlives a run; dispose frees the weights', async () => {
  const { tf } = await loadTfRuntime(logger);
  const before = tf.memory().numTensors;
  await engine.run(inputs.get(IMAGES[0])!, ['conv2_block3_out', 'conv3_block4_out']);
  assert.equal(tf.memory().numTensors, before, 'tensors after run');
  await assert.rejects(engine.run(inputs.get(IMAGES[0])!, ['conv9_block1_out' as never]), /unknown backbone layer/);
  assert.equal(tf.memory().numTensors, before, 'tensors after a rejected run');

  const second = await createBackbone({ engine: 'tfjs', weightsPath: defaultWeightsPath(), logger });
  assert.equal(tf.memory().numTensors, before + 43 * 2, 'one kernel and one bias per conv');
  second.dispose();
  assert.equal(tf.memory().numTensors, before, 'tensors after dispose');
  await assert.rejects(second.run(inputs.get(IMAGES[0])!, ['conv2_block3_out']), /disposed/);
});

test('bad input is rejected with what is wrong', async () => {
  const run = (n: number, h: number, w: number, c: number) =>
    engine.run(nhwc(new Float32Array(n * h * w * c), n, h, w, c), ['conv2_block3_out']);
  await assert.rejects(run(1, 32, 32, 1), { message: 'backbone input has 1 channels, expected 3 (BGR)' });
  await assert.rejects(run(1, 40, 32, 3), {
    message: 'backbone input is 40x32; height and width must be positive multiples of 16',
  });
  await assert.rejects(
    engine.run({ data: new Float32Array(10), n: 1, h: 16, w: 16, c: 3 }, ['conv2_block3_out']),
    { message: 'backbone input has 10 values, expected 1x16x16x3' },
  );
  await assert.rejects(
    createBackbone({ engine: 'tfjs', weightsPath: '/nonexistent/weights.h5', logger }),
    { message: 'weights file "/nonexistent/weights.h5" does not exist' },
  );
});
