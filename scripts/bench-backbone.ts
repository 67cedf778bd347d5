// `node --import tsx scripts/bench-backbone.ts`: the ONNX Runtime backbone at fp32 against int8, side by side in
// one process, on real images (bottle and VisA capsules, decoded and preprocessed before timing, batch 8):
// images/s of each precision (rounds alternate between the two, so load changes hit both alike) and each block
// output's error against fp32 on test images that calibration did not see.
//   --calibration-images N   int8 activation ranges from the first N training images of each category (16)
//   --calibration <m,...>    int8 calibrations compared: minmax, percentile:<p> (minmax,percentile:99.99); the first
//                            one is timed and used for --metrics
//   --images N               test images timed per category (16); --rounds N timed passes per precision (3)
//   --probe-bf16             builds a one-Conv bfloat16 graph and prints what ONNX Runtime says of it
//   --metrics                also fits and evaluates PatchCore on both categories with each precision through the
//                            library's parts (extractFeatures, buildBank, scoreImage, computeMetrics), the int8
//                            model calibrated on its own first N training images; prints image/pixel AUROC, AUPRO
//   --precisions <p,...>     what --metrics compares (fp32,int8)
//   --categories <a,b>       category folders ($PATCHCORE_SHARED_DIR/datasets/mvtec_ad/bottle,.../visa/capsules)
//   --coreset-ratio R        coreset ratio for --metrics (default: the recipe's, 0.1)
//   --json <file>            writes every figure as JSON
// Not a test: the figures depend on the machine and its load (printed with them).
import { writeFile } from 'node:fs/promises';
import { availableParallelism, loadavg } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import ort from 'onnxruntime-node';
import onnxProto from 'onnx-proto';
import {
  createBackbone, BACKBONE_LAYERS, type ActivationRanges, type BackboneCalibration, type Precision,
} from '../shared/backbone/engine.js';
import type { OnnxBackbone } from '../shared/backbone/onnx-engine.js';
import { listMvtecDataset, type DatasetImage } from '../shared/dataset/mvtec.js';
import { getRecipe } from '../shared/features/recipes.js';
import { PAPER_FRAME_SPEC, decodeMask, loadModelInput, maskToFrame } from '../shared/image/index.js';
import { createLogger } from '../shared/log.js';
import { sharedDir } from '../shared/paths.js';
import { defaultWeightsPath } from '../shared/paths.js';
import type { NhwcTensor } from '../shared/tensor.js';
import { DEFAULT_CALIBRATION_IMAGES, calibrationBatches } from '../shared/backbone/calibration.js';
import type { ModelManifest } from '../shared/model/manifest.js';
import { DEFAULT_HNSW } from '../shared/bank/index.js';
import { buildBank } from '../shared/pipeline/build-bank.js';
import { rowsInMemory } from '../shared/coreset/row-source.js';
import { DEFAULT_PROJECTION_DIM } from '../shared/coreset/greedy.js';
import { extractFeatures } from '../shared/pipeline/extract.js';
import { FeatureMatrix } from '../shared/pipeline/feature-matrix.js';
import { localSources } from '../shared/run/sources.js';
import { computeMetrics } from '../shared/evaluation/metrics.js';
import type { ScoredImage } from '../shared/evaluation/types.js';
import { summariseImage, wholeImageFrame } from '../shared/evaluation/whole-image.js';
import { PixelHistogram } from '../shared/metrics/index.js';
import { scoreImage } from '../shared/pipeline/score-image.js';
import { StageTimer } from '../shared/run/timings.js';
import { readFile } from 'node:fs/promises';

const BATCH = 8;
const { values: args } = parseArgs({
  options: {
    'calibration-images': { type: 'string', default: String(DEFAULT_CALIBRATION_IMAGES) },
    calibration: { type: 'string', default: 'minmax,percentile:99.99' },
    images: { type: 'string', default: '16' },
    rounds: { type: 'string', default: '3' },
    'probe-bf16': { type: 'boolean', default: false },
    metrics: { type: 'boolean', default: false },
    precisions: { type: 'string', default: 'fp32,int8' },
    'skip-speed': { type: 'boolean', default: false },
    categories: { type: 'string' },
    'coreset-ratio': { type: 'string' },
    json: { type: 'string' },
  },
});

function positiveInt(name: string, value: string | undefined): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new Error(`--${name} must be a positive integer, got "${value}"`);
  return n;
}
const calibrationCount = positiveInt('calibration-images', args['calibration-images']);
const imageCount = positiveInt('images', args.images);
const rounds = positiveInt('rounds', args.rounds);
const coresetRatio = args['coreset-ratio'] === undefined ? undefined : Number(args['coreset-ratio']);
if (coresetRatio !== undefined && !(coresetRatio > 0 && coresetRatio <= 1)) {
  throw new Error(`--coreset-ratio must be in (0, 1], got "${args['coreset-ratio']}"`);
}
const calibrations = args.calibration!.split(',').map((spec) => {
  const [method, p] = spec.split(':');
  if (method === 'minmax' && p === undefined) return { label: spec, method: 'minmax' as const };
  if (method === 'percentile' && Number(p) > 50 && Number(p) <= 100) return { label: spec, method: 'percentile' as const, percentile: Number(p) };
  throw new Error(`--calibration: "${spec}" is not minmax or percentile:<p> with 50 < p <= 100`);
});
const categories = args.categories
  ? args.categories.split(',')
  : [join(sharedDir(), 'datasets/mvtec_ad/bottle'), join(sharedDir(), 'datasets/visa/capsules')];
const weightsPath = defaultWeightsPath();
const logger = createLogger('bench-backbone');
const report: Record<string, unknown> = { load_before: loadavg(), cores: availableParallelism(), batch: BATCH };

/** Preprocessed images in batches of BATCH (the last one may be smaller). */
async function batchesOf(root: string, images: DatasetImage[]): Promise<NhwcTensor[]> {
  const inputs = [];
  for (const img of images) inputs.push(await loadModelInput(join(root, img.path), PAPER_FRAME_SPEC));
  return calibrationBatches(inputs, BATCH);
}

/** Relative error of `actual` against `expected`: max |a-b| / max |b|, and ||a-b|| / ||b||. */
function errors(actual: Float32Array, expected: Float32Array): { max: number; l2: number } {
  let maxDiff = 0, maxRef = 0, diff2 = 0, ref2 = 0;
  for (let i = 0; i < expected.length; i++) {
    const d = actual[i] - expected[i];
    maxDiff = Math.max(maxDiff, Math.abs(d));
    maxRef = Math.max(maxRef, Math.abs(expected[i]));
    diff2 += d * d;
    ref2 += expected[i] * expected[i];
  }
  return { max: maxDiff / maxRef, l2: Math.sqrt(diff2 / ref2) };
}

function probeBf16(): Promise<string> {
  // One 3x3 Conv on bfloat16 input and weight, at opset 22 (where Conv's type list gained bfloat16), so the
  // model is valid ONNX and only a missing kernel can refuse it.
  const { onnx } = onnxProto;
  const BF16 = onnx.TensorProto.DataType.BFLOAT16;
  const w = new Uint16Array(8 * 8 * 9).fill(0x3f80); // 1.0 in bfloat16
  const model = onnx.ModelProto.encode(onnx.ModelProto.create({
    irVersion: 10,
    opsetImport: [{ domain: '', version: 22 }],
    graph: {
      name: 'bf16_conv_probe',
      node: [{ opType: 'Conv', name: 'conv', input: ['x', 'w'], output: ['y'], attribute: [
        { name: 'pads', type: onnx.AttributeProto.AttributeType.INTS, ints: [1, 1, 1, 1] }] }],
      initializer: [{ name: 'w', dims: [8, 8, 3, 3], dataType: BF16, rawData: new Uint8Array(w.buffer) }],
      input: [{ name: 'x', type: { tensorType: { elemType: BF16, shape: { dim: [{ dimValue: 1 }, { dimValue: 8 }, { dimValue: 16 }, { dimValue: 16 }] } } } }],
      output: [{ name: 'y', type: { tensorType: { elemType: BF16 } } }],
    },
  })).finish();
  return ort.InferenceSession.create(model, { executionProviders: ['cpu'], logSeverityLevel: 3 }).then(
    async (s) => {
      await s.release();
      return 'session created: ONNX Runtime accepts a bfloat16 Conv';
    },
    (err: Error) => `session refused: ${err.message}`,
  );
}

async function speed(): Promise<void> {
  const calibration: NhwcTensor[] = [];
  const test: NhwcTensor[] = [];
  for (const root of categories) {
    const ds = listMvtecDataset(root, { train: true, test: true });
    calibration.push(...(await batchesOf(ds.root, ds.train.slice(0, calibrationCount))));
    // Spread over the test set (good and defect images), never a calibration image.
    const step = Math.max(1, Math.floor(ds.test.length / imageCount));
    test.push(...(await batchesOf(ds.root, ds.test.filter((_, i) => i % step === 0).slice(0, imageCount))));
  }
  const images = test.reduce((s, b) => s + b.n, 0);
  const fp32 = await createBackbone({ engine: 'onnx', weightsPath, logger });
  const layers = [...BACKBONE_LAYERS];
  const reference = [];
  for (const batch of test) reference.push(await fp32.run(batch, layers)); // also the warm-up
  // Each calibration's error against fp32; the first one's engine is kept for timing.
  const err: Record<string, Record<string, { max: number; l2: number }>> = {};
  let int8: OnnxBackbone | undefined;
  let calibrationMs = 0;
  for (const c of calibrations) {
    const t0 = performance.now();
    const engine = (await createBackbone({
      engine: 'onnx', weightsPath, logger, precision: 'int8',
      calibration: { images: calibration, method: c.method, percentile: c.percentile },
    })) as OnnxBackbone;
    if (!int8) calibrationMs = performance.now() - t0;
    err[c.label] = {};
    for (const [k, batch] of test.entries()) {
      const b = await engine.run(batch, layers);
      for (const layer of layers) {
        const e = errors(b[layer].data, reference[k][layer].data);
        const seen = err[c.label][layer] ?? { max: 0, l2: 0 };
        err[c.label][layer] = { max: Math.max(seen.max, e.max), l2: Math.max(seen.l2, e.l2) };
      }
    }
    if (int8) engine.dispose();
    else int8 = engine;
  }
  const times: Record<'fp32' | 'int8', number[]> = { fp32: [], int8: [] };
  for (let r = 0; r < rounds; r++) {
    for (const [name, engine] of [['fp32', fp32], ['int8', int8!]] as const) {
      const start = performance.now();
      for (const batch of test) await engine.run(batch, layers);
      times[name].push((performance.now() - start) / 1000);
    }
  }
  fp32.dispose();
  int8!.dispose();
  const median = (xs: number[]) => [...xs].sort((p, q) => p - q)[Math.floor(xs.length / 2)];
  const ips = { fp32: images / median(times.fp32), int8: images / median(times.int8) };
  console.log(`\nbackbone (onnx, cpu, ${availableParallelism()} threads), ${images} test images of ${categories.length} categories at 224, batch ${BATCH}, ${rounds} alternating rounds:`);
  console.log(`  fp32  ${ips.fp32.toFixed(1)} images/s  (${(1000 / ips.fp32).toFixed(1)} ms/image)`);
  console.log(`  int8  ${ips.int8.toFixed(1)} images/s  (${(1000 / ips.int8).toFixed(1)} ms/image)  speed-up x${(ips.int8 / ips.fp32).toFixed(2)}  (${calibrations[0].label})`);
  console.log(`  int8 calibration on ${calibration.reduce((s, b) => s + b.n, 0)} training images: ${(calibrationMs / 1000).toFixed(1)} s`);
  console.log('  int8 error against fp32 on those test images (worst batch): max|d|/max|ref|, ||d||/||ref||');
  for (const c of calibrations) {
    console.log(`   calibration ${c.label}`);
    for (const layer of layers) console.log(`    ${layer.padEnd(18)} ${err[c.label][layer].max.toExponential(2)}  ${err[c.label][layer].l2.toExponential(2)}`);
  }
  Object.assign(report, { speed: { images, rounds, images_per_s: ips, speedup: ips.int8 / ips.fp32, seconds: times, calibration_ms: calibrationMs, error_vs_fp32: err } });
}

/** The mini fit + evaluate: the steps of fitModel/evaluateModel with a backbone of the given precision. */
async function patchcoreMetrics(root: string, precision: Precision): Promise<Record<string, unknown>> {
  const recipe = getRecipe('paper');
  const frame = PAPER_FRAME_SPEC;
  const timer = new StageTimer();
  const ds = listMvtecDataset(root, { train: true, test: true });
  let calibration: BackboneCalibration | undefined;
  const c = calibrations[0];
  if (precision === 'int8') {
    calibration = { images: await batchesOf(ds.root, ds.train.slice(0, calibrationCount)), method: c.method, percentile: c.percentile };
  }
  const t0 = performance.now();
  const backbone = await createBackbone({ engine: 'onnx', weightsPath, logger, precision, calibration });
  const ranges: ActivationRanges | undefined = backbone.activationRanges;
  const features = new FeatureMatrix(ds.train.length, recipe.dim);
  for await (const r of extractFeatures(localSources(ds.root, ds.train), { backbone, recipe, frame, batchSize: BATCH, timer })) {
    if (!r.ok) throw new Error(`${r.id}: ${r.error}`);
    features.add(r.id, r.features);
  }
  const ratio = coresetRatio ?? recipe.defaultCoresetRatio;
  const hnsw = DEFAULT_HNSW;
  const bank = buildBank(rowsInMemory(features.matrix(), features.rows, recipe.dim), features.rows, { ratio, projectionDim: DEFAULT_PROJECTION_DIM, seed: 0, hnsw }, timer, logger);
  const fitMs = performance.now() - t0;
  // Only the fields scoreImage reads.
  const manifest = { scoring: { sigma: 4, reweightNeighbours: null } } as unknown as ModelManifest;
  const scored: ScoredImage[] = [];
  const pixels = new PixelHistogram();
  const byId = new Map(ds.test.map((img) => [img.path, img]));
  for await (const r of extractFeatures(localSources(ds.root, ds.test), { backbone, recipe, frame, batchSize: BATCH, timer })) {
    if (!r.ok) throw new Error(`${r.id}: ${r.error}`);
    const img = byId.get(r.id)!;
    const { score, map } = scoreImage(bank, manifest, r.features, r.frame, timer);
    const whole = wholeImageFrame(r.frame);
    const mask = img.maskPath
      ? maskToFrame(await decodeMask(await readFile(join(ds.root, img.maskPath)), img.maskPath), whole)
      : img.label === 0 ? new Uint8Array(whole.width * whole.height) : null;
    summariseImage(pixels, { id: img.path, map, frame: r.frame }, mask);
    scored.push({ id: img.path, defectType: img.defectType, label: img.label, score });
  }
  backbone.dispose();
  const m = computeMetrics(scored, pixels);
  return {
    precision, calibration: precision === 'int8' ? c.label : null, coreset_ratio: ratio, bank: bank.count, train_images: ds.train.length, test_images: scored.length,
    image_auroc: m.image_auroc, pixel_auroc: m.pixel_auroc, aupro: m.aupro, f1_max: m.f1_max,
    backbone_ms: timer.toJSON().backbone, fit_ms: Math.round(fitMs), activation_ranges: ranges ? Object.keys(ranges).length : 0,
  };
}

async function metrics(): Promise<void> {
  const rows: Record<string, unknown>[] = [];
  for (const root of categories) {
    for (const precision of args.precisions!.split(',') as Precision[]) {
      const row = { category: root.split('/').filter(Boolean).pop(), ...(await patchcoreMetrics(root, precision)) };
      console.log(JSON.stringify(row));
      rows.push(row);
    }
  }
  console.log('\nPatchCore metrics per precision (paper recipe):');
  console.log('  category   precision  coreset  image_auroc  pixel_auroc  aupro   backbone s');
  const f = (x: unknown) => (typeof x === 'number' ? x.toFixed(4) : String(x)).padEnd(11);
  for (const r of rows) {
    console.log(`  ${String(r.category).padEnd(10)} ${String(r.precision).padEnd(10)} ${String(r.coreset_ratio).padEnd(8)} ${f(r.image_auroc)}  ${f(r.pixel_auroc)}  ${f(r.aupro)}  ${((r.backbone_ms as number) / 1000).toFixed(1)}`);
  }
  report.metrics = rows;
}

if (args['probe-bf16']) {
  const said = await probeBf16();
  console.log(`bf16 probe (onnxruntime-node ${ort.env.versions.node}, CPU provider, one Conv): ${said}`);
  report.bf16_probe = said;
}
if (!args['skip-speed']) await speed();
if (args.metrics) await metrics();
report.load_after = loadavg();
console.log(`\nload average before ${(report.load_before as number[]).map((x) => x.toFixed(2)).join(' ')}, after ${loadavg().map((x) => x.toFixed(2)).join(' ')}`);
if (args.json) await writeFile(args.json, JSON.stringify(report, null, 2));
