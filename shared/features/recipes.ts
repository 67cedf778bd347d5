// Patch-feature recipes: how backbone block outputs become one embedding per patch. The recipe's name is
// recorded in every model manifest, so a bank is only ever compared with features made the same way.
import type { NhwcTensor } from '../tensor.js';
import { resizeBilinearHwc } from './interpolate.js';

export type BackboneLayerName = 'conv2_block3_out' | 'conv3_block4_out' | 'conv4_block6_out';
export const RECIPE_NAMES = ['paper', 'seed'] as const;
export type RecipeName = (typeof RECIPE_NAMES)[number];

export interface PatchFeatures {
  /** gridH * gridW rows of `dim` values, row-major (patch (y, x) is row y * gridW + x). */
  data: Float32Array;
  gridH: number;
  gridW: number;
  dim: number;
  /**
   * A tiled image: its rows are the tiles' patch grids one after another (tile k is rows k * tileH * tileW onwards),
   * so gridH = tiles * tileH and gridW = tileW; `tiles` places each on the image's patch grid.
   */
  tiles?: TileLayout;
}

/** How the patch grids of an image's tiles sit on the image's own patch grid (all in patches). */
export interface TileLayout {
  /** The image's patch grid. */
  gridH: number;
  gridW: number;
  /** Each tile's patch grid. */
  tileH: number;
  tileW: number;
  /** Each tile's first patch on the image grid: [row, column]. */
  origins: [number, number][];
}

export interface FeatureRecipe {
  readonly name: RecipeName;
  readonly layers: readonly BackboneLayerName[];
  readonly dim: number;
  /** Coreset ratio used when the user gives none: the seed recipe has 16x more patches per image. */
  readonly defaultCoresetRatio: number;
  /** Input pixels per patch of the grid, which follows the input's size; null when the grid has a fixed size. */
  readonly stride: number | null;
  /** Embeds batch item `i` of the block outputs. */
  embed(maps: Record<string, NhwcTensor>, i: number): PatchFeatures;
}

function item(maps: Record<string, NhwcTensor>, layer: BackboneLayerName, i: number): NhwcTensor {
  const t = maps[layer];
  if (!t) throw new Error(`backbone output ${layer} is missing (got ${Object.keys(maps).join(', ') || 'nothing'})`);
  if (i < 0 || i >= t.n) throw new Error(`batch item ${i} is out of range for ${layer} (batch of ${t.n})`);
  const size = t.h * t.w * t.c;
  return { data: t.data.subarray(i * size, (i + 1) * size), n: 1, h: t.h, w: t.w, c: t.c };
}

/**
 * 3x3 neighbourhood sum with zero padding, written into `out` at channel offset `outOffset` of an
 * `outC`-channel map, scaled by `scale`; the centre gets `centreExtra` more of its own value.
 */
function neighbourhoodSum(
  src: Float32Array, h: number, w: number, c: number,
  out: Float32Array, outC: number, outOffset: number, scale: number, centreExtra: number,
): void {
  for (let y = 0; y < h; y++) {
    const y0 = Math.max(0, y - 1), y1 = Math.min(h - 1, y + 1);
    for (let x = 0; x < w; x++) {
      const x0 = Math.max(0, x - 1), x1 = Math.min(w - 1, x + 1);
      const o = (y * w + x) * outC + outOffset;
      const centre = (y * w + x) * c;
      for (let k = 0; k < c; k++) out[o + k] = centreExtra * src[centre + k];
      for (let yy = y0; yy <= y1; yy++) {
        for (let xx = x0; xx <= x1; xx++) {
          const s = (yy * w + xx) * c;
          for (let k = 0; k < c; k++) out[o + k] += src[s + k];
        }
      }
      for (let k = 0; k < c; k++) out[o + k] *= scale;
    }
  }
}

/**
 * The PatchCore authors' embedding (patch size 3, 1024 dims), in the closed form that their four steps
 * (unfold 3x3, upsample conv4, adaptive-average-pool each layer's C*9 vector to 1024, pool the pair to 1024)
 * reduce to, because every step is linear and the pooling bins fall on channel boundaries:
 * - values 0..511: conv3 channel j, 3x3 zero-padded average with the centre counted twice (weights 1/10, 2/10);
 * - values 512..1023: conv4 channels 2j and 2j+1 averaged, 3x3 zero-padded average, upsampled to conv3's grid.
 */
const paper: FeatureRecipe = {
  name: 'paper',
  layers: ['conv3_block4_out', 'conv4_block6_out'],
  dim: 1024,
  defaultCoresetRatio: 0.1,
  stride: 8,
  embed(maps, i) {
    const l3 = item(maps, 'conv3_block4_out', i);
    const l4 = item(maps, 'conv4_block6_out', i);
    if (l3.c !== 512 || l4.c !== 1024) {
      throw new Error(`paper recipe needs conv3 with 512 and conv4 with 1024 channels, got ${l3.c} and ${l4.c}`);
    }
    const half = 512;
    const out = new Float32Array(l3.h * l3.w * 1024);
    neighbourhoodSum(l3.data, l3.h, l3.w, l3.c, out, 1024, 0, 1 / 10, 1);

    const pairs = new Float32Array(l4.h * l4.w * half);
    for (let p = 0, q = 0; p < pairs.length; p++, q += 2) pairs[p] = 0.5 * (l4.data[q] + l4.data[q + 1]);
    const pooled = new Float32Array(pairs.length);
    neighbourhoodSum(pairs, l4.h, l4.w, half, pooled, half, 0, 1 / 9, 0);
    const up = resizeBilinearHwc(pooled, l4.h, l4.w, half, l3.h, l3.w);
    for (let p = 0, n = l3.h * l3.w; p < n; p++) out.set(up.subarray(p * half, (p + 1) * half), p * 1024 + half);
    return { data: out, gridH: l3.h, gridW: l3.w, dim: 1024 };
  },
};

const SEED_GRID = 64;

/** conv2, conv3 and conv4 block outputs each resized bilinearly to 64x64 and concatenated (256+512+1024). */
const seed: FeatureRecipe = {
  name: 'seed',
  layers: ['conv2_block3_out', 'conv3_block4_out', 'conv4_block6_out'],
  dim: 1792,
  defaultCoresetRatio: 0.01,
  stride: null,
  embed(maps, i) {
    const parts = seed.layers.map((l) => item(maps, l, i));
    const dim = parts.reduce((s, t) => s + t.c, 0);
    if (dim !== seed.dim) throw new Error(`seed recipe needs 1792 channels in all, got ${dim}`);
    const n = SEED_GRID * SEED_GRID;
    const out = new Float32Array(n * dim);
    let offset = 0;
    for (const t of parts) {
      const r = resizeBilinearHwc(t.data, t.h, t.w, t.c, SEED_GRID, SEED_GRID);
      for (let p = 0; p < n; p++) out.set(r.subarray(p * t.c, (p + 1) * t.c), p * dim + offset);
      offset += t.c;
    }
    return { data: out, gridH: SEED_GRID, gridW: SEED_GRID, dim };
  },
};

const RECIPES: Record<RecipeName, FeatureRecipe> = { paper, seed };

export function getRecipe(name: string): FeatureRecipe {
  if (!(RECIPE_NAMES as readonly string[]).includes(name)) {
    throw new Error(`unknown feature recipe "${name}": expected one of ${RECIPE_NAMES.join(', ')}`);
  }
  return RECIPES[name as RecipeName];
}
