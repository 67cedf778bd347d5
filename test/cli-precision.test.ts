// Backbone precision end to end: `patchcore fit --precision int8` on real bottle images with the real weights
// records the calibrated activation ranges in the manifest, and evaluate and the scorer's backbone cache score
// with exactly those ranges; bf16 is refused with the reason; distributed training refuses --precision by name.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createBackbone, DEFAULT_CALIBRATION_IMAGES } from '../shared/backbone/engine.js';
import { ModelBackbones } from '../shared/distributed/score-shard.js';
import { readManifest } from '../shared/model/manifest.js';
import { defaultWeightsPath, repoRoot } from '../shared/paths.js';
import { makeBottleSubset } from './helpers/subset.js';

const bin = join(repoRoot, 'bin', 'patchcore.js');

function patchcore(args: string[]) {
  const r = spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', env: { ...process.env, LOG_LEVEL: 'warn' } });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const work = mkdtempSync(join(tmpdir(), 'patchcore-precision-'));
const data = makeBottleSubset({ train: 4, test: { good: 2, broken_large: 2 } });
const int8Model = join(work, 'int8');

test('fit --precision int8 records the ranges; evaluate scores with them and gets metrics', () => {
  const fit = patchcore(['fit', '--data', data, '--model', int8Model, '--precision', 'int8', '--coreset-size', '200', '--batch-size', '4']);
  assert.equal(fit.code, 0, fit.stderr);
  assert.equal(JSON.parse(fit.stdout).precision, 'int8');
  const manifest = JSON.parse(readFileSync(join(int8Model, 'manifest.json'), 'utf8'));
  assert.equal(manifest.backbone.precision, 'int8');
  assert.equal(manifest.backbone.engine, 'onnx');
  // Fewer training images than the default calibration count: all of them calibrate.
  assert.ok(4 < DEFAULT_CALIBRATION_IMAGES);
  assert.deepEqual(manifest.backbone.calibration, { images: 4, method: 'minmax' });
  const ranges = manifest.backbone.activationRanges as Record<string, [number, number]>;
  assert.ok(Object.keys(ranges).length > 10, `${Object.keys(ranges).length} ranges`);
  for (const [name, [min, max]] of Object.entries(ranges)) assert.ok(Number.isFinite(min) && max > min, `${name}: [${min}, ${max}]`);
  assert.ok(manifest.training.timings_ms.calibration > 0);

  const out = join(work, 'eval-int8');
  const ev = patchcore(['evaluate', '--model', int8Model, '--data', data, '--out', out, '--recall-sample', '0']);
  assert.equal(ev.code, 0, ev.stderr);
  const metrics = JSON.parse(readFileSync(join(out, 'metrics.json'), 'utf8'));
  assert.equal(metrics.images, 4);
  for (const key of ['image_auroc', 'pixel_auroc', 'aupro', 'f1_max']) assert.equal(typeof metrics[key], 'number', key);
  assert.equal(metrics.model.precision, 'int8');
  // Broken bottles stand out even from four training images at int8.
  assert.equal(metrics.image_auroc, 1);

  // Scoring quantises with the recorded ranges, not new ones: narrowing the input's range changes the scores.
  const clipped = join(work, 'int8-clipped');
  spawnSync('cp', ['-r', int8Model, clipped]);
  const changed = JSON.parse(readFileSync(join(clipped, 'manifest.json'), 'utf8'));
  changed.backbone.activationRanges.input = [ranges.input[0] / 4, ranges.input[1] / 4];
  writeFileSync(join(clipped, 'manifest.json'), JSON.stringify(changed));
  const out2 = join(work, 'eval-clipped');
  assert.equal(patchcore(['evaluate', '--model', clipped, '--data', data, '--out', out2, '--recall-sample', '0']).code, 0);
  const scores = (dir: string) => readFileSync(join(dir, 'scores.csv'), 'utf8');
  assert.notEqual(scores(out2), scores(out));
});

test('an fp32 fit says fp32 in its manifest; a manifest without precision (older models) reads as fp32', () => {
  const model = join(work, 'fp32');
  const fit = patchcore(['fit', '--data', data, '--model', model, '--coreset-size', '200', '--limit', '2']);
  assert.equal(fit.code, 0, fit.stderr);
  const manifest = JSON.parse(readFileSync(join(model, 'manifest.json'), 'utf8'));
  assert.equal(manifest.backbone.precision, 'fp32');
  assert.equal(manifest.backbone.activationRanges, undefined);
  assert.equal(manifest.backbone.calibration, undefined);

  delete manifest.backbone.precision;
  writeFileSync(join(model, 'manifest.json'), JSON.stringify(manifest));
  assert.equal(readManifest(model).backbone.precision, undefined);
  // An int8 manifest that lost its ranges is refused by name.
  manifest.backbone.precision = 'int8';
  writeFileSync(join(model, 'manifest.json'), JSON.stringify(manifest));
  assert.throws(() => readManifest(model), /invalid at backbone: an int8 backbone needs its activationRanges/);
});

test('--precision bf16 fails with the reason; a bad value and submit train --precision are usage errors', () => {
  let r = patchcore(['fit', '--data', data, '--model', join(work, 'bf16'), '--precision', 'bf16']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /no bfloat16 Conv kernel, so a bf16 backbone cannot run; use fp32 or int8/);
  r = patchcore(['fit', '--data', data, '--model', join(work, 'x'), '--precision', 'int4']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /patchcore fit: --precision: /);
  r = patchcore(['fit', '--method', 'autoencoder', '--data', data, '--model', join(work, 'ae'), '--precision', 'int8']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /--precision does not apply to --method autoencoder/);
  r = patchcore(['submit', 'train', '--dataset', 'bottle', '--precision', 'int8']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /patchcore submit train: --precision is supported by local fit only for now/);
});

test('the scorer keeps fp32 shared and one int8 backbone per model version, built from its ranges', async () => {
  const manifest = readManifest(int8Model);
  const weightsPath = defaultWeightsPath();
  let created = 0;
  const backbones = new ModelBackbones(await createBackbone({ engine: 'onnx', weightsPath }), (opts) => {
    created++;
    return createBackbone({ engine: 'onnx', weightsPath, ...opts });
  });
  try {
    const fp32Manifest = { ...manifest, backbone: { ...manifest.backbone, precision: 'fp32' as const, activationRanges: undefined } };
    assert.equal(await backbones.forModel('bottle', 'v1', fp32Manifest), backbones.fp32);
    const a = await backbones.forModel('bottle', 'v2', manifest);
    assert.equal(a.precision, 'int8');
    assert.deepEqual(a.activationRanges, manifest.backbone.activationRanges);
    assert.equal(await backbones.forModel('bottle', 'v2', manifest), a);
    assert.equal(created, 1);
    assert.notEqual(await backbones.forModel('bottle', 'v3', manifest), a);
    assert.deepEqual(backbones.int8Versions, ['bottle/v2', 'bottle/v3']);
  } finally {
    await backbones.dispose();
  }
});
