import { test } from 'node:test';
import assert from 'node:assert/strict';
import sharp from 'sharp';
import {
  boxPlot, confusionPlot, groupScores, histogramPlot, imageRocPlot, kdePlot, kernelDensity, pixelRocPlot,
  rocComparisonPlot,
} from './plots.js';

/** Parses the SVG with librsvg (through sharp): malformed XML throws. Returns the rendered size. */
async function checkSvg(svg: string): Promise<{ width: number; height: number }> {
  assert.match(svg, /^<svg[^>]*xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
  assert.ok(svg.trimEnd().endsWith('</svg>'));
  assert.doesNotMatch(svg, /@import|@font-face|https?:\/\/(?!www\.w3\.org)/, 'SVG must not reference the network');
  const meta = await sharp(Buffer.from(svg)).metadata();
  assert.equal(meta.format, 'svg');
  return { width: meta.width!, height: meta.height! };
}

const scores = Float32Array.from([0.1, 0.2, 0.35, 0.3, 0.9, 0.8, 0.25, 0.7, 1.1, 0.95]);
const labels = Uint8Array.from([0, 0, 0, 0, 1, 1, 1, 1, 1, 1]);
const types = ['good', 'good', 'good', 'good', 'crack', 'crack', 'crack', 'scratch', 'scratch', 'scratch'];

test('image ROC: valid SVG titled with the AUROC', async () => {
  const svg = await imageRocPlot(scores, labels, 0.958333);
  const { width, height } = await checkSvg(svg);
  assert.ok(width > 300 && height > 200);
  assert.ok(svg.includes('Image-level ROC (AUROC 0.9583)'), 'title with AUROC');
  assert.ok(svg.includes('false positive rate') && svg.includes('true positive rate'));
});

test('pixel ROC from a decimated curve, with a note; comparison ROC names each method', async () => {
  const svg = await pixelRocPlot({ fpr: [0, 0.05, 0.2, 1], tpr: [0, 0.7, 0.95, 1] }, 0.9712, '(1 in 3 pixels)');
  await checkSvg(svg);
  assert.ok(svg.includes('Pixel-level ROC (AUROC 0.9712) (1 in 3 pixels)'));
  await assert.rejects(pixelRocPlot({ fpr: [0, 1], tpr: [0] }, 0.5), /same length/);
  const cmp = await rocComparisonPlot([
    { name: 'patchcore', curve: { fpr: [0, 0.1, 1], tpr: [0, 0.9, 1] }, auroc: 0.95 },
    { name: 'autoencoder', curve: { fpr: [0, 0.3, 1], tpr: [0, 0.6, 1] }, auroc: 0.7 },
  ]);
  await checkSvg(cmp);
  assert.ok(cmp.includes('patchcore (AUROC 0.9500)') && cmp.includes('autoencoder (AUROC 0.7000)'));
});

test('score distributions: histogram, KDE and box plot name every type', async () => {
  const groups = groupScores(scores, types);
  assert.deepEqual(groups.map((g) => g.name), ['good', 'crack', 'scratch']);
  for (const [svg, title] of [
    [await histogramPlot(groups, 0.5), 'Image score histogram by type'],
    [await kdePlot(groups, 0.5), 'Image score density (Gaussian KDE) by type'],
    [await boxPlot(groups, 0.5), 'Image score box plot by type'],
  ] as const) {
    await checkSvg(svg);
    assert.ok(svg.includes(title), `title "${title}"`);
    for (const t of ['good', 'crack', 'scratch']) assert.ok(svg.includes(`>${t}<`), `${title}: type ${t}`);
  }
  assert.throws(() => groupScores([1, NaN], ['good', 'x']), /scores\[1\] \(x\) is NaN/);
});

test('kernelDensity integrates to 1 per group and peaks at the data', () => {
  const groups = groupScores([0, 0.1, -0.1, 5, 5.2, 4.8, 5.1], ['a', 'a', 'a', 'b', 'b', 'b', 'b']);
  const { grid, densities } = kernelDensity(groups, 400);
  const dx = grid[1] - grid[0];
  for (const d of densities) {
    const area = d.reduce((s, v) => s + v, 0) * dx;
    assert.ok(Math.abs(area - 1) < 0.02, `area ${area}`);
  }
  const argmax = (d: Float64Array) => grid[d.indexOf(Math.max(...d))];
  assert.ok(Math.abs(argmax(densities[0])) < 0.1);
  assert.ok(Math.abs(argmax(densities[1]) - 5.03) < 0.15);
  // A single value still gets a finite, positive width.
  const single = kernelDensity(groupScores([3], ['good']));
  assert.ok(single.bandwidths[0] > 0 && Number.isFinite(Math.max(...single.densities[0])));
});

test('confusion matrix: counts, threshold and its rule in the SVG', async () => {
  const svg = await confusionPlot({ tp: 31, fp: 2, tn: 18, fn: 7 }, { threshold: 1.234567, rule: 'target-fpr', targetFpr: 0.01 });
  await checkSvg(svg);
  for (const s of ['TP 31', 'FP 2', 'TN 18', 'FN 7', 'Confusion matrix at threshold 1.23457', 'target FPR 1% on good validation images']) {
    assert.ok(svg.includes(s), `missing "${s}"`);
  }
  const f1 = await confusionPlot({ tp: 1, fp: 0, tn: 1, fn: 0 }, { threshold: 0.5, rule: 'f1-max' });
  assert.ok(f1.includes('F1-max on labelled test set'));
});
