// `npm run bench`: fit and evaluate PatchCore on a category (default: the shared bottle set, paper recipe, 10%
// coreset) through the library's real code paths (fitModel, evaluateModel), then print the time of every stage,
// throughput and peak RSS, as a table and as JSON. It also measures HNSW recall@1 against exact search on the
// test patches for several efSearch values, and the per-image cost of both searches.
//   --frame       whole|paper (default paper: resize 256 + centre crop 224, 784 patches per image, like the
//                 reference's 224 crop, so the two compare like for like; whole = the library's default frame)
//   --compare     also runs the PyTorch reference (../shared/bench/ref_patchcore.py, Debian's /usr/bin/python3) on
//                 the same images with the same settings, after ours, and prints reference / ours per stage
//   --json <file> writes {"stages": {"<stage>": {"ours", "reference", "ratio"}}, "metrics": {...}, ...}
// Not part of the tests: a full run takes minutes (and the reference about two more).
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

export const STAGES = ['decode', 'backbone', 'features', 'coreset', 'index', 'scoring', 'maps', 'total'] as const;
export type Stage = (typeof STAGES)[number];
/** Stages measured per image (throughput is printed for them). */
const PER_IMAGE: readonly Stage[] = ['decode', 'backbone', 'features'];

export interface StageRow {
  ours: number;
  reference?: number;
  /** reference / ours: above 1 means we are faster. */
  ratio?: number;
}

export interface MetricsRow {
  image_auroc: number | null;
  pixel_auroc: number | null;
  aupro: number | null;
}

/** Our stage seconds from fit's and evaluate's StageTimer totals (milliseconds) and the measured wall times. */
export function ourStages(fit: Record<string, number>, evaluate: Record<string, number>, wallSeconds: number): Record<Stage, number> {
  const s = (ms: number | undefined) => (ms ?? 0) / 1000;
  return {
    decode: s(fit.decode) + s(evaluate.decode),
    backbone: s(fit.backbone) + s(evaluate.backbone),
    features: s(fit.features) + s(evaluate.features),
    coreset: s(fit.coreset),
    index: s(fit.index),
    scoring: s(evaluate.scoring),
    maps: s(evaluate.maps),
    total: wallSeconds,
  };
}

/** The reference's timings_s mapped onto the same stages. */
export function referenceStages(t: Record<string, number>): Record<Stage, number> {
  const need = (k: string): number => {
    if (typeof t[k] !== 'number') throw new Error(`reference JSON: timings_s.${k} is missing`);
    return t[k];
  };
  return {
    decode: need('train_decode_preprocess_s') + need('test_decode_preprocess_s'),
    backbone: need('train_forward_s') + need('test_forward_s'),
    features: need('train_aggregate_s') + need('test_aggregate_s'),
    coreset: need('coreset_s'),
    index: need('faiss_index_build_s'),
    scoring: need('test_knn_s'),
    maps: need('test_maps_s'),
    total: need('total_wall_s'),
  };
}

export function compareStages(ours: Record<Stage, number>, reference?: Record<Stage, number>): Record<Stage, StageRow> {
  const out = {} as Record<Stage, StageRow>;
  for (const st of STAGES) {
    const row: StageRow = { ours: round(ours[st]) };
    if (reference) {
      row.reference = round(reference[st]);
      row.ratio = ours[st] > 0 ? round(reference[st] / ours[st]) : undefined;
    }
    out[st] = row;
  }
  return out;
}

function round(x: number, digits = 3): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

/** The stage table: seconds, images/s for the per-image stages, and the ratio when the reference ran. */
export function formatTable(stages: Record<Stage, StageRow>, images: number): string {
  const hasRef = STAGES.some((s) => stages[s].reference !== undefined);
  const head = ['stage', 'ours s', 'ours img/s', ...(hasRef ? ['ref s', 'ref img/s', 'ref/ours'] : [])];
  const rows = STAGES.map((st) => {
    const r = stages[st];
    const perImage = PER_IMAGE.includes(st);
    const rate = (s: number | undefined) => (perImage && s ? (images / s).toFixed(1) : '');
    return [
      st, r.ours.toFixed(2), rate(r.ours),
      ...(hasRef ? [r.reference?.toFixed(2) ?? '', rate(r.reference), r.ratio !== undefined ? `${r.ratio.toFixed(2)}x` : ''] : []),
    ];
  });
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  return [line(head), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n');
}

const USAGE = `npm run bench -- [options]
  --data <dir>         MVTec AD category folder (default: $PATCHCORE_DATA or the shared bottle set)
  --weights <h5>       Keras ResNet-50 weights (default: $PATCHCORE_WEIGHTS or the shared file)
  --engine tfjs|onnx   backbone engine (default onnx)
  --recipe paper|seed  feature recipe (default paper; the reference's "official" resp. "seed" variant)
  --coreset <r>        coreset ratio (default 0.1 for paper, 0.01 for seed)
  --frame whole|paper  image frame (default paper: shorter side 256, centre crop 224, the reference's frame and
                       784 patches per image, so the comparison is like for like; whole is "patchcore fit"'s default)
  --compare            also run the PyTorch reference on the same images and settings, after ours
  --json <file>        write the results as JSON
  --no-recall          skip the HNSW recall / search-cost sweep
  --python <path>      interpreter for the reference (default /usr/bin/python3)
  --keep               keep the temporary model, report and reference JSON`;

interface RecallRow {
  ef: number;
  recall: number;
  ms_per_image: number;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      data: { type: 'string' }, weights: { type: 'string' }, engine: { type: 'string', default: 'onnx' },
      recipe: { type: 'string', default: 'paper' }, frame: { type: 'string', default: 'paper' }, coreset: { type: 'string' }, compare: { type: 'boolean', default: false },
      json: { type: 'string' }, 'no-recall': { type: 'boolean', default: false }, python: { type: 'string', default: '/usr/bin/python3' },
      keep: { type: 'boolean', default: false }, help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  process.env.LOG_LEVEL ??= 'warn';
  const { createLogger } = await import('../shared/log.js');
  const { defaultDatasetDir, defaultWeightsPath, sharedDir } = await import('../shared/paths.js');
  const { fitModel } = await import('../shared/local/fit.js');
  const { evaluateModel } = await import('../shared/local/evaluate.js');
  const { peakRssMiB } = await import('../shared/run/timings.js');
  const { readReferenceRun, referenceArgs, referenceVariant, runReference } = await import('../shared/benchmark/reference.js');

  if (values.engine !== 'onnx' && values.engine !== 'tfjs') throw new Error(`--engine must be tfjs or onnx, got "${values.engine}"`);
  if (values.recipe !== 'paper' && values.recipe !== 'seed') throw new Error(`--recipe must be paper or seed, got "${values.recipe}"`);
  const { FRAME_PRESETS } = await import('../shared/image/index.js');
  if (!(values.frame! in FRAME_PRESETS)) throw new Error(`--frame must be ${Object.keys(FRAME_PRESETS).join(' or ')}, got "${values.frame}"`);
  const frameName = values.frame as keyof typeof FRAME_PRESETS;
  const frame = FRAME_PRESETS[frameName];
  const engine = values.engine;
  const recipe = values.recipe;
  const coreset = values.coreset !== undefined ? Number(values.coreset) : recipe === 'paper' ? 0.1 : 0.01;
  if (!(coreset > 0 && coreset <= 1)) throw new Error(`--coreset must be a ratio in (0, 1], got "${values.coreset}"`);
  const dataDir = resolve(values.data ?? defaultDatasetDir());
  const weightsPath = resolve(values.weights ?? defaultWeightsPath());
  if (values.compare && !existsSync(values.python!)) {
    throw new Error(`--compare needs ${values.python} with the reference's Debian packages (see ${join(sharedDir(), 'bench', 'README.md')})`);
  }
  const logger = createLogger('bench');
  const tmp = await mkdtemp(join(tmpdir(), 'patchcore-bench-'));
  const modelDir = join(tmp, 'model');
  const outDir = join(tmp, 'evaluate');
  try {
    const frameNote = frameName === 'paper' ? 'paper frame (256, centre crop 224: 784 patches per image, as the reference)' : `${frameName} frame`;
    process.stderr.write(`bench: ${dataDir}, ${recipe} recipe, ${frameNote}, coreset ${coreset}, engine ${engine}; work folder ${tmp}\n`);
    const loadStart = loadavg()[0];
    const t0 = performance.now();
    const manifest = await fitModel({ dataDir, modelDir, weightsPath, engine, recipe, coresetRatio: coreset, frame, logger });
    const t1 = performance.now();
    const metrics = await evaluateModel({ modelDir, outDir, dataDir, weightsPath, engine, logger });
    const t2 = performance.now();
    const peak = peakRssMiB();
    const images = manifest.training.images + metrics.images;
    const ours = ourStages(manifest.training.timings_ms, metrics.timings_ms ?? {}, (t2 - t0) / 1000);
    const ourMetrics: MetricsRow = { image_auroc: metrics.image_auroc, pixel_auroc: metrics.pixel_auroc, aupro: metrics.aupro };
    process.stderr.write(`bench: fit ${((t1 - t0) / 1000).toFixed(1)} s, evaluate ${((t2 - t1) / 1000).toFixed(1)} s\n`);

    const recall = values['no-recall'] ? null : await recallSweep(modelDir, dataDir, weightsPath, engine);
    // Right before the reference, so both forward passes see about the same machine load.
    const isolated = await backboneAlone(dataDir, weightsPath, engine, recipe, frame);
    const loadBefore = loadavg()[0];

    let ref: { stages: Record<Stage, number>; metrics: MetricsRow; peakRssMiB: number | null; forwardImagesPerSecond: number } | null = null;
    if (values.compare) {
      const variant = referenceVariant(recipe);
      const out = join(tmp, 'reference.json');
      process.stderr.write(`bench: running the reference (${variant}, coreset ${coreset})\n`);
      const peakKiB = await runReference(values.python!, referenceArgs({ data: dataDir, weights: weightsPath, out, recipe, coreset }));
      const run = readReferenceRun(out, variant, coreset);
      ref = {
        forwardImagesPerSecond: (run.counts.train_images + run.counts.test_images) / (run.timings_s.train_forward_s + run.timings_s.test_forward_s),
        stages: referenceStages(run.timings_s),
        metrics: { image_auroc: run.metrics.image_auroc, pixel_auroc: run.metrics.pixel_auroc, aupro: run.metrics['aupro_0.3'] },
        peakRssMiB: peakKiB === null ? null : Math.round(peakKiB / 1024),
      };
    }

    const loadAfter = loadavg()[0];
    const stages = compareStages(ours, ref?.stages);
    const result = {
      config: { data: dataDir, recipe, frame: frameName, coreset, engine, images, train_images: manifest.training.images, test_images: metrics.images, bank: manifest.bank.count },
      stages,
      metrics: { ours: ourMetrics, ...(ref ? { reference: ref.metrics } : {}) },
      peak_rss_mib: { ours: peak, ...(ref ? { reference: ref.peakRssMiB } : {}) },
      backbone_alone: {
        ours_images_per_s: round(isolated.imagesPerSecond, 2),
        ...(ref ? { reference_images_per_s: round(ref.forwardImagesPerSecond, 2), ratio: round(isolated.imagesPerSecond / ref.forwardImagesPerSecond) } : {}),
        images: isolated.images, batch: isolated.batch,
      },
      ...(recall ? { search: recall } : {}),
      timings_ms: { fit: manifest.training.timings_ms, evaluate: metrics.timings_ms },
      load_average_1min: { start: round(loadStart, 2), before_reference: round(loadBefore, 2), end: round(loadAfter, 2) },
    };
    process.stdout.write(`\n${formatTable(stages, images)}\n\n`);
    process.stdout.write(`load average (1 min): ${result.load_average_1min.start} at start, ${result.load_average_1min.end} at the end (2 cores)\n`);
    process.stdout.write(`peak RSS: ours ${peak} MiB${ref ? `, reference ${ref.peakRssMiB ?? '?'} MiB` : ''}\n`);
    process.stdout.write(
      `backbone alone (pre-decoded, batch ${isolated.batch}): ours ${isolated.imagesPerSecond.toFixed(1)} img/s` +
        (ref ? `, reference forward ${ref.forwardImagesPerSecond.toFixed(1)} img/s (${(isolated.imagesPerSecond / ref.forwardImagesPerSecond).toFixed(2)}x)` : '') + '\n',
    );
    const m = (x: MetricsRow) => `image AUROC ${fmt(x.image_auroc)}, pixel AUROC ${fmt(x.pixel_auroc)}, AUPRO ${fmt(x.aupro)}`;
    process.stdout.write(`metrics: ours ${m(ourMetrics)}${ref ? `\n         reference ${m(ref.metrics)}` : ''}\n`);
    const outside = metrics.defect_pixels_outside_view;
    if (ref && outside) {
      // Not like for like: say so next to the figures.
      process.stdout.write(`         (our pixel metrics cover the whole image: the ${(100 * outside).toFixed(1)}% of defect pixels outside the crop count as missed; the reference's cover its crop only)\n`);
    }
    if (recall) {
      process.stdout.write(`search on the ${recall.bank}-row bank, ${recall.queries} test patches:\n`);
      process.stdout.write(`  exact (sketch-pruned): ${recall.exact_ms_per_image.toFixed(1)} ms/image (+ ${recall.exact_setup_ms.toFixed(0)} ms set-up once)\n`);
      for (const r of recall.hnsw) {
        process.stdout.write(`  HNSW efSearch ${String(r.ef).padStart(3)}: recall@1 ${r.recall.toFixed(4)}, ${r.ms_per_image.toFixed(1)} ms/image\n`);
      }
      process.stdout.write(`  smallest efSearch with recall@1 >= 0.99: ${recall.smallest_ef_for_099 ?? 'none'}\n`);
    }
    process.stdout.write(`\n${JSON.stringify(result, null, 2)}\n`);
    if (values.json) await writeFile(resolve(values.json), `${JSON.stringify(result, null, 2)}\n`);
  } finally {
    if (values.keep) process.stderr.write(`bench: kept ${tmp}\n`);
    else await rm(tmp, { recursive: true, force: true });
  }
}

/**
 * Backbone throughput on its own, measured as the reference measures its forward pass: images decoded and
 * preprocessed beforehand, batches of 8, one warm-up batch not counted.
 */
async function backboneAlone(
  dataDir: string, weightsPath: string, engine: 'onnx' | 'tfjs', recipeName: 'paper' | 'seed', frame: import('../shared/image/index.js').FrameSpec,
) {
  const { createBackbone } = await import('../shared/backbone/engine.js');
  const { listMvtecDataset } = await import('../shared/dataset/mvtec.js');
  const { getRecipe } = await import('../shared/features/recipes.js');
  const { loadModelInput } = await import('../shared/image/index.js');
  const { BACKBONE_INPUT_ALIGN } = await import('../shared/pipeline/extract.js');
  const { nhwc } = await import('../shared/tensor.js');
  const batch = 8;
  const dataset = listMvtecDataset(dataDir, { train: true });
  const paths = dataset.train.slice(0, 13 * batch).map((img) => join(dataset.root, img.path));
  const inputs = [];
  for (const p of paths) inputs.push(await loadModelInput(p, frame, { align: BACKBONE_INPUT_ALIGN }));
  const { height: h, width: w } = inputs[0].frame;
  const batches: Float32Array[] = [];
  for (let i = 0; i + batch <= inputs.length; i += batch) {
    const data = new Float32Array(batch * h * w * 3);
    for (let j = 0; j < batch; j++) data.set(inputs[i + j].input, j * h * w * 3);
    batches.push(data);
  }
  const layers = [...getRecipe(recipeName).layers];
  const backbone = await createBackbone({ engine, weightsPath });
  try {
    await backbone.run(nhwc(batches[0], batch, h, w, 3), layers);
    const t0 = performance.now();
    for (const b of batches.slice(1)) await backbone.run(nhwc(b, batch, h, w, 3), layers);
    const images = (batches.length - 1) * batch;
    return { images, batch, imagesPerSecond: images / ((performance.now() - t0) / 1000) };
  } finally {
    backbone.dispose();
  }
}

function fmt(x: number | null): string {
  return x === null ? 'n/a' : x.toFixed(4);
}

/**
 * HNSW recall@1 against exact search, and the cost per image of both, on the test patches of the category
 * (5,000 evenly spaced patches) with the model's bank, for efSearch 16, 32, 64, 128.
 */
async function recallSweep(modelDir: string, dataDir: string, weightsPath: string, engine: 'onnx' | 'tfjs') {
  const { MemoryBank } = await import('../shared/bank/index.js');
  const { createBackbone } = await import('../shared/backbone/engine.js');
  const { listMvtecDataset } = await import('../shared/dataset/mvtec.js');
  const { getRecipe } = await import('../shared/features/recipes.js');
  const { readManifest } = await import('../shared/model/manifest.js');
  const { extractFeatures } = await import('../shared/pipeline/extract.js');
  const { localSources } = await import('../shared/run/sources.js');
  const { StageTimer } = await import('../shared/run/timings.js');
  const manifest = readManifest(modelDir);
  const recipe = getRecipe(manifest.recipe);
  const bank = await MemoryBank.load(modelDir);
  // Small banks are searched exactly and have no approximate index to sweep.
  if (!bank.hasHnsw) return null;
  const dataset = listMvtecDataset(dataDir, { test: true });
  const backbone = await createBackbone({ engine, weightsPath });
  const rows: Float32Array[] = [];
  let patchesPerImage = 0;
  try {
    for await (const r of extractFeatures(localSources(dataset.root, dataset.test), {
      backbone, recipe, frame: manifest.frame, batchSize: 8, timer: new StageTimer(),
    })) {
      if (!r.ok) continue;
      rows.push(r.features.data);
      patchesPerImage = r.features.gridH * r.features.gridW;
    }
  } finally {
    backbone.dispose();
  }
  const dim = bank.dim;
  const total = rows.reduce((s, r) => s + r.length / dim, 0);
  const take = Math.min(5000, total);
  const queries = new Float32Array(take * dim);
  const all = new Float32Array(total * dim);
  let at = 0;
  for (const r of rows) {
    all.set(r, at);
    at += r.length;
  }
  for (let i = 0; i < take; i++) {
    const q = Math.floor((i * total) / take);
    queries.set(all.subarray(q * dim, (q + 1) * dim), i * dim);
  }
  const perImage = (ms: number) => (ms / take) * patchesPerImage;
  let t = performance.now();
  bank.exactNearest(queries.subarray(0, dim), 1); // builds the sketch
  const exactSetup = performance.now() - t;
  t = performance.now();
  bank.exactNearest(queries, 1);
  const exactMs = performance.now() - t;
  const hnsw: RecallRow[] = [];
  for (const ef of [16, 32, 64, 128]) {
    bank.setEfSearch(ef);
    t = performance.now();
    bank.hnswNearest(queries, 1);
    const ms = performance.now() - t;
    hnsw.push({ ef, recall: bank.recallAt1(queries), ms_per_image: perImage(ms) });
  }
  return {
    bank: bank.count,
    queries: take,
    exact_setup_ms: exactSetup,
    exact_ms_per_image: perImage(exactMs),
    hnsw,
    smallest_ef_for_099: hnsw.find((r) => r.recall >= 0.99)?.ef ?? null,
  };
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  main().catch((err: Error) => {
    process.stderr.write(`bench: ${err.message}\n`);
    process.exit(1);
  });
}
