// Exact pixel AUROC and AUPRO over whole maps held in memory (every pixel sorted): the check the mergeable pixel
// summaries (score-histogram.ts) are compared with, in tests and scripts/pixel-summary-check.ts.
import { auproOfImages } from './aupro.js';
import { rocAuc } from './roc.js';

export interface PixelImage {
  map: Float32Array;
  mask: Uint8Array;
  height: number;
  width: number;
}

export function exactPixelMetrics(images: readonly PixelImage[], maxFpr = 0.3): { pixel_auroc: number; aupro: number; pixels: number } {
  const n = images.reduce((s, im) => s + im.map.length, 0);
  const maps = new Float32Array(n);
  const masks = new Uint8Array(n);
  let at = 0;
  for (const im of images) {
    maps.set(im.map, at);
    masks.set(im.mask, at);
    at += im.map.length;
  }
  return { pixel_auroc: rocAuc(maps, masks), aupro: auproOfImages(images, maxFpr), pixels: n };
}
