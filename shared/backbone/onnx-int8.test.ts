import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import { UserError } from '../errors.js';
import { defaultWeightsPath } from '../paths.js';
import { nhwc, type NhwcTensor } from '../tensor.js';
import { readReference } from '../../test/helpers/reference.js';
import { BACKBONE_LAYERS, createBackbone } from './engine.js';
import { createOnnxBackbone, type OnnxBackbone } from './onnx-engine.js';
import { activationTensors } from './quantize.js';
import { RESNET50_OPS } from './resnet50.js';

const logger = pino({ level: 'silent' });
const layers = [...BACKBONE_LAYERS];
let fp32: OnnxBackbone;
let int8: OnnxBackbone;
let good: NhwcTensor;
let defect: NhwcTensor;

/** ||a - b|| / ||b||. */
function relativeL2(a: Float32Array, b: Float32Array): number {
  let d2 = 0;
  let b2 = 0;
  for (let i = 0; i < b.length; i++) {
    d2 += (a[i] - b[i]) ** 2;
    b2 += b[i] ** 2;
  }
  return Math.sqrt(d2 / b2);
}

before(async () => {
  // Real bottle images (the reference inputs: a training image and a defect test image).
  good = nhwc(readReference('train_good_000', 'input').data, 1, 224, 224, 3);
  defect = nhwc(readReference('test_broken_large_000', 'input').data, 1, 224, 224, 3);
  fp32 = await createOnnxBackbone({ weightsPath: defaultWeightsPath(), logger });
  int8 = await createOnnxBackbone({ weightsPath: defaultWeightsPath(), logger, precision: 'int8', calibration: { images: [good] } });
});
after(() => {
  fp32?.dispose();
  int8?.dispose();
});

test('int8 calibrated on a training image stays close to fp32 on an unseen defect image, and is not fp32', async (t) => {
  assert.equal(int8.precision, 'int8');
  assert.equal(fp32.precision, 'fp32');
  assert.deepEqual(Object.keys(int8.activationRanges!).sort(), activationTensors(RESNET50_OPS).sort());
  const a = await fp32.run(defect, layers);
  const b = await int8.run(defect, layers);
  for (const layer of layers) {
    assert.deepEqual([b[layer].n, b[layer].h, b[layer].w, b[layer].c], [a[layer].n, a[layer].h, a[layer].w, a[layer].c]);
    const err = relativeL2(b[layer].data, a[layer].data);
    t.diagnostic(`${layer}: int8 relative L2 error ${err.toExponential(2)}`);
    // Measured about 0.08-0.10 on bottle and capsules (scripts/bench-backbone.ts); 0.2 leaves room.
    assert.ok(err < 0.2, `${layer}: relative error ${err} against fp32`);
    assert.ok(err > 1e-4, `${layer}: error ${err} is too small for 8-bit arithmetic`);
  }
});

test('recorded activation ranges rebuild the same int8 network (what scoring does with a model)', async () => {
  const again = await createBackbone({
    engine: 'onnx', weightsPath: defaultWeightsPath(), logger, precision: 'int8',
    calibration: { ranges: structuredClone(int8.activationRanges!) },
  });
  try {
    assert.equal(again.precision, 'int8');
    assert.deepEqual(again.activationRanges, int8.activationRanges);
    const a = await int8.run(defect, ['conv3_block4_out']);
    const b = await again.run(defect, ['conv3_block4_out']);
    assert.deepEqual(b.conv3_block4_out.data, a.conv3_block4_out.data);
  } finally {
    again.dispose();
  }
});

test('precision errors name the problem', async () => {
  const weightsPath = defaultWeightsPath();
  await assert.rejects(createOnnxBackbone({ weightsPath, logger, precision: 'int8' }), (err: Error) =>
    err instanceof UserError && /int8 needs calibration images/.test(err.message));
  await assert.rejects(createBackbone({ weightsPath, logger, precision: 'bf16' }), (err: Error) =>
    err instanceof UserError && /no bfloat16 Conv kernel/.test(err.message));
  await assert.rejects(createBackbone({ weightsPath, logger, precision: 'fp64' as never }), /precision "fp64" is unknown/);
  await assert.rejects(createBackbone({ engine: 'tfjs', weightsPath, logger, precision: 'int8', calibration: { images: [good] } }),
    /"int8" needs the onnx engine/);
  await assert.rejects(createOnnxBackbone({ weightsPath, logger, precision: 'int8', calibration: { images: [] } }),
    /at least one image batch/);
  await assert.rejects(createOnnxBackbone({ weightsPath, logger, precision: 'int8', calibration: { ranges: { input: [0, 1] } } }),
    /"conv1_relu" is undefined/);
});
