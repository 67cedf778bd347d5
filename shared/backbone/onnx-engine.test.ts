import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { pino } from 'pino';
import { loadModelInput, PAPER_FRAME_SPEC } from '../image/index.js';
import { defaultDatasetDir, defaultWeightsPath } from '../paths.js';
import { batchItem, nhwc, type NhwcTensor } from '../tensor.js';
import { readReference, relativeMaxError, REFERENCE_IMAGES, type ReferenceArray } from '../../test/helpers/reference.js';
import { BACKBONE_LAYERS, createBackbone } from './engine.js';
import { createOnnxBackbone, type OnnxBackbone } from './onnx-engine.js';
import { BACKBONE_OUTPUTS } from './resnet50.js';

const IMAGES = REFERENCE_IMAGES;
const SHAPES: Record<string, [number, number, number]> = {
  conv2_block3_out: [56, 56, 256],
  conv3_block4_out: [28, 28, 512],
  conv4_block6_out: [14, 14, 1024],
};

/** Collects the engine's log lines so tests can check what it says. */
function captureLogger(): { logger: pino.Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const logger = pino({ level: 'debug' }, { write: (s: string) => void lines.push(JSON.parse(s)) });
  return { logger, lines };
}



const log = captureLogger();
let engine: OnnxBackbone;
const inputs = new Map<string, NhwcTensor>();

before(async () => {
  engine = await createOnnxBackbone({ weightsPath: defaultWeightsPath(), logger: log.logger });
  for (const img of IMAGES) inputs.set(img, nhwc(readReference(img, 'input').data, 1, 224, 224, 3));
});
after(() => engine?.dispose());

test('block outputs match the independent reference within 1e-3 (both images)', async (t) => {
  assert.equal(engine.name, 'onnx');
  assert.equal(engine.backend, 'cpu');
  assert.ok(log.lines.some((l) => l.msg === 'onnx backbone ready' && l.provider === 'cpu'), 'logs the provider');
  for (const img of IMAGES) {
    const out = await engine.run(inputs.get(img)!, [...BACKBONE_LAYERS]);
    assert.deepEqual(Object.keys(out).sort(), [...BACKBONE_LAYERS].sort());
    for (const layer of BACKBONE_LAYERS) {
      const got = out[layer];
      assert.deepEqual([got.n, got.h, got.w, got.c], [1, ...SHAPES[layer]], `${img} ${layer} shape`);
      const err = relativeMaxError(got.data, readReference(img, layer as ReferenceArray).data);
      t.diagnostic(`${img} ${layer} relative error ${err.toExponential(2)}`);
      assert.ok(err <= 1e-3, `${img} ${layer}: relative error ${err} > 1e-3`);
    }
  }
});

test('a batch of 2 equals two batches of 1, and one session serves each layer set', async () => {
  const [a, b] = IMAGES.map((img) => inputs.get(img)!);
  const batch = new Float32Array(a.data.length * 2);
  batch.set(a.data, 0);
  batch.set(b.data, a.data.length);
  const layers = ['conv4_block6_out', 'conv3_block4_out'] as const;
  const both = await engine.run(nhwc(batch, 2, 224, 224, 3), [...layers]);
  // Same set, other order: must reuse the session built just above.
  const singles = [await engine.run(a, ['conv3_block4_out', 'conv4_block6_out']), await engine.run(b, [...layers])];
  for (const layer of layers) {
    assert.equal(both[layer].n, 2);
    for (let i = 0; i < 2; i++) {
      const err = relativeMaxError(batchItem(both[layer], i).data, singles[i][layer].data);
      assert.ok(err <= 1e-5, `${layer} item ${i}: batch vs single relative error ${err}`);
    }
  }
  const created = log.lines.filter((l) => l.msg === 'onnx session created').map((l) => l.layers);
  assert.deepEqual(created.sort(), ['conv2_block3_out,conv3_block4_out,conv4_block6_out', 'conv3_block4_out,conv4_block6_out']);
});

test('a batch item passed as a view into a larger buffer is read from its own offset', async () => {
  const [a, b] = IMAGES.map((img) => inputs.get(img)!);
  const batch = new Float32Array(a.data.length * 2);
  batch.set(a.data, 0);
  batch.set(b.data, a.data.length);
  const second = batchItem(nhwc(batch, 2, 224, 224, 3), 1);
  const out = await engine.run(second, ['conv4_block6_out']);
  const err = relativeMaxError(out.conv4_block6_out.data, readReference('test_broken_large_000', 'conv4_block6_out').data);
  assert.ok(err <= 1e-3, `relative error ${err}`);
});

test('parity with the TF.js engine on a real bottle image, at 224x224 and at 256x320', async (t) => {
  const image = join(defaultDatasetDir('bottle'), 'test', 'contamination', '000.png');
  const square = await loadModelInput(image, PAPER_FRAME_SPEC);
  const tfjs = await createBackbone({ engine: 'tfjs', weightsPath: defaultWeightsPath(), logger: pino({ level: 'silent' }) });
  try {
    const cases: Array<[string, NhwcTensor]> = [
      ['224x224', nhwc(square.input, 1, square.frame.height, square.frame.width, 3)],
    ];
    // A non-square input: the centre 256x320 of a 320x320 framing of the same image.
    const big = await loadModelInput(image, { resize: 320, crop: null });
    assert.deepEqual([big.frame.height, big.frame.width], [320, 320]);
    const cropped = new Float32Array(256 * 320 * 3);
    cropped.set(big.input.subarray(32 * 320 * 3, (32 + 256) * 320 * 3));
    cases.push(['256x320', nhwc(cropped, 1, 256, 320, 3)]);
    for (const [label, x] of cases) {
      const ours = await engine.run(x, [...BACKBONE_LAYERS]);
      const theirs = await tfjs.run(x, [...BACKBONE_LAYERS]);
      for (const layer of BACKBONE_LAYERS) {
        const { stride } = BACKBONE_OUTPUTS[layer];
        const o = ours[layer];
        assert.deepEqual([o.n, o.h, o.w, o.c], [1, x.h / stride, x.w / stride, SHAPES[layer][2]], `${label} ${layer} grid`);
        const err = relativeMaxError(o.data, theirs[layer].data);
        t.diagnostic(`${label} ${layer} onnx vs tfjs (${tfjs.backend}) relative error ${err.toExponential(2)}`);
        assert.ok(err <= 1e-3, `${label} ${layer}: onnx vs tfjs relative error ${err} > 1e-3`);
      }
    }
  } finally {
    tfjs.dispose();
  }
});

test('bad input and bad options get errors that name them', async () => {
  await assert.rejects(engine.run(nhwc(new Float32Array(224 * 224 * 4), 1, 224, 224, 4), ['conv2_block3_out']), /4 channels/);
  await assert.rejects(engine.run(nhwc(new Float32Array(200 * 224 * 3), 1, 200, 224, 3), ['conv2_block3_out']), /200x224/);
  await assert.rejects(engine.run(inputs.get(IMAGES[0])!, ['conv5_block3_out' as never]), /conv5_block3_out/);
  await assert.rejects(
    createOnnxBackbone({ weightsPath: defaultWeightsPath(), executionProviders: ['tpu'] }),
    /executionProviders: unsupported provider "tpu"/,
  );
  await assert.rejects(createOnnxBackbone({ weightsPath: defaultWeightsPath(), intraOpThreads: 0 }), /intraOpThreads/);
  await assert.rejects(createOnnxBackbone({ weightsPath: '/nonexistent/weights.h5' }), /weights\.h5" does not exist/);
});

test('asking for CUDA runs on CUDA, or on CPU with a log line saying why', async () => {
  const { logger, lines } = captureLogger();
  const gpu = await createOnnxBackbone({ weightsPath: defaultWeightsPath(), logger, executionProviders: ['cuda', 'cpu'] });
  try {
    assert.ok(gpu.backend === 'cuda' || gpu.backend === 'cpu');
    if (gpu.backend === 'cpu') {
      assert.ok(lines.some((l) => l.level === 40 && /cuda/.test(String(l.msg))), 'warns that CUDA is unavailable');
    }
    assert.ok(lines.some((l) => l.msg === 'onnx backbone ready' && l.provider === gpu.backend));
    const out = await gpu.run(inputs.get(IMAGES[0])!, ['conv2_block3_out']);
    assert.ok(relativeMaxError(out.conv2_block3_out.data, readReference('train_good_000', 'conv2_block3_out').data) <= 1e-3);
  } finally {
    gpu.dispose();
  }
  await assert.rejects(gpu.run(inputs.get(IMAGES[0])!, ['conv2_block3_out']), /disposed/);
});
