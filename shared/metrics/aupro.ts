// Area under the per-region-overlap curve (MVTec AD): every ground-truth defect region
// weighs the same, however large, and the false-positive rate is measured on normal pixels.

import { argsortDescending } from './sort.js';

export interface Components {
  /** Per pixel: 0 for background, k in 1..count for the k-th component (row-major discovery order). */
  labels: Int32Array;
  count: number;
  /** sizes[k - 1] is the pixel count of component k. */
  sizes: number[];
}

function checkMask(mask: Uint8Array, height: number, width: number, name: string): void {
  if (mask.length !== height * width) {
    throw new Error(`${name} has ${mask.length} pixels, expected ${height}x${width} = ${height * width}`);
  }
  for (let p = 0; p < mask.length; p++) {
    if (mask[p] > 1) {
      throw new Error(`${name}[${p}] is ${mask[p]}, expected 0 (normal) or 1 (anomalous)`);
    }
  }
}

/** 8-connected components of the pixels equal to 1 in a row-major height x width mask. */
export function connectedComponents(mask: Uint8Array, height: number, width: number): Components {
  checkMask(mask, height, width, 'connectedComponents: mask');
  return labelComponents(mask, height, width);
}

/** connectedComponents without the mask check, for callers that checked it. */
export function labelComponents(mask: Uint8Array, height: number, width: number): Components {
  const labels = new Int32Array(height * width);
  const stack = new Int32Array(height * width); // each pixel is pushed at most once
  const sizes: number[] = [];
  let count = 0;
  for (let start = 0; start < mask.length; start++) {
    if (mask[start] !== 1 || labels[start] !== 0) continue;
    count++;
    let size = 0;
    let top = 0;
    stack[top++] = start;
    labels[start] = count;
    while (top > 0) {
      const p = stack[--top];
      size++;
      const y = (p / width) | 0;
      const x = p - y * width;
      for (let dy = -1; dy <= 1; dy++) {
        const ny = y + dy;
        if (ny < 0 || ny >= height) continue;
        for (let dx = -1; dx <= 1; dx++) {
          const nx = x + dx;
          if (nx < 0 || nx >= width) continue;
          const q = ny * width + nx;
          if (mask[q] === 1 && labels[q] === 0) {
            labels[q] = count;
            stack[top++] = q;
          }
        }
      }
    }
    sizes.push(size);
  }
  return { labels, count, sizes };
}

/**
 * Normalised area under PRO(FPR) from FPR 0 to maxFpr; a perfect detector scores 1.
 * maps[i] and masks[i] are row-major height x width score map and 0/1 ground truth of image i.
 */
export function aupro(
  maps: Float32Array[],
  masks: Uint8Array[],
  height: number,
  width: number,
  maxFpr = 0.3,
): number {
  if (maps.length !== masks.length) {
    throw new Error(`aupro: ${maps.length} score maps but ${masks.length} masks`);
  }
  return auproOfImages(maps.map((map, i) => ({ map, mask: masks[i], height, width })), maxFpr);
}

/** AUPRO over images that may each have their own size: the exact computation, every pixel sorted. */
export function auproOfImages(
  images: readonly { map: Float32Array; mask: Uint8Array; height: number; width: number }[],
  maxFpr = 0.3,
): number {
  if (images.length === 0) throw new Error('aupro: no images (maps is empty)');
  if (!(maxFpr > 0 && maxFpr <= 1)) throw new Error(`aupro: maxFpr must be in (0, 1], got ${maxFpr}`);
  let total = 0;
  images.forEach(({ map, height, width }, i) => {
    if (map.length !== height * width) {
      throw new Error(`aupro: maps[${i}] has ${map.length} values, expected ${height}x${width} = ${height * width}`);
    }
    total += map.length;
  });

  // All images' pixels in one array; region[p] is a global region id, or -1 for a normal pixel.
  const scores = new Float32Array(total);
  const region = new Int32Array(total);
  const regionSizes: number[] = [];
  let offset = 0;
  images.forEach(({ map, mask, height, width }, i) => {
    checkMask(mask, height, width, `aupro: masks[${i}]`);
    const { labels, count, sizes } = labelComponents(mask, height, width);
    const base = regionSizes.length - 1; // label k maps to global id base + k
    scores.set(map, offset);
    for (let p = 0; p < map.length; p++) region[offset + p] = labels[p] === 0 ? -1 : base + labels[p];
    for (let k = 0; k < count; k++) regionSizes.push(sizes[k]);
    offset += map.length;
  });
  const numRegions = regionSizes.length;
  if (numRegions === 0) throw new Error('aupro: no mask has any anomalous pixel (value 1)');
  let numNormal = 0;
  for (let p = 0; p < total; p++) if (region[p] < 0) numNormal++;
  if (numNormal === 0) throw new Error('aupro: masks have no normal pixel (value 0), so FPR is undefined');

  const regionWeight = new Float64Array(numRegions);
  for (let r = 0; r < numRegions; r++) regionWeight[r] = 1 / (regionSizes[r] * numRegions);

  const order = argsortDescending(scores);
  let area = 0;
  let prevFpr = 0;
  let prevPro = 0;
  let normalsSeen = 0;
  let pro = 0;
  let i = 0;
  while (i < total) {
    const s = scores[order[i]];
    while (i < total && scores[order[i]] === s) {
      const r = region[order[i]];
      if (r < 0) normalsSeen++;
      else pro += regionWeight[r];
      i++;
    }
    // Only the point after the whole tie is on the curve.
    const fpr = normalsSeen / numNormal;
    if (fpr >= maxFpr) {
      // prevFpr < maxFpr <= fpr, so the segment has width: interpolate PRO at maxFpr.
      const proAtMax = prevPro + ((pro - prevPro) * (maxFpr - prevFpr)) / (fpr - prevFpr);
      area += ((maxFpr - prevFpr) * (prevPro + proAtMax)) / 2;
      break;
    }
    area += ((fpr - prevFpr) * (prevPro + pro)) / 2;
    prevFpr = fpr;
    prevPro = pro;
  }
  return area / maxFpr;
}
