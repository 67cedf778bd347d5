// Coreset benchmark on real training features: time, pruning statistics (exact distance
// evaluations per step) and the coverage radius of the selection, for each greedy variant, side by
// side in one process. Features are extracted once (paper recipe, as `fit` does) and cached.
//
//   node --import tsx scripts/bench-coreset.ts --data ../shared/datasets/visa/capsules --limit 100
//   options: --data <dir> (default bottle), --limit <images> (a subset: the first N training images),
//            --ratio <r> (0.1), --cache <dir> (/tmp/bench-coreset), --variants one-thread,threads (default all),
//            --coverage <n> (also measure how well each selection covers the training features in the full
//            feature space: exact nearest-bank distances of n evenly spaced training patches, mean / p99 / max:
//            the scores those training patches would get; comparable across projection dimensions)
//   Variants: one-thread (threads: 1) and threads (the default count: every core, at most 8); both
//   must select the same points (the line says so). projection-64 / projection-96: a lower projection
//   dimension (a different selection: compare its coverage).

import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { basename, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { MemoryBank } from '../shared/bank/index.js';
import { greedyCoreset, type GreedyCoresetOptions, type GreedyCoresetStats } from '../shared/coreset/greedy.js';
import { defaultThreads } from '../shared/wasm/threads.js';

async function loadFeatures(dataDir: string, limit: number, cacheDir: string): Promise<{ data: Float32Array; rows: number; dim: number }> {
  const name = `${basename(resolve(dataDir))}-${limit || 'all'}`;
  const file = join(cacheDir, `${name}.f32`);
  const meta = join(cacheDir, `${name}.json`);
  if (existsSync(file) && existsSync(meta)) {
    const { rows, dim } = JSON.parse(readFileSync(meta, 'utf8')) as { rows: number; dim: number };
    const buf = readFileSync(file);
    return { data: new Float32Array(buf.buffer, buf.byteOffset, rows * dim), rows, dim };
  }
  const { createBackbone } = await import('../shared/backbone/engine.js');
  const { listMvtecDataset } = await import('../shared/dataset/mvtec.js');
  const { getRecipe } = await import('../shared/features/recipes.js');
  const { PAPER_FRAME_SPEC } = await import('../shared/image/index.js');
  const { defaultWeightsPath } = await import('../shared/paths.js');
  const { extractFeatures } = await import('../shared/pipeline/extract.js');
  const { localSources } = await import('../shared/run/sources.js');
  const { StageTimer } = await import('../shared/run/timings.js');
  const dataset = listMvtecDataset(dataDir, { train: true });
  const train = limit ? dataset.train.slice(0, limit) : dataset.train;
  const recipe = getRecipe('paper');
  const backbone = await createBackbone({ engine: 'onnx', weightsPath: defaultWeightsPath() });
  const parts: Float32Array[] = [];
  const t0 = performance.now();
  try {
    for await (const r of extractFeatures(localSources(dataset.root, train), {
      backbone, recipe, frame: PAPER_FRAME_SPEC, batchSize: 8, timer: new StageTimer(),
    })) {
      if (!r.ok) throw new Error(`image ${r.id}: ${r.error}`);
      parts.push(r.features.data);
    }
  } finally {
    backbone.dispose();
  }
  const dim = recipe.dim;
  const rows = parts.reduce((s, p) => s + p.length / dim, 0);
  const data = new Float32Array(rows * dim);
  let at = 0;
  for (const p of parts) {
    data.set(p, at);
    at += p.length;
  }
  mkdirSync(cacheDir, { recursive: true });
  writeFileSync(file, data);
  writeFileSync(meta, JSON.stringify({ rows, dim, images: train.length }));
  process.stderr.write(`bench-coreset: extracted ${rows} patches of ${train.length} images in ${((performance.now() - t0) / 1000).toFixed(0)} s\n`);
  return { data, rows, dim };
}

const VARIANTS: Record<string, Partial<GreedyCoresetOptions>> = {
  'one-thread': { threads: 1 },
  threads: {},
  'projection-96': { projectionDim: 96 },
  'projection-64': { projectionDim: 64 },
};

/** Exact distances from `sample` evenly spaced rows of `data` to their nearest selected row: mean, p99 and max. */
function coverage(data: Float32Array, rows: number, dim: number, selected: Uint32Array, sample: number): string {
  const bank = MemoryBank.fromRows(data, dim, selected);
  const n = Math.min(sample, rows);
  const queries = new Float32Array(n * dim);
  for (let i = 0; i < n; i++) {
    const r = Math.floor((i * rows) / n);
    queries.set(data.subarray(r * dim, (r + 1) * dim), i * dim);
  }
  const d = Array.from(bank.exactNearest(queries).distances).sort((a, b) => a - b);
  const mean = d.reduce((s, v) => s + v, 0) / n;
  return `feature-space coverage of ${n} training patches: mean ${mean.toFixed(4)}, p99 ${d[Math.floor(0.99 * (n - 1))].toFixed(4)}, max ${d[n - 1].toFixed(4)}`;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      data: { type: 'string', default: '../shared/datasets/mvtec_ad/bottle' },
      limit: { type: 'string', default: '0' },
      ratio: { type: 'string', default: '0.1' },
      cache: { type: 'string', default: '/tmp/bench-coreset' },
      variants: { type: 'string' },
      'extract-only': { type: 'boolean', default: false },
      coverage: { type: 'string', default: '0' },
    },
  });
  const limit = Number(values.limit);
  const ratio = Number(values.ratio);
  const { data, rows, dim } = await loadFeatures(values.data!, limit, values.cache!);
  if (values['extract-only']) return;
  const names = values.variants ? values.variants.split(',') : Object.keys(VARIANTS);
  for (const n of names) if (!VARIANTS[n]) throw new Error(`unknown variant "${n}" (known: ${Object.keys(VARIANTS).join(', ')})`);
  console.log(`# ${values.data}: ${rows} patches x ${dim}, ratio ${ratio}, default threads ${defaultThreads()}; load ${loadavg().map((l) => l.toFixed(1)).join(' ')}`);
  let reference: Uint32Array | null = null;
  for (const n of names) {
    const stats = {} as GreedyCoresetStats;
    const t = performance.now();
    const cpu0 = process.cpuUsage();
    const sel = greedyCoreset(data, rows, dim, { ratio, seed: 0, ...VARIANTS[n], stats });
    const s = (performance.now() - t) / 1000;
    const cpu = process.cpuUsage(cpu0);
    let same = '';
    if (reference) {
      let first = -1;
      for (let i = 0; i < sel.length && first < 0; i++) if (sel[i] !== reference[i]) first = i;
      same = first < 0 ? 'same selection as the first variant' : `differs from the first variant at pick ${first}`;
    } else reference = sel;
    console.log(
      `${n}: ${s.toFixed(1)} s (cpu ${((cpu.user + cpu.system) / 1e6).toFixed(1)} s), ${sel.length} picks; exact distances/step ${(stats.distanceEvaluations / stats.steps).toFixed(0)} ` +
        `(${((100 * stats.distanceEvaluations) / stats.steps / rows).toFixed(2)}% of N), screened by sketch ${(100 * stats.screenedOut / Math.max(1, stats.distanceEvaluations)).toFixed(1)}%, ` +
        `lists visited/step ${(stats.listsVisited / stats.steps).toFixed(1)}, full scans ${stats.fullScans}; coverage radius ${stats.coverageRadius.toFixed(4)} ${same}`,
    );
    const sample = Number(values.coverage);
    if (sample > 0) console.log(`${n}: ${coverage(data, rows, dim, sel, sample)}`);
  }
}

await main();
