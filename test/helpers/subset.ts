// Builds a small MVTec-style category in a temp folder from real bottle images (symlinks, nothing copied).
import { mkdirSync, mkdtempSync, readdirSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { defaultDatasetDir } from '../../shared/paths.js';

export interface SubsetSpec {
  train: number;
  /** Test images per type, e.g. { good: 2, broken_large: 2 }. */
  test: Record<string, number>;
}

export function makeBottleSubset(spec: SubsetSpec, root = mkdtempSync(join(tmpdir(), 'patchcore-subset-'))): string {
  const src = defaultDatasetDir('bottle');
  const link = (rel: string) => {
    mkdirSync(join(root, rel, '..'), { recursive: true });
    symlinkSync(join(src, rel), join(root, rel));
  };
  for (const f of readdirSync(join(src, 'train/good')).sort().slice(0, spec.train)) link(`train/good/${f}`);
  for (const [type, n] of Object.entries(spec.test)) {
    for (const f of readdirSync(join(src, 'test', type)).sort().slice(0, n)) {
      link(`test/${type}/${f}`);
      if (type !== 'good') link(`ground_truth/${type}/${f.replace(/\.png$/, '_mask.png')}`);
    }
  }
  return root;
}
