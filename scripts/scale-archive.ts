// A synthetic archive of normal images for the scale benchmark (scripts/scale.ts): varied copies of the bottle
// training images (flips, quarter turns, small shifts, brightness and contrast), as compact JPEGs in the object store.
//
// Image i depends only on (seed, i): the first n images of a larger archive are the same images, so archives of
// several sizes are nested and a size's results do not depend on which other sizes were asked for. Generation
// streams: only the (downscaled) source images stay in memory, never the archive.
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import type { ObjectStore } from '../shared/storage/object-store.js';

/** Side of the archive's square images: full bottle frame, downscaled; above the model's 256 resize. */
export const ARCHIVE_SIDE = 320;
/** Largest shift, in pixels of ARCHIVE_SIDE, each way. */
export const MAX_SHIFT = 10;
const JPEG_QUALITY = 85;

/** How image i of the archive is made from a source image. */
export interface Variant {
  source: number;
  flip: boolean;
  flop: boolean;
  /** Clockwise quarter turns, 0..3. */
  turns: number;
  /** Shift of the content, -MAX_SHIFT..MAX_SHIFT pixels (edges mirrored). */
  dx: number;
  dy: number;
  /** out = contrast * (in - 128) + 128 + brightness */
  contrast: number;
  brightness: number;
}

/** mulberry32 seeded by (seed, i): a short independent stream of draws per image. */
function drawsFor(seed: number, i: number): () => number {
  let state = (Math.imul(seed >>> 0, 0x9e3779b1) ^ Math.imul(i + 1, 0x85ebca6b)) >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function variantOf(seed: number, i: number, sources: number): Variant {
  if (!(sources > 0)) throw new Error(`variantOf: needs at least one source image, got ${sources}`);
  const r = drawsFor(seed, i);
  const shift = () => Math.round((r() * 2 - 1) * MAX_SHIFT);
  return {
    source: Math.floor(r() * sources),
    flip: r() < 0.5,
    flop: r() < 0.5,
    turns: Math.floor(r() * 4),
    dx: shift(),
    dy: shift(),
    contrast: 0.85 + r() * 0.3,
    brightness: Math.round((r() * 2 - 1) * 20),
  };
}

/** Archive image names: zero-padded index, so that listing order is index order. */
export const archiveImageName = (i: number): string => `${String(i).padStart(7, '0')}.jpg`;

export interface ArchiveSources {
  count: number;
  /** The source image as raw RGB, ARCHIVE_SIDE square. */
  raw(index: number): Promise<Buffer>;
}

/**
 * The images of `dir` (PNG/JPEG), each decoded once and kept downscaled to ARCHIVE_SIDE (209 bottle images:
 * 64 MB), whatever the archive's size.
 */
export function loadSources(dir: string): ArchiveSources {
  const files = readdirSync(dir).filter((f) => /\.(png|jpe?g)$/i.test(f)).sort();
  if (files.length === 0) throw new Error(`archive sources: no PNG or JPEG images in ${dir}`);
  const cache = new Map<number, Promise<Buffer>>();
  return {
    count: files.length,
    raw(index) {
      let p = cache.get(index);
      if (!p) {
        p = sharp(join(dir, files[index])).removeAlpha().toColourspace('srgb')
          .resize(ARCHIVE_SIDE, ARCHIVE_SIDE, { fit: 'fill' }).raw().toBuffer();
        cache.set(index, p);
      }
      return p;
    },
  };
}

/** One archive image as JPEG bytes. */
export async function renderVariant(sources: ArchiveSources, v: Variant): Promise<Buffer> {
  const raw = await sources.raw(v.source);
  const m = MAX_SHIFT;
  const side = ARCHIVE_SIDE;
  // Shift by padding with mirrored edges and cutting the frame back out at an offset: same scale as the source.
  const shifted = await sharp(raw, { raw: { width: side, height: side, channels: 3 } })
    .extend({ top: m, bottom: m, left: m, right: m, extendWith: 'mirror' })
    .raw().toBuffer();
  let img = sharp(shifted, { raw: { width: side + 2 * m, height: side + 2 * m, channels: 3 } })
    .extract({ left: m - v.dx, top: m - v.dy, width: side, height: side });
  if (v.flip) img = img.flip();
  if (v.flop) img = img.flop();
  if (v.turns) img = img.rotate(90 * v.turns);
  const offset = 128 * (1 - v.contrast) + v.brightness;
  return img.linear(v.contrast, offset).jpeg({ quality: JPEG_QUALITY }).toBuffer();
}

/** Where archive images go: the first `count` images under `prefix` (a folder, ending with "/"). */
export interface ArchiveTarget {
  prefix: string;
  count: number;
}

export interface ArchiveOptions {
  seed: number;
  sourceDir: string;
  /** Uploads in flight at once (default 8). */
  concurrency?: number;
  onImage?: (i: number, bytes: number) => void;
}

/**
 * Renders images 0..max(count)-1 once each and writes image i to every target with count > i.
 * Returns the bytes written per target prefix.
 */
export async function writeArchive(store: ObjectStore, targets: ArchiveTarget[], opts: ArchiveOptions): Promise<Map<string, number>> {
  for (const t of targets) {
    if (!Number.isInteger(t.count) || t.count < 1) throw new Error(`archive target ${t.prefix}: count must be a positive integer, got ${t.count}`);
    if (!t.prefix.endsWith('/')) throw new Error(`archive target prefix must end with "/", got ${JSON.stringify(t.prefix)}`);
  }
  const sources = loadSources(opts.sourceDir);
  const total = Math.max(0, ...targets.map((t) => t.count));
  const bytes = new Map(targets.map((t) => [t.prefix, 0]));
  let next = 0;
  // A few lanes pull indices in order: at most `concurrency` images are in memory at once.
  const lane = async () => {
    for (let i = next++; i < total; i = next++) {
      const jpeg = await renderVariant(sources, variantOf(opts.seed, i, sources.count));
      for (const t of targets) {
        if (i >= t.count) continue;
        await store.putObject(t.prefix + archiveImageName(i), jpeg, 'image/jpeg');
        bytes.set(t.prefix, bytes.get(t.prefix)! + jpeg.length);
      }
      opts.onImage?.(i, jpeg.length);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, opts.concurrency ?? 8) }, lane));
  return bytes;
}
