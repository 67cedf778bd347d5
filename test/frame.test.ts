// Framing on real images with the real weights: the default frame sees the whole image (a real VisA capsules defect
// that lies outside the paper's centre crop is found), images of different sizes share one model, and tiling fits
// and scores real images. Each model is fitted on a few real training images, so the suite stays short.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { listMvtecDataset, type DatasetImage } from '../shared/dataset/mvtec.js';
import { decodeMask, maskToFrame, planFrame, PAPER_FRAME_SPEC, type Frame, type FrameSpec } from '../shared/image/index.js';
import { createLogger } from '../shared/log.js';
import { fitModel } from '../shared/local/fit.js';
import { patchcore } from '../shared/methods/patchcore.js';
import { readManifest } from '../shared/model/manifest.js';
import { defaultWeightsPath, sharedDir } from '../shared/paths.js';
import { localSources } from '../shared/run/sources.js';
import { StageTimer } from '../shared/run/timings.js';

const capsules = join(sharedDir(), 'datasets', 'visa', 'capsules');
const work = mkdtempSync(join(tmpdir(), 'patchcore-frame-'));
const logger = createLogger('frame-test');
const TRAIN = 12;
// Real defects of VisA capsules whose whole ground-truth mask lies outside the paper frame's centre 224 crop
// (found from the masks: maskToFrame in the paper frame has no defect pixel).
const OUTSIDE_CROP = ['test/bad/058.jpg', 'test/bad/082.jpg', 'test/bad/084.jpg'];

const dataset = listMvtecDataset(capsules, { train: true, test: true });
const byPath = (p: string): DatasetImage => {
  const img = dataset.test.find((t) => t.path.toLowerCase() === p.toLowerCase());
  assert.ok(img, `${p} is in ${capsules}`);
  return img;
};
const goodTests = dataset.test.filter((t) => t.label === 0).slice(0, 8);

interface Scored { id: string; score: number; map: Float32Array; frame: Frame }

async function fit(name: string, frame: FrameSpec, dataDir = capsules, limit = TRAIN): Promise<string> {
  const modelDir = join(work, name);
  await fitModel({ dataDir, modelDir, weightsPath: defaultWeightsPath(), engine: 'onnx', frame, limit, logger });
  return modelDir;
}

async function score(modelDir: string, root: string, images: DatasetImage[]): Promise<Scored[]> {
  const scorer = await patchcore.open(modelDir, { weightsPath: defaultWeightsPath(), engine: 'onnx', batchSize: 4, recall: false, logger }, new StageTimer());
  const out: Scored[] = [];
  try {
    for await (const r of scorer.score(localSources(root, images))) {
      assert.ok(r.ok, `${r.id}: ${r.ok ? '' : r.error}`);
      out.push({ id: r.id, score: r.score, map: r.map, frame: r.frame });
    }
  } finally {
    scorer.dispose();
  }
  return out;
}

async function mask(img: DatasetImage) {
  return decodeMask(readFileSync(join(capsules, img.maskPath!)), img.maskPath!);
}

let wholeModel = '';
let wholeScores: Scored[] = [];

test('default frame: a real defect outside the centre crop is in view and scores above every good image', async (t) => {
  const defects = OUTSIDE_CROP.map(byPath);
  for (const d of defects) {
    const m = await mask(d);
    const paper = maskToFrame(m, planFrame(m.width, m.height, PAPER_FRAME_SPEC)).reduce((s, v) => s + v, 0);
    assert.equal(paper, 0, `${d.path}: no defect pixel inside the paper frame's crop`);
  }
  wholeModel = await fit('whole', { resize: 256, crop: null });
  const manifest = readManifest(wholeModel);
  assert.deepEqual(manifest.frame, { resize: 256, crop: null });
  // 600x400 -> 384x256, the whole image: a 32x48 patch grid (paper: 28x28).
  assert.deepEqual(manifest.grid, [32, 48]);
  assert.equal(manifest.coreset.trainPatches, TRAIN * 32 * 48);

  wholeScores = await score(wholeModel, capsules, [...goodTests, ...defects]);
  const good = wholeScores.slice(0, goodTests.length);
  const maxGood = Math.max(...good.map((s) => s.score));
  for (const [i, d] of defects.entries()) {
    const s = wholeScores[goodTests.length + i];
    t.diagnostic(`${d.path}: score ${s.score.toFixed(3)}, highest good ${maxGood.toFixed(3)}`);
    assert.ok(s.score > maxGood, `${d.path} scores ${s.score}, a good image ${maxGood}`);
    assert.deepEqual([s.frame.width, s.frame.height, s.frame.cropLeft, s.frame.cropTop], [384, 256, 0, 0]);
    assert.equal(s.map.length, 384 * 256);
    // The map's peak lies on the defect (within a patch's reach of the mask), outside the paper crop's columns.
    const m = maskToFrame(await mask(d), s.frame);
    let peak = 0;
    for (let p = 1; p < s.map.length; p++) if (s.map[p] > s.map[peak]) peak = p;
    const [px, py] = [peak % 384, Math.floor(peak / 384)];
    let nearest = Infinity;
    for (let p = 0; p < m.length; p++) if (m[p]) nearest = Math.min(nearest, Math.hypot((p % 384) - px, Math.floor(p / 384) - py));
    t.diagnostic(`${d.path}: map peak at (${px}, ${py}), ${nearest.toFixed(1)} px from the defect`);
    assert.ok(nearest <= 16, `${d.path}: the map's peak (${px}, ${py}) is ${nearest} px from the defect`);
  }
});

test('tiling: one tile as large as the frame scores exactly as the whole image; real tiles stitch into a full-frame map', async (t) => {
  assert.ok(wholeModel, 'runs after the default-frame test');
  const images = [...goodTests, ...OUTSIDE_CROP.map(byPath)];
  // A 384 tile covers the 384x256 frame in one piece: the same features, bank, scores and maps.
  const single = await fit('tile-384', { resize: 256, crop: null, tile: 384, tileOverlap: 32 });
  assert.deepEqual(readManifest(single).frame, { resize: 256, crop: null, tile: 384, tileOverlap: 32 });
  const same = await score(single, capsules, images);
  for (const [i, s] of same.entries()) {
    assert.equal(s.score, wholeScores[i].score, s.id);
    assert.deepEqual(s.map, wholeScores[i].map, s.id);
  }

  // 128-pixel tiles with 32 shared: 4 x 3 tiles of 16x16 patches per image, each through the backbone on its own.
  const tiled = await fit('tile-128', { resize: 256, crop: null, tile: 128, tileOverlap: 32 });
  const manifest = readManifest(tiled);
  assert.deepEqual(manifest.grid, [16, 16]);
  assert.equal(manifest.coreset.trainPatches, TRAIN * 12 * 16 * 16);
  const scores = await score(tiled, capsules, images);
  const good = scores.slice(0, goodTests.length);
  const maxGood = Math.max(...good.map((s) => s.score));
  for (const s of scores) {
    assert.deepEqual([s.frame.width, s.frame.height], [384, 256]);
    assert.equal(s.map.length, 384 * 256);
    assert.ok(s.map.every(Number.isFinite), `${s.id}: a finite map over the whole frame`);
  }
  for (const s of scores.slice(goodTests.length)) {
    t.diagnostic(`tiled ${s.id}: score ${s.score.toFixed(3)}, highest good ${maxGood.toFixed(3)}`);
    assert.ok(s.score > maxGood, `tiled: ${s.id} scores ${s.score}, a good image ${maxGood}`);
  }
});

test('images of different sizes in one category: each in its own grid, for training and scoring', async (t) => {
  // A category of real capsules images at two shapes: as they are (600x400) and their centre 400x400 square.
  const root = join(work, 'mixed');
  const place = async (img: DatasetImage, rel: string, square: boolean) => {
    mkdirSync(join(root, rel, '..'), { recursive: true });
    if (!square) return symlinkSync(join(capsules, img.path), join(root, rel));
    await sharp(join(capsules, img.path)).extract({ left: 100, top: 0, width: 400, height: 400 }).png().toFile(join(root, rel));
  };
  const train = dataset.train.slice(0, 8);
  for (const [i, img] of train.entries()) await place(img, `train/good/${String(i).padStart(3, '0')}.png`, i % 2 === 1);
  const defect = byPath('test/bad/057.jpg'); // its defect lies inside the centre square too
  const tests: [DatasetImage, string, boolean][] = [
    [goodTests[0], 'test/good/000.png', false], [goodTests[1], 'test/good/001.png', true],
    [goodTests[2], 'test/good/002.png', false], [goodTests[3], 'test/good/003.png', true],
  ];
  for (const [img, rel, sq] of tests) await place(img, rel, sq);

  const model = await fit('mixed', { resize: 256, crop: null }, root, 8);
  const manifest = readManifest(model);
  // Four 384x256 frames (32x48 patches) and four 256x256 (32x32): every patch of both in the coreset's input.
  assert.equal(manifest.coreset.trainPatches, 4 * 32 * 48 + 4 * 32 * 32);
  assert.equal(manifest.training.images, 8);
  const mixed = listMvtecDataset(root, { test: true }).test;
  const scores = await score(model, root, mixed);
  assert.deepEqual(scores.map((s) => [s.frame.width, s.frame.height]), [[384, 256], [256, 256], [384, 256], [256, 256]]);
  for (const s of scores) assert.equal(s.map.length, s.frame.width * s.frame.height, s.id);
  // The same good image scores about the same whichever shape it came in: no shape is out of distribution.
  t.diagnostic(`good scores: ${scores.map((s) => s.score.toFixed(3)).join(', ')}`);
  const [lo, hi] = [Math.min(...scores.map((s) => s.score)), Math.max(...scores.map((s) => s.score))];
  assert.ok(hi / lo < 1.5, `good scores range ${lo}..${hi}`);
  // And a real defect, at either shape, scores above them.
  for (const sq of [false, true]) {
    const rel = `test/bad/057${sq ? '-square' : ''}.png`;
    await place(defect, rel, sq);
    const [bad] = await score(model, root, [{ ...defect, path: rel }]);
    t.diagnostic(`${rel}: ${bad.score.toFixed(3)}`);
    assert.ok(bad.score > hi, `${rel} scores ${bad.score}, good images up to ${hi}`);
  }
});
