/**
 * The object-key layout of the bucket, in one place. Every key the pipeline reads or writes is built
 * here, and every builder refuses input that could escape its prefix.
 *
 * ```
 * datasets/<name>/<relative path>              input images and masks, as uploaded (e.g. train/good/000.png)
 * runs/<run>/run.json                          run manifest: written LAST, lists the shards that are complete
 * runs/<run>/embeddings/<shard>.bin            patch embeddings of one shard (tensor file, see tensor-file.ts)
 * runs/<run>/reduce/<node>.bin                 output of one reduce-tree node: a coreset of its inputs (tensor file)
 * runs/<run>/scores/<shard>.json               image-level anomaly scores and the pixel summary of one shard
 * runs/<run>/maps/<shard>.bin                  pixel anomaly maps of one shard over the whole images (tensor file)
 * models/<category>/<version>/bank.f32         coreset memory bank, raw little-endian float32
 * models/<category>/<version>/bank.usearch     approximate nearest-neighbour index over the bank (large banks;
 *                                              bank.hnsw in versions written before it)
 * models/<category>/<version>/bank.json        bank metadata (dim, count, backbone layers, ...)
 * models/<category>/<version>/manifest.json    model manifest: written LAST, marks the version complete
 * models/<category>/latest                     pointer: JSON naming the current version of the category
 * reports/<run>/<relative path>                reports of a run: evaluation (metrics.json, html, images) or unlabelled
 *                                              scoring (results.csv, results.jsonl, summary.json, maps/<image id>.png)
 * ```
 *
 * Rules:
 * - `<name>`, `<run>`, `<category>`, `<version>` are id segments: 1-128 characters from
 *   `[A-Za-z0-9._-]`, not starting with ".", never containing "..".
 * - `<shard>` is a shard index 0..9999 written with 4 digits (0003), so keys sort in shard order,
 *   or an id segment.
 * - `<relative path>` is normalised: "\\" becomes "/", empty and "." segments are dropped; an
 *   absolute path (/x, C:\x, \\server\x), a ".." segment, a control character, a segment over 255
 *   bytes or an empty result is rejected.
 * - A key is at most 1024 UTF-8 bytes (the S3 limit).
 * - Data objects are written before the manifest that lists them (see object-store.ts).
 */

export const MAX_ID_LENGTH = 128;
export const MAX_SEGMENT_BYTES = 255;
export const MAX_KEY_BYTES = 1024;
export const MAX_SHARD_INDEX = 9999;

export const MODEL_FILES = ['manifest.json', 'bank.f32', 'bank.usearch', 'bank.hnsw', 'bank.json'] as const;
export type ModelFile = (typeof MODEL_FILES)[number];

/** Returns `value` when it is a valid id segment; otherwise throws naming `what` and the value. */
export function idSegment(what: string, value: string): string {
  const bad = (why: string): never => {
    throw new Error(`${what} ${JSON.stringify(value)} is not a valid key segment: ${why}`);
  };
  if (typeof value !== 'string') bad(`expected a string, got ${typeof value}`);
  if (value.length === 0) bad('it is empty');
  if (value.length > MAX_ID_LENGTH) bad(`it is longer than ${MAX_ID_LENGTH} characters (${value.length})`);
  if (!/^[A-Za-z0-9._-]+$/.test(value)) bad('only letters, digits, ".", "_" and "-" are allowed');
  if (value.startsWith('.')) bad('it must not start with "."');
  if (value.includes('..')) bad('it must not contain ".."');
  return value;
}

/** A shard index (0..9999, zero-padded to 4 digits) or a shard id segment. */
export function shardName(shard: number | string): string {
  if (typeof shard === 'number') {
    if (!Number.isInteger(shard) || shard < 0 || shard > MAX_SHARD_INDEX) {
      throw new Error(`shard index ${shard} is invalid: expected an integer from 0 to ${MAX_SHARD_INDEX}`);
    }
    return String(shard).padStart(4, '0');
  }
  return idSegment('shard', shard);
}

/**
 * Normalises a relative path ("train\\good/./000.png" -> "train/good/000.png") so it stays under
 * the prefix it is appended to. `what` names the input in errors.
 */
export function normaliseRelativePath(what: string, path: string): string {
  const bad = (why: string): never => {
    throw new Error(`${what} ${JSON.stringify(path)} is not a safe relative path: ${why}`);
  };
  if (typeof path !== 'string') bad(`expected a string, got ${typeof path}`);
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(path)) bad('it contains a control character');
  const slashed = path.replace(/\\/g, '/');
  if (slashed.startsWith('/')) bad('it is absolute');
  if (/^[A-Za-z]:/.test(slashed)) bad('it is absolute (drive letter)');
  const segments: string[] = [];
  for (const s of slashed.split('/')) {
    if (s === '' || s === '.') continue;
    if (s === '..') bad('it contains ".."');
    if (Buffer.byteLength(s, 'utf8') > MAX_SEGMENT_BYTES) bad(`a segment is longer than ${MAX_SEGMENT_BYTES} bytes`);
    segments.push(s);
  }
  if (segments.length === 0) bad('it names no file');
  return segments.join('/');
}

function checkedKey(key: string): string {
  const bytes = Buffer.byteLength(key, 'utf8');
  if (bytes > MAX_KEY_BYTES) {
    throw new Error(`key "${key.slice(0, 80)}..." is ${bytes} bytes; S3 keys are at most ${MAX_KEY_BYTES}`);
  }
  return key;
}

// Prefixes end in "/" so that listing or deleting "runs/a/" can never touch "runs/ab/".

export const datasetsRoot = 'datasets/';
export const runsRoot = 'runs/';
export const modelsRoot = 'models/';
export const reportsRoot = 'reports/';

export const datasetPrefix = (name: string): string => `${datasetsRoot}${idSegment('dataset name', name)}/`;
export const datasetKey = (name: string, relativePath: string): string =>
  checkedKey(datasetPrefix(name) + normaliseRelativePath('dataset path', relativePath));

export const runPrefix = (run: string): string => `${runsRoot}${idSegment('run id', run)}/`;
export const runManifestKey = (run: string): string => `${runPrefix(run)}run.json`;
export const embeddingsPrefix = (run: string): string => `${runPrefix(run)}embeddings/`;
export const embeddingsKey = (run: string, shard: number | string): string =>
  `${embeddingsPrefix(run)}${shardName(shard)}.bin`;
export const reducePrefix = (run: string): string => `${runPrefix(run)}reduce/`;
export const reduceKey = (run: string, node: string): string => `${reducePrefix(run)}${idSegment('reduce node', node)}.bin`;
export const scoresPrefix = (run: string): string => `${runPrefix(run)}scores/`;
export const scoresKey = (run: string, shard: number | string): string => `${scoresPrefix(run)}${shardName(shard)}.json`;
export const mapsPrefix = (run: string): string => `${runPrefix(run)}maps/`;
export const mapsKey = (run: string, shard: number | string): string => `${mapsPrefix(run)}${shardName(shard)}.bin`;

export const modelCategoryPrefix = (category: string): string => `${modelsRoot}${idSegment('model category', category)}/`;
export function modelVersionPrefix(category: string, version: string): string {
  if (version === 'latest') throw new Error('model version "latest" is reserved for the models/<category>/latest pointer');
  return `${modelCategoryPrefix(category)}${idSegment('model version', version)}/`;
}
export function modelKey(category: string, version: string, file: ModelFile): string {
  if (!(MODEL_FILES as readonly string[]).includes(file)) {
    throw new Error(`model file ${JSON.stringify(file)} is not one of ${MODEL_FILES.join(', ')}`);
  }
  return `${modelVersionPrefix(category, version)}${file}`;
}
/** The pointer object naming the current version (hence "latest" is not a valid version name). */
export const modelLatestKey = (category: string): string => `${modelCategoryPrefix(category)}latest`;

export const reportPrefix = (run: string): string => `${reportsRoot}${idSegment('run id', run)}/`;
export const reportKey = (run: string, relativePath: string): string =>
  checkedKey(reportPrefix(run) + normaliseRelativePath('report path', relativePath));

/** The shard index of an embeddings/scores/maps key ("runs/r/scores/0007.json" -> 7), or null. */
export function shardIndexOfKey(key: string): number | null {
  const m = /^runs\/[^/]+\/(?:embeddings|scores|maps)\/(\d{4})\.(?:bin|json)$/.exec(key);
  return m ? Number(m[1]) : null;
}
