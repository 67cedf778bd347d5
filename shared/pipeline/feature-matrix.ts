// Patch features of many images gathered into one matrix: the training rows of a fit or of one feature shard.
import type { PatchFeatures } from '../features/recipes.js';

/** Where one image's rows sit in the matrix, and the grid they came from. */
export interface MatrixImage {
  id: string;
  offset: number;
  patches: number;
  grid: [number, number];
}

/**
 * Gathers the patch features of every image into one row-major matrix. Images may have different patch grids
 * (different sizes without a crop, or tiles): each keeps its own rows. The matrix is sized for `capacityImages`
 * images like the first one and grows when larger images exceed it.
 */
export class FeatureMatrix {
  private data: Float32Array | null = null;
  rows = 0;
  /** The first image's patch grid (its tile grid when tiled). */
  gridH = 0;
  gridW = 0;
  readonly images: MatrixImage[] = [];

  constructor(private readonly capacityImages: number, readonly dim: number) {}

  add(id: string, features: Pick<PatchFeatures, 'data' | 'gridH' | 'gridW' | 'dim' | 'tiles'>): void {
    if (features.dim !== this.dim) throw new Error(`image "${id}" has ${features.dim}-dim features, the matrix ${this.dim}`);
    const patches = features.gridH * features.gridW;
    if (features.data.length !== patches * this.dim) {
      throw new Error(`image "${id}" has ${features.data.length} feature values, expected ${features.gridH}x${features.gridW}x${this.dim}`);
    }
    if (!this.data) {
      this.gridH = features.tiles?.tileH ?? features.gridH;
      this.gridW = features.tiles?.tileW ?? features.gridW;
      this.data = new Float32Array(Math.max(this.capacityImages, 1) * features.data.length);
    }
    const needed = (this.rows + patches) * this.dim;
    if (needed > this.data.length) {
      // Room for the images still to come at this size, so a category of mixed sizes grows a few times at most.
      const left = Math.max(1, this.capacityImages - this.images.length);
      const grown = new Float32Array(Math.max(needed, this.rows * this.dim + left * features.data.length));
      grown.set(this.data.subarray(0, this.rows * this.dim));
      this.data = grown;
    }
    this.data.set(features.data, this.rows * this.dim);
    this.images.push({ id, offset: this.rows, patches, grid: [features.gridH, features.gridW] });
    this.rows += patches;
  }

  matrix(): Float32Array {
    return this.data ? this.data.subarray(0, this.rows * this.dim) : new Float32Array(0);
  }
}
