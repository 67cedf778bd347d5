// The approximate index of large memory banks: usearch's HNSW over the bank rows, stored at reduced precision
// (its SIMD kernels compare bf16 or f16 rows directly). Its distances are only used to pick candidates: the caller
// re-ranks them with the float32 rows, so scores are true Euclidean distances to the rows found.

import { availableParallelism } from 'node:os';
import usearch, { type ScalarKind } from 'usearch';

export const USEARCH_QUANTIZATIONS = ['f32', 'f16', 'bf16'] as const;
export type UsearchQuantization = (typeof USEARCH_QUANTIZATIONS)[number];

export interface UsearchIndexParams {
  /** Graph degree. */
  M: number;
  /** Candidate list size while building. */
  efConstruction: number;
  /** Candidate list size while searching. */
  efSearch: number;
  quantization: UsearchQuantization;
}

type Handle = InstanceType<typeof usearch.Index>;

/** Threads for usearch's batch calls: every core this process may use (search runs between backbone batches). */
export function searchThreads(): number {
  return availableParallelism();
}

function open(dim: number, p: UsearchIndexParams): Handle {
  return new usearch.Index({
    dimensions: dim,
    metric: usearch.MetricKind.L2sq,
    quantization: p.quantization as ScalarKind,
    connectivity: p.M,
    expansion_add: p.efConstruction,
    expansion_search: p.efSearch,
    multi: false,
  });
}

export class UsearchIndex {
  private constructor(
    private handle: Handle,
    readonly dim: number,
    private params: UsearchIndexParams,
  ) {}

  /** Builds the graph over `count` rows of `data` (row-major, dim wide); keys are row indices. */
  static build(data: Float32Array, count: number, dim: number, params: UsearchIndexParams, threads = searchThreads()): UsearchIndex {
    const handle = open(dim, params);
    const keys = new BigUint64Array(count);
    for (let i = 0; i < count; i++) keys[i] = BigInt(i);
    handle.add(keys, data, threads);
    return new UsearchIndex(handle, dim, params);
  }

  /** Reads an index written by save(); `params.efSearch` applies (usearch does not store it in the file). */
  static load(path: string, dim: number, params: UsearchIndexParams): UsearchIndex {
    const handle = open(dim, params);
    handle.load(path);
    return new UsearchIndex(handle, dim, params);
  }

  get size(): number {
    return this.handle.size();
  }

  get dimensions(): number {
    return this.handle.dimensions();
  }

  save(path: string): void {
    this.handle.save(path);
  }

  /** A new handle over the same graph with another efSearch (usearch fixes it when a handle is opened). */
  withEfSearch(efSearch: number, scratchPath: string): UsearchIndex {
    this.handle.save(scratchPath);
    return UsearchIndex.load(scratchPath, this.dim, { ...this.params, efSearch });
  }

  /** Up to k candidate rows per query (row-major keys, k per query; -1 where fewer were found). */
  candidates(queries: Float32Array, n: number, k: number, threads = searchThreads()): Int32Array {
    const r = this.handle.search(queries, k, threads);
    const out = new Int32Array(n * k).fill(-1);
    // One query comes back as Matches (keys of the found rows only), more as BatchMatches (counts per query).
    const counts = r instanceof usearch.BatchMatches ? r.counts : [BigInt(r.keys.length)];
    for (let q = 0; q < n; q++) {
      const found = Number(counts[q]);
      for (let i = 0; i < found; i++) out[q * k + i] = Number(r.keys[q * k + i]);
    }
    return out;
  }
}
