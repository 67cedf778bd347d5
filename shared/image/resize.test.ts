import { test } from 'node:test';
import assert from 'node:assert/strict';
import { resizeBilinear } from './resize.js';

function assertClose(actual: Float32Array, expected: number[], tol = 1e-5): void {
  assert.equal(actual.length, expected.length);
  for (let i = 0; i < expected.length; i++) {
    assert.ok(Math.abs(actual[i] - expected[i]) <= tol, `value ${i}: ${actual[i]} vs ${expected[i]}`);
  }
}

test('a constant image stays constant, up and down, float and 8-bit', () => {
  const sizes: [number, number, number, number][] = [
    [900, 900, 256, 256],
    [7, 5, 3, 2],
    [3, 2, 7, 11],
    [10, 10, 10, 4],
  ];
  for (const [w, h, ow, oh] of sizes) {
    for (const value of [0, 37, 255]) {
      const src = new Float32Array(w * h * 3);
      for (let i = 0; i < src.length; i += 3) src.set([value, 255 - value, 128], i);
      for (const roundTo8Bit of [false, true]) {
        const out = resizeBilinear(src, w, h, 3, ow, oh, { roundTo8Bit });
        assert.equal(out.length, ow * oh * 3);
        for (let i = 0; i < out.length; i += 3) {
          const got = [out[i], out[i + 1], out[i + 2]];
          const want = [value, 255 - value, 128];
          for (let c = 0; c < 3; c++) assert.ok(Math.abs(got[c] - want[c]) < 1e-4, `${w}x${h}->${ow}x${oh} ${roundTo8Bit}: ${got} vs ${want}`);
        }
      }
    }
  }
});

test('downscale 4 -> 2 uses the widened triangle with border renormalisation (as PIL)', () => {
  // Output 0 is centred at 1.0 with support 2: inputs 0..2 weigh 3/7, 3/7, 1/7; output 1 mirrors it.
  const row = Float32Array.from([0, 10, 20, 30]);
  assertClose(resizeBilinear(row, 4, 1, 1, 2, 1), [50 / 7, 160 / 7]);
  assert.deepEqual(resizeBilinear(row, 4, 1, 1, 2, 1, { roundTo8Bit: true }), Float32Array.from([7, 23]));
  // The same along the vertical axis.
  assertClose(resizeBilinear(row, 1, 4, 1, 1, 2), [50 / 7, 160 / 7]);
});

test('upscale 2 -> 4 interpolates between pixel centres and clamps at the borders', () => {
  assertClose(resizeBilinear(Float32Array.from([0, 100]), 2, 1, 1, 4, 1), [0, 25, 75, 100]);
  // Non-integer factor 2 -> 3: centres at 1/3, 1, 5/3 of the input.
  assertClose(resizeBilinear(Float32Array.from([0, 90]), 2, 1, 1, 3, 1), [0, 45, 90]);
});

test('the two passes are separable: an outer product stays an outer product', () => {
  const col = [1, 4, 9, 16, 25];
  const row = [2, 3, 5, 7, 11, 13];
  const src = new Float32Array(row.length * col.length);
  for (let y = 0; y < col.length; y++) for (let x = 0; x < row.length; x++) src[y * row.length + x] = col[y] * row[x];
  const out = resizeBilinear(src, 6, 5, 1, 4, 3);
  const r = resizeBilinear(Float32Array.from(row), 6, 1, 1, 4, 1);
  const c = resizeBilinear(Float32Array.from(col), 1, 5, 1, 1, 3);
  const expected: number[] = [];
  for (let y = 0; y < 3; y++) for (let x = 0; x < 4; x++) expected.push(c[y] * r[x]);
  assertClose(out, expected, 1e-4);
});

test('channels are resampled independently', () => {
  const src = new Float32Array(6 * 4 * 2);
  for (let i = 0; i < 24; i++) src.set([i, 1000 - i * 2], i * 2);
  const both = resizeBilinear(src, 6, 4, 2, 4, 3);
  const first = resizeBilinear(src.filter((_, i) => i % 2 === 0), 6, 4, 1, 4, 3);
  const second = resizeBilinear(src.filter((_, i) => i % 2 === 1), 6, 4, 1, 4, 3);
  assert.deepEqual(both.filter((_, i) => i % 2 === 0), first);
  assert.deepEqual(both.filter((_, i) => i % 2 === 1), second);
});

test('8-bit mode rounds after each pass, so it is integral and within 1 of the float result', () => {
  const w = 37;
  const h = 23;
  const src = new Float32Array(w * h);
  for (let i = 0; i < src.length; i++) src[i] = (i * 7919) % 256;
  const exact = resizeBilinear(src, w, h, 1, 11, 9);
  const rounded = resizeBilinear(src, w, h, 1, 11, 9, { roundTo8Bit: true });
  let differs = false;
  for (let i = 0; i < rounded.length; i++) {
    assert.equal(rounded[i], Math.round(rounded[i]));
    assert.ok(rounded[i] >= 0 && rounded[i] <= 255);
    assert.ok(Math.abs(rounded[i] - exact[i]) <= 1, `${rounded[i]} vs ${exact[i]}`);
    if (rounded[i] !== Math.round(exact[i])) differs = true;
  }
  // The intermediate uint8 rounding is observable: not simply the float result rounded once.
  assert.ok(differs, 'rounding after the horizontal pass should change some values');
});

test('same size is an unchanged copy; bad arguments are named', () => {
  const src = Float32Array.from([1.5, 2.5, 3.5, 4.5]);
  const out = resizeBilinear(src, 2, 2, 1, 2, 2);
  assert.notEqual(out, src);
  assert.deepEqual(out, src);
  assert.throws(() => resizeBilinear(src, 2, 2, 1, 0, 2), /output width must be a positive integer, got 0/);
  assert.throws(() => resizeBilinear(src, 3, 2, 1, 2, 2), /source has 4 values, expected 3x2x1 = 6/);
});

test('a window equals the same window cut from the full resize, bit for bit (both paths, both axes)', () => {
  const w = 37;
  const h = 23;
  const src = Float32Array.from({ length: w * h * 3 }, (_, i) => (i * 7919) % 256);
  for (const [ow, oh] of [[16, 11], [60, 40], [37, 9], [10, 23]] as const) {
    for (const roundTo8Bit of [false, true]) {
      const full = resizeBilinear(src, w, h, 3, ow, oh, { roundTo8Bit });
      for (const win of [{ left: 0, top: 0, width: ow, height: oh }, { left: 3, top: 2, width: ow - 5, height: oh - 4 }, { left: ow - 1, top: oh - 1, width: 1, height: 1 }]) {
        const part = resizeBilinear(src, w, h, 3, ow, oh, { roundTo8Bit, window: win });
        const want = new Float32Array(win.width * win.height * 3);
        for (let y = 0; y < win.height; y++) {
          want.set(full.subarray(((win.top + y) * ow + win.left) * 3, ((win.top + y) * ow + win.left + win.width) * 3), y * win.width * 3);
        }
        assert.deepEqual(part, want, `${w}x${h} -> ${ow}x${oh} ${roundTo8Bit} window ${JSON.stringify(win)}`);
      }
    }
  }
  assert.throws(() => resizeBilinear(src, w, h, 3, 10, 10, { window: { left: 5, top: 0, width: 6, height: 2 } }), /window 6x2 at \(5, 0\) is not inside the 10x10 output/);
});

test('the RGB fast path equals resizing each channel on its own', () => {
  const w = 29;
  const h = 17;
  const rgb = Float32Array.from({ length: w * h * 3 }, (_, i) => (i * 104729) % 256);
  const channel = (c: number) => Float32Array.from({ length: w * h }, (_, i) => rgb[i * 3 + c]);
  for (const roundTo8Bit of [false, true]) {
    const out = resizeBilinear(rgb, w, h, 3, 11, 8, { roundTo8Bit });
    for (let c = 0; c < 3; c++) {
      const single = resizeBilinear(channel(c), w, h, 1, 11, 8, { roundTo8Bit });
      assert.deepEqual(Float32Array.from({ length: 11 * 8 }, (_, i) => out[i * 3 + c]), single, `channel ${c}, 8-bit ${roundTo8Bit}`);
    }
  }
});
