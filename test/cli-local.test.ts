// The local commands end to end, as a user runs them: `patchcore fit` then `patchcore evaluate` on real bottle
// images with the real weights, through the installed bin script.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoRoot } from '../shared/paths.js';
import { makeBottleSubset } from './helpers/subset.js';

const bin = join(repoRoot, 'bin', 'patchcore.js');

function patchcore(args: string[]) {
  const r = spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', env: { ...process.env, LOG_LEVEL: 'warn' } });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const work = mkdtempSync(join(tmpdir(), 'patchcore-cli-'));
const data = makeBottleSubset({ train: 6, test: { good: 2, broken_large: 2, contamination: 1 } });

test('fit then evaluate on real images writes a model, metrics.json and scores.csv', () => {
  const model = join(work, 'model');
  // The paper frame (256, centre 224): the 28x28 grid these figures pin.
  const fit = patchcore(['fit', '--data', data, '--model', model, '--coreset-ratio', '0.1', '--frame', 'paper']);
  assert.equal(fit.code, 0, fit.stderr);
  const manifest = JSON.parse(readFileSync(join(model, 'manifest.json'), 'utf8'));
  assert.equal(manifest.recipe, 'paper');
  assert.deepEqual(manifest.grid, [28, 28]);
  assert.equal(manifest.coreset.trainPatches, 6 * 784);
  assert.equal(manifest.bank.count, Math.round(0.1 * 6 * 784));
  assert.match(manifest.backbone.weights.sha256, /^570e1bfca26ed46e/);

  const out = join(work, 'eval');
  const ev = patchcore(['evaluate', '--model', model, '--data', data, '--out', out]);
  assert.equal(ev.code, 0, ev.stderr);
  const metrics = JSON.parse(readFileSync(join(out, 'metrics.json'), 'utf8'));
  for (const key of ['image_auroc', 'pixel_auroc', 'aupro', 'f1_max', 'threshold']) {
    assert.equal(typeof metrics[key], 'number', key);
  }
  assert.deepEqual(Object.keys(metrics.confusion_matrix).sort(), ['fn', 'fp', 'tn', 'tp']);
  assert.equal(metrics.images, 5);
  assert.ok(metrics.timings_ms.backbone > 0 && metrics.timings_ms.decode > 0);
  // Even six training images separate these defects from good bottles.
  assert.equal(metrics.image_auroc, 1);
  assert.ok(metrics.pixel_auroc > 0.9, `pixel AUROC ${metrics.pixel_auroc}`);
  assert.ok(metrics.hnsw_recall_at_1 >= 0.99);
  const csv = readFileSync(join(out, 'scores.csv'), 'utf8').trim().split('\n');
  assert.equal(csv[0], 'image,defect_type,label,score,predicted');
  assert.equal(csv.length, 6);
  assert.ok(csv.some((l) => l.startsWith('test/broken_large/000.png,broken_large,1,')));

  // Same data and seed: the same bank, hence the same metrics.
  const model2 = join(work, 'model2');
  assert.equal(patchcore(['fit', '--data', data, '--model', model2, '--coreset-ratio', '0.1', '--frame', 'paper']).code, 0);
  assert.deepEqual(readFileSync(join(model2, 'bank.f32')), readFileSync(join(model, 'bank.f32')));
  const out2 = join(work, 'eval2');
  assert.equal(patchcore(['evaluate', '--model', model2, '--data', data, '--out', out2]).code, 0);
  const metrics2 = JSON.parse(readFileSync(join(out2, 'metrics.json'), 'utf8'));
  for (const key of ['image_auroc', 'pixel_auroc', 'aupro', 'f1_max', 'threshold']) assert.equal(metrics2[key], metrics[key]);
});

test('an unreadable training image is skipped and recorded; the model is still written', () => {
  const broken = makeBottleSubset({ train: 3, test: {} });
  writeFileSync(join(broken, 'train/good/zz-truncated.png'), readFileSync(join(broken, 'train/good/000.png')).subarray(0, 500));
  const model = join(work, 'model-skip');
  const fit = patchcore(['fit', '--data', broken, '--model', model]);
  assert.equal(fit.code, 0, fit.stderr);
  const manifest = JSON.parse(readFileSync(join(model, 'manifest.json'), 'utf8'));
  assert.equal(manifest.training.images, 3);
  assert.equal(manifest.training.skipped.length, 1);
  assert.match(manifest.training.skipped[0].error, /Cannot decode image "train\/good\/zz-truncated.png": truncated or corrupt/);
});

test('clear errors: missing flag, bad ratio, empty dataset, weights that are not the model\'s', () => {
  let r = patchcore(['fit', '--data', data]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /patchcore fit: --model: is required/);
  r = patchcore(['fit', '--data', data, '--model', join(work, 'x'), '--coreset-ratio', '1.5']);
  assert.match(r.stderr, /--coreset-ratio: expected a ratio in \(0, 1\]/);
  const empty = mkdtempSync(join(tmpdir(), 'patchcore-empty-'));
  r = patchcore(['fit', '--data', empty, '--model', join(work, 'x')]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /dataset folder ".*" has no training images: expected normal images in its train\/good\/ folder/);

  const otherWeights = join(work, 'other.h5');
  copyFileSync(join(repoRoot, 'package.json'), otherWeights);
  r = patchcore(['evaluate', '--model', join(work, 'model'), '--data', data, '--out', join(work, 'e'), '--weights', otherWeights]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /is not the one this model was trained with/);
});

test('--method: flags of the other method are refused by name; bad method or input size is a usage error', () => {
  let r = patchcore(['fit', '--method', 'autoencoder', '--data', data, '--model', join(work, 'x'), '--recipe', 'seed']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /patchcore fit: --recipe does not apply to --method autoencoder/);
  r = patchcore(['fit', '--data', data, '--model', join(work, 'x'), '--epochs', '3']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /patchcore fit: --epochs does not apply to --method patchcore/);
  r = patchcore(['fit', '--method', 'vae', '--data', data, '--model', join(work, 'x')]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /patchcore fit: --method: Invalid option: expected one of "patchcore"\|"autoencoder"/);
  r = patchcore(['fit', '--method', 'autoencoder', '--data', data, '--model', join(work, 'x'), '--input-size', '100']);
  assert.match(r.stderr, /patchcore fit: --input-size: expected a multiple of 16/);
  r = patchcore(['evaluate', '--data', data, '--out', join(work, 'e')]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /patchcore evaluate: --model: is required/);
  assert.match(patchcore(['fit', '--help']).stdout, /--method patchcore\|autoencoder/);
  assert.match(patchcore(['evaluate', '--help']).stdout, /Give it more\s+than once to compare models/);
});

test('target-FPR threshold from good images held out at fit time, used by metrics.json and scores.csv', () => {
  const model = join(work, 'model-validation');
  const fit = patchcore(['fit', '--data', data, '--model', model, '--validation-split', '0.34', '--frame', 'paper']);
  assert.equal(fit.code, 0, fit.stderr);
  const manifest = JSON.parse(readFileSync(join(model, 'manifest.json'), 'utf8'));
  // Every third of the six sorted training images is held out: 002 and 005.
  assert.deepEqual(manifest.validation.images, ['train/good/002.png', 'train/good/005.png']);
  assert.equal(manifest.training.images, 4);
  assert.equal(manifest.coreset.trainPatches, 4 * 784);
  const maxGood = Math.max(...manifest.validation.scores);

  const out = join(work, 'eval-fpr');
  const ev = patchcore(['evaluate', '--model', model, '--data', data, '--out', out, '--threshold', 'target-fpr', '--target-fpr', '0']);
  assert.equal(ev.code, 0, ev.stderr);
  const metrics = JSON.parse(readFileSync(join(out, 'metrics.json'), 'utf8'));
  assert.equal(metrics.decision.rule, 'target-fpr');
  assert.equal(metrics.decision.target_fpr, 0);
  // FPR 0 on the held-out images: the smallest threshold above all of their scores.
  assert.ok(metrics.decision.threshold > maxGood && metrics.decision.threshold - maxGood < 1e-9);
  const rows = readFileSync(join(out, 'scores.csv'), 'utf8').trim().split('\n').slice(1).map((l) => l.split(','));
  for (const r of rows) assert.equal(r[4], Number(r[3]) >= metrics.decision.threshold ? '1' : '0');
  const tp = rows.filter((r) => r[2] === '1' && r[4] === '1').length;
  assert.equal(metrics.decision.confusion_matrix.tp, tp);
  assert.match(readFileSync(join(out, 'index.html'), 'utf8'), /target FPR 0% on good validation images/);

  const noValidation = patchcore(['evaluate', '--model', join(work, 'model'), '--data', data, '--out', join(work, 'e2'), '--threshold', 'target-fpr']);
  assert.equal(noValidation.code, 1);
  assert.match(noValidation.stderr, /has no held-out good images to set a target-FPR threshold: fit it with --validation-split/);
});
