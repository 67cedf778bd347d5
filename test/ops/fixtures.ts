// Small real model folders for the operations tests: a random 1024-d bank (the paper recipe's width; this small a
// bank is searched exactly, so it has no index file, as fit writes it) and a manifest that passes the consistency
// checks; nothing here is mocked, only the numbers are random.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MemoryBank } from '../../shared/bank/index.js';
import { MODEL_FORMAT, MODEL_FORMAT_VERSION, type ModelManifest } from '../../shared/model/manifest.js';

export async function makeBankDir(seed: number, count = 16, dim = 1024): Promise<string> {
  const data = new Float32Array(count * dim);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < data.length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    data[i] = s / 2 ** 32;
  }
  const bank = new MemoryBank(dim, count, data);
  const dir = mkdtempSync(join(tmpdir(), 'patchcore-ops-bank-'));
  await bank.save(dir);
  return dir;
}

export function makeManifest(category: string, createdAt = new Date().toISOString(), count = 16): ModelManifest {
  return {
    format: MODEL_FORMAT, version: MODEL_FORMAT_VERSION, createdAt, category, recipe: 'paper', featureDim: 1024, grid: [28, 28],
    backbone: { name: 'resnet50', layers: ['conv3_block4_out', 'conv4_block6_out'], weights: { file: 'w.h5', sha256: '0'.repeat(64) }, engine: 'onnx', backend: 'cpu' },
    frame: { resize: 256, crop: 224 },
    coreset: { ratio: 0.1, target: count, projectionDim: 128, seed: 0, trainPatches: count * 10 },
    bank: { count, dim: 1024, hnsw: { M: 8, efConstruction: 32, efSearch: 16 } },
    scoring: { sigma: 4, reweightNeighbours: null },
    training: { images: 1, skipped: [], timings_ms: {}, peak_rss_mib: 1 },
  };
}
