// The PatchCore memory bank: the coreset's patch features (count x dim, row-major float32), with
// exact search (sketch-pruned SIMD, sketch-search.ts; brute force where that does not apply) and, for banks
// too large for exact search to keep up, an HNSW index (usearch, rows stored as bfloat16) whose candidates are
// re-ranked with the float32 rows. Which search scores is decided by the bank size (EXACT_SEARCH_MAX_ROWS),
// from `scripts/bench-search.ts`.
//
// On disk a bank is a folder: bank.f32 (raw little-endian float32), bank.usearch (usearch's own format, when
// an index was built), and bank.json (shape, HNSW parameters, sha256 of the files). Folders written before
// usearch may hold bank.hnsw (hnswlib's format) instead; they still load and search.

import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import hnswlib from 'hnswlib-node';
import { z } from 'zod';
import { float32ToLittleEndian, littleEndianToFloat32, sha256Hex } from './bank-io.js';
import { exactKnn, squaredNorms, type NeighbourResult } from './exact-search.js';
import { SketchSearch } from './sketch-search.js';
import { USEARCH_QUANTIZATIONS, UsearchIndex, type UsearchQuantization } from './usearch-index.js';

export type { NeighbourResult };

export interface HnswParams {
  /** Graph degree (usearch connectivity, hnswlib M). */
  M: number;
  /** Candidate list size while building (usearch expansion_add). */
  efConstruction: number;
  /** Candidate list size while searching (usearch expansion_search; raised to k when k is larger). */
  efSearch: number;
  /** Seed of hnswlib's level generator (indexes of older folders); usearch's generator has a fixed seed. */
  seed: number;
}

/**
 * Defaults for 1024-d PatchCore features, from `scripts/bench-search.ts` (usearch, bf16 rows, 3 candidates
 * re-ranked; see EXACT_SEARCH_MAX_ROWS). efSearch 64 rather than 32 costs about the same on bottle and keeps
 * misses small: 65 instead of 222 of its 65,072 test patch scores differ from exact search, the worst by +14%
 * instead of +293%.
 */
export const DEFAULT_HNSW: Readonly<HnswParams> = Object.freeze({
  M: 16,
  efConstruction: 200,
  efSearch: 64,
  seed: 100,
});

/**
 * nearest() searches exactly up to this many rows; larger banks are scored through the HNSW index, which
 * buildHnsw() builds only for them. Measured with `scripts/bench-search.ts` on real bottle features (coreset
 * prefixes; 1,000 test patches; one process, 2 loaded cores, ms per 784-patch image, sketch exact search vs
 * usearch bf16 efSearch 32 re-ranked): 2k rows 191 vs 83-188 (recall 0.995), 4k 174 vs 107-139 (0.995), 8k 129
 * vs 41-96 (0.999), 16k 518 vs 215-265 (0.999). Up to 4k exact search costs little and HNSW's recall margin is
 * thinnest, so those stay exact; from there HNSW is 2-5x faster and the gap grows with the bank. Capsules
 * (random samples of its training patches, efSearch 64 re-ranked): 42k rows 297-624 ms (recall 1.000) vs sketch
 * 4,561 and hnswlib efSearch 32 2,171; 200k rows 1,440-2,540 (0.999) vs sketch 14,690.
 */
export const EXACT_SEARCH_MAX_ROWS = 4096;
/** EXACT_SEARCH_MAX_ROWS when indexes were hnswlib's (older folders). */
const HNSWLIB_EXACT_MAX_ROWS = 20_000;
/** Below this many rows plain brute force is cheaper than building a sketch. */
const SKETCH_MIN_ROWS = 512;
/**
 * Storage of the rows inside the HNSW index: half the bytes of float32. On bottle's bank bf16 searched 1.5-2x
 * faster than f16 at the same recall after re-ranking; i8 lost too much (recall@1 0.95 at best).
 */
export const HNSW_QUANTIZATION: UsearchQuantization = 'bf16';
/** HNSW candidates per query re-ranked with the float32 rows: on bottle, bf16 at efSearch 32 goes from recall 0.991 (1) to 0.998 (3). */
const RERANK_CANDIDATES = 3;

export const BANK_FILES = Object.freeze({ data: 'bank.f32', meta: 'bank.json', hnsw: 'bank.hnsw', usearch: 'bank.usearch' });

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
  /** The index file's library; absent in folders written before usearch (then hnswlib, bank.hnsw). */
  hnswLibrary: z.enum(['usearch', 'hnswlib']).optional(),
  /** How the usearch index stores rows. */
  hnswQuantization: z.enum(USEARCH_QUANTIZATIONS).optional(),
});

export type BankMeta = z.infer<typeof bankMetaSchema>;

type HnswlibIndex = InstanceType<typeof hnswlib.HierarchicalNSW>;
type ApproximateIndex = { library: 'usearch'; index: UsearchIndex } | { library: 'hnswlib'; index: HnswlibIndex };

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
  private approximate: ApproximateIndex | null = null;
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
    return this.approximate !== null;
  }

  /** Parameters of the built HNSW index, or null when there is none. */
  get hnswParams(): Readonly<HnswParams> | null {
    return this.params;
  }

  /** Whether an HNSW index would score this bank: only banks above EXACT_SEARCH_MAX_ROWS rows. */
  static usesHnsw(count: number): boolean {
    return count > EXACT_SEARCH_MAX_ROWS;
  }

  /**
   * Builds (or rebuilds) the HNSW index over all rows (usearch; labels are row indices) when nearest() will
   * use it, i.e. for banks above EXACT_SEARCH_MAX_ROWS rows; smaller banks are searched exactly and get no
   * index (any earlier one is dropped). `force` builds it whatever the size (tests, benchmarks). Returns
   * whether an index was built.
   */
  buildHnsw(params: Partial<HnswParams> = {}, opts: { force?: boolean } = {}): boolean {
    const p = checkHnswParams({ ...DEFAULT_HNSW, ...params });
    if (!opts.force && !MemoryBank.usesHnsw(this.count)) {
      this.approximate = null;
      this.params = null;
      return false;
    }
    const index = UsearchIndex.build(this.data, this.count, this.dim, { ...p, quantization: HNSW_QUANTIZATION });
    this.approximate = { library: 'usearch', index };
    this.params = p;
    return true;
  }

  /** Changes the search-time candidate list size of the built index. */
  setEfSearch(efSearch: number): void {
    if (!this.approximate || !this.params) throw new Error('setEfSearch: no HNSW index built (call buildHnsw first)');
    const p = checkHnswParams({ ...this.params, efSearch });
    if (this.approximate.library === 'hnswlib') this.approximate.index.setEf(p.efSearch);
    else {
      const scratch = join(tmpdir(), `patchcore-ef-${process.pid}-${Date.now()}.usearch`);
      try {
        this.approximate = { library: 'usearch', index: this.approximate.index.withEfSearch(p.efSearch, scratch) };
      } finally {
        void rm(scratch, { force: true });
      }
    }
    this.params = p;
  }

  /**
   * Whether nearest() searches exactly: no index, or a bank small enough for exact search to be as fast. An
   * hnswlib index from an older folder scores only where it did then (above HNSWLIB_EXACT_MAX_ROWS rows), so
   * such models keep their scores.
   */
  get searchesExactly(): boolean {
    if (!this.approximate || this.count <= SKETCH_MIN_ROWS) return true;
    const exactUpTo = this.approximate.library === 'hnswlib' ? HNSWLIB_EXACT_MAX_ROWS : EXACT_SEARCH_MAX_ROWS;
    return this.count <= exactUpTo && this.exactSearcher() !== null;
  }

  /** k nearest rows per query: exact for banks up to EXACT_SEARCH_MAX_ROWS (or without an index), else through HNSW. */
  nearest(queries: Float32Array, k = 1): NeighbourResult {
    return this.searchesExactly ? this.exactNearest(queries, k) : this.hnswNearest(queries, k);
  }

  /**
   * k nearest rows per query through the HNSW index (approximate): the index proposes max(k, RERANK_CANDIDATES) rows, which
   * are ordered by their float64 distance from the float32 rows (ties to the lower row index). Distances are
   * Euclidean.
   */
  hnswNearest(queries: Float32Array, k = 1): NeighbourResult {
    if (!this.approximate || !this.params) throw new Error('hnswNearest: no HNSW index built (call buildHnsw first)');
    const n = this.checkQueries(queries, k, 'hnswNearest');
    const wanted = Math.min(this.count, Math.max(k, RERANK_CANDIDATES));
    const candidates = this.hnswCandidates(queries, n, wanted);
    const distances = new Float32Array(n * k);
    const indices = new Uint32Array(n * k);
    const d = new Float64Array(wanted);
    const order = Array.from({ length: wanted }, (_, i) => i);
    for (let q = 0; q < n; q++) {
      const base = q * wanted;
      for (let i = 0; i < wanted; i++) {
        const row = candidates[base + i];
        d[i] = row < 0 ? Infinity : this.rowDistance(queries, q, row);
      }
      order.sort((a, b) => d[a] - d[b] || candidates[base + a] - candidates[base + b]);
      for (let i = 0; i < k; i++) {
        const c = order[i];
        if (candidates[base + c] < 0) throw new Error(`HNSW found fewer than ${k} neighbours for query ${q}`);
        distances[q * k + i] = d[c];
        indices[q * k + i] = candidates[base + c];
      }
    }
    return { distances, indices };
  }

  /** `wanted` candidate rows per query from the index (-1 where it found fewer). */
  private hnswCandidates(queries: Float32Array, n: number, wanted: number): Int32Array {
    const a = this.approximate!;
    if (a.library === 'usearch') return a.index.candidates(queries, n, wanted);
    const ef = this.params!.efSearch;
    a.index.setEf(Math.max(ef, wanted));
    const out = new Int32Array(n * wanted).fill(-1);
    const row = new Array<number>(this.dim);
    for (let q = 0; q < n; q++) {
      const o = q * this.dim;
      for (let j = 0; j < this.dim; j++) row[j] = queries[o + j];
      const r = a.index.searchKnn(row, wanted);
      for (let i = 0; i < r.neighbors.length; i++) out[q * wanted + i] = r.neighbors[i];
    }
    a.index.setEf(ef);
    return out;
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
   * Recall@1 of the bank's approximate search: the share of queries whose HNSW nearest neighbour is the
   * exact one, or another row at the same distance (within 1e-6 relative, so duplicate rows count). With
   * `sample`, only that many evenly spaced queries are checked (the exact side costs queries x count x dim).
   * A bank without an index is searched exactly, so its recall is 1 (not measured).
   */
  recallAt1(queries: Float32Array, sample?: number): number {
    const total = this.checkQueries(queries, 1, 'recallAt1');
    if (total === 0) throw new Error('recallAt1: queries is empty');
    const s = Math.min(total, sample ?? total);
    if (!Number.isInteger(s) || s < 1) throw new Error(`recallAt1: sample must be a positive integer, got ${sample}`);
    if (!this.approximate) return 1;
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

  /** The files save() wrote into `dir`, bank.json last (the order to copy them in): read from its bank.json. */
  static async listFiles(dir: string): Promise<string[]> {
    const meta = await readMeta(dir);
    const index = meta.hnsw ? [(meta.hnswLibrary ?? 'hnswlib') === 'usearch' ? BANK_FILES.usearch : BANK_FILES.hnsw] : [];
    return [BANK_FILES.data, ...index, BANK_FILES.meta];
  }

  /**
   * Writes bank.f32, the index file (bank.usearch, or bank.hnsw for an index loaded from an older folder) if
   * an index is built, and bank.json into `dir` (created if needed); stale index files are removed.
   */
  async save(dir: string): Promise<void> {
    await mkdir(dir, { recursive: true });
    const bytes = float32ToLittleEndian(this.data);
    await writeFile(join(dir, BANK_FILES.data), bytes);
    const a = this.approximate;
    const indexFile = a ? (a.library === 'usearch' ? BANK_FILES.usearch : BANK_FILES.hnsw) : null;
    // A stale index would not match these rows.
    for (const f of [BANK_FILES.usearch, BANK_FILES.hnsw]) if (f !== indexFile) await rm(join(dir, f), { force: true });
    let hnswSha256: string | null = null;
    if (a && indexFile) {
      const path = join(dir, indexFile);
      if (a.library === 'usearch') a.index.save(path);
      else await a.index.writeIndex(path);
      hnswSha256 = sha256Hex(await readFile(path));
    }
    const meta: BankMeta = {
      format: 'patchcore-memory-bank',
      version: 1,
      dim: this.dim,
      count: this.count,
      sha256: sha256Hex(bytes),
      hnsw: this.params ? { ...this.params } : null,
      hnswSha256,
      ...(a ? { hnswLibrary: a.library } : {}),
      ...(a?.library === 'usearch' ? { hnswQuantization: HNSW_QUANTIZATION } : {}),
    };
    // Written last: a folder with bank.json is complete.
    await writeFile(join(dir, BANK_FILES.meta), `${JSON.stringify(meta, null, 2)}\n`);
  }

  /** Reads a bank written by save(), checking sizes and checksums; `expect.dim` guards against a wrong recipe. */
  static async load(dir: string, expect: { dim?: number } = {}): Promise<MemoryBank> {
    const meta = await readMeta(dir);
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
      const library = meta.hnswLibrary ?? 'hnswlib';
      const file = library === 'usearch' ? BANK_FILES.usearch : BANK_FILES.hnsw;
      const path = join(dir, file);
      const indexBytes = await readRequired(path, dir, file, `${BANK_FILES.meta} records an HNSW index but `);
      const isha = sha256Hex(indexBytes);
      if (isha !== meta.hnswSha256) {
        throw new Error(`memory bank ${dir}: ${file} is corrupt (sha256 ${isha}, ${BANK_FILES.meta} records ${meta.hnswSha256})`);
      }
      let points: number;
      let dims: number;
      if (library === 'usearch') {
        const index = UsearchIndex.load(path, meta.dim, { ...meta.hnsw, quantization: meta.hnswQuantization ?? HNSW_QUANTIZATION });
        bank.approximate = { library, index };
        points = index.size;
        dims = index.dimensions;
      } else {
        const index = new hnswlib.HierarchicalNSW('l2', meta.dim);
        index.readIndexSync(path);
        index.setEf(meta.hnsw.efSearch);
        bank.approximate = { library, index };
        points = index.getCurrentCount();
        dims = index.getNumDimensions();
      }
      if (points !== meta.count || dims !== meta.dim) {
        throw new Error(`memory bank ${dir}: ${file} holds ${points} points of dim ${dims}, expected ${meta.count} of dim ${meta.dim}`);
      }
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

/** bank.json of `dir`, validated. */
async function readMeta(dir: string): Promise<BankMeta> {
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
  return parsed.data;
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
