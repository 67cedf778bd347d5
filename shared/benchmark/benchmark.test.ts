// The benchmark's parts that need no model: finding categories under a root (real folders in a temp dir, and the
// shared datasets folder itself), the results table in its three forms, and the reference's command line and JSON.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { UserError } from '../errors.js';
import { sharedDir } from '../paths.js';
import { findCategories } from './categories.js';
import { REFERENCE_FRAME, readReferenceRun, referenceArgs, referenceScript } from './reference.js';
import { figureRatios, renderHtml, renderMarkdown, withThroughput, type BenchmarkResults, type CategoryFigures } from './results.js';

function category(root: string, rel: string): string {
  const dir = join(root, rel);
  mkdirSync(join(dir, 'train', 'good'), { recursive: true });
  mkdirSync(join(dir, 'test', 'good'), { recursive: true });
  return dir;
}

test('categories: MVTec-layout folders at most two levels down, sorted, symlinks followed; the root may be one', () => {
  const root = mkdtempSync(join(tmpdir(), 'bench-cats-'));
  category(root, 'mvtec_ad/bottle');
  category(root, 'visa/capsules');
  category(root, 'screws');
  category(root, 'a/b/too_deep');
  mkdirSync(join(root, 'mvtec_ad/not_a_category/train'), { recursive: true });
  category(root, '.hidden/cable');
  const elsewhere = mkdtempSync(join(tmpdir(), 'bench-linked-'));
  symlinkSync(category(elsewhere, 'zipper'), join(root, 'zipper'));
  assert.deepEqual(findCategories(root).map((c) => [c.name, c.dir]), [
    ['bottle', join(root, 'mvtec_ad/bottle')], ['capsules', join(root, 'visa/capsules')],
    ['screws', join(root, 'screws')], ['zipper', join(root, 'zipper')],
  ]);
  assert.deepEqual(findCategories(root, ['zipper', 'bottle']).map((c) => c.name), ['zipper', 'bottle']);
  assert.deepEqual(findCategories(join(root, 'visa/capsules')).map((c) => c.name), ['capsules']);
  // The shared data: both real categories.
  assert.deepEqual(findCategories(join(sharedDir(), 'datasets')).map((c) => c.name), ['bottle', 'capsules']);
});

test('categories: a bad root or name is refused, naming it', () => {
  const root = mkdtempSync(join(tmpdir(), 'bench-cats-'));
  category(root, 'mvtec_ad/bottle');
  category(root, 'visa/capsules');
  const refused = (f: () => unknown, message: RegExp) => assert.throws(f, (e: Error) => e instanceof UserError && message.test(e.message));
  refused(() => findCategories(join(root, 'missing')), /^--data ".*missing" is not a folder$/);
  refused(() => findCategories(join(root, 'mvtec_ad/bottle/train')), /^--data ".*train" holds no category: expected folders with train\/ and test\//);
  refused(() => findCategories(root, ['bottle', 'cable']), /^--categories: no category "cable" under ".*" \(found: bottle, capsules\)$/);
  refused(() => findCategories(root, []), /^--categories: expected one or more category names/);
  refused(() => findCategories(root, ['bottle', 'bottle']), /^--categories: "bottle" is given twice$/);
  category(root, 'other/bottle');
  refused(() => findCategories(root), /holds two categories named "bottle" \(mvtec_ad\/bottle, other\/bottle\)/);
});

const bottle: CategoryFigures = withThroughput({
  image_auroc: 1, pixel_auroc: 0.9851, aupro: 0.9443, f1_max: 1, bank: 16391, train_images: 209, test_images: 83, fit_s: 30, evaluate_s: 15,
});
const reference: CategoryFigures = withThroughput({
  image_auroc: 1, pixel_auroc: 0.985, aupro: 0.944, f1_max: 1, bank: 16391, train_images: 209, test_images: 83, fit_s: 90, evaluate_s: 27,
});

function results(): BenchmarkResults {
  return {
    created_at: '2026-12-02T08:00:00.000Z', mode: 'local', data: '/data', settings: { recipe: 'paper', coreset_ratio: 0.1 },
    reference: { variant: 'official', coreset: 0.1, frame: REFERENCE_FRAME },
    categories: [
      { category: 'bottle', data: '/data/mvtec_ad/bottle', status: 'ok', ...bottle, report: 'bottle/report/index.html',
        reference: { status: 'ok', ...reference }, ratio: figureRatios(bottle, reference) },
      { category: 'capsules', data: '/data/visa/capsules', status: 'failed', error: 'no training image could | be read\nat all',
        reference: { status: 'failed', error: 'the reference exited with code 1' } },
    ],
  };
}

test('figures: throughput over the whole pipeline; ratios above 1 where ours is better', () => {
  assert.equal(bottle.images_per_s, 6.49);
  assert.equal(reference.images_per_s, 2.5);
  assert.deepEqual(figureRatios(bottle, reference), {
    image_auroc: 1, pixel_auroc: 1, aupro: 1, f1_max: 1, fit_s: 3, evaluate_s: 1.8, images_per_s: 2.596,
  });
  assert.equal(figureRatios({ ...bottle, pixel_auroc: null }, reference).pixel_auroc, null);
});

test('results.md: one table, ours, the reference and the ratios per category; a failed category shows its error', () => {
  const md = renderMarkdown(results());
  assert.match(md, /^\| category \| run \| image AUROC \| pixel AUROC \| AUPRO \| F1-max \| bank \| fit s \| evaluate s \| images\/s \| report \|$/m);
  assert.match(md, /^\| bottle \| ours \| 1\.000 \| 0\.985 \| 0\.944 \| 1\.000 \| 16391 \| 30\.0 \| 15\.0 \| 6\.49 \| \[bottle\/report\/index\.html\]\(bottle\/report\/index\.html\) \|$/m);
  assert.match(md, /^\| bottle \| reference \| 1\.000 \| 0\.985 \| 0\.944 \| 1\.000 \| 16391 \| 90\.0 \| 27\.0 \| 2\.50 \| {2}\|$/m);
  assert.match(md, /^\| bottle \| ours vs reference \| 1\.00x \| 1\.00x \| 1\.00x \| 1\.00x \| {2}\| 3\.00x \| 1\.80x \| 2\.60x \| {2}\|$/m);
  // The error stays on one line and cannot split the table.
  assert.match(md, /^\| capsules \| ours \|( {2}\|){8} failed: no training image could \\\| be read at all \|$/m);
  assert.match(md, /^\| capsules \| reference \|( {2}\|){8} failed: the reference exited with code 1 \|$/m);
  assert.match(md, /2 categories under `\/data`, local, .*; 1 failed\./);
  assert.match(md, /its frame: the whole image squashed to 256x256 \(aspect ratio not kept\), then a centre crop of 224x224/);
  const rows = md.split('\n').filter((l) => l.startsWith('| '));
  assert.ok(rows.every((r) => r.split(/(?<!\\)\|/).length === 13), 'every row has 11 cells');
});

test('index.html links each category\'s report and escapes what it shows', () => {
  const r = results();
  r.categories[1] = { ...r.categories[1], status: 'failed', error: '<script>alert(1)</script>' } as BenchmarkResults['categories'][number];
  const html = renderHtml(r);
  assert.match(html, /<a href="bottle\/report\/index\.html">report<\/a>/);
  assert.match(html, /<td class="error">failed: &lt;script&gt;alert\(1\)&lt;\/script&gt;<\/td>/);
  assert.doesNotMatch(html, /<script>/);
  assert.match(html, /<a href="results\.json">results\.json<\/a>/);
  assert.equal(html.match(/<tr class="ours">/g)?.length, 2);
});

test('the reference: its command line, and its run read back from the JSON it writes', () => {
  const args = referenceArgs({ data: '/d/bottle', weights: '/w.h5', out: '/o/ref.json', recipe: 'paper', coreset: 0.1 });
  assert.deepEqual(args, [referenceScript(), '--data', '/d/bottle', '--weights', '/w.h5', '--out', '/o/ref.json', '--variant', 'official', '--coreset', '0.1']);
  assert.ok(referenceScript().endsWith('/bench/ref_patchcore.py'));
  assert.deepEqual(referenceArgs({ data: 'd', weights: 'w', out: 'o', recipe: 'seed', coreset: 0.01 }).slice(-4), ['--variant', 'seed', '--coreset', '0.01']);
  // The layout ref_patchcore.py writes: runs keyed "<variant>_c<coreset>", several runs per file.
  const file = join(mkdtempSync(join(tmpdir(), 'bench-ref-')), 'ref.json');
  const run = (auroc: number) => ({
    timings_s: { train_total_s: 90, test_total_s: 27 }, counts: { train_images: 209, test_images: 83, memory_bank: 16391 },
    metrics: { image_auroc: auroc, pixel_auroc: 0.985, 'aupro_0.3': 0.944, f1_max: { f1: 1, threshold: 3 } },
  });
  writeFileSync(file, JSON.stringify({ runs: { seed_c0: run(0.5), official_c0: run(0.9), 'official_c0.1': run(1) } }));
  assert.equal(readReferenceRun(file, 'official', 0.1).metrics.image_auroc, 1);
  writeFileSync(file, JSON.stringify({ runs: {} }));
  assert.throws(() => readReferenceRun(file, 'official', 0.1), /holds no run/);
});
