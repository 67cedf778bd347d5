import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  RangeCollector,
  activationTensors,
  assertActivationRanges,
  quantizeBias,
  quantizeWeightsPerChannel,
  uint8Params,
} from './quantize.js';
import { opsUpTo } from './resnet50.js';
import { calibrationBatches } from './calibration.js';

test('uint8 parameters cover the range, keep 0 exact, and give a ReLU range zero point 0', () => {
  const relu = uint8Params([0, 25.5]);
  assert.deepEqual(relu, { scale: 0.1, zeroPoint: 0 });
  const signed = uint8Params([-10, 15.5]);
  assert.equal(signed.zeroPoint, 100);
  assert.ok(Math.abs(signed.scale - 0.1) < 1e-12);
  // A range away from 0 is widened to contain it.
  assert.deepEqual(uint8Params([2, 25.5]), { scale: 0.1, zeroPoint: 0 });
  assert.equal(uint8Params([0, 0]).scale, 1);
});

test('weights quantise per output channel within half a step, biases in units of input x weight scale', () => {
  // Two output channels of 4 values each (OIHW: output-major), very different magnitudes.
  const w = Float32Array.from([0.5, -1, 0.25, 0.1, 100, -49, 3, 0]);
  const { values, scales } = quantizeWeightsPerChannel(w, 2);
  assert.deepEqual([...scales].map((s) => Math.fround(s)), [Math.fround(1 / 127), Math.fround(100 / 127)]);
  assert.equal(values[1], -127);
  assert.equal(values[4], 127);
  for (let i = 0; i < w.length; i++) {
    const scale = scales[Math.floor(i / 4)];
    assert.ok(Math.abs(values[i] * scale - w[i]) <= scale / 2 + 1e-6, `weight ${i}`);
  }
  const b = quantizeBias(Float32Array.from([1, -2]), 0.5, scales);
  assert.equal(b.values[0], Math.round(1 / (0.5 * scales[0])));
  assert.equal(b.values[1], Math.round(-2 / (0.5 * scales[1])));
  assert.throws(() => quantizeWeightsPerChannel(w, 3), /8 values does not split into 3/);
});

test('the range collector gives extremes (minmax) or clips the rare tails (percentile)', () => {
  const values = new Float32Array(100_001);
  for (let i = 0; i < values.length; i++) values[i] = (i % 1000) / 1000; // [0, 0.999]
  values[500] = 50; // one outlier
  const minmax = new RangeCollector('minmax');
  minmax.add('x', values);
  minmax.add('x', Float32Array.from([-1]));
  assert.deepEqual(minmax.ranges().x, [-1, 50]);
  const pct = new RangeCollector('percentile', 99.9);
  pct.add('x', values);
  const [lo, hi] = pct.ranges().x;
  assert.equal(lo, 0);
  assert.ok(hi > 0.99 && hi < 1, `upper bound ${hi} clips the outlier`);
  assert.throws(() => minmax.add('y', Float32Array.from([NaN])), /"y" has no finite values/);
  assert.throws(() => new RangeCollector('entropy' as never), /calibration method "entropy"/);
});

test('activation ranges must cover every tensor of the network with ordered bounds', () => {
  const ops = opsUpTo(['conv2_block3_out']);
  const names = activationTensors(ops);
  assert.equal(names[0], 'input');
  assert.equal(names.at(-1), 'conv2_block3_out');
  const ranges = Object.fromEntries(names.map((n) => [n, [0, 1] as [number, number]]));
  assert.doesNotThrow(() => assertActivationRanges(ranges, ops));
  const { conv2_block1_2_relu: _, ...missing } = ranges;
  assert.throws(() => assertActivationRanges(missing, ops), /"conv2_block1_2_relu" is undefined/);
  assert.throws(() => assertActivationRanges({ ...ranges, pool1_pool: [2, 1] }, ops), /"pool1_pool" is \[2,1\]/);
});

test('calibration images stack into batches of one size', () => {
  const img = (w: number, h: number, v: number) => ({ input: new Float32Array(w * h * 3).fill(v), frame: { width: w, height: h } });
  const batches = calibrationBatches([img(16, 16, 1), img(16, 16, 2), img(16, 16, 3), img(32, 16, 4)], 2);
  assert.deepEqual(batches.map((b) => [b.n, b.h, b.w]), [[2, 16, 16], [1, 16, 16], [1, 16, 32]]);
  assert.equal(batches[0].data[16 * 16 * 3], 2);
  assert.throws(() => calibrationBatches([{ input: new Float32Array(5), frame: { width: 16, height: 16 } }]), /calibration image 0 has 5 values/);
});
