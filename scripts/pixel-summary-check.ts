// Pixel AUROC and AUPRO of a model folder on a category's test set, from the mergeable summaries (what metrics.json
// reports) and from the exact computation on the same whole-image maps (every pixel sorted), with the difference.
// Not part of the tests (shared/evaluation/pixel-summary-real.test.ts asserts the agreement on small models).
//   node --import tsx scripts/pixel-summary-check.ts --model <dir> --data <category dir> [--json <file>]
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { listMvtecDataset } from '../shared/dataset/mvtec.js';
import { scoreModel } from '../shared/local/evaluate.js';
import { exactPixelMetrics } from '../shared/metrics/index.js';
import { defaultWeightsPath } from '../shared/paths.js';

const { values: args } = parseArgs({ options: { model: { type: 'string' }, data: { type: 'string' }, json: { type: 'string' } } });
if (!args.model || !args.data) throw new Error('usage: pixel-summary-check.ts --model <model dir> --data <category dir> [--json <file>]');
const log = pino({ level: 'warn' });
const dataset = listMvtecDataset(args.data, { test: true });
const ev = await scoreModel(args.model, dataset, dataset.test, { dataDir: args.data, weightsPath: defaultWeightsPath(), recallSample: 0, logger: log });
try {
  const images: { map: Float32Array; mask: Uint8Array; height: number; width: number }[] = [];
  for (const im of ev.images) {
    const h = (await im.heatmap!())!;
    if (h.mask && h.map) images.push({ map: h.map, mask: h.mask, height: h.height, width: h.width });
  }
  const exact = exactPixelMetrics(images, 0.3);
  const n = exact.pixels;
  const summary = { pixel_auroc: ev.pixels.auroc(), aupro: ev.pixels.aupro(0.3) };
  const out = {
    model: args.model, data: args.data, images: images.length, pixels: n, image_auroc: ev.metrics.image_auroc,
    summary, exact,
    difference: { pixel_auroc: summary.pixel_auroc! - exact.pixel_auroc, aupro: summary.aupro! - exact.aupro },
    defect_pixels_outside_view: ev.metrics.defect_pixels_outside_view, peak_rss_mib: ev.metrics.peak_rss_mib,
  };
  console.log(JSON.stringify(out, null, 2));
  if (args.json) writeFileSync(args.json, JSON.stringify(out, null, 2) + '\n');
} finally {
  await ev.maps.close();
}
