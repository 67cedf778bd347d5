// `patchcore benchmark` end to end through the bin script, on a temp root of small real categories (symlinks to
// the shared bottle and VisA capsules files, nothing copied) plus one whose images cannot be decoded: locally over
// all of them, through the queues (real redis-server, s3rver and worker processes) for one, and the refusals of
// bad input; --compare with the real PyTorch reference on the small bottle set (about a minute), and what it
// refuses before any work.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { benchmarkCommand } from '../cli/commands/benchmark.js';
import { UsageError } from '../cli/args.js';
import { UserError } from '../shared/errors.js';
import { repoRoot, sharedDir } from '../shared/paths.js';
import { makeBottleSubset } from './helpers/subset.js';

const bin = join(repoRoot, 'bin', 'patchcore.js');

function patchcore(args: string[], env: Record<string, string> = {}) {
  const r = spawnSync(process.execPath, [bin, 'benchmark', ...args], { encoding: 'utf8', env: { ...process.env, LOG_LEVEL: 'warn', ...env } });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const work = mkdtempSync(join(tmpdir(), 'patchcore-benchmark-'));
const root = join(work, 'data');
makeBottleSubset({ train: 6, test: { good: 2, broken_large: 2 } }, join(root, 'mvtec_ad', 'bottle'));
{
  // Four training images, one good and one bad test image with its mask: non-square JPEGs.
  const src = join(sharedDir(), 'datasets', 'visa', 'capsules');
  const dst = join(root, 'visa', 'capsules');
  const link = (rel: string) => {
    mkdirSync(join(dst, rel, '..'), { recursive: true });
    symlinkSync(join(src, rel), join(dst, rel));
  };
  for (const f of readdirSync(join(src, 'train/good')).sort().slice(0, 4)) link(`train/good/${f}`);
  link('test/good/000.jpg');
  link('test/bad/000.jpg');
  link('ground_truth/bad/000_mask.png');
}
// A category whose files are not images: its fit fails, the others go on.
mkdirSync(join(root, 'broken', 'train', 'good'), { recursive: true });
mkdirSync(join(root, 'broken', 'test', 'good'), { recursive: true });
writeFileSync(join(root, 'broken', 'train', 'good', '000.png'), 'not an image');
writeFileSync(join(root, 'broken', 'test', 'good', '000.png'), 'not an image');

const FIGURES = ['image_auroc', 'pixel_auroc', 'aupro', 'f1_max', 'bank', 'fit_s', 'evaluate_s', 'images_per_s'];

test('every category under the root fitted and evaluated; one table; a failed category reported and the rest go on', () => {
  const out = join(work, 'local');
  const r = patchcore(['--data', root, '--out', out, '--coreset-ratio', '0.05', '--limit-per-type', '2']);
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /patchcore benchmark: 1 of 3 categories failed \(broken\); see .*results\.md/);

  const results = JSON.parse(readFileSync(join(out, 'results.json'), 'utf8'));
  assert.equal(results.mode, 'local');
  assert.equal(results.reference, null);
  // The library's default frame: the whole image, shorter side 256.
  assert.deepEqual(results.settings.frame, { resize: 256, crop: null });
  assert.equal(results.settings.coreset_ratio, 0.05);
  assert.deepEqual(results.categories.map((c: { category: string; status: string }) => [c.category, c.status]),
    [['bottle', 'ok'], ['broken', 'failed'], ['capsules', 'ok']]);
  const [bottle, broken, capsules] = results.categories;
  for (const c of [bottle, capsules]) {
    for (const f of FIGURES) assert.equal(typeof c[f], 'number', `${c.category}.${f}`);
    assert.ok(c.fit_s > 0 && c.evaluate_s > 0 && c.images_per_s > 0);
    assert.equal(c.report, `${c.category}/report/index.html`);
    assert.ok(existsSync(join(out, c.report)), c.report);
    const metrics = JSON.parse(readFileSync(join(out, c.category, 'report', 'metrics.json'), 'utf8'));
    assert.equal(metrics.image_auroc, c.image_auroc);
    assert.ok(existsSync(join(out, c.category, 'model', 'manifest.json')));
  }
  assert.equal(bottle.train_images, 6);
  assert.equal(bottle.test_images, 4);
  assert.equal(bottle.bank, Math.round(0.05 * 6 * 1024));
  assert.equal(bottle.image_auroc, 1);
  assert.equal(capsules.train_images, 4);
  assert.equal(capsules.test_images, 2);
  assert.equal(capsules.data, join(root, 'visa', 'capsules'));
  assert.match(broken.error, /no training image of ".*broken" could be read/);
  assert.equal(broken.image_auroc, undefined);

  const md = readFileSync(join(out, 'results.md'), 'utf8');
  assert.match(md, /^\| category \| run \| image AUROC \| pixel AUROC \| AUPRO \| F1-max \| bank \| fit s \| evaluate s \| images\/s \| report \|$/m);
  assert.match(md, /^\| bottle \| ours \| 1\.000 \| 0\.\d{3} \| 0\.\d{3} \| 1\.000 \| 307 \| [\d.]+ \| [\d.]+ \| [\d.]+ \| \[bottle\/report\/index\.html\]/m);
  assert.match(md, /^\| broken \| ours \|( {2}\|){8} failed: no training image of/m);
  assert.match(md, /^\| capsules \| ours \| /m);
  const html = readFileSync(join(out, 'index.html'), 'utf8');
  assert.match(html, /<a href="bottle\/report\/index\.html">report<\/a>/);
  assert.match(html, /<a href="capsules\/report\/index\.html">report<\/a>/);
  assert.match(html, /<td class="error">failed: no training image/);
});

test('--distributed: a category trained and evaluated through the queues, its report downloaded beside the table', () => {
  const out = join(work, 'distributed');
  const r = patchcore(['--data', root, '--categories', 'bottle', '--distributed', '--out', out]);
  assert.equal(r.code, 0, r.stderr);
  const results = JSON.parse(readFileSync(join(out, 'results.json'), 'utf8'));
  assert.equal(results.mode, 'distributed');
  assert.equal(results.categories.length, 1);
  const [bottle] = results.categories;
  assert.equal(bottle.status, 'ok');
  for (const f of FIGURES) assert.equal(typeof bottle[f], 'number', f);
  // The queued run uses the default coreset ratio, 0.1, and the default frame: 900x900 -> 256x256, 32x32 patches.
  assert.equal(bottle.bank, Math.round(0.1 * 6 * 1024));
  assert.equal(bottle.train_images, 6);
  assert.equal(bottle.test_images, 4);
  const metrics = JSON.parse(readFileSync(join(out, 'bottle', 'report', 'metrics.json'), 'utf8'));
  assert.equal(metrics.image_auroc, bottle.image_auroc);
  assert.match(metrics.model.version, /^v-/);
  assert.match(readFileSync(join(out, 'results.md'), 'utf8'), /^\| bottle \| ours \| 1\.000 \| /m);
});

// The reference's Debian packages (../shared/bench/README.md) are not part of the test set-up everywhere.
const referenceMissing = spawnSync('/usr/bin/python3', ['-c', 'import torch, faiss, sklearn, scipy, skimage, h5py']).status !== 0;

test('--compare: the reference runs on the same category; its figures, the ratios and its frame are recorded',
  { skip: referenceMissing && 'needs /usr/bin/python3 with the reference\'s Debian packages (../shared/bench/README.md)' }, () => {
    const out = join(work, 'compare');
    // The paper frame gives our side the reference's 784 patches per image, so the bank sizes can be compared.
    const r = patchcore(['--data', root, '--categories', 'bottle', '--compare', '--frame', 'paper', '--out', out]);
    assert.equal(r.code, 0, r.stderr);
    const results = JSON.parse(readFileSync(join(out, 'results.json'), 'utf8'));
    assert.deepEqual(results.reference, {
      variant: 'official', coreset: 0.1,
      frame: 'the whole image squashed to 256x256 (aspect ratio not kept), then a centre crop of 224x224; pixel metrics inside that crop',
    });
    const [bottle] = results.categories;
    assert.equal(bottle.reference.status, 'ok');
    for (const f of FIGURES) assert.equal(typeof bottle.reference[f], 'number', `reference.${f}`);
    // The same images and coreset ratio: the same counts and bank size.
    assert.equal(bottle.reference.train_images, 6);
    assert.equal(bottle.reference.test_images, 4);
    assert.equal(bottle.reference.bank, bottle.bank);
    assert.equal(bottle.reference.image_auroc, 1);
    assert.equal(bottle.ratio.fit_s, Math.round((bottle.reference.fit_s / bottle.fit_s) * 1000) / 1000);
    assert.equal(bottle.ratio.image_auroc, 1);
    assert.ok(existsSync(join(out, 'bottle', 'reference.json')));
    const md = readFileSync(join(out, 'results.md'), 'utf8');
    assert.match(md, /^\| bottle \| reference \| 1\.000 \| /m);
    assert.match(md, /^\| bottle \| ours vs reference \| 1\.00x \| /m);
    assert.match(md, /its frame: the whole image squashed to 256x256/);
  });

test('bad --data, --categories and combinations are refused with the input named, before any work', async () => {
  const out = join(work, 'refused');
  // Through the bin script once: the message printed without a stack, exit code 1.
  const r = patchcore(['--data', root, '--categories', 'bottle,cable', '--out', out]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /^patchcore benchmark: --categories: no category "cable" under ".*data" \(found: bottle, broken, capsules\)$/m);
  assert.doesNotMatch(r.stderr, /\n\s+at /);
  // The rest in this process (each start of the bin costs seconds): user errors, usage errors (exit code 2).
  const refused = (argv: string[], kind: typeof UserError, message: RegExp) =>
    assert.rejects(benchmarkCommand(argv), (e: Error) => e instanceof kind && message.test(e.message));
  await refused(['--data', join(work, 'nowhere'), '--out', out], UserError, /^--data ".*nowhere" is not a folder$/);
  await refused(['--data', join(root, 'mvtec_ad', 'bottle', 'train'), '--out', out], UserError,
    /^--data ".*train" holds no category: expected folders with train\/ and test\//);
  await refused(['--data', root, '--out', out, '--categories', ','], UserError, /^--categories: expected one or more category names/);
  await refused(['--data', root, '--out', out, '--distributed', '--coreset-ratio', '0.1'], UsageError,
    /^patchcore benchmark: --coreset-ratio does not apply with --distributed/);
  await refused(['--data', root, '--out', out, '--compare', '--limit', '3'], UsageError,
    /^patchcore benchmark: --limit does not apply with --compare \(the reference always uses every image\)$/);
  await refused(['--data', root], UsageError, /^patchcore benchmark: --out: is required$/);
  // --compare finds the reference through $PATCHCORE_SHARED_DIR and refuses to start without it.
  const weights = join(sharedDir(), 'weights', 'resnet50_imagenet_keras_conv1-conv4.h5');
  const saved = process.env.PATCHCORE_SHARED_DIR;
  process.env.PATCHCORE_SHARED_DIR = mkdtempSync(join(tmpdir(), 'patchcore-no-shared-'));
  try {
    await refused(['--data', root, '--out', out, '--compare', '--weights', weights], UserError,
      /^the reference script .*no-shared-.*\/bench\/ref_patchcore\.py is missing/);
  } finally {
    if (saved === undefined) delete process.env.PATCHCORE_SHARED_DIR;
    else process.env.PATCHCORE_SHARED_DIR = saved;
  }
  assert.equal(existsSync(out), false, 'nothing written');
});
