import { test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import { loadTfRuntime } from '../backbone/tfjs-engine.js';
import { SeededRandom } from '../coreset/random.js';
import { convWithGradient, upsample2WithGradient } from './conv.js';

const rt = await loadTfRuntime(pino({ level: 'silent' }));
const tf = rt.tf;

function randomArray(n: number, seed: number): Float32Array {
  const rng = new SeededRandom(seed);
  return Float32Array.from({ length: n }, () => rng.float() * 2 - 1);
}

/** Plain-loop valid convolution and the gradients of sum(y * g), for shapes small enough to loop over. */
function reference(x: Float32Array, xs: number[], w: Float32Array, ws: number[], g: Float32Array, stride: number) {
  const [b, h, wd, ci] = xs;
  const [kh, kw, , co] = ws;
  const oh = Math.floor((h - kh) / stride) + 1;
  const ow = Math.floor((wd - kw) / stride) + 1;
  const y = new Float32Array(b * oh * ow * co);
  const dx = new Float64Array(x.length);
  const dw = new Float64Array(w.length);
  for (let n = 0; n < b; n++) {
    for (let oy = 0; oy < oh; oy++) {
      for (let ox = 0; ox < ow; ox++) {
        for (let o = 0; o < co; o++) {
          const yi = ((n * oh + oy) * ow + ox) * co + o;
          let acc = 0;
          for (let ky = 0; ky < kh; ky++) {
            for (let kx = 0; kx < kw; kx++) {
              for (let c = 0; c < ci; c++) {
                const xi = ((n * h + oy * stride + ky) * wd + ox * stride + kx) * ci + c;
                const wi = ((ky * kw + kx) * ci + c) * co + o;
                acc += x[xi] * w[wi];
                dx[xi] += g[yi] * w[wi];
                dw[wi] += g[yi] * x[xi];
              }
            }
          }
          y[yi] = acc;
        }
      }
    }
  }
  return { y, dx, dw, outShape: [b, oh, ow, co] };
}

function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  let worst = 0;
  for (let i = 0; i < actual.length; i++) worst = Math.max(worst, Math.abs(actual[i] - expected[i]));
  assert.ok(worst < 1e-4, `${what}: max abs difference ${worst}`);
}

for (const c of [
  { name: '3x3 stride 1', xs: [2, 7, 6, 3], ws: [3, 3, 3, 4], stride: 1 },
  { name: '4x4 stride 2, even fit', xs: [2, 10, 10, 3], ws: [4, 4, 3, 5], stride: 2 },
  // (11 - 4) is odd: the last input row and column reach no output and get zero gradient.
  { name: '4x4 stride 2, odd fit', xs: [3, 11, 9, 2], ws: [4, 4, 2, 3], stride: 2 },
  { name: '1x1 stride 1', xs: [2, 4, 4, 5], ws: [1, 1, 5, 2], stride: 1 },
]) {
  test(`convWithGradient (${c.name}) matches a plain-loop convolution and its gradients on ${rt.backend}`, () => {
    const x = randomArray(c.xs.reduce((a, b) => a * b), 1);
    const w = randomArray(c.ws.reduce((a, b) => a * b), 2);
    const conv = convWithGradient(tf, c.stride);
    const ref0 = reference(x, c.xs, w, c.ws, new Float32Array(0), c.stride);
    const g = randomArray(ref0.y.length, 3);
    const ref = reference(x, c.xs, w, c.ws, g, c.stride);
    const xt = tf.tensor4d(x, c.xs as [number, number, number, number]);
    const wt = tf.tensor4d(w, c.ws as [number, number, number, number]);
    const gt = tf.tensor4d(g, ref.outShape as [number, number, number, number]);
    const y = conv(xt, wt);
    assert.deepEqual(y.shape, ref.outShape);
    assertClose(y.dataSync(), ref.y, 'output');
    const [dx, dw] = tf.grads((a, b) => tf.sum(tf.mul(conv(a as never, b as never), gt)))([xt, wt]);
    assert.deepEqual(dx.shape, c.xs);
    assert.deepEqual(dw.shape, c.ws);
    assertClose(dx.dataSync(), ref.dx, 'input gradient');
    assertClose(dw.dataSync(), ref.dw, 'kernel gradient');
    tf.dispose([xt, wt, gt, y, dx, dw]);
  });
}

test('upsample2WithGradient repeats each value 2x2 and sums the gradient over each block', () => {
  const up = upsample2WithGradient(tf);
  const x = tf.tensor4d([1, 2, 3, 4, 5, 6], [1, 2, 3, 1]);
  const y = up(x);
  assert.deepEqual(y.shape, [1, 4, 6, 1]);
  assert.deepEqual(Array.from(y.dataSync()), [1, 1, 2, 2, 3, 3, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 4, 4, 5, 5, 6, 6]);
  const g = tf.tensor4d(Float32Array.from({ length: 24 }, (_, i) => i), [1, 4, 6, 1]);
  const dx = tf.grad((a) => tf.sum(tf.mul(up(a as never), g)))(x);
  // Block (0, 0) holds gradient entries 0, 1, 6, 7.
  assert.deepEqual(Array.from(dx.dataSync()), [14, 22, 30, 62, 70, 78]);
  tf.dispose([x, y, g, dx]);
});

test('convWithGradient refuses a stride that is not a positive integer', () => {
  assert.throws(() => convWithGradient(tf, 0), /convolution stride must be a positive integer, got 0/);
});
