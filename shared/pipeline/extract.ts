// Images -> patch features: decode and preprocess, run the backbone in batches, embed with the recipe. With spare
// cores, decoding and preprocessing (sharp decode, the PIL-exact resize, caffe means) of the next batches run in a
// worker thread while the backbone works on the current one (ONNX Runtime's run blocks the main thread, so the
// worker is what makes them overlap). On two cores the backbone already uses both, and overlapping measured no
// faster (bottle train set: 11.1 s overlapped inline, 13.0 s with the worker, 11.3 s one after the other), so
// there each batch is decoded when needed. A file that cannot be decoded is reported for that image and the rest go on.
// Timers: 'decode' sums each image's decode + preprocess time (one image at a time, so it is that image's cost),
// 'decode_wait' is how long the backbone waited for decoded images (the part not hidden behind inference).
import { availableParallelism } from 'node:os';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import type { BackboneEngine } from '../backbone/engine.js';
import { BACKBONE_OUTPUTS } from '../backbone/resnet50.js';
import { UserError } from '../errors.js';
import type { FeatureRecipe, PatchFeatures } from '../features/recipes.js';
import { cropHwc, decodeImage, planTiles, toModelInput, type Frame, type FrameSpec } from '../image/index.js';
import { nhwc } from '../tensor.js';
import type { StageTimer } from '../run/timings.js';
import type { ImageSource } from '../run/sources.js';


/**
 * The backbone takes inputs whose sides are multiples of its deepest stride (16). A whole (uncropped) frame is resized
 * to the nearest such size rather than padded: every patch then sees real image content and none is dropped, at the
 * cost of an aspect change of at most 8 pixels per side (3% at 256).
 */
export const BACKBONE_INPUT_ALIGN = BACKBONE_OUTPUTS.conv4_block6_out.stride;

export type ExtractedImage =
  | { ok: true; id: string; frame: Frame; features: PatchFeatures }
  | { ok: false; id: string; error: string };

export interface ExtractOptions {
  backbone: BackboneEngine;
  recipe: FeatureRecipe;
  frame: FrameSpec;
  batchSize: number;
  timer: StageTimer;
  maxPixels?: number;
  /**
   * Worker threads that decode and preprocess (default: 1 with at least DECODE_OVERLAP_MIN_CORES cores and
   * DECODE_POOL_MIN_IMAGES sources, else 0 = on the main thread's event loop, which costs no thread start-up).
   */
  decodeWorkers?: number;
  /**
   * Batches read and decoded ahead of the backbone (default: PREFETCH_BATCHES with at least
   * DECODE_OVERLAP_MIN_CORES cores, else 0 = each batch decoded when the backbone needs it).
   */
  prefetchBatches?: number;
}

/** Cores from which decoding overlaps inference by default. */
export const DECODE_OVERLAP_MIN_CORES = 4;

/** Batches being read and decoded ahead of the backbone. */
const PREFETCH_BATCHES = 2;

/** Below this many images a decode worker's start-up (about half a second) is not worth it. */
export const DECODE_POOL_MIN_IMAGES = 24;

type Decoded = { ok: true; input: Float32Array; frame: Frame } | { ok: false; error: string };
type Prepared = Decoded & { id: string };

interface DecodeRequest {
  seq: number;
  id: string;
  bytes: Uint8Array;
  frame: FrameSpec;
  maxPixels?: number;
}

type DecodeReply = ({ seq: number; ok: true; input: Float32Array; frame: Frame } | { seq: number; ok: false; error: string }) & { ms?: number };

async function decodeAndPreprocess(bytes: Buffer, id: string, frame: FrameSpec, maxPixels?: number): Promise<Decoded> {
  try {
    const img = await decodeImage(bytes, id, { maxPixels });
    const { input, frame: f } = toModelInput(img, frame, { align: BACKBONE_INPUT_ALIGN });
    return { ok: true, input, frame: f };
  } catch (err) {
    return { ok: false, error: (err as Error).message };
  }
}

/** Worker threads running decodeAndPreprocess; requests go to the least busy one. */
class DecodePool {
  private readonly workers: { worker: Worker; busy: number }[] = [];
  private readonly pending = new Map<number, { resolve: (r: DecodeReply) => void; worker: number }>();
  private seq = 0;
  private broken: Error | null = null;

  constructor(size: number) {
    // Sources are TypeScript run through tsx, whose loader a worker thread does not inherit: register it first.
    const entry =
      `import { register } from ${JSON.stringify(import.meta.resolve('tsx/esm/api'))};\n` +
      `register();\nawait import(${JSON.stringify(import.meta.url)});\n`;
    for (let i = 0; i < size; i++) {
      const worker = new Worker(new URL(`data:text/javascript,${encodeURIComponent(entry)}`), { workerData: { decodeWorker: true } });
      worker.on('message', (reply: DecodeReply) => {
        const p = this.pending.get(reply.seq);
        if (!p) return;
        this.pending.delete(reply.seq);
        this.workers[p.worker].busy--;
        p.resolve(reply);
      });
      const fail = (err: Error): void => {
        this.broken ??= err;
        // Whatever that worker still owed is answered as failed-to-run, so callers retry inline.
        for (const [seq, p] of this.pending) {
          if (p.worker !== i) continue;
          this.pending.delete(seq);
          p.resolve({ seq, ok: false, error: `decode worker failed: ${err.message}` });
        }
      };
      worker.on('error', fail);
      worker.on('exit', (code) => {
        if (code !== 0) fail(new Error(`exited with code ${code}`));
      });
      this.workers.push({ worker, busy: 0 });
    }
  }

  /** The prepared image and the worker's time on it, or null when the pool cannot serve it (the caller decodes inline). */
  async prepare(bytes: Buffer, id: string, frame: FrameSpec, maxPixels?: number): Promise<{ prepared: Prepared; ms: number } | null> {
    if (this.broken) return null;
    let w = 0;
    for (let i = 1; i < this.workers.length; i++) if (this.workers[i].busy < this.workers[w].busy) w = i;
    const seq = this.seq++;
    const reply = await new Promise<DecodeReply>((resolve) => {
      this.pending.set(seq, { resolve, worker: w });
      this.workers[w].busy++;
      const copy = new Uint8Array(bytes); // a Buffer may be a view of a shared pool: send our own copy
      const req: DecodeRequest = { seq, id, bytes: copy, frame, maxPixels };
      this.workers[w].worker.postMessage(req, [copy.buffer]);
    });
    if (!reply.ok && reply.error.startsWith('decode worker failed:')) return null;
    const prepared: Prepared = reply.ok ? { ok: true, id, input: reply.input, frame: reply.frame } : { ok: false, id, error: reply.error };
    return { prepared, ms: reply.ms ?? 0 };
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.worker.terminate()));
  }
}

if (!isMainThread && parentPort && (workerData as { decodeWorker?: boolean } | undefined)?.decodeWorker) {
  const port = parentPort;
  // One image at a time, in arrival order: requests wait in line here, not in the decoder.
  let line: Promise<void> = Promise.resolve();
  port.on('message', (req: DecodeRequest) => {
    line = line.then(async () => {
      const t0 = performance.now();
      const r = await decodeAndPreprocess(Buffer.from(req.bytes.buffer, req.bytes.byteOffset, req.bytes.byteLength), req.id, req.frame, req.maxPixels);
      const ms = performance.now() - t0;
      if (r.ok) port.postMessage({ seq: req.seq, ok: true, input: r.input, frame: r.frame, ms } satisfies DecodeReply, [r.input.buffer as ArrayBuffer]);
      else port.postMessage({ seq: req.seq, ok: false, error: r.error, ms } satisfies DecodeReply);
    });
  });
}

async function prepare(src: ImageSource, opts: ExtractOptions, pool: DecodePool | null): Promise<Prepared> {
  let bytes: Buffer;
  try {
    bytes = await src.read();
  } catch (err) {
    return { ok: false, id: src.id, error: (err as Error).message };
  }
  const viaPool = pool ? await pool.prepare(bytes, src.id, opts.frame, opts.maxPixels) : null;
  if (viaPool) {
    opts.timer.add('decode', viaPool.ms);
    return viaPool.prepared;
  }
  const t0 = performance.now();
  const prepared: Prepared = { id: src.id, ...(await decodeAndPreprocess(bytes, src.id, opts.frame, opts.maxPixels)) };
  opts.timer.add('decode', performance.now() - t0);
  return prepared;
}

async function prepareBatch(batch: ImageSource[], opts: ExtractOptions, pool: DecodePool | null): Promise<Prepared[]> {
  if (pool) return Promise.all(batch.map((s) => prepare(s, opts, pool)));
  // Inline: one image at a time (while the backbone runs the previous batch), so each timing is that image's own.
  const out: Prepared[] = [];
  for (const s of batch) out.push(await prepare(s, opts, null));
  return out;
}

/** Refuses a tiled spec the backbone or the recipe cannot follow, before any image is read. */
export function checkTiling(spec: FrameSpec, recipe: FeatureRecipe): void {
  if (spec.tile === undefined || spec.tile === null) return;
  if (spec.crop !== null) throw new UserError(`frame spec "tile" ${spec.tile} needs the whole image: it cannot be combined with "crop" ${spec.crop}`);
  if (spec.tile % BACKBONE_INPUT_ALIGN !== 0) {
    throw new UserError(`frame spec "tile" ${spec.tile} must be a multiple of ${BACKBONE_INPUT_ALIGN} (the backbone's stride)`);
  }
  if (recipe.stride === null) {
    throw new UserError(`the ${recipe.name} recipe's patch grid has a fixed size, so its tiles cannot be stitched: tiling needs a recipe whose grid follows the input (paper)`);
  }
}

/**
 * One prepared image cut into its tiles (planTiles), run through the backbone `batchSize` tiles at a time: one
 * image's tiles in memory at once. The rows are the tiles' grids one after another, with the layout to stitch them.
 */
async function extractTiled(p: { input: Float32Array; frame: Frame }, opts: ExtractOptions): Promise<PatchFeatures> {
  const stride = opts.recipe.stride!;
  const windows = planTiles(p.frame, opts.frame, stride);
  const parts: PatchFeatures[] = [];
  for (let i = 0; i < windows.length; i += opts.batchSize) {
    const chunk = windows.slice(i, i + opts.batchSize);
    const { width: w, height: h } = chunk[0];
    const input = new Float32Array(chunk.length * h * w * 3);
    chunk.forEach((win, k) => input.set(cropHwc(p.input, p.frame.width, 3, win), k * h * w * 3));
    const t0 = performance.now();
    const maps = await opts.backbone.run(nhwc(input, chunk.length, h, w, 3), [...opts.recipe.layers]);
    opts.timer.add('backbone', performance.now() - t0);
    const t1 = performance.now();
    chunk.forEach((_, k) => parts.push(opts.recipe.embed(maps, k)));
    opts.timer.add('features', performance.now() - t1);
  }
  const { gridH: tileH, gridW: tileW, dim } = parts[0];
  if (tileH * stride !== windows[0].height || tileW * stride !== windows[0].width) {
    throw new Error(`a ${windows[0].width}x${windows[0].height} tile gave a ${tileW}x${tileH} patch grid, not 1/${stride} of it`);
  }
  const data = new Float32Array(parts.length * tileH * tileW * dim);
  parts.forEach((f, k) => data.set(f.data, k * tileH * tileW * dim));
  return {
    data, gridH: parts.length * tileH, gridW: tileW, dim,
    tiles: {
      gridH: p.frame.height / stride, gridW: p.frame.width / stride, tileH, tileW,
      origins: windows.map((win) => [win.top / stride, win.left / stride]),
    },
  };
}

/** Yields one result per source, in order. */
export async function* extractFeatures(sources: ImageSource[], opts: ExtractOptions): AsyncGenerator<ExtractedImage> {
  checkTiling(opts.frame, opts.recipe);
  const batches: ImageSource[][] = [];
  for (let i = 0; i < sources.length; i += opts.batchSize) batches.push(sources.slice(i, i + opts.batchSize));
  const overlap = availableParallelism() >= DECODE_OVERLAP_MIN_CORES;
  const workers = opts.decodeWorkers ?? (overlap && sources.length >= DECODE_POOL_MIN_IMAGES ? 1 : 0);
  const pool = workers > 0 ? new DecodePool(workers) : null;
  try {
    // Two batches in flight when overlapping: ONNX Runtime's run blocks this thread, so reads for the batch after
    // next must already be done (they complete on this event loop) for the decode worker to have work meanwhile.
    const inFlight: Promise<Prepared[]>[] = [];
    const ahead = opts.prefetchBatches ?? (overlap ? PREFETCH_BATCHES : 0);
    let queued = 0;
    const refill = (): void => {
      while (queued < batches.length && inFlight.length < ahead) inFlight.push(prepareBatch(batches[queued++], opts, pool));
    };
    refill();
    for (let b = 0; b < batches.length; b++) {
      if (inFlight.length === 0) inFlight.push(prepareBatch(batches[queued++], opts, pool));
      const waitStart = performance.now();
      const prepared = await inFlight.shift()!;
      opts.timer.add('decode_wait', performance.now() - waitStart);
      refill();
      // Images of different sizes (no-crop specs) cannot share a batch: group by model-frame size.
      const good = prepared.filter((p): p is Extract<Prepared, { ok: true }> => p.ok);
      const results = new Map<string, ExtractedImage>();
      for (const p of prepared) if (!p.ok) results.set(p.id, p);
      if (opts.frame.tile) {
        for (const p of good) results.set(p.id, { ok: true, id: p.id, frame: p.frame, features: await extractTiled(p, opts) });
        for (const p of prepared) yield results.get(p.id)!;
        continue;
      }
      const groups = new Map<string, typeof good>();
      for (const p of good) {
        const key = `${p.frame.height}x${p.frame.width}`;
        groups.set(key, [...(groups.get(key) ?? []), p]);
      }
      for (const group of groups.values()) {
        const { height: h, width: w } = group[0].frame;
        const input = new Float32Array(group.length * h * w * 3);
        group.forEach((p, i) => input.set(p.input, i * h * w * 3));
        const t0 = performance.now();
        const maps = await opts.backbone.run(nhwc(input, group.length, h, w, 3), [...opts.recipe.layers]);
        opts.timer.add('backbone', performance.now() - t0);
        const t1 = performance.now();
        group.forEach((p, i) => results.set(p.id, { ok: true, id: p.id, frame: p.frame, features: opts.recipe.embed(maps, i) }));
        opts.timer.add('features', performance.now() - t1);
      }
      for (const p of prepared) yield results.get(p.id)!;
    }
  } finally {
    await pool?.close();
  }
}
