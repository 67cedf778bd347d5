// Images -> patch features: decode and preprocess (sharp, off the main thread), run the backbone in batches,
// embed with the recipe. Decoding of the next batch overlaps inference of the current one. A file that cannot be
// decoded is reported for that image and the rest go on.
import type { BackboneEngine } from '../backbone/engine.js';
import type { FeatureRecipe, PatchFeatures } from '../features/recipes.js';
import { decodeImage, toModelInput, type Frame, type FrameSpec } from '../image/index.js';
import { nhwc } from '../tensor.js';
import type { StageTimer } from './timings.js';

export interface ImageSource {
  /** The image's id: its path relative to the dataset root (or its object key). */
  id: string;
  read(): Promise<Buffer>;
}

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
}

type Prepared = { ok: true; id: string; input: Float32Array; frame: Frame } | { ok: false; id: string; error: string };

async function prepare(src: ImageSource, opts: ExtractOptions): Promise<Prepared> {
  try {
    const buf = await src.read();
    const img = await decodeImage(buf, src.id, { maxPixels: opts.maxPixels });
    const { input, frame } = toModelInput(img, opts.frame);
    return { ok: true, id: src.id, input, frame };
  } catch (err) {
    return { ok: false, id: src.id, error: (err as Error).message };
  }
}

async function prepareBatch(batch: ImageSource[], opts: ExtractOptions): Promise<Prepared[]> {
  const t0 = performance.now();
  const out = await Promise.all(batch.map((s) => prepare(s, opts)));
  opts.timer.add('decode', performance.now() - t0);
  return out;
}

/** Yields one result per source, in order. */
export async function* extractFeatures(sources: ImageSource[], opts: ExtractOptions): AsyncGenerator<ExtractedImage> {
  const batches: ImageSource[][] = [];
  for (let i = 0; i < sources.length; i += opts.batchSize) batches.push(sources.slice(i, i + opts.batchSize));
  let next = batches.length > 0 ? prepareBatch(batches[0], opts) : null;
  for (let b = 0; b < batches.length; b++) {
    const prepared = await next!;
    next = b + 1 < batches.length ? prepareBatch(batches[b + 1], opts) : null;
    // Images of different sizes (no-crop specs) cannot share a batch: group by model-frame size.
    const good = prepared.filter((p): p is Extract<Prepared, { ok: true }> => p.ok);
    const results = new Map<string, ExtractedImage>();
    for (const p of prepared) if (!p.ok) results.set(p.id, p);
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
}
