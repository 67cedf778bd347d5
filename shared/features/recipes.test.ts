import { test } from 'node:test';
import assert from 'node:assert/strict';
import { getRecipe } from './recipes.js';
import { resizeBilinearHwc } from './interpolate.js';
import { nhwc, type NhwcTensor } from '../tensor.js';
import { readReference, relativeMaxError, REFERENCE_IMAGES } from '../../test/helpers/reference.js';

test('paper recipe matches the reference patch features from the reference block outputs', () => {
  const paper = getRecipe('paper');
  for (const img of REFERENCE_IMAGES) {
    const maps = {
      conv3_block4_out: readReference(img, 'conv3_block4_out'),
      conv4_block6_out: readReference(img, 'conv4_block6_out'),
    };
    const f = paper.embed(maps, 0);
    const expected = readReference(img, 'patchcore_features');
    assert.deepEqual([f.gridH, f.gridW, f.dim], [expected.h, expected.w, expected.c]);
    const err = relativeMaxError(f.data, expected.data);
    assert.ok(err <= 1e-5, `${img}: relative max error ${err}`);
  }
});

function adaptivePool1d(v: Float64Array, outLen: number): Float64Array {
  const out = new Float64Array(outLen);
  const n = v.length;
  for (let i = 0; i < outLen; i++) {
    const lo = Math.floor((i * n) / outLen);
    const hi = Math.ceil(((i + 1) * n) / outLen);
    let s = 0;
    for (let j = lo; j < hi; j++) s += v[j];
    out[i] = s / (hi - lo);
  }
  return out;
}

/** The authors' four steps literally (unfold, upsample the unfolded conv4 maps, pool, pool), slow but plain. */
function officialEmbedding(l3: NhwcTensor, l4: NhwcTensor): Float64Array {
  const unfold = (t: NhwcTensor): Float32Array => {
    const out = new Float32Array(t.h * t.w * t.c * 9);
    for (let y = 0; y < t.h; y++) for (let x = 0; x < t.w; x++) for (let c = 0; c < t.c; c++)
      for (let dy = 0; dy < 3; dy++) for (let dx = 0; dx < 3; dx++) {
        const yy = y + dy - 1, xx = x + dx - 1;
        const v = yy < 0 || xx < 0 || yy >= t.h || xx >= t.w ? 0 : t.data[(yy * t.w + xx) * t.c + c];
        out[(y * t.w + x) * t.c * 9 + c * 9 + dy * 3 + dx] = v;
      }
    return out;
  };
  const u3 = unfold(l3);
  const u4 = resizeBilinearHwc(unfold(l4), l4.h, l4.w, l4.c * 9, l3.h, l3.w);
  const out = new Float64Array(l3.h * l3.w * 1024);
  for (let p = 0; p < l3.h * l3.w; p++) {
    const a = adaptivePool1d(Float64Array.from(u3.subarray(p * l3.c * 9, (p + 1) * l3.c * 9)), 1024);
    const b = adaptivePool1d(Float64Array.from(u4.subarray(p * l4.c * 9, (p + 1) * l4.c * 9)), 1024);
    const both = new Float64Array(2048);
    both.set(a, 0);
    both.set(b, 1024);
    out.set(adaptivePool1d(both, 1024), p * 1024);
  }
  return out;
}

test('paper recipe equals the literal unfold/upsample/pool steps on random maps', () => {
  let state = 12345;
  const rand = () => ((state = (state * 1103515245 + 12345) % 2147483648) / 2147483648) * 4 - 1;
  const l3 = nhwc(Float32Array.from({ length: 6 * 6 * 512 }, rand), 1, 6, 6, 512);
  const l4 = nhwc(Float32Array.from({ length: 3 * 3 * 1024 }, rand), 1, 3, 3, 1024);
  const f = getRecipe('paper').embed({ conv3_block4_out: l3, conv4_block6_out: l4 }, 0);
  const expected = officialEmbedding(l3, l4);
  let maxDiff = 0;
  for (let i = 0; i < expected.length; i++) maxDiff = Math.max(maxDiff, Math.abs(f.data[i] - expected[i]));
  assert.ok(maxDiff < 1e-5, `max difference ${maxDiff}`);
});

test('seed recipe concatenates conv2, conv3, conv4 resized to 64x64', () => {
  const constant = (h: number, c: number, v: number) => nhwc(new Float32Array(h * h * c).fill(v), 1, h, h, c);
  const f = getRecipe('seed').embed(
    { conv2_block3_out: constant(56, 256, 1), conv3_block4_out: constant(28, 512, 2), conv4_block6_out: constant(14, 1024, 3) },
    0,
  );
  assert.deepEqual([f.gridH, f.gridW, f.dim], [64, 64, 1792]);
  const row = f.data.subarray(1792 * 100, 1792 * 101);
  assert.equal(row[0], 1);
  assert.equal(row[255], 1);
  assert.equal(row[256], 2);
  assert.equal(row[767], 2);
  assert.equal(row[768], 3);
  assert.equal(row[1791], 3);
});

test('bilinear resize follows align_corners=False: 2 -> 4 samples', () => {
  // out positions map to src 0.5*(o+0.5)-0.5 = -0.25 (clamped to 0), 0.25, 0.75, 1.25 (clamped to index 1).
  const out = resizeBilinearHwc(Float32Array.from([0, 4]), 1, 2, 1, 1, 4);
  assert.deepEqual(Array.from(out), [0, 1, 3, 4]);
});

test('unknown recipe and missing layers are clear errors', () => {
  assert.throws(() => getRecipe('fancy'), /unknown feature recipe "fancy": expected one of paper, seed/);
  assert.throws(() => getRecipe('paper').embed({}, 0), /backbone output conv3_block4_out is missing/);
});
