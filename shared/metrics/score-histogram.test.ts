import { test } from 'node:test';
import assert from 'node:assert/strict';
import { auproOfImages } from './aupro.js';
import { rocAuc } from './roc.js';
import { PixelHistogram, binLowerEdge, scoreBin } from './score-histogram.js';
import { SeededRandom } from '../coreset/random.js';

test('scoreBin: increasing with the value over the float32 range; the lower edge is in its own bin', () => {
  const values = [-Infinity, -3e38, -5, -1, -1e-30, 0, 1e-30, 0.5, 1, 1.0001, 1.01, 2, 1e10, 3e38, Infinity];
  for (let i = 1; i < values.length; i++) assert.ok(scoreBin(values[i - 1]) <= scoreBin(values[i]), `${values[i - 1]} <= ${values[i]}`);
  assert.equal(scoreBin(-0), scoreBin(0));
  assert.ok(scoreBin(1) < scoreBin(1.01) && scoreBin(1) === scoreBin(1.0001), '1024 bins per octave');
  for (const v of [-7.5, -1, 0.25, 1, 3.3, 1000]) {
    const b = scoreBin(v);
    assert.equal(scoreBin(binLowerEdge(b)), b);
    assert.ok(binLowerEdge(b) <= Math.fround(v), `edge of ${v}`);
    if (v > 0) assert.ok(scoreBin(binLowerEdge(b) * (1 - 1e-6)) < b, `just below the edge of ${v}`);
  }
});

/** Images of mixed sizes with blob-shaped defects whose pixels score higher on average. */
function syntheticImages(seed: number, count: number) {
  const rng = new SeededRandom(seed);
  const rand = () => rng.float();
  return Array.from({ length: count }, (_, i) => {
    const height = 20 + (i % 3) * 7;
    const width = 30 - (i % 2) * 9;
    const mask = new Uint8Array(height * width);
    const map = new Float32Array(height * width);
    const blobs = i % 4 === 0 ? 0 : 1 + (i % 3);
    for (let b = 0; b < blobs; b++) {
      const cy = Math.floor(rand() * height);
      const cx = Math.floor(rand() * width);
      const r = 1 + Math.floor(rand() * 4);
      for (let y = Math.max(0, cy - r); y < Math.min(height, cy + r); y++) {
        for (let x = Math.max(0, cx - r); x < Math.min(width, cx + r); x++) mask[y * width + x] = 1;
      }
    }
    for (let p = 0; p < map.length; p++) map[p] = Math.exp(rand() * 1.5 + (mask[p] ? 0.8 * rand() : 0));
    return { id: `img${i}`, map, mask, height, width };
  });
}

test('PixelHistogram: AUROC and AUPRO within 1e-3 of the exact values, on images of mixed sizes', () => {
  const images = syntheticImages(7, 40);
  const h = new PixelHistogram();
  for (const im of images) h.addImage(im.map, im.mask, im.height, im.width, im.id);
  const allMaps = Float32Array.from(images.flatMap((im) => Array.from(im.map)));
  const allMasks = Uint8Array.from(images.flatMap((im) => Array.from(im.mask)));
  const exactAuroc = rocAuc(allMaps, allMasks);
  const exactAupro = auproOfImages(images);
  assert.ok(Math.abs(h.auroc()! - exactAuroc) < 1e-3, `auroc ${h.auroc()} vs ${exactAuroc}`);
  assert.ok(Math.abs(h.aupro()! - exactAupro) < 1e-3, `aupro ${h.aupro()} vs ${exactAupro}`);
  assert.ok(exactAuroc > 0.55 && exactAuroc < 0.95, `a test that can fail: auroc ${exactAuroc}`);
  assert.equal(h.goodPixels + h.defectPixels, allMaps.length);
  assert.equal(h.defectPixels, allMasks.reduce((a, b) => a + b, 0));
});

test('PixelHistogram: exact where every bin holds one distinct score (ties count half, as in rocAuc)', () => {
  const map = Float32Array.from([1, 2, 2, 4, 8, 8, 16, 0.5]);
  const mask = Uint8Array.from([0, 1, 0, 0, 1, 1, 0, 1]);
  const h = new PixelHistogram();
  h.addImage(map, mask, 2, 4, 'x');
  assert.equal(h.auroc(), rocAuc(map, mask));
  // Region overlap is summed in fixed point (2^-30): equal up to that rounding.
  assert.ok(Math.abs(h.aupro(0.3)! - auproOfImages([{ map, mask, height: 2, width: 4 }], 0.3)) < 1e-9);
  assert.deepEqual(h.valueRange(), [0.5, 16]);
});

test('PixelHistogram: merging in any order or grouping gives identical JSON and figures; JSON round-trips', () => {
  const images = syntheticImages(11, 24);
  const summaries = images.map((im) => {
    const h = new PixelHistogram();
    h.addImage(im.map, im.mask, im.height, im.width, im.id, im.id === 'img3' ? 5 : 0);
    return h;
  });
  const forward = summaries.reduce((acc, s) => acc.merge(s), new PixelHistogram());
  const shuffled = [...summaries].reverse();
  const groups = [shuffled.slice(0, 7), shuffled.slice(7, 15), shuffled.slice(15)]
    .map((g) => PixelHistogram.fromJSON(JSON.parse(JSON.stringify(g.reduce((acc, s) => acc.merge(s), new PixelHistogram()))), 'g'));
  const backward = [groups[2], groups[0], groups[1]].reduce((acc, s) => acc.merge(s), new PixelHistogram());
  assert.equal(JSON.stringify(backward), JSON.stringify(forward));
  assert.equal(backward.auroc(), forward.auroc());
  assert.equal(backward.aupro(), forward.aupro());
  assert.equal(forward.defectPixelsOutsideView, 5);
  assert.equal(forward.images, 24);
});

test('PixelHistogram: bad input is named', () => {
  const h = new PixelHistogram();
  assert.throws(() => h.addImage(new Float32Array(3), new Uint8Array(4), 2, 2, 'a.png'), /pixel summary of "a.png": map has 3 values, expected 2x2/);
  assert.throws(() => h.addImage(Float32Array.of(0, NaN), Uint8Array.of(0, 1), 1, 2, 'b.png'), /"b.png": map value 1 is NaN/);
  assert.throws(() => h.addImage(new Float32Array(2), Uint8Array.of(0, 255), 1, 2, 'c.png'), /"c.png": mask value 1 is 255/);
  assert.throws(() => PixelHistogram.fromJSON({ grid: 'linear' }, 'runs/r/scores/0000.json'), /pixel summary runs\/r\/scores\/0000.json is invalid at grid/);
  assert.equal(h.auroc(), null);
  assert.equal(h.aupro(), null);
  assert.equal(h.valueRange(), null);
});
