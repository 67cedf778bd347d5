// A category's files under an object-storage prefix (datasets/<name>/), listed once and classified like a local
// folder; and image sources that read from the store.
import { UnrecoverableError } from 'bullmq';
import { UserError } from '../errors.js';
import { classifyDatasetPaths, type DatasetNeeds, type MvtecDataset } from '../dataset/mvtec.js';
import type { ImageSource } from '../run/sources.js';
import { datasetsRoot, idSegment, normaliseRelativePath } from '../storage/keys.js';
import { ObjectTooLargeError, type ObjectStore } from '../storage/object-store.js';
import { PAYLOAD_LIMITS } from '../queue/jobs.js';

/** Keys under `prefix` (which ends with "/"), relative to it. Paginated, any size. */
export async function listRelative(store: ObjectStore, prefix: string): Promise<string[]> {
  const out: string[] = [];
  for await (const o of store.list(prefix)) out.push(o.key.slice(prefix.length));
  return out;
}

export async function listStoredDataset(
  store: ObjectStore, prefix: string, need: DatasetNeeds = {},
): Promise<Omit<MvtecDataset, 'root' | 'category'>> {
  const paths = await listRelative(store, prefix);
  return classifyDatasetPaths(paths, `"${prefix}"`, need);
}

/** File endings taken as images under an `--images` prefix (their format is still sniffed from content). */
export const IMAGE_FILE_RE = /\.(png|jpe?g|tiff?|bmp|webp)$/i;

export interface ImagesUnderPrefix {
  /** The dataset folder the prefix lies in (datasets/<name>/): what feature jobs name as their dataset prefix. */
  datasetPrefix: string;
  /** The folder prefix itself, normalised to end in "/". */
  prefix: string;
  /** Full keys of every image under it, in key order. */
  keys: string[];
}

/**
 * Every image under a bucket prefix, any layout (`submit train --images`): `prefix` must lie in a dataset folder,
 * `datasets/<name>/[<folder>/...]`. Hidden files and files of other types are left out. `flag` names the input in
 * errors (UserError): a prefix outside datasets/ or one with no images under it.
 */
export async function listImagesUnder(store: ObjectStore, prefix: string, flag = '--images'): Promise<ImagesUnderPrefix> {
  const bad = (why: string): never => {
    throw new UserError(`${flag} ${JSON.stringify(prefix)}: ${why}`);
  };
  const folder = prefix.endsWith('/') ? prefix : `${prefix}/`;
  if (!folder.startsWith(datasetsRoot)) bad(`expected a prefix under ${datasetsRoot}<name>/ (where "patchcore ingest" uploads)`);
  const [name, ...rest] = folder.slice(datasetsRoot.length, -1).split('/');
  try {
    idSegment('dataset name', name);
    if (rest.length) normaliseRelativePath('folder', rest.join('/'));
  } catch (err) {
    bad((err as Error).message);
  }
  if (rest.length && normaliseRelativePath('folder', rest.join('/')) !== rest.join('/')) bad('expected a folder path in normal form (no "//", "." or "\\")');
  const datasetPrefixOf = `${datasetsRoot}${name}/`;
  const keys: string[] = [];
  for await (const o of store.list(folder)) {
    const rel = o.key.slice(folder.length);
    if (rel.split('/').some((s) => s.startsWith('.')) || !IMAGE_FILE_RE.test(rel)) continue;
    keys.push(o.key);
  }
  if (keys.length === 0) bad('no images under it (png, jpg, jpeg, tif, tiff, bmp, webp)');
  return { datasetPrefix: datasetPrefixOf, prefix: folder, keys: keys.sort() };
}

/**
 * Refuses a job whose dataset prefix is not a datasets/<name>/ folder or whose image keys leave it. The payload
 * schema only checks shapes; this is what keeps a hand-made job from reading runs/ or models/ as "images".
 * Unrecoverable: retrying cannot fix the payload.
 */
export function checkDatasetKeys(prefix: string, keys: readonly string[]): void {
  const bad = (why: string): never => {
    throw new UnrecoverableError(`dataset prefix ${JSON.stringify(prefix)}: ${why}`);
  };
  const name = prefix.startsWith(datasetsRoot) && prefix.endsWith('/') ? prefix.slice(datasetsRoot.length, -1) : null;
  if (name === null) bad(`expected "${datasetsRoot}<name>/"`);
  try {
    idSegment('dataset name', name!);
  } catch (err) {
    bad((err as Error).message);
  }
  for (const key of keys) {
    if (!key.startsWith(prefix)) bad(`image key ${JSON.stringify(key)} is not under it`);
    const rel = key.slice(prefix.length);
    let normal: string | null = null;
    try {
      normal = normaliseRelativePath('image key', rel);
    } catch (err) {
      bad((err as Error).message);
    }
    if (normal !== rel) bad(`image key ${JSON.stringify(key)} is not in normal form (expected ${JSON.stringify(prefix + normal)})`);
  }
}

/** An image that could not be read from the store: a storage fault, not a bad image. */
export class ImageReadError extends Error {
  override readonly name = 'ImageReadError';
  constructor(readonly key: string, cause: unknown) {
    super(`image "${key}" could not be read from the bucket: ${(cause as Error)?.message ?? String(cause)}`, { cause });
  }
}

export interface StoreImageSources {
  sources: ImageSource[];
  /**
   * Throws the read error of `id`, if its read failed. extractFeatures reports any per-image failure as a bad
   * image; a read failure is a storage fault instead, and skipping the image would lose it for good, so the
   * caller fails the job with this and the job is retried.
   */
  throwIfReadFailed(id: string): void;
}

/** `keys` are full object keys; an image's id is its path relative to `prefix`. */
export function storeSources(store: ObjectStore, prefix: string, keys: string[]): StoreImageSources {
  const readErrors = new Map<string, ImageReadError>();
  const sources = keys.map((key): ImageSource => {
    if (!key.startsWith(prefix)) throw new Error(`image key "${key}" is not under the dataset prefix "${prefix}"`);
    const id = key.slice(prefix.length);
    return {
      id,
      read: async () => {
        try {
          return await store.getObject(key, { maxBytes: PAYLOAD_LIMITS.imageBytes });
        } catch (err) {
          // An oversized file is this image's problem (reported, skipped); any other read failure fails the attempt.
          if (err instanceof ObjectTooLargeError) throw err;
          const e = new ImageReadError(key, err);
          readErrors.set(id, e);
          throw e;
        }
      },
    };
  });
  return {
    sources,
    throwIfReadFailed(id) {
      const e = readErrors.get(id);
      if (e) throw e;
    },
  };
}
