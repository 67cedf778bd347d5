// A category's files under an object-storage prefix (datasets/<name>/), listed once and classified like a local
// folder; images under any prefix (any layout); and image sources that read from the store.
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

/** File extensions taken as images when a prefix of any layout is listed (the format itself is sniffed at decode). */
export const IMAGE_EXTENSIONS = ['png', 'jpg', 'jpeg', 'tif', 'tiff', 'bmp', 'gif', 'webp'] as const;
const IMAGE_EXTENSION_RE = new RegExp(`\\.(${IMAGE_EXTENSIONS.join('|')})$`, 'i');

/** Whether a relative path names an image of any layout: an image extension, no hidden segment. */
export function isImagePath(relativePath: string): boolean {
  return IMAGE_EXTENSION_RE.test(relativePath) && !relativePath.split('/').some((s) => s.startsWith('.'));
}

export interface ImagesPrefix {
  /** The data set the images belong to, `datasets/<name>/`: image ids are relative to it. */
  datasetPrefix: string;
  /** The folder the images are listed from: the data set or a folder in it, ending with "/". */
  prefix: string;
}

/**
 * Reads an `--images` argument: `datasets/<name>/[<folder>/]` or the same without the leading `datasets/`
 * (`<name>[/<folder>]`); a trailing "/" is implied. Throws a UserError naming the argument when it is no such
 * prefix.
 */
export function parseImagesPrefix(arg: string): ImagesPrefix {
  const bad = (why: string): never => {
    throw new UserError(`--images ${JSON.stringify(arg)} is not a prefix of images in the bucket: ${why} ` +
      `(expected ${datasetsRoot}<name>/[<folder>/] or <name>[/<folder>])`);
  };
  const rest = arg.startsWith(datasetsRoot) ? arg.slice(datasetsRoot.length) : arg;
  let path = '';
  try {
    path = normaliseRelativePath('images prefix', rest);
  } catch (err) {
    bad(rest.replace(/[/\\]/g, '') === '' ? 'it names no data set' : (err as Error).message);
  }
  const [name, ...folder] = path.split('/');
  try {
    idSegment('dataset name', name);
  } catch (err) {
    bad((err as Error).message);
  }
  const datasetPrefix = `${datasetsRoot}${name}/`;
  return { datasetPrefix, prefix: datasetPrefix + (folder.length ? `${folder.join('/')}/` : '') };
}

/**
 * Every image under an `--images` prefix, any layout, as full object keys in key order; ids are the keys relative to
 * the data set. A prefix without an image is a UserError naming it.
 */
export async function listImagesUnder(store: ObjectStore, images: ImagesPrefix): Promise<string[]> {
  const keys: string[] = [];
  let others = 0;
  for await (const o of store.list(images.prefix)) {
    const rel = o.key.slice(images.datasetPrefix.length);
    if (!isImagePath(rel)) {
      others++;
      continue;
    }
    // The scorers refuse a key that is not in normal form (checkDatasetKeys); say so now, naming it.
    let normal: string | null = null;
    try {
      normal = normaliseRelativePath('image key', rel);
    } catch {
      // reported below
    }
    if (normal !== rel) throw new UserError(`image key ${JSON.stringify(o.key)} under "${images.prefix}" is not a normal relative path; rename it (e.g. ${JSON.stringify(images.datasetPrefix + (normal ?? 'image.png'))})`);
    keys.push(o.key);
  }
  if (keys.length === 0) {
    throw new UserError(`no images under "${images.prefix}" in the bucket` +
      (others ? ` (${others} other files; images are ${IMAGE_EXTENSIONS.map((e) => `.${e}`).join(' ')})` : ': upload some with "patchcore ingest"'));
  }
  return keys;
}
