import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { greedyCoreset } from './greedy.js';
import { SeededRandom } from './random.js';
import { rowsInFile, rowsInMemory, RowSpool } from './row-source.js';

function gaussianRows(n: number, dim: number, seed: number): Float32Array {
  const r = new SeededRandom(seed);
  const f = new Float32Array(n * dim);
  for (let i = 0; i < f.length; i++) f[i] = r.gaussian() * (1 + (i % 7)) + ((i / dim) % 5);
  return f;
}

async function withDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), 'patchcore-row-source-test-'));
  try {
    return await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

test('a spool written in uneven pieces reads back the same rows, in chunks and by index', async () => {
  await withDir(async (dir) => {
    const dim = 12;
    const rows = gaussianRows(1001, dim, 1);
    const spool = await RowSpool.create(join(dir, 'rows.f32'), dim);
    for (const [a, b] of [[0, 1], [1, 400], [400, 401], [401, 1001]]) await spool.append(rows.subarray(a * dim, b * dim));
    await spool.close();
    assert.equal(spool.rows, 1001);
    assert.equal((await stat(spool.path)).size, 1001 * dim * 4);

    const source = rowsInFile(spool.path, 1001, dim, 333);
    const chunks: number[] = [];
    const whole = new Float32Array(rows.length);
    source.forEachChunk((chunk, first) => {
      chunks.push(first);
      whole.set(chunk, first * dim);
    });
    assert.deepEqual(chunks, [0, 333, 666, 999]);
    assert.deepEqual(whole, rows);
    const picked = [1000, 0, 17, 17, 500];
    assert.deepEqual(source.readRows(picked), rowsInMemory(rows, 1001, dim).readRows(picked));
    assert.throws(() => source.readRows([1001]), /row index 1001 \(position 0\) is outside the 1001 feature rows/);
    assert.throws(() => rowsInFile(spool.path, 1002, dim).readRows([1001]), /ends at byte 48048; expected 1002 rows of 12 floats/);
    await assert.rejects(spool.append(new Float32Array(5)), /5 values is not a whole number of 12-float rows/);
  });
});

test('the spool refuses to overwrite an existing file', async () => {
  await withDir(async (dir) => {
    const path = join(dir, 'rows.f32');
    await (await RowSpool.create(path, 4)).close();
    await assert.rejects(RowSpool.create(path, 4), /EEXIST/);
  });
});

// The reduce steps and the root read their rows from a spool in chunks; local fit selects from memory. A chunk
// boundary at an odd row sends that row through the scalar projection instead of the SIMD pairs: the selection must
// not change, with the SIMD kernels (one and two threads) or the JS ones, projected or not.
test('greedyCoreset selects the same points from a file read in odd chunks as from memory', async () => {
  await withDir(async (dir) => {
    for (const { n, dim, projectionDim } of [{ n: 3001, dim: 96, projectionDim: 32 }, { n: 1500, dim: 16, projectionDim: 128 }]) {
      const rows = gaussianRows(n, dim, dim);
      const path = join(dir, `rows-${dim}.f32`);
      const spool = await RowSpool.create(path, dim);
      await spool.append(rows);
      await spool.close();
      const target = Math.round(n / 20);
      for (const [simd, threads] of [[true, 1], [true, 2], [false, 1]] as const) {
        const opts = { target, projectionDim, seed: 7, simd, threads };
        const want = Array.from(greedyCoreset(rows, n, dim, opts));
        const got = Array.from(greedyCoreset(rowsInFile(path, n, dim, 257), n, dim, opts));
        assert.deepEqual(got, want, `dim ${dim}, simd ${simd}, threads ${threads}`);
        assert.equal(new Set(got).size, target);
      }
    }
    assert.throws(() => greedyCoreset(rowsInMemory(new Float32Array(20), 10, 2), 11, 2, { target: 1 }), /row source holds 10 x 2, expected 11 x 2/);
  });
});
