// Pixel AUROC and AUPRO from mergeable histograms instead of every pixel, so an evaluation's memory does not grow
// with its number of test images (each score shard summarises its images; the report merges the summaries).
//
// The score grid is fixed before any scoring and is the same for every model and method: the bins are the float32
// values with their mantissa cut to 10 bits, i.e. 1024 log-spaced bins per octave (bin width at most 2^-10 of the
// value, ~0.1%), over the whole float32 range with no clipping. Nothing has to be known about a model's score range,
// so a shard can summarise its first image at once, and summaries of any model and any shard merge bin for bin.
// Pairs of a good and a defect pixel in the same bin count as a tie (half), which is all the binning can change.
//
// AUPRO needs, per ground-truth region, the share of the region above each threshold; that share is additive over
// regions, so one histogram holds sum over regions of (region pixels in the bin / region size), in fixed point
// (units of 2^-30, exact integers in a double up to 2^23 regions) so that merging in any order gives the same bits.
import { z } from 'zod';
import { labelComponents } from './aupro.js';
import type { RocCurve } from './roc.js';

export const SCORE_GRID = 'float32-log2-1024';
const MANTISSA_DROP = 23 - 10;
const PRO_UNIT = 2 ** 30;

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** The grid bin of a score: increasing with the value (negative values and -Infinity included). */
export function scoreBin(value: number): number {
  f32[0] = value === 0 ? 0 : value; // -0 and +0 are one value
  const bits = u32[0];
  const ordered = bits & 0x80000000 ? ~bits >>> 0 : (bits | 0x80000000) >>> 0;
  return ordered >>> MANTISSA_DROP;
}

/** The smallest float32 value of a bin. */
export function binLowerEdge(bin: number): number {
  const ordered = (bin << MANTISSA_DROP) >>> 0;
  u32[0] = ordered & 0x80000000 ? (ordered & 0x7fffffff) >>> 0 : ~ordered >>> 0;
  return f32[0];
}

export const PixelHistogramSchema = z.object({
  grid: z.literal(SCORE_GRID),
  images: z.number().int().nonnegative(),
  good_pixels: z.number().int().nonnegative(),
  defect_pixels: z.number().int().nonnegative(),
  regions: z.number().int().nonnegative(),
  defect_pixels_outside_view: z.number().int().nonnegative(),
  /** Finite map values seen (every map added, with or without ground truth). */
  min: z.number().nullable(),
  max: z.number().nullable(),
  bins: z.array(z.number().int().nonnegative()),
  good: z.array(z.number().nonnegative()),
  defect: z.array(z.number().nonnegative()),
  pro: z.array(z.number().nonnegative()),
});
export type PixelHistogramJson = z.infer<typeof PixelHistogramSchema>;

/** Counts of one bin: good pixels, defect pixels, region overlap (PRO units). */
type BinCounts = [number, number, number];

/** A mergeable summary of anomaly maps against their ground truth, for pixel AUROC, AUPRO and the pixel ROC. */
export class PixelHistogram {
  images = 0;
  goodPixels = 0;
  defectPixels = 0;
  regions = 0;
  defectPixelsOutsideView = 0;
  min = Infinity;
  max = -Infinity;
  private readonly bins = new Map<number, BinCounts>();

  private counts(bin: number): BinCounts {
    let c = this.bins.get(bin);
    if (!c) this.bins.set(bin, (c = [0, 0, 0]));
    return c;
  }

  /** Widens the value range by a map's finite values (maps without ground truth count for the heatmap range). */
  observeRange(map: Float32Array): void {
    let lo = this.min;
    let hi = this.max;
    for (let i = 0; i < map.length; i++) {
      const v = map[i];
      if (v < lo && v !== -Infinity) lo = v;
      if (v > hi && v !== Infinity) hi = v;
    }
    this.min = lo;
    this.max = hi;
  }

  /**
   * Adds one image: its height x width map and 0/1 mask. `defectPixelsOutsideView`: how many of the mask's defect
   * pixels lay where the model did not look. `name` names the image in errors.
   */
  addImage(map: Float32Array, mask: Uint8Array, height: number, width: number, name: string, defectPixelsOutsideView = 0): void {
    const n = height * width;
    if (map.length !== n) throw new Error(`pixel summary of "${name}": map has ${map.length} values, expected ${width}x${height} = ${n}`);
    if (mask.length !== n) throw new Error(`pixel summary of "${name}": mask has ${mask.length} values, expected ${width}x${height} = ${n}`);
    for (let p = 0; p < n; p++) {
      if (Number.isNaN(map[p])) throw new Error(`pixel summary of "${name}": map value ${p} is NaN`);
      if (mask[p] > 1) throw new Error(`pixel summary of "${name}": mask value ${p} is ${mask[p]}, expected 0 or 1`);
    }
    this.observeRange(map);
    const { labels, sizes } = labelComponents(mask, height, width);
    const perRegion = sizes.map(() => new Map<number, number>());
    for (let p = 0; p < n; p++) {
      const bin = scoreBin(map[p]);
      if (labels[p] === 0) {
        this.counts(bin)[0]++;
        this.goodPixels++;
      } else {
        this.counts(bin)[1]++;
        this.defectPixels++;
        const r = perRegion[labels[p] - 1];
        r.set(bin, (r.get(bin) ?? 0) + 1);
      }
    }
    perRegion.forEach((r, k) => {
      for (const [bin, count] of r) this.counts(bin)[2] += Math.round((count * PRO_UNIT) / sizes[k]);
    });
    this.regions += sizes.length;
    this.defectPixelsOutsideView += defectPixelsOutsideView;
    this.images++;
  }

  /** Adds another summary into this one; the result does not depend on the order of merges. */
  merge(other: PixelHistogram): this {
    this.images += other.images;
    this.goodPixels += other.goodPixels;
    this.defectPixels += other.defectPixels;
    this.regions += other.regions;
    this.defectPixelsOutsideView += other.defectPixelsOutsideView;
    this.min = Math.min(this.min, other.min);
    this.max = Math.max(this.max, other.max);
    for (const [bin, [g, d, pro]] of other.bins) {
      const c = this.counts(bin);
      c[0] += g;
      c[1] += d;
      c[2] += pro;
    }
    return this;
  }

  /** Bins from the highest score down. */
  private descending(): [number, BinCounts][] {
    return [...this.bins.entries()].sort((a, b) => b[0] - a[0]);
  }

  /** Pixel AUROC, or null without pixels of both classes. */
  auroc(): number | null {
    if (this.goodPixels === 0 || this.defectPixels === 0) return null;
    let doubledArea = 0;
    let tp = 0;
    let fp = 0;
    for (const [, [g, d]] of this.descending()) {
      doubledArea += g * (2 * tp + d);
      tp += d;
      fp += g;
    }
    return doubledArea / (2 * this.goodPixels * this.defectPixels);
  }

  /** Normalised area under PRO(FPR) up to maxFpr, or null without regions or good pixels. */
  aupro(maxFpr = 0.3): number | null {
    if (!(maxFpr > 0 && maxFpr <= 1)) throw new Error(`aupro: maxFpr must be in (0, 1], got ${maxFpr}`);
    if (this.regions === 0 || this.goodPixels === 0) return null;
    const proScale = 1 / (PRO_UNIT * this.regions);
    let area = 0;
    let prevFpr = 0;
    let prevPro = 0;
    let good = 0;
    let overlap = 0;
    for (const [, [g, , pro]] of this.descending()) {
      good += g;
      overlap += pro;
      const fpr = good / this.goodPixels;
      const p = overlap * proScale;
      if (fpr >= maxFpr) {
        const proAtMax = prevPro + ((p - prevPro) * (maxFpr - prevFpr)) / (fpr - prevFpr);
        area += ((maxFpr - prevFpr) * (prevPro + proAtMax)) / 2;
        break;
      }
      area += ((fpr - prevFpr) * (prevPro + p)) / 2;
      prevFpr = fpr;
      prevPro = p;
    }
    return area / maxFpr;
  }

  /** The pixel ROC at the grid's thresholds, at most maxPoints evenly spaced points; null without both classes. */
  rocCurve(maxPoints = 200): RocCurve | null {
    if (this.goodPixels === 0 || this.defectPixels === 0) return null;
    const fpr = [0];
    const tpr = [0];
    const thresholds = [Infinity];
    let tp = 0;
    let fp = 0;
    for (const [bin, [g, d]] of this.descending()) {
      tp += d;
      fp += g;
      fpr.push(fp / this.goodPixels);
      tpr.push(tp / this.defectPixels);
      thresholds.push(binLowerEdge(bin));
    }
    if (fpr.length <= maxPoints) return { fpr, tpr, thresholds };
    const last = fpr.length - 1;
    const keep = Array.from({ length: maxPoints }, (_, k) => Math.round((k * last) / (maxPoints - 1)));
    return { fpr: keep.map((j) => fpr[j]), tpr: keep.map((j) => tpr[j]), thresholds: keep.map((j) => thresholds[j]) };
  }

  /** [min, max] of the finite map values (a unit range when flat), or null when no map was seen. */
  valueRange(): [number, number] | null {
    if (!(this.min <= this.max)) return null;
    return this.max > this.min ? [this.min, this.max] : [this.min, this.min + 1];
  }

  /** Plain JSON, bins in increasing order: the same text whatever order the images and merges came in. */
  toJSON(): PixelHistogramJson {
    const sorted = [...this.bins.entries()].sort((a, b) => a[0] - b[0]);
    return {
      grid: SCORE_GRID, images: this.images, good_pixels: this.goodPixels, defect_pixels: this.defectPixels,
      regions: this.regions, defect_pixels_outside_view: this.defectPixelsOutsideView,
      min: Number.isFinite(this.min) ? this.min : null, max: Number.isFinite(this.max) ? this.max : null,
      bins: sorted.map(([b]) => b), good: sorted.map(([, c]) => c[0]), defect: sorted.map(([, c]) => c[1]), pro: sorted.map(([, c]) => c[2]),
    };
  }

  /** Reads a summary written by toJSON; `name` names it in errors. */
  static fromJSON(json: unknown, name: string): PixelHistogram {
    const parsed = PixelHistogramSchema.safeParse(json);
    if (!parsed.success) {
      const i = parsed.error.issues[0];
      throw new Error(`pixel summary ${name} is invalid at ${i.path.join('.') || '(root)'}: ${i.message}`);
    }
    const j = parsed.data;
    const n = j.bins.length;
    if (j.good.length !== n || j.defect.length !== n || j.pro.length !== n) {
      throw new Error(`pixel summary ${name}: bins, good, defect and pro must have the same length (${n}, ${j.good.length}, ${j.defect.length}, ${j.pro.length})`);
    }
    const h = new PixelHistogram();
    h.images = j.images;
    h.goodPixels = j.good_pixels;
    h.defectPixels = j.defect_pixels;
    h.regions = j.regions;
    h.defectPixelsOutsideView = j.defect_pixels_outside_view;
    h.min = j.min ?? Infinity;
    h.max = j.max ?? -Infinity;
    for (let i = 0; i < n; i++) {
      const c = h.counts(j.bins[i]);
      c[0] += j.good[i];
      c[1] += j.defect[i];
      c[2] += j.pro[i];
    }
    return h;
  }
}
