// test-lane: integration (fits small real models and scores whole real test sets: minutes on two cores)
// Pixel AUROC and AUPRO from the mergeable summaries against the exact computation (every pixel sorted) on the very
// same whole-image maps, on real bottle (every test image) and real VisA capsules (a subset) with real models; and
// the summaries merged in another order and grouping give identical figures.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { listMvtecDataset } from '../dataset/mvtec.js';
import { fitModel } from '../local/fit.js';
import { PAPER_FRAME_SPEC } from '../image/index.js';
import { scoreModel } from '../local/evaluate.js';
import { exactPixelMetrics, PixelHistogram } from '../metrics/index.js';
import { defaultDatasetDir, defaultWeightsPath, sharedDir } from '../paths.js';

const log = pino({ level: 'silent' });

async function compareOn(category: 'bottle' | 'capsules', root: string, trainImages: number, pick: (path: string) => boolean = () => true) {
  const work = mkdtempSync(join(tmpdir(), `patchcore-pixels-${category}-`));
  try {
    const modelDir = join(work, 'model');
    // The paper frame, so that part of each image lies outside the model's view (the out-of-view share is checked).
    await fitModel({ dataDir: root, modelDir, weightsPath: defaultWeightsPath(), coresetRatio: 0.1, limit: trainImages, category, frame: PAPER_FRAME_SPEC, logger: log });
    const dataset = listMvtecDataset(root, { test: true });
    const test = dataset.test.filter((img) => pick(img.path));
    const ev = await scoreModel(modelDir, dataset, test, { dataDir: root, weightsPath: defaultWeightsPath(), recallSample: 0, logger: log });
    try {
      // The exact path on the same whole-image maps and masks, read back as the gallery reads them.
      const images: { map: Float32Array; mask: Uint8Array; height: number; width: number }[] = [];
      const perImage: PixelHistogram[] = [];
      for (const im of ev.images) {
        const h = (await im.heatmap!())!;
        if (!h.mask) continue;
        images.push({ map: h.map!, mask: h.mask, height: h.height, width: h.width });
        const one = new PixelHistogram();
        one.addImage(h.map!, h.mask, h.height, h.width, im.id);
        perImage.push(one);
      }
      const exact = exactPixelMetrics(images, 0.3);
      // Merged in reverse order, in two groups: the same figures to the last bit.
      const half = Math.floor(perImage.length / 2);
      const regrouped = [perImage.slice(half).reverse(), perImage.slice(0, half)]
        .map((g) => g.reduce((acc, h) => acc.merge(h), new PixelHistogram()))
        .reduce((acc, h) => acc.merge(h), new PixelHistogram());
      return { ev, exact, regrouped, images: images.length };
    } finally {
      await ev.maps.close();
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/** The regrouped per-image summaries against the evaluation's own (which also counts the pixels outside the view). */
function sameSummary(r: Awaited<ReturnType<typeof compareOn>>): void {
  const { defect_pixels_outside_view: _a, ...regrouped } = r.regrouped.toJSON();
  const { defect_pixels_outside_view: _b, ...own } = r.ev.pixels.toJSON();
  assert.ok(JSON.stringify(regrouped) === JSON.stringify(own), 'summaries merged in another order and grouping differ');
  assert.equal(r.regrouped.auroc(), r.ev.pixels.auroc());
  assert.equal(r.regrouped.aupro(), r.ev.pixels.aupro());
}

function report(category: string, r: Awaited<ReturnType<typeof compareOn>>): void {
  const m = r.ev.metrics;
  console.log(`${category}: pixel AUROC summary ${m.pixel_auroc} exact ${r.exact.pixel_auroc.toFixed(6)}; ` +
    `AUPRO summary ${m.aupro} exact ${r.exact.aupro.toFixed(6)}; outside view ${m.defect_pixels_outside_view}; images ${r.images}`);
}

test('bottle, every test image: summary pixel AUROC and AUPRO within 1e-3 of the exact values; any merge order gives the same', { timeout: 1_800_000 }, async () => {
  const r = await compareOn('bottle', defaultDatasetDir('bottle'), 12);
  report('bottle', r);
  const m = r.ev.metrics;
  assert.equal(r.images, 83);
  assert.equal(m.pixel_images, 83);
  assert.ok(Math.abs(m.pixel_auroc! - r.exact.pixel_auroc) < 1e-3, `pixel AUROC ${m.pixel_auroc} vs exact ${r.exact.pixel_auroc}`);
  assert.ok(Math.abs(m.aupro! - r.exact.aupro) < 1e-3, `AUPRO ${m.aupro} vs exact ${r.exact.aupro}`);
  assert.ok(r.exact.pixel_auroc > 0.9, `a real model finds bottle defects: ${r.exact.pixel_auroc}`);
  sameSummary(r);
  // The paper frame (resize 256, crop 224) hides a 16-pixel border of the 256x256 whole image.
  assert.ok(m.defect_pixels_outside_view! >= 0 && m.defect_pixels_outside_view! < 0.05, `outside view ${m.defect_pixels_outside_view}`);
});

test('VisA capsules subset: summary within 1e-3 of exact; the paper crop hides part of the 384x256 image', { timeout: 1_800_000 }, async () => {
  // Ten good and ten defect images, and four whose defects lie (partly) outside the paper crop.
  const border = new Set(['test/bad/036.jpg', 'test/bad/058.jpg', 'test/bad/063.jpg', 'test/bad/082.jpg']);
  const pick = (p: string) => border.has(p) || /^test\/(good|bad)\/00\d\./.test(p);
  const r = await compareOn('capsules', join(sharedDir(), 'datasets', 'visa', 'capsules'), 12, pick);
  report('capsules', r);
  const m = r.ev.metrics;
  assert.equal(r.images, 24);
  assert.ok(Math.abs(m.pixel_auroc! - r.exact.pixel_auroc) < 1e-3, `pixel AUROC ${m.pixel_auroc} vs exact ${r.exact.pixel_auroc}`);
  assert.ok(Math.abs(m.aupro! - r.exact.aupro) < 1e-3, `AUPRO ${m.aupro} vs exact ${r.exact.aupro}`);
  sameSummary(r);
  // 224 of 384 columns are seen: defects on the sides are counted as outside the view.
  assert.ok(m.defect_pixels_outside_view! > 0, `outside view ${m.defect_pixels_outside_view}`);
});
