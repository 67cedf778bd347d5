// Patch features of many images gathered into one matrix: the training rows of a fit or of one feature shard.

/**
 * Gathers the patch features of every image into one row-major matrix. The matrix is sized from the first image's
 * grid (all images share one frame when cropping); images with another grid are an error.
 */
export class FeatureMatrix {
  private data: Float32Array | null = null;
  rows = 0;
  gridH = 0;
  gridW = 0;

  constructor(private readonly capacityImages: number, readonly dim: number) {}

  add(id: string, features: { data: Float32Array; gridH: number; gridW: number }): void {
    if (!this.data) {
      this.gridH = features.gridH;
      this.gridW = features.gridW;
      this.data = new Float32Array(this.capacityImages * features.gridH * features.gridW * this.dim);
    } else if (features.gridH !== this.gridH || features.gridW !== this.gridW) {
      throw new Error(
        `image "${id}" gives a ${features.gridH}x${features.gridW} patch grid, the others ${this.gridH}x${this.gridW}: ` +
          'training images must share one size after resizing and cropping (use a crop)',
      );
    }
    this.data.set(features.data, this.rows * this.dim);
    this.rows += features.gridH * features.gridW;
  }

  matrix(): Float32Array {
    return this.data ? this.data.subarray(0, this.rows * this.dim) : new Float32Array(0);
  }
}
