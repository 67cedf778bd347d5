import { test } from 'node:test';
import assert from 'node:assert/strict';
import { aupro, connectedComponents } from './aupro.js';

function assertClose(actual: number, expected: number, tol = 1e-6): void {
  assert.ok(Math.abs(actual - expected) <= tol, `expected ${expected}, got ${actual}`);
}

test('connectedComponents: 8-connectivity joins diagonal neighbours', () => {
  // 4x5 mask; (0,0)-(1,1) touch diagonally -> one component. Labels follow row-major discovery.
  const mask = Uint8Array.of(
    1, 0, 0, 0, 1,
    0, 1, 0, 0, 1,
    0, 0, 0, 0, 0,
    1, 1, 0, 1, 0,
  );
  const cc = connectedComponents(mask, 4, 5);
  assert.equal(cc.count, 4);
  assert.deepEqual(cc.sizes, [2, 2, 2, 1]);
  assert.deepEqual([...cc.labels], [
    1, 0, 0, 0, 2,
    0, 1, 0, 0, 2,
    0, 0, 0, 0, 0,
    3, 3, 0, 4, 0,
  ]);
});

test('connectedComponents: a U shape found from one arm is one component', () => {
  const cc = connectedComponents(Uint8Array.of(1, 0, 1, 1, 0, 1, 1, 1, 1), 3, 3);
  assert.equal(cc.count, 1);
  assert.deepEqual(cc.sizes, [7]);
});

test('connectedComponents: errors name the mask', () => {
  assert.throws(() => connectedComponents(new Uint8Array(5), 2, 2), /mask has 5 pixels, expected 2x2 = 4/);
  assert.throws(() => connectedComponents(Uint8Array.of(0, 255, 0, 0), 2, 2), /mask\[1\] is 255/);
});

// Hand-worked 4x4 case. Mask (A = 4-pixel region, B = 2-pixel region, 10 normal pixels):
//   A A . .      scores  .9 .9 .8 .1
//   A A . .              .3 .3 .4 .1
//   . . . .              .1 .1 .1 .1
//   . . B B              .1 .1 .8 .2
// Two regions, so an A pixel adds 1/(4*2) = 1/8 to PRO and a B pixel 1/(2*2) = 1/4; a normal pixel adds 1/10 to FPR.
// Thresholds (descending):
//   0.9: two A pixels                       -> (FPR 0,   PRO 0.25)
//   0.8: one B pixel tied with one normal   -> (0.1, 0.5)   (one diagonal step: tie taken as a whole)
//   0.4: one normal                         -> (0.2, 0.5)
//   0.3: two A pixels                       -> (0.2, 0.75)
//   0.2: the other B pixel                  -> (0.2, 1)
//   0.1: eight normals                      -> (1, 1)
const mask4 = Uint8Array.of(1, 1, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1);
const map4 = Float32Array.of(0.9, 0.9, 0.8, 0.1, 0.3, 0.3, 0.4, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.8, 0.2);

test('aupro: hand-computed integral up to 0.3', () => {
  // Trapezoids: (0,.25)-(.1,.5): .1*(.25+.5)/2 = .0375; (.1,.5)-(.2,.5): .05; verticals at .2: 0;
  // (.2,1)-(.3,1): .1. Sum .1875, divided by .3 -> .625.
  assertClose(aupro([map4], [mask4], 4, 4, 0.3), 0.625);
});

test('aupro: maxFpr cutting a sloped segment interpolates PRO', () => {
  // 0.05 cuts the tie segment (0,.25)-(.1,.5): PRO(.05) = .375. Area .05*(.25+.375)/2 = .015625; /.05 = .3125.
  // (Splitting the tie into normal-first would give .25, B-first .5.)
  assertClose(aupro([map4], [mask4], 4, 4, 0.05), 0.3125);
});

test('aupro: maxFpr 1 integrates the whole curve', () => {
  // .0375 + .05 + (1 - .2) * 1 = .8875.
  assertClose(aupro([map4], [mask4], 4, 4, 1), 0.8875);
});

test('aupro: good images add normal pixels to the FPR denominator', () => {
  // A good image scored 0.05 everywhere: 26 normal pixels, all 16 new ones below every other score.
  // Points: (0,.25), (1/26,.5), (2/26,.5), (2/26,1), (10/26,1), (1,1). Up to .3 (between 2/26 and 10/26):
  // (1/26)(.75)/2 + (1/26)(.5) + (.3 - 2/26)(1) = .3 - 1.125/26, so AUPRO = 1 - 1.125/7.8.
  const good = new Float32Array(16).fill(0.05);
  assertClose(aupro([map4, good], [mask4, new Uint8Array(16)], 4, 4, 0.3), 1 - 1.125 / 7.8);
});

test('aupro: regions of different images weigh the same', () => {
  // Image 1: a 1-pixel region scored 1; image 2: a 3-pixel region scored .5; the 4 normals score .7.
  // Curve: (0,0) -> (0,.5) [first region complete, half the regions] -> (1,.5) -> (1,1).
  // Area on [0,.3] is .3*.5 -> AUPRO .5. (Weighting by pixels instead would give PRO 1/4 -> .25.)
  const m1 = Uint8Array.of(1, 0, 0, 0);
  const m2 = Uint8Array.of(1, 1, 1, 0);
  const s1 = Float32Array.of(1, 0.7, 0.7, 0.7);
  const s2 = Float32Array.of(0.5, 0.5, 0.5, 0.7);
  assertClose(aupro([s1, s2], [m1, m2], 2, 2), 0.5);
});

test('aupro: perfect detector scores 1, inverted detector 0', () => {
  const mask = Uint8Array.of(0, 1, 1, 0, 0, 0, 0, 0, 1);
  const perfect = Float32Array.from(mask, (m) => m);
  const inverted = Float32Array.from(mask, (m) => 1 - m);
  assertClose(aupro([perfect], [mask], 3, 3), 1);
  assertClose(aupro([inverted], [mask], 3, 3), 0);
});

test('aupro: clear errors', () => {
  const z = new Uint8Array(4);
  const s = new Float32Array(4);
  assert.throws(() => aupro([s], [z], 2, 2), /no mask has any anomalous pixel/);
  assert.throws(() => aupro([s, s], [mask4], 2, 2), /2 score maps but 1 masks/);
  assert.throws(() => aupro([], [], 2, 2), /no images/);
  assert.throws(() => aupro([new Float32Array(3)], [z], 2, 2), /maps\[0\] has 3 values, expected 2x2 = 4/);
  assert.throws(() => aupro([s], [new Uint8Array(5)], 2, 2), /masks\[0\] has 5 pixels/);
  assert.throws(() => aupro([s], [Uint8Array.of(0, 255, 0, 0)], 2, 2), /masks\[0\]\[1\] is 255/);
  assert.throws(() => aupro([s], [Uint8Array.of(1, 1, 1, 1)], 2, 2), /no normal pixel/);
  assert.throws(() => aupro([map4], [mask4], 4, 4, 0), /maxFpr must be in \(0, 1\]/);
  assert.throws(() => aupro([map4], [mask4], 4, 4, 1.5), /maxFpr/);
});

/** Direct definition: for each distinct threshold, PRO and FPR recomputed from scratch; trapezoids clipped at maxFpr. */
function naiveAupro(maps: Float32Array[], masks: Uint8Array[], h: number, w: number, maxFpr: number): number {
  const comps = masks.map((m) => connectedComponents(m, h, w));
  const numRegions = comps.reduce((a, c) => a + c.count, 0);
  const numNormal = masks.reduce((a, m) => a + m.filter((v) => v === 0).length, 0);
  const thresholds = [...new Set(maps.flatMap((m) => [...m]))].sort((a, b) => b - a);
  const xs = [0];
  const ys = [0];
  for (const t of thresholds) {
    let fp = 0;
    let pro = 0;
    maps.forEach((map, i) => {
      const hits = new Array(comps[i].count).fill(0);
      for (let p = 0; p < h * w; p++) {
        if (map[p] < t) continue;
        if (masks[i][p] === 0) fp++;
        else hits[comps[i].labels[p] - 1]++;
      }
      hits.forEach((c, k) => (pro += c / comps[i].sizes[k] / numRegions));
    });
    xs.push(fp / numNormal);
    ys.push(pro);
  }
  let area = 0;
  for (let k = 1; k < xs.length && xs[k - 1] < maxFpr; k++) {
    const x1 = Math.min(xs[k], maxFpr);
    const y1 = ys[k - 1] + ((ys[k] - ys[k - 1]) * (x1 - xs[k - 1])) / (xs[k] - xs[k - 1] || 1);
    area += ((x1 - xs[k - 1]) * (ys[k - 1] + y1)) / 2;
  }
  return area / maxFpr;
}

test('aupro matches a threshold-by-threshold evaluation on random blobs with ties', () => {
  let seed = 99;
  const rand = () => ((seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) / 2 ** 32);
  const h = 12;
  const w = 10;
  const maps: Float32Array[] = [];
  const masks: Uint8Array[] = [];
  for (let i = 0; i < 6; i++) {
    const mask = new Uint8Array(h * w);
    if (i > 0) {
      for (let b = 0; b < 3; b++) {
        const cy = Math.floor(rand() * h);
        const cx = Math.floor(rand() * w);
        const r = 1 + Math.floor(rand() * 2);
        for (let y = Math.max(0, cy - r); y <= Math.min(h - 1, cy + r); y++) {
          for (let x = Math.max(0, cx - r); x <= Math.min(w - 1, cx + r); x++) mask[y * w + x] = 1;
        }
      }
    }
    const map = Float32Array.from(mask, (m) => Math.round((rand() + 0.5 * m) * 30) / 30); // coarse: many ties
    maps.push(map);
    masks.push(mask);
  }
  for (const maxFpr of [0.3, 0.07, 1]) {
    assertClose(aupro(maps, masks, h, w, maxFpr), naiveAupro(maps, masks, h, w, maxFpr), 1e-9);
  }
});
