// The PatchCore memory bank: the coreset's patch features (count x dim, row-major float32), with
// exact search (sketch-pruned SIMD, sketch-search.ts; brute force where that does not apply) and an
// optional HNSW index (hnswlib) for fast approximate search of large banks.
//
// On disk a bank is a folder: bank.f32 (raw little-endian float32), bank.hnsw (hnswlib's own
// format, when an index was built) and bank.json (shape, HNSW parameters, sha256 of both files).

import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import hnswlib from 'hnswlib-node';
import { z } from 'zod';
import { float32ToLittleEndian, littleEndianToFloat32, sha256Hex } from './bank-io.js';
import { exactKnn, squaredNorms, type NeighbourResult } from './exact-search.js';
import { SketchSearch } from './sketch-search.js';

export type { NeighbourResult };

export interface HnswParams {
  /** Graph degree (hnswlib M). */
  M: number;
  /** Candidate list size while building. */
  efConstruction: number;
  /** Candidate list size while searching (raised to k when k is larger). */
  efSearch: number;
  /** Seed of hnswlib's level generator, so builds are reproducible. */
  seed: number;
}

/**
 * Defaults for 1024-d PatchCore features. Recall@1 on bottle (paper recipe, 10% coreset: 16,386 rows; 5,000
 * test patches) for efSearch 16, 32, 64, 128: 0.993, 0.997, 0.999, 1.000 (`npm run bench` prints it). 32 keeps a
 * margin above the required 0.99 for larger banks, where HNSW is what scores.
 */
export const DEFAULT_HNSW: Readonly<HnswParams> = Object.freeze({
  M: 16,
  efConstruction: 200,
  efSearch: 32,
  seed: 100,
});

/**
 * nearest() searches exactly up to this many rows even when an HNSW index exists: on bottle
 * (16,386 x 1024) the sketch-pruned exact search costs about what HNSW at efSearch 16 does, and
 * its cost grows with the bank while HNSW's barely does.
 */
export const EXACT_SEARCH_MAX_ROWS = 20_000;
/** Below this many rows plain brute force is cheaper than building a sketch. */
const SKETCH_MIN_ROWS = 512;

export const BANK_FILES = Object.freeze({ data: 'bank.f32', meta: 'bank.json', hnsw: 'bank.hnsw' });

const hnswParamsSchema = z.object({
  M: z.number().int().min(2),
  efConstruction: z.number().int().min(1),
  efSearch: z.number().int().min(1),
  seed: z.number().int().min(0),
});

const bankMetaSchema = z.object({
  format: z.literal('patchcore-memory-bank'),
  version: z.literal(1),
  dim: z.number().int().min(1),
  count: z.number().int().min(1),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  hnsw: hnswParamsSchema.nullable(),
  hnswSha256: z.string().regex(/^[0-9a-f]{64}$/).nullable(),
});

export type BankMeta = z.infer<typeof bankMetaSchema>;

type HnswIndex = InstanceType<typeof hnswlib.HierarchicalNSW>;

function checkHnswParams(p: HnswParams): HnswParams {
  const r = hnswParamsSchema.safeParse(p);
  if (!r.success) {
    const issues = r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ');
    throw new Error(`invalid HNSW parameters (${issues})`);
  }
  return r.data;
}

export class MemoryBank {
  readonly dim: number;
  readonly count: number;
  readonly data: Float32Array;
  private norms: Float64Array | null = null;
  private searcher: SketchSearch | null | undefined;
  private index: HnswIndex | null = null;
  private params: HnswParams | null = null;

  /** Wraps `data` (count x dim, row-major) without copying. */
  constructor(dim: number, count: number, data: Float32Array) {
    if (!Number.isInteger(dim) || dim < 1) throw new Error(`memory bank dim must be a positive integer, got ${dim}`);
    if (!Number.isInteger(count) || count < 1) throw new Error(`memory bank count must be a positive integer, got ${count}`);
    if (data.length !== count * dim) {
      throw new Error(`memory bank data has ${data.length} values, expected count x dim = ${count}x${dim} = ${count * dim}`);
    }
    this.dim = dim;
    this.count = count;
    this.data = data;
  }

  /** A bank holding rows `indices` (e.g. a coreset selection) of `features` (row-major, dim wide). */
  static fromRows(features: Float32Array, dim: number, indices: ArrayLike<number>): MemoryBank {
    if (!Number.isInteger(dim) || dim < 1) throw new Error(`memory bank dim must be a positive integer, got ${dim}`);
    if (features.length % dim !== 0) {
      throw new Error(`features has ${features.length} values, not a multiple of dim ${dim}`);
    }
    const rows = features.length / dim;
    const data = new Float32Array(indices.length * dim);
    for (let i = 0; i < indices.length; i++) {
      const r = indices[i];
      if (!Number.isInteger(r) || r < 0 || r >= rows) {
        throw new Error(`row index ${r} (position ${i}) is outside the ${rows} feature rows`);
      }
      data.set(features.subarray(r * dim, (r + 1) * dim), i * dim);
    }
    return new MemoryBank(dim, indices.length, data);
  }

  get hasHnsw(): boolean {
    return this.index !== null;
  }

  /** Parameters of the built HNSW index, or null when there is none. */
  get hnswParams(): Readonly<HnswParams> | null {
    return this.params;
  }

  /** Builds (or rebuilds) the HNSW index over all rows; labels are row indices. */
  buildHnsw(params: Partial<HnswParams> = {}): void {
    const p = checkHnswParams({ ...DEFAULT_HNSW, ...params });
    const index = new hnswlib.HierarchicalNSW('l2', this.dim);
    index.initIndex({ maxElements: this.count, m: p.M, efConstruction: p.efConstruction, randomSeed: p.seed });
    const row = new Array<number>(this.dim);
    for (let i = 0; i < this.count; i++) {
      const o = i * this.dim;
      for (let j = 0; j < this.dim; j++) row[j] = this.data[o + j];
      index.addPoint(row, i);
    }
    index.setEf(p.efSearch);
    this.index = index;
    this.params = p;
  }

  /** Changes the search-time candidate list size of the built index. */
  setEfSearch(efSearch: number): void {
    if (!this.index || !this.params) throw new Error('setEfSearch: no HNSW index built (call buildHnsw first)');
    const p = checkHnswParams({ ...this.params, efSearch });
    this.index.setEf(p.efSearch);
    this.params = p;
  }

  /** Whether nearest() searches exactly: no index, or a bank small enough for exact search to be as fast. */
  get searchesExactly(): boolean {
    if (!this.index || this.count <= SKETCH_MIN_ROWS) return true;
    return this.count <= EXACT_SEARCH_MAX_ROWS && this.exactSearcher() !== null;
  }

  /** k nearest rows per query: exact for banks up to EXACT_SEARCH_MAX_ROWS (or without an index), else through HNSW. */
  nearest(queries: Float32Array, k = 1): NeighbourResult {
    return this.searchesExactly ? this.exactNearest(queries, k) : this.hnswNearest(queries, k);
  }

  /** k nearest rows per query through the HNSW index (approximate). */
  hnswNearest(queries: Float32Array, k = 1): NeighbourResult {
    if (!this.index || !this.params) throw new Error('hnswNearest: no HNSW index built (call buildHnsw first)');
    const n = this.checkQueries(queries, k, 'hnswNearest');
    const index = this.index;
    index.setEf(Math.max(this.params.efSearch, k));
    const distances = new Float32Array(n * k);
    const indices = new Uint32Array(n * k);
    const row = new Array<number>(this.dim);
    for (let q = 0; q < n; q++) {
      const o = q * this.dim;
      for (let j = 0; j < this.dim; j++) row[j] = queries[o + j];
      const r = index.searchKnn(row, k);
      if (r.neighbors.length !== k) {
        throw new Error(`HNSW returned ${r.neighbors.length} neighbours for query ${q}, expected ${k}`);
      }
      for (let i = 0; i < k; i++) {
        // hnswlib's 'l2' space reports squared distances.
        distances[q * k + i] = Math.sqrt(Math.max(0, r.distances[i]));
        indices[q * k + i] = r.neighbors[i];
      }
    }
    index.setEf(this.params.efSearch);
    return { distances, indices };
  }

  /** Exact k nearest rows per query (ties to the lower row index). */
  exactNearest(queries: Float32Array, k = 1): NeighbourResult {
    const n = this.checkQueries(queries, k, 'exactNearest');
    const searcher = this.count > SKETCH_MIN_ROWS ? this.exactSearcher() : null;
    if (searcher) return searcher.nearest(queries, n, k);
    this.norms ??= squaredNorms(this.data, this.count, this.dim);
    return exactKnn(this.data, this.norms, this.count, this.dim, queries, n, k);
  }

  /** The sketch searcher, built on first use (about a second for 16k x 1024), or null where it does not apply. */
  private exactSearcher(): SketchSearch | null {
    if (this.searcher === undefined) this.searcher = SketchSearch.create(this.data, this.count, this.dim);
    return this.searcher;
  }

  /**
   * Share of queries whose HNSW nearest neighbour is the exact one, or another row at the same
   * distance (within 1e-6 relative, so duplicate rows count). With `sample`, only that many
   * evenly spaced queries are checked (the exact side costs queries x count x dim).
   */
  recallAt1(queries: Float32Array, sample?: number): number {
    if (!this.index) throw new Error('recallAt1: no HNSW index built (call buildHnsw first)');
    const total = this.checkQueries(queries, 1, 'recallAt1');
    if (total === 0) throw new Error('recallAt1: queries is empty');
    const s = Math.min(total, sample ?? total);
    if (!Number.isInteger(s) || s < 1) throw new Error(`recallAt1: sample must be a positive integer, got ${sample}`);
    const picked = new Float32Array(s * this.dim);
    for (let i = 0; i < s; i++) {
      const q = Math.floor((i * total) / s);
      picked.set(queries.subarray(q * this.dim, (q + 1) * this.dim), i * this.dim);
    }
    const approx = this.hnswNearest(picked, 1);
    const exact = this.exactNearest(picked, 1);
    let hits = 0;
    for (let i = 0; i < s; i++) {
      if (approx.indices[i] === exact.indices[i]) {
        hits++;
        continue;
      }
      // Compare directly computed distances: the two searches round differently.
      const da = this.rowDistance(picked, i, approx.indices[i]);
      const de = this.rowDistance(picked, i, exact.indices[i]);
      if (Math.abs(da - de) <= 1e-6 * de) hits++;
    }
    return hits / s;
  }

  /** Writes bank.f32, bank.hnsw (if an index is built) and bank.json into `dir` (created if needed). */
  async save(dir: string): Promise<void> {
    await mkdir(dir, { recursive: true });
    const bytes = float32ToLittleEndian(this.data);
    await writeFile(join(dir, BANK_FILES.data), bytes);
    let hnswSha256: string | null = null;
    const hnswPath = join(dir, BANK_FILES.hnsw);
    if (this.index) {
      await this.index.writeIndex(hnswPath);
      hnswSha256 = sha256Hex(await readFile(hnswPath));
    } else {
      await rm(hnswPath, { force: true }); // a stale index would not match these rows
    }
    const meta: BankMeta = {
      format: 'patchcore-memory-bank',
      version: 1,
      dim: this.dim,
      count: this.count,
      sha256: sha256Hex(bytes),
      hnsw: this.params ? { ...this.params } : null,
      hnswSha256,
    };
    // Written last: a folder with bank.json is complete.
    await writeFile(join(dir, BANK_FILES.meta), `${JSON.stringify(meta, null, 2)}\n`);
  }

  /** Reads a bank written by save(), checking sizes and checksums; `expect.dim` guards against a wrong recipe. */
  static async load(dir: string, expect: { dim?: number } = {}): Promise<MemoryBank> {
    const metaPath = join(dir, BANK_FILES.meta);
    const metaText = await readFile(metaPath, 'utf8').catch((e: NodeJS.ErrnoException) => {
      throw new Error(
        e.code === 'ENOENT' ? `memory bank ${dir}: ${BANK_FILES.meta} is missing` : `memory bank ${dir}: cannot read ${BANK_FILES.meta}: ${e.message}`,
      );
    });
    let raw: unknown;
    try {
      raw = JSON.parse(metaText);
    } catch (e) {
      throw new Error(`memory bank ${dir}: ${BANK_FILES.meta} is not valid JSON (${(e as Error).message})`);
    }
    const parsed = bankMetaSchema.safeParse(raw);
    if (!parsed.success) {
      const issues = parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ');
      throw new Error(`memory bank ${dir}: ${BANK_FILES.meta} is not a memory bank description (${issues})`);
    }
    const meta = parsed.data;
    if (expect.dim !== undefined && expect.dim !== meta.dim) {
      throw new Error(`memory bank ${dir}: dim mismatch, the bank has dim ${meta.dim} but ${expect.dim} was expected`);
    }

    const dataPath = join(dir, BANK_FILES.data);
    const bytes = await readRequired(dataPath, dir, BANK_FILES.data);
    const expectedBytes = meta.count * meta.dim * 4;
    if (bytes.byteLength !== expectedBytes) {
      throw new Error(
        `memory bank ${dir}: ${BANK_FILES.data} has ${bytes.byteLength} bytes, expected count x dim x 4 = ` +
          `${meta.count} x ${meta.dim} x 4 = ${expectedBytes}`,
      );
    }
    const sha = sha256Hex(bytes);
    if (sha !== meta.sha256) {
      throw new Error(`memory bank ${dir}: ${BANK_FILES.data} is corrupt (sha256 ${sha}, ${BANK_FILES.meta} records ${meta.sha256})`);
    }
    const bank = new MemoryBank(meta.dim, meta.count, littleEndianToFloat32(bytes));

    if (meta.hnsw) {
      const hnswPath = join(dir, BANK_FILES.hnsw);
      const hnswBytes = await readRequired(hnswPath, dir, BANK_FILES.hnsw, `${BANK_FILES.meta} records an HNSW index but `);
      const hsha = sha256Hex(hnswBytes);
      if (hsha !== meta.hnswSha256) {
        throw new Error(
          `memory bank ${dir}: ${BANK_FILES.hnsw} is corrupt (sha256 ${hsha}, ${BANK_FILES.meta} records ${meta.hnswSha256})`,
        );
      }
      const index = new hnswlib.HierarchicalNSW('l2', meta.dim);
      index.readIndexSync(hnswPath);
      if (index.getCurrentCount() !== meta.count || index.getNumDimensions() !== meta.dim) {
        throw new Error(
          `memory bank ${dir}: ${BANK_FILES.hnsw} holds ${index.getCurrentCount()} points of dim ${index.getNumDimensions()}, ` +
            `expected ${meta.count} of dim ${meta.dim}`,
        );
      }
      index.setEf(meta.hnsw.efSearch);
      bank.index = index;
      bank.params = { ...meta.hnsw };
    }
    return bank;
  }

  private checkQueries(queries: Float32Array, k: number, caller: string): number {
    if (queries.length % this.dim !== 0) {
      throw new Error(`${caller}: queries has ${queries.length} values, not a multiple of the bank dim ${this.dim}`);
    }
    if (!Number.isInteger(k) || k < 1 || k > this.count) {
      throw new Error(`${caller}: k must be an integer in [1, ${this.count}] (the bank size), got ${k}`);
    }
    return queries.length / this.dim;
  }

  private rowDistance(queries: Float32Array, q: number, row: number): number {
    let s = 0;
    const oq = q * this.dim;
    const ob = row * this.dim;
    for (let j = 0; j < this.dim; j++) {
      const e = queries[oq + j] - this.data[ob + j];
      s += e * e;
    }
    return Math.sqrt(s);
  }
}

async function readRequired(path: string, dir: string, name: string, context = ''): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err.code === 'ENOENT') throw new Error(`memory bank ${dir}: ${context}${name} is missing`);
    throw new Error(`memory bank ${dir}: cannot read ${name}: ${err.message}`);
  }
}
