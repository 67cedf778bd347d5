// Method comparison end to end through the bin script: fit PatchCore and the autoencoder baseline on the same small
// real bottle subset, then `patchcore evaluate --model <pc> --model <ae>` writes one report comparing them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoRoot } from '../shared/paths.js';
import { methodNames } from '../shared/local/evaluate.js';
import { makeBottleSubset } from './helpers/subset.js';

const bin = join(repoRoot, 'bin', 'patchcore.js');

function patchcore(args: string[]) {
  const r = spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', env: { ...process.env, LOG_LEVEL: 'warn' } });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const work = mkdtempSync(join(tmpdir(), 'patchcore-compare-'));
const data = makeBottleSubset({ train: 6, test: { good: 2, broken_large: 2, contamination: 1 } });

test('fit both methods, then one evaluate with two --model folders writes the comparison report', () => {
  const pc = join(work, 'pc');
  const ae = join(work, 'ae');
  let r = patchcore(['fit', '--data', data, '--model', pc, '--coreset-ratio', '0.1']);
  assert.equal(r.code, 0, r.stderr);
  r = patchcore(['fit', '--method', 'autoencoder', '--data', data, '--model', ae, '--epochs', '2', '--batch-size', '3']);
  assert.equal(r.code, 0, r.stderr);
  const fitOut = JSON.parse(r.stdout);
  assert.equal(fitOut.method, 'autoencoder');
  assert.equal(fitOut.images, 6);
  assert.equal(fitOut.loss.length, 2);
  assert.match(fitOut.backend, /^(wasm|cpu|tensorflow)/);

  const out = join(work, 'cmp');
  r = patchcore(['evaluate', '--model', pc, '--model', ae, '--data', data, '--out', out, '--recall-sample', '0']);
  assert.equal(r.code, 0, r.stderr);
  const printed = JSON.parse(r.stdout);
  assert.deepEqual(Object.keys(printed.methods), ['patchcore', 'autoencoder']);

  const metrics = JSON.parse(readFileSync(join(out, 'metrics.json'), 'utf8'));
  assert.deepEqual(Object.keys(metrics.methods), ['patchcore', 'autoencoder']);
  const { patchcore: p, autoencoder: a } = metrics.methods;
  // The same metrics for both methods, on the same 5 test images.
  assert.deepEqual(Object.keys(a).sort(), Object.keys(p).sort());
  for (const m of [p, a]) {
    for (const key of ['image_auroc', 'pixel_auroc', 'aupro', 'f1_max', 'threshold']) assert.equal(typeof m[key], 'number', key);
    assert.equal(m.images, 5);
    assert.equal(m.pixel_images, 5);
  }
  assert.equal(p.model.method, 'patchcore');
  assert.equal(a.model.method, 'autoencoder');
  assert.equal(a.hnsw_recall_at_1, null);
  assert.equal(p.image_auroc, 1);
  assert.ok(a.timings_ms.reconstruct > 0);

  for (const f of [
    'index.html', 'scores.csv', 'plots/roc-comparison.svg',
    'methods/patchcore/metrics.json', 'methods/patchcore/plots/roc.svg', 'methods/patchcore/plots/pixel-roc.svg',
    'methods/autoencoder/metrics.json', 'methods/autoencoder/plots/roc.svg', 'methods/autoencoder/plots/pixel-roc.svg',
    'methods/autoencoder/gallery/1.png',
  ]) assert.ok(existsSync(join(out, f)), `${f} is written`);
  const html = readFileSync(join(out, 'index.html'), 'utf8');
  assert.match(html, /Method: patchcore/);
  assert.match(html, /Method: autoencoder/);
  assert.match(html, /<h2>Comparison<\/h2>/);
  const csv = readFileSync(join(out, 'scores.csv'), 'utf8').trim().split('\n');
  assert.equal(csv[0], 'method,image,defect_type,label,score,predicted');
  assert.equal(csv.filter((l) => l.startsWith('patchcore,')).length, 5);
  assert.equal(csv.filter((l) => l.startsWith('autoencoder,')).length, 5);

  // The autoencoder alone: the same metrics.json fields and report files as a PatchCore evaluation.
  const single = join(work, 'ae-eval');
  r = patchcore(['evaluate', '--model', ae, '--data', data, '--out', single]);
  assert.equal(r.code, 0, r.stderr);
  const alone = JSON.parse(readFileSync(join(single, 'metrics.json'), 'utf8'));
  assert.deepEqual(Object.keys(alone).sort(), Object.keys(p).sort());
  assert.equal(alone.image_auroc, a.image_auroc);
  assert.equal(alone.pixel_auroc, a.pixel_auroc);
  for (const f of ['index.html', 'scores.csv', 'plots/roc.svg', 'plots/pixel-roc.svg']) assert.ok(existsSync(join(single, f)), f);
  assert.match(readFileSync(join(single, 'index.html'), 'utf8'), /Results: autoencoder/);

  r = patchcore(['evaluate', '--model', ae, '--model', `${ae}/`, '--data', data, '--out', join(work, 'x')]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /patchcore evaluate: --model ".*ae" is given twice/);
});

test('report names: the method, with the folder name when two models share a method', () => {
  assert.deepEqual(methodNames([{ method: 'patchcore', modelDir: '/m/pc' }, { method: 'autoencoder', modelDir: '/m/ae' }]), ['patchcore', 'autoencoder']);
  assert.deepEqual(
    methodNames([
      { method: 'autoencoder', modelDir: '/m/ae-10' }, { method: 'autoencoder', modelDir: '/m/ae-30' }, { method: 'patchcore', modelDir: '/m/pc' },
    ]),
    ['autoencoder ae-10', 'autoencoder ae-30', 'patchcore'],
  );
  assert.throws(
    () => methodNames([{ method: 'patchcore', modelDir: '/a/model' }, { method: 'patchcore', modelDir: '/b/model' }]),
    /two models to compare are both named "patchcore model": give the model folders distinct names/,
  );
});
