import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RESULTS_CSV_HEADER, RunningStats, ScoreHistogram, TopScores, binnedHistogramPlot, renderUnlabelledPage, resultCsvLine, resultJsonLine } from './unlabelled.js';

test('ScoreHistogram: equal bins over the range, the ends counted in the first and last bin, nothing lost', () => {
  const h = new ScoreHistogram(1, 3, 4);
  for (const s of [1, 1.49, 1.5, 2.2, 2.99, 3, 0.5, 7]) h.add(s);
  assert.deepEqual(Array.from(h.counts), [3, 1, 1, 3]);
  assert.deepEqual(h.toJSON().map((b) => [b.start, b.end]), [[1, 1.5], [1.5, 2], [2, 2.5], [2.5, 3]]);
  // One value only: a bin of positive width that holds it.
  const one = new ScoreHistogram(2, 2, 3);
  one.add(2);
  assert.equal(one.toJSON().reduce((s, b) => s + b.count, 0), 1);
  assert.ok(one.hi > one.lo);
  assert.throws(() => new ScoreHistogram(2, 1), { message: 'ScoreHistogram: range [2, 1] is not a finite range' });
});

test('RunningStats: mean, population std, min and max of a stream', () => {
  const s = new RunningStats();
  assert.deepEqual(s.toJSON(), { count: 0, mean: null, std: null, min: null, max: null });
  for (const x of [2, 4, 4, 4, 5, 5, 7, 9]) s.add(x);
  const j = s.toJSON();
  assert.equal(j.count, 8);
  assert.ok(Math.abs(j.mean! - 5) < 1e-12);
  assert.ok(Math.abs(j.std! - 2) < 1e-12);
  assert.equal(j.min, 2);
  assert.equal(j.max, 9);
});

test('TopScores: the n highest of any stream, highest first, ties by id, whatever the order they come in', () => {
  const items = Array.from({ length: 1000 }, (_, i) => ({ id: `img-${String(i).padStart(4, '0')}`, score: (i * 7919) % 1000 / 10 }));
  items.push({ id: 'tie-a', score: 99.9 }, { id: 'img-tie', score: 99.9 });
  const top = new TopScores<{ id: string; score: number }>(5);
  for (const it of items) top.add(it);
  const expected = [...items].sort((a, b) => b.score - a.score || (a.id < b.id ? -1 : 1)).slice(0, 5);
  assert.deepEqual(top.sorted(), expected);
  assert.deepEqual(top.sorted().slice(0, 3).map((e) => e.id), ['img-0321', 'img-tie', 'tie-a']);
  const few = new TopScores<{ id: string; score: number }>(10);
  few.add({ id: 'a', score: 1 });
  assert.deepEqual(few.sorted(), [{ id: 'a', score: 1 }]);
});

test('results rows: CSV with 1/0/empty anomalous and quoted fields; JSON lines with every field', () => {
  assert.equal(RESULTS_CSV_HEADER, 'image,score,anomalous,map\n');
  assert.equal(resultCsvLine({ image: 'a/b.png', key: 'datasets/d/a/b.png', score: 1.5, anomalous: true, map: 'reports/r/maps/a/b.png.png' }),
    'a/b.png,1.50000000,1,reports/r/maps/a/b.png.png\n');
  assert.equal(resultCsvLine({ image: 'x,"y".png', key: 'k', score: 0.25, anomalous: null, map: 'm' }), '"x,""y"".png",0.250000000,,m\n');
  assert.equal(resultCsvLine({ image: 'bad.png', key: 'k', score: null, anomalous: null, map: null, error: 'not an image' }), 'bad.png,,,\n');
  assert.deepEqual(JSON.parse(resultJsonLine({ image: 'a.png', key: 'k', score: 2, anomalous: false, map: 'm' })), { image: 'a.png', key: 'k', score: 2, anomalous: false, map: 'm' });
});

test('the page: run table, histogram with the threshold, the top images linked to their heatmaps, escaped names', async () => {
  const svg = await binnedHistogramPlot([{ start: 0, end: 1, count: 3 }, { start: 1, end: 2, count: 1 }], 1.5);
  assert.match(svg, /^<svg|^<\?xml/);
  const html = renderUnlabelledPage({
    runId: 'score-x', modelVersion: 'c/v', imagesPrefix: 'datasets/d/', createdAt: '2026-01-01T00:00:00.000Z', images: 4, failed: 0,
    anomalous: 1, threshold: { threshold: 1.5, rule: 'target-fpr', targetFpr: 0.01 }, thresholdNote: null,
    stats: { count: 4, mean: 1, std: 0.5, min: 0.2, max: 1.8 }, histogramSvg: svg, heatmapRange: [0, 1.8],
    top: [{ rank: 1, image: '<b>.png', score: 1.8, anomalous: true, gallery: 'gallery/0001.png', mapHref: 'maps/<b>.png.png', width: 224, height: 224 }],
  });
  assert.match(html, /target FPR 1% on good validation images/);
  assert.match(html, /1 of 4/);
  assert.match(html, /<img src="gallery\/0001\.png"/);
  assert.match(html, /href="maps\/&lt;b&gt;\.png\.png"/);
  assert.doesNotMatch(html, /<b>\.png/);
  const none = renderUnlabelledPage({
    runId: 'r', modelVersion: 'c/v', imagesPrefix: 'datasets/d/', createdAt: 't', images: 1, failed: 0, anomalous: null, threshold: null,
    thresholdNote: 'model c/v has no held-out good images', stats: { count: 1, mean: 1, std: 0, min: 1, max: 1 }, histogramSvg: svg,
    heatmapRange: [0, 1], top: [],
  });
  assert.match(none, /none: model c\/v has no held-out good images/);
});
