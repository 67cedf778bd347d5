// The rows a coreset selects from, read in chunks. In memory for a local fit; in a local file for a reduce step or
// the root of a training run, which spool their inputs to disk as they download them and so hold only the
// projected rows (projectionDim of every row's dim floats) while the selection runs, plus the selected rows after it.
import { closeSync, openSync, readSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';

export interface RowSource {
  /** Rows, and floats per row. */
  readonly count: number;
  readonly dim: number;
  /** Calls `fn` with consecutive chunks of rows (row-major), the first starting at row 0. */
  forEachChunk(fn: (rows: Float32Array, firstRow: number) => void): void;
  /** Rows `indices` (each in [0, count)), copied in that order. */
  readRows(indices: ArrayLike<number>): Float32Array;
}

function checkIndex(r: number, i: number, count: number): void {
  if (!Number.isInteger(r) || r < 0 || r >= count) throw new Error(`row index ${r} (position ${i}) is outside the ${count} feature rows`);
}

/** `features` (count x dim, row-major) as a source of one chunk; nothing is copied until readRows. */
export function rowsInMemory(features: Float32Array, count: number, dim: number): RowSource {
  if (features.length !== count * dim) {
    throw new Error(`features has ${features.length} values, expected count x dim = ${count}x${dim} = ${count * dim}`);
  }
  return {
    count,
    dim,
    forEachChunk: (fn) => fn(features, 0),
    readRows(indices) {
      const out = new Float32Array(indices.length * dim);
      for (let i = 0; i < indices.length; i++) {
        const r = indices[i];
        checkIndex(r, i, count);
        out.set(features.subarray(r * dim, (r + 1) * dim), i * dim);
      }
      return out;
    },
  };
}

/** Rows per chunk read from a file: 16 MiB at 1024 floats a row. */
export const FILE_CHUNK_ROWS = 4096;

/**
 * Rows of float32 values (native byte order, as RowSpool writes them) in the file at `path`, read synchronously:
 * sources are used inside worker threads whose whole job is this one computation.
 */
export function rowsInFile(path: string, count: number, dim: number, chunkRows = FILE_CHUNK_ROWS): RowSource {
  const rowBytes = dim * 4;
  const readInto = (fd: number, out: Float32Array, position: number): void => {
    const bytes = new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
    let done = 0;
    while (done < bytes.length) {
      const n = readSync(fd, bytes, done, bytes.length - done, position + done);
      if (n === 0) throw new Error(`row file "${path}" ends at byte ${position + done}; expected ${count} rows of ${dim} floats`);
      done += n;
    }
  };
  const withFile = <T>(fn: (fd: number) => T): T => {
    const fd = openSync(path, 'r');
    try {
      return fn(fd);
    } finally {
      closeSync(fd);
    }
  };
  return {
    count,
    dim,
    forEachChunk(fn) {
      withFile((fd) => {
        const chunk = new Float32Array(Math.min(chunkRows, count) * dim);
        for (let first = 0; first < count; first += chunkRows) {
          const rows = Math.min(chunkRows, count - first);
          const view = chunk.subarray(0, rows * dim);
          readInto(fd, view, first * rowBytes);
          fn(view, first);
        }
      });
    },
    readRows(indices) {
      const out = new Float32Array(indices.length * dim);
      withFile((fd) => {
        for (let i = 0; i < indices.length; i++) {
          const r = indices[i];
          checkIndex(r, i, count);
          readInto(fd, out.subarray(i * dim, (i + 1) * dim), r * rowBytes);
        }
      });
      return out;
    },
  };
}

/** Appends rows of `dim` floats to a local file, for rowsInFile to read back. */
export class RowSpool {
  private rowCount = 0;

  private constructor(readonly path: string, readonly dim: number, private readonly file: FileHandle) {}

  static async create(path: string, dim: number): Promise<RowSpool> {
    return new RowSpool(path, dim, await open(path, 'wx'));
  }

  get rows(): number {
    return this.rowCount;
  }

  async append(rows: Float32Array): Promise<void> {
    if (rows.length % this.dim !== 0) throw new Error(`row spool "${this.path}": ${rows.length} values is not a whole number of ${this.dim}-float rows`);
    const bytes = new Uint8Array(rows.buffer, rows.byteOffset, rows.byteLength);
    let done = 0;
    while (done < bytes.length) done += (await this.file.write(bytes, done, bytes.length - done)).bytesWritten;
    this.rowCount += rows.length / this.dim;
  }

  /** Closes the file; its rows can then be read with `source()`. */
  async close(): Promise<void> {
    await this.file.close();
  }

  source(): RowSource {
    return rowsInFile(this.path, this.rowCount, this.dim);
  }
}
