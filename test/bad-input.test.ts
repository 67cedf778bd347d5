// Bad input as a user meets it, through `patchcore fit` / `patchcore evaluate` on real bottle images: the exact
// message for every kind of broken file, dataset and model. Rule: a problem with one image is reported for that
// image (the run goes on and lists it in the model manifest / metrics.json); a problem that makes the whole run
// meaningless stops it before any work, with a message naming the input and what is wrong.
//
// Unknown defect folders are not an error: test/<anything>/ is one more defect type (label 1), with its own
// per-defect-type AUROC; only test/good/ is normal. A defect image without a mask is scored and counted in the
// image metrics but left out of the pixel metrics (pixel_images counts the images that have a usable mask); masks
// of another size are resized to their image.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { checkModelConsistency } from '../shared/model/consistency.js';
import { decodeImage } from '../shared/image/index.js';
import { encodeBmp, pngDeclaringSize } from '../shared/image/test-images.js';
import { defaultDatasetDir, defaultWeightsPath } from '../shared/paths.js';
import { makeBottleSubset } from './helpers/subset.js';
import { runCli } from './faults/harness.js';

const work = mkdtempSync(join(tmpdir(), 'patchcore-bad-input-'));
const bottle = defaultDatasetDir('bottle');
const env = { LOG_LEVEL: 'warn' };

after(() => rmSync(work, { recursive: true, force: true }));

/** The line the command printed about the problem (the AWS SDK may add a Node version notice). */
const errorLine = (stderr: string) => stderr.split('\n').find((l) => l.startsWith('patchcore ')) ?? stderr;

async function fails(args: string[], code: number, message: RegExp) {
  const r = await runCli(args, env, 120_000);
  assert.equal(r.code, code, `${args.join(' ')}\n${r.stderr}`);
  assert.match(errorLine(r.stderr), message);
}

const model = join(work, 'model');

test('fit: broken training files are skipped and listed one by one; odd but valid images are used', { timeout: 120_000 }, async () => {
  const data = makeBottleSubset({ train: 3, test: {} });
  const good = join(data, 'train/good');
  const real = readFileSync(join(bottle, 'train/good/010.png'));
  writeFileSync(join(good, 'zz-zero.png'), Buffer.alloc(0));
  writeFileSync(join(good, 'zz-notes.png'), 'these are my notes, not an image\n');
  writeFileSync(join(good, 'zz-truncated.png'), real.subarray(0, 2000));
  writeFileSync(join(good, 'zz-corrupt.png'), Buffer.concat([real.subarray(0, 8), Buffer.alloc(4000, 0x5a)]));
  writeFileSync(join(good, 'zz-bomb.png'), pngDeclaringSize(30_000, 30_000));
  // Valid, only unusual: a BMP named .png, grey, RGBA and 16-bit PNGs.
  const img = await decodeImage(real, '010.png');
  writeFileSync(join(good, 'zz-bmp.png'), encodeBmp({ width: img.width, height: img.height, bitsPerPixel: 24, pixels: img.data }));
  writeFileSync(join(good, 'zz-grey.png'), await sharp(real).greyscale().png().toBuffer());
  writeFileSync(join(good, 'zz-rgba.png'), await sharp(real).ensureAlpha(0.5).png().toBuffer());
  writeFileSync(join(good, 'zz-16bit.png'), await sharp(real).toColourspace('rgb16').png().toBuffer());

  const r = await runCli(['fit', '--data', data, '--model', model, '--coreset-ratio', '0.1'], env, 120_000);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(JSON.parse(r.stdout).skipped, 5);
  const manifest = JSON.parse(readFileSync(join(model, 'manifest.json'), 'utf8'));
  assert.equal(manifest.training.images, 7);
  // The default whole-image frame: 900x900 -> 256x256, a 32x32 patch grid per image.
  assert.equal(manifest.coreset.trainPatches, 7 * 32 * 32);
  const skipped = Object.fromEntries(manifest.training.skipped.map((s: { id: string; error: string }) => [s.id, s.error]));
  assert.deepEqual(Object.keys(skipped).sort(), ['zz-bomb', 'zz-corrupt', 'zz-notes', 'zz-truncated', 'zz-zero'].map((n) => `train/good/${n}.png`));
  assert.equal(skipped['train/good/zz-zero.png'], 'Cannot decode image "train/good/zz-zero.png": zero-byte file');
  assert.equal(skipped['train/good/zz-notes.png'], 'Cannot decode image "train/good/zz-notes.png": not an image (unknown format)');
  assert.equal(skipped['train/good/zz-bomb.png'], 'Cannot decode image "train/good/zz-bomb.png": 30000x30000 exceeds the 40000000-pixel limit');
  assert.match(skipped['train/good/zz-truncated.png'], /^Cannot decode image "train\/good\/zz-truncated.png": truncated or corrupt: .+/);
  assert.match(skipped['train/good/zz-corrupt.png'], /^Cannot decode image "train\/good\/zz-corrupt.png": truncated or corrupt: .+/);
});

test('evaluate: a broken test image or mask is listed per image; masks of another size, missing masks and unknown defect folders are handled', { timeout: 120_000 }, async () => {
  assert.ok(readFileSync(join(model, 'manifest.json')), 'needs the model of the previous test');
  const data = makeBottleSubset({ train: 0, test: { good: 2, broken_large: 2, contamination: 1 } });
  writeFileSync(join(data, 'test/good/zz-truncated.png'), readFileSync(join(bottle, 'test/good/005.png')).subarray(0, 3000));
  // broken_large/000: its mask at half size (resized to the image); broken_large/001: no mask at all.
  const mask = join(data, 'ground_truth/broken_large/000_mask.png');
  const half = await sharp(readFileSync(mask)).resize(450, 450, { kernel: 'nearest' }).png().toBuffer();
  unlinkSync(mask);
  writeFileSync(mask, half);
  unlinkSync(join(data, 'ground_truth/broken_large/001_mask.png'));
  // contamination/000: a zero-byte mask.
  unlinkSync(join(data, 'ground_truth/contamination/000_mask.png'));
  writeFileSync(join(data, 'ground_truth/contamination/000_mask.png'), Buffer.alloc(0));
  // An unknown defect folder: one more defect type.
  mkdirSync(join(data, 'test/scuffs'));
  mkdirSync(join(data, 'ground_truth/scuffs'));
  copyFileSync(join(bottle, 'test/broken_small/000.png'), join(data, 'test/scuffs/000.png'));
  copyFileSync(join(bottle, 'ground_truth/broken_small/000_mask.png'), join(data, 'ground_truth/scuffs/000_mask.png'));

  const out = join(work, 'eval');
  const r = await runCli(['evaluate', '--model', model, '--data', data, '--out', out, '--recall-sample', '0'], env, 120_000);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(JSON.parse(r.stdout).failed_images, 2);
  const metrics = JSON.parse(readFileSync(join(out, 'metrics.json'), 'utf8'));
  const failed = Object.fromEntries(metrics.failed_images.map((f: { id: string; error: string }) => [f.id, f.error]));
  assert.deepEqual(Object.keys(failed).sort(), ['ground_truth/contamination/000_mask.png', 'test/good/zz-truncated.png']);
  assert.match(failed['test/good/zz-truncated.png'], /^Cannot decode image "test\/good\/zz-truncated.png": truncated or corrupt: .+/);
  assert.equal(failed['ground_truth/contamination/000_mask.png'], 'Cannot decode mask "ground_truth/contamination/000_mask.png": zero-byte file');
  assert.equal(metrics.images, 6);
  assert.deepEqual(metrics.images_by_type, { broken_large: 2, contamination: 1, good: 2, scuffs: 1 });
  assert.deepEqual(Object.keys(metrics.per_defect_type).sort(), ['broken_large', 'contamination', 'scuffs']);
  // Pixel metrics: the two good images, broken_large/000 (half-size mask) and scuffs/000; not the two without a usable mask.
  assert.equal(metrics.pixel_images, 4);
  assert.ok(metrics.pixel_auroc > 0.8, `pixel AUROC ${metrics.pixel_auroc}`);
  const csv = readFileSync(join(out, 'scores.csv'), 'utf8').trim().split('\n');
  assert.equal(csv.length, 1 + 6);
  assert.ok(csv.some((l) => l.startsWith('test/scuffs/000.png,scuffs,1,')));
  assert.ok(readFileSync(join(out, 'index.html'), 'utf8').includes('scuffs'));
});

test('datasets that make a run meaningless stop it before any work', { timeout: 120_000 }, async () => {
  const m = join(work, 'never');
  const empty = mkdtempSync(join(work, 'empty-'));
  const flat = mkdtempSync(join(work, 'flat-'));
  copyFileSync(join(bottle, 'train/good/000.png'), join(flat, '000.png'));
  mkdirSync(join(flat, 'train'));
  copyFileSync(join(bottle, 'train/good/001.png'), join(flat, 'train/001.png'));
  const noGood = makeBottleSubset({ train: 0, test: { broken_large: 1 } });
  const allBroken = makeBottleSubset({ train: 0, test: {} });
  mkdirSync(join(allBroken, 'train/good'), { recursive: true });
  writeFileSync(join(allBroken, 'train/good/a.png'), Buffer.alloc(0));
  writeFileSync(join(allBroken, 'train/good/b.png'), 'text');
  const truncatedWeights = join(work, 'truncated.h5');
  writeFileSync(truncatedWeights, readFileSync(defaultWeightsPath()).subarray(0, 1 << 20));
  const noTrain = (dir: string) => new RegExp(`^patchcore fit: dataset folder "${dir}" has no training images: expected normal images in its train/good/ folder$`);
  await Promise.all([
    fails(['fit', '--data', join(work, 'missing'), '--model', m], 1, /^patchcore fit: dataset folder ".*\/missing" does not exist or is not a folder$/),
    fails(['fit', '--data', empty, '--model', m], 1, noTrain(empty)),
    fails(['fit', '--data', flat, '--model', m], 1, noTrain(flat)),
    fails(['fit', '--data', noGood, '--model', m], 1, noTrain(noGood)),
    fails(['evaluate', '--model', model, '--data', flat, '--out', join(work, 'e')], 1,
      new RegExp(`^patchcore evaluate: dataset folder "${flat}" has no test images: expected test/<good\\|defect type>/ folders with images in it$`)),
  ]);
  await Promise.all([
    fails(['fit', '--data', noGood, '--model', m, '--weights', join(work, 'nope.h5')], 1, /^patchcore fit: dataset folder ".*" has no training images/),
    fails(['fit', '--data', allBroken, '--model', m, '--weights', truncatedWeights], 1,
      new RegExp(`^patchcore fit: weights file "${truncatedWeights}" could not be opened as HDF5`)),
    fails(['fit', '--data', allBroken, '--model', m, '--weights', join(work, 'nope.h5')], 1,
      /^patchcore fit: weights file ".*\/nope.h5" cannot be read: ENOENT: no such file or directory/),
  ]);
  // Every training image unreadable: nothing to build a model from.
  await fails(['fit', '--data', allBroken, '--model', m], 1,
    new RegExp(`^patchcore fit: no training image of "${allBroken}" could be read \\(2 failed; first: Cannot decode image "train/good/a.png": zero-byte file\\)$`));
});

test('a model edited by hand, or whose bank does not match it, is refused saying what is wrong', { timeout: 120_000 }, async () => {
  const data = makeBottleSubset({ train: 0, test: { good: 1, broken_large: 1 } });
  const variant = (name: string, edit: (dir: string) => void) => {
    const dir = join(work, `model-${name}`);
    cpSync(model, dir, { recursive: true });
    edit(dir);
    return dir;
  };
  const editJson = (file: string, f: (j: Record<string, any>) => void) => {
    const j = JSON.parse(readFileSync(file, 'utf8'));
    f(j);
    writeFileSync(file, JSON.stringify(j));
  };
  const seedRecipe = variant('seed', (d) => editJson(join(d, 'manifest.json'), (j) => (j.recipe = 'seed')));
  const otherWeights = variant('weights', (d) => editJson(join(d, 'manifest.json'), (j) => (j.backbone.weights.sha256 = 'ab'.repeat(32))));
  const otherFormat = variant('format', (d) => editJson(join(d, 'manifest.json'), (j) => (j.format = 'anomalib-model')));
  const bankDim = variant('dim', (d) => editJson(join(d, 'bank.json'), (j) => (j.dim = 512)));
  const flipped = variant('flipped', (d) => {
    const f = readFileSync(join(d, 'bank.f32'));
    f[100] ^= 0xff;
    writeFileSync(join(d, 'bank.f32'), f);
  });
  const noManifest = variant('nomanifest', (d) => unlinkSync(join(d, 'manifest.json')));
  const ev = (dir: string) => ['evaluate', '--model', dir, '--data', data, '--out', join(work, 'never-eval')];
  await Promise.all([
    fails(ev(seedRecipe), 1, new RegExp(`^patchcore evaluate: model "${seedRecipe}" is inconsistent: featureDim is 1024 but recipe seed makes 1792-d features; .*its bank holds 1024-d entries but recipe seed makes 1792-d features`)),
    fails(ev(otherWeights), 1, /^patchcore evaluate: weights file ".*" \(sha256 570e1bfca26e\.\.\.\) is not the one this model was trained with \(resnet50_imagenet_keras_conv1-conv4\.h5, sha256 abababababab\.\.\.\)$/),
    fails(ev(otherFormat), 1, new RegExp(`^patchcore evaluate: model manifest "${otherFormat}/manifest.json" is invalid at format: `)),
  ]);
  await Promise.all([
    fails(ev(bankDim), 1, new RegExp(`^patchcore evaluate: memory bank ${bankDim}: bank.f32 has \\d+ bytes, expected count x dim x 4 = \\d+ x 512 x 4 = \\d+$`)),
    fails(ev(flipped), 1, new RegExp(`^patchcore evaluate: memory bank ${flipped}: bank.f32 is corrupt \\(sha256 [0-9a-f]{64}, bank.json records [0-9a-f]{64}\\)$`)),
    fails(ev(noManifest), 1, new RegExp(`^patchcore evaluate: model folder "${noManifest}" has no manifest.json: is it a model written by "patchcore fit"\\?$`)),
  ]);

  // Fields the local evaluate does not cross-check yet; scorers refuse them when they load a stored model.
  const manifest = JSON.parse(readFileSync(join(model, 'manifest.json'), 'utf8'));
  const bank = { dim: 1024, count: manifest.bank.count };
  assert.doesNotThrow(() => checkModelConsistency(manifest, bank, 'model bottle/v1'));
  assert.throws(() => checkModelConsistency({ ...manifest, backbone: { ...manifest.backbone, layers: ['conv2_block3_out', 'conv3_block4_out'] } }, bank, 'model bottle/v1'), {
    message: 'model bottle/v1 is inconsistent: backbone layers are [conv2_block3_out, conv3_block4_out] but recipe paper uses [conv3_block4_out, conv4_block6_out]',
  });
  assert.throws(() => checkModelConsistency({ ...manifest, featureDim: 1792 }, { ...bank, count: bank.count - 1 }, 'model bottle/v1'), {
    message: `model bottle/v1 is inconsistent: featureDim is 1792 but recipe paper makes 1024-d features; its bank holds ${bank.count - 1} x 1024 entries but the manifest records ${bank.count} x 1024`,
  });
});
