// Image sources -> autoencoder inputs, a batch at a time, decoding the next batch while the current one is used.
// A file that cannot be decoded is reported for that image and the rest go on.
import { decodeImage, type Frame, type FrameSpec } from '../image/index.js';
import type { ImageSource } from '../run/sources.js';
import type { StageTimer } from '../run/timings.js';
import { toAutoencoderInput } from './preprocess.js';

export type PreparedInput =
  | { ok: true; id: string; input: Float32Array; frame: Frame }
  | { ok: false; id: string; error: string };

export interface InputOptions {
  frame: FrameSpec;
  size: number;
  batchSize: number;
  timer: StageTimer;
}

async function prepare(src: ImageSource, opts: InputOptions): Promise<PreparedInput> {
  try {
    const img = await decodeImage(await src.read(), src.id);
    const { input, frame } = toAutoencoderInput(img, opts.frame, opts.size);
    return { ok: true, id: src.id, input, frame };
  } catch (err) {
    return { ok: false, id: src.id, error: (err as Error).message };
  }
}

async function prepareBatch(batch: ImageSource[], opts: InputOptions): Promise<PreparedInput[]> {
  const t0 = performance.now();
  const out = await Promise.all(batch.map((s) => prepare(s, opts)));
  opts.timer.add('decode', performance.now() - t0);
  return out;
}

/** Yields the sources' inputs in order, batchSize at a time. */
export async function* inputBatches(sources: ImageSource[], opts: InputOptions): AsyncGenerator<PreparedInput[]> {
  if (!Number.isInteger(opts.batchSize) || opts.batchSize < 1) throw new Error(`batch size must be a positive integer, got ${opts.batchSize}`);
  const batches: ImageSource[][] = [];
  for (let i = 0; i < sources.length; i += opts.batchSize) batches.push(sources.slice(i, i + opts.batchSize));
  let next = batches.length > 0 ? prepareBatch(batches[0], opts) : null;
  for (let b = 0; b < batches.length; b++) {
    const prepared = await next!;
    next = b + 1 < batches.length ? prepareBatch(batches[b + 1], opts) : null;
    yield prepared;
  }
}
