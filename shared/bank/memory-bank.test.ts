import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile, unlink } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import hnswlib from 'hnswlib-node';
import { MemoryBank, BANK_FILES } from './memory-bank.js';
import { SeededRandom } from '../coreset/random.js';
import { referenceDir } from '../paths.js';

function gaussianRows(n: number, dim: number, seed: number): Float32Array {
  const r = new SeededRandom(seed);
  return Float32Array.from({ length: n * dim }, () => r.gaussian());
}

/** Naive exact k-NN: sorted (distance, index) pairs per query. */
function naiveKnn(bank: Float32Array, queries: Float32Array, dim: number, k: number): { d: number[]; i: number[] }[] {
  const nb = bank.length / dim;
  const out: { d: number[]; i: number[] }[] = [];
  for (let q = 0; q < queries.length / dim; q++) {
    const all: [number, number][] = [];
    for (let b = 0; b < nb; b++) {
      let s = 0;
      for (let j = 0; j < dim; j++) s += (queries[q * dim + j] - bank[b * dim + j]) ** 2;
      all.push([Math.sqrt(s), b]);
    }
    all.sort((x, y) => x[0] - y[0] || x[1] - y[1]);
    out.push({ d: all.slice(0, k).map((x) => x[0]), i: all.slice(0, k).map((x) => x[1]) });
  }
  return out;
}

function referenceFeatures(name: string): Float32Array {
  const b = readFileSync(join(referenceDir(), `${name}.patchcore_features.f32`));
  return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
}

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'bank-test-'));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

test('exactNearest equals a naive search for k = 1 and k = 3 (odd sizes exercise every loop tail)', () => {
  const dim = 37;
  const bank = new MemoryBank(dim, 203, gaussianRows(203, dim, 1));
  const queries = gaussianRows(11, dim, 2);
  for (const k of [1, 3]) {
    const got = bank.exactNearest(queries, k);
    const want = naiveKnn(bank.data, queries, dim, k);
    assert.equal(got.distances.length, 11 * k);
    for (let q = 0; q < 11; q++) {
      assert.deepEqual(Array.from(got.indices.subarray(q * k, q * k + k)), want[q].i);
      for (let i = 0; i < k; i++) {
        assert.ok(Math.abs(got.distances[q * k + i] - want[q].d[i]) < 1e-5 * want[q].d[i], `q ${q} i ${i}`);
      }
    }
  }
});

test('exact search: a query equal to a row is at distance 0; duplicate rows tie to the lower index', () => {
  const dim = 8;
  const rows = gaussianRows(10, dim, 3);
  rows.copyWithin(7 * dim, 2 * dim, 3 * dim); // row 7 := row 2
  const bank = new MemoryBank(dim, 10, rows);
  const r = bank.exactNearest(rows.slice(2 * dim, 3 * dim), 3);
  assert.deepEqual(Array.from(r.indices.subarray(0, 2)), [2, 7]);
  assert.equal(r.distances[0], 0);
  assert.equal(r.distances[1], 0);
  assert.ok(r.distances[2] > 0.5);
});

test('HNSW agrees with exact search on real bottle features (recall@1 reported)', (t) => {
  const dim = 1024;
  const bank = new MemoryBank(dim, 784, referenceFeatures('train_good_000'));
  const queries = referenceFeatures('test_broken_large_000');
  assert.equal(bank.count, 784);
  // A bank this small is searched exactly: by default no index is built for it.
  assert.equal(bank.buildHnsw(), false);
  assert.equal(bank.hasHnsw, false);
  assert.equal(bank.recallAt1(queries), 1);
  assert.equal(bank.buildHnsw({}, { force: true }), true);
  assert.equal(bank.hasHnsw, true);
  assert.deepEqual(bank.hnswParams, { M: 16, efConstruction: 200, efSearch: 64, seed: 100 });
  const recall = bank.recallAt1(queries);
  t.diagnostic(`recall@1 on real features (784-row bank, 784 queries): ${recall}`);
  assert.ok(recall >= 0.99, `recall ${recall}`);
  // HNSW distances are Euclidean, not squared.
  const h = bank.hnswNearest(queries.subarray(0, 50 * dim), 1);
  const e = bank.exactNearest(queries.subarray(0, 50 * dim), 1);
  for (let i = 0; i < 50; i++) {
    if (h.indices[i] === e.indices[i]) assert.ok(Math.abs(h.distances[i] - e.distances[i]) <= 1e-5 * e.distances[i]);
  }
});

test('HNSW on random data: recall reported, and a tiny ef lowers it', (t) => {
  const dim = 64;
  const bank = new MemoryBank(dim, 3000, gaussianRows(3000, dim, 4));
  const queries = gaussianRows(300, dim, 5);
  bank.buildHnsw({ efSearch: 128 }, { force: true });
  const recall = bank.recallAt1(queries);
  bank.setEfSearch(1);
  const low = bank.recallAt1(queries);
  t.diagnostic(`recall@1 on i.i.d. Gaussian 64-d (3000 rows): ef 128 -> ${recall}, ef 1 -> ${low}`);
  assert.ok(recall >= 0.95, `recall ${recall}`);
  assert.ok(low < recall);
  const sampled = bank.recallAt1(queries, 30);
  assert.ok(sampled >= 0 && sampled <= 1 && Number.isInteger(sampled * 30));
  assert.throws(() => bank.recallAt1(queries, 0), /sample must be a positive integer, got 0/);
  assert.throws(() => bank.recallAt1(new Float32Array(0)), /queries is empty/);
  // k > ef still returns k neighbours, nearest first.
  const r = bank.hnswNearest(queries.subarray(0, dim), 5);
  assert.equal(r.indices.length, 5);
  for (let i = 1; i < 5; i++) assert.ok(r.distances[i] >= r.distances[i - 1]);
});

test('duplicate rows: HNSW, re-ranked, ties to the lower row like exact search, and recall@1 is 1', () => {
  const dim = 16;
  const n = 300;
  const single = gaussianRows(n, dim, 2);
  const rows = new Float32Array(2 * n * dim);
  for (let i = 0; i < n; i++) {
    rows.set(single.subarray(i * dim, (i + 1) * dim), 2 * i * dim);
    rows.set(single.subarray(i * dim, (i + 1) * dim), (2 * i + 1) * dim);
  }
  const bank = new MemoryBank(dim, 2 * n, rows);
  bank.buildHnsw({}, { force: true });
  const h = bank.hnswNearest(rows, 2);
  const e = bank.exactNearest(rows, 2);
  for (let i = 0; i < 2 * n; i++) {
    // Both twins at distance 0, the lower row first.
    assert.deepEqual([h.indices[2 * i], h.indices[2 * i + 1]], [2 * (i >> 1), 2 * (i >> 1) + 1], `query ${i}`);
    assert.deepEqual([h.distances[2 * i], h.distances[2 * i + 1]], [0, 0]);
  }
  assert.deepEqual(h.indices, e.indices);
  assert.equal(bank.recallAt1(rows, 2 * n), 1);
});

test('nearest() searches exactly below EXACT_SEARCH_MAX_ROWS even with an index; hnswNearest() always uses HNSW', () => {
  const dim = 64;
  const bank = new MemoryBank(dim, 3000, gaussianRows(3000, dim, 4));
  const queries = gaussianRows(200, dim, 5);
  bank.buildHnsw({ efSearch: 2 }, { force: true });
  assert.equal(bank.searchesExactly, true);
  assert.deepEqual(bank.nearest(queries, 1), bank.exactNearest(queries, 1));
  // ef 2 on i.i.d. data misses many true neighbours, so the two paths really differ.
  assert.notDeepEqual(bank.hnswNearest(queries, 1).indices, bank.nearest(queries, 1).indices);
  assert.throws(() => new MemoryBank(dim, 3, new Float32Array(3 * dim)).hnswNearest(queries), /no HNSW index built/);
});

test('nearest without an index falls back to exact search', () => {
  const dim = 4;
  const bank = new MemoryBank(dim, 20, gaussianRows(20, dim, 6));
  const q = gaussianRows(3, dim, 7);
  assert.deepEqual(bank.nearest(q, 2), bank.exactNearest(q, 2));
  // Exact search has recall 1 by construction: reported, not measured.
  assert.equal(bank.recallAt1(q), 1);
  assert.throws(() => bank.hnswNearest(q), /no HNSW index built/);
});

test('fromRows gathers the selected rows in order', () => {
  const f = Float32Array.from({ length: 12 }, (_, i) => i); // 4 rows of 3
  const bank = MemoryBank.fromRows(f, 3, Uint32Array.from([3, 1]));
  assert.deepEqual(Array.from(bank.data), [9, 10, 11, 3, 4, 5]);
  assert.equal(bank.count, 2);
  assert.throws(() => MemoryBank.fromRows(f, 3, [4]), /row index 4 \(position 0\) is outside the 4 feature rows/);
});

test('bad shapes and arguments give clear errors', () => {
  assert.throws(() => new MemoryBank(3, 4, new Float32Array(10)), /data has 10 values, expected count x dim = 4x3 = 12/);
  assert.throws(() => new MemoryBank(3, 0, new Float32Array(0)), /count must be a positive integer, got 0/);
  assert.throws(() => new MemoryBank(0, 2, new Float32Array(6)), /dim must be a positive integer/);
  const bank = new MemoryBank(4, 3, new Float32Array(12));
  assert.throws(() => bank.exactNearest(new Float32Array(5)), /queries has 5 values, not a multiple of the bank dim 4/);
  assert.throws(() => bank.exactNearest(new Float32Array(4), 4), /k must be an integer in \[1, 3\]/);
  assert.throws(() => bank.buildHnsw({ M: 1 }), /invalid HNSW parameters \(M:/);
  assert.throws(() => bank.setEfSearch(10), /no HNSW index built/);
});

test('save/load round trip keeps rows, HNSW parameters and search results', async () => {
  await withTempDir(async (dir) => {
    const dim = 32;
    const bank = new MemoryBank(dim, 500, gaussianRows(500, dim, 8));
    bank.buildHnsw({ M: 8, efConstruction: 50, efSearch: 40, seed: 3 }, { force: true });
    await bank.save(dir);
    const meta = JSON.parse(await readFile(join(dir, BANK_FILES.meta), 'utf8'));
    assert.equal(meta.dim, 32);
    assert.equal(meta.count, 500);
    assert.deepEqual(meta.hnsw, { M: 8, efConstruction: 50, efSearch: 40, seed: 3 });
    assert.equal(meta.hnswLibrary, 'usearch');
    assert.equal(meta.hnswQuantization, 'bf16');
    assert.equal(meta.hnswSha256, createHash('sha256').update(await readFile(join(dir, BANK_FILES.usearch))).digest('hex'));
    assert.deepEqual(await MemoryBank.listFiles(dir), ['bank.f32', 'bank.usearch', 'bank.json']);
    assert.equal((await readFile(join(dir, BANK_FILES.data))).byteLength, 500 * 32 * 4);

    const loaded = await MemoryBank.load(dir, { dim: 32 });
    assert.deepEqual(loaded.data, bank.data);
    assert.equal(loaded.hasHnsw, true);
    assert.deepEqual(loaded.hnswParams, bank.hnswParams);
    const q = gaussianRows(40, dim, 9);
    assert.deepEqual(loaded.nearest(q, 3), bank.nearest(q, 3));
    assert.deepEqual(loaded.hnswNearest(q, 3), bank.hnswNearest(q, 3));

    // Saving again without an index removes the stale bank.usearch.
    const plain = new MemoryBank(dim, 500, bank.data);
    await plain.save(dir);
    await assert.rejects(readFile(join(dir, BANK_FILES.usearch)), /ENOENT/);
    await assert.rejects(readFile(join(dir, BANK_FILES.hnsw)), /ENOENT/);
    assert.deepEqual(await MemoryBank.listFiles(dir), ['bank.f32', 'bank.json']);
    const reloaded = await MemoryBank.load(dir);
    assert.equal(reloaded.hasHnsw, false);
    assert.equal(reloaded.hnswParams, null);
  });
});

test('load says what is wrong: missing files, wrong size, corruption, dim mismatch', async () => {
  await withTempDir(async (dir) => {
    const dim = 6;
    const bank = new MemoryBank(dim, 50, gaussianRows(50, dim, 10));
    bank.buildHnsw({ efConstruction: 20 }, { force: true });
    await assert.rejects(MemoryBank.load(dir), /bank\.json is missing/);
    await bank.save(dir);
    const dataPath = join(dir, BANK_FILES.data);
    const hnswPath = join(dir, BANK_FILES.usearch);
    const metaPath = join(dir, BANK_FILES.meta);
    const data = await readFile(dataPath);
    const hnsw = await readFile(hnswPath);
    const meta = await readFile(metaPath, 'utf8');

    await assert.rejects(MemoryBank.load(dir, { dim: 1024 }), /dim mismatch, the bank has dim 6 but 1024 was expected/);

    await writeFile(dataPath, data.subarray(0, data.byteLength - 4));
    await assert.rejects(MemoryBank.load(dir), /bank\.f32 has 1196 bytes, expected count x dim x 4 = 50 x 6 x 4 = 1200/);
    const flipped = Buffer.from(data);
    flipped[17] ^= 0x40;
    await writeFile(dataPath, flipped);
    await assert.rejects(MemoryBank.load(dir), /bank\.f32 is corrupt \(sha256 [0-9a-f]{64}/);
    await unlink(dataPath);
    await assert.rejects(MemoryBank.load(dir), /bank\.f32 is missing/);
    await writeFile(dataPath, data);

    await unlink(hnswPath);
    await assert.rejects(MemoryBank.load(dir), /records an HNSW index but bank\.usearch is missing/);
    const badIndex = Buffer.from(hnsw);
    badIndex[badIndex.byteLength - 1] ^= 0xff;
    await writeFile(hnswPath, badIndex);
    await assert.rejects(MemoryBank.load(dir), /bank\.usearch is corrupt/);
    await writeFile(hnswPath, hnsw);

    await writeFile(metaPath, '{ not json');
    await assert.rejects(MemoryBank.load(dir), /bank\.json is not valid JSON/);
    await writeFile(metaPath, JSON.stringify({ ...JSON.parse(meta), dim: -1 }));
    await assert.rejects(MemoryBank.load(dir), /bank\.json is not a memory bank description \(dim:/);
    await writeFile(metaPath, meta);
    assert.equal((await MemoryBank.load(dir)).count, 50);
  });
});

test('a folder written before usearch (hnswlib bank.hnsw, bank.json without hnswLibrary) still loads and searches', async () => {
  await withTempDir(async (dir) => {
    const dim = 1024;
    const rows = referenceFeatures('train_good_000');
    const queries = referenceFeatures('test_broken_large_000');
    // Exactly what the previous MemoryBank.save wrote: hnswlib's index file and the version 1 bank.json.
    const index = new hnswlib.HierarchicalNSW('l2', dim);
    index.initIndex({ maxElements: 784, m: 16, efConstruction: 200, randomSeed: 100 });
    for (let i = 0; i < 784; i++) index.addPoint(Array.from(rows.subarray(i * dim, (i + 1) * dim)), i);
    await index.writeIndex(join(dir, 'bank.hnsw'));
    const data = Buffer.from(rows.buffer, rows.byteOffset, rows.byteLength);
    await writeFile(join(dir, 'bank.f32'), data);
    const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
    await writeFile(join(dir, 'bank.json'), JSON.stringify({
      format: 'patchcore-memory-bank', version: 1, dim, count: 784, sha256: sha(data),
      hnsw: { M: 16, efConstruction: 200, efSearch: 32, seed: 100 }, hnswSha256: sha(await readFile(join(dir, 'bank.hnsw'))),
    }));
    assert.deepEqual(await MemoryBank.listFiles(dir), ['bank.f32', 'bank.hnsw', 'bank.json']);

    const bank = await MemoryBank.load(dir, { dim });
    assert.equal(bank.hasHnsw, true);
    assert.deepEqual(bank.hnswParams, { M: 16, efConstruction: 200, efSearch: 32, seed: 100 });
    // As before usearch: hnswlib indexes score only banks above 20,000 rows, so old models keep their scores.
    assert.equal(bank.searchesExactly, true);
    assert.deepEqual(bank.nearest(queries, 1), bank.exactNearest(queries, 1));
    assert.ok(bank.recallAt1(queries) >= 0.99);
    const h = bank.hnswNearest(queries, 2);
    const e = bank.exactNearest(queries, 2);
    for (let i = 0; i < 784; i++) if (h.indices[2 * i] === e.indices[2 * i]) assert.ok(Math.abs(h.distances[2 * i] - e.distances[2 * i]) <= 1e-5 * e.distances[2 * i]);
    const corrupt = await readFile(join(dir, 'bank.hnsw'));
    corrupt[100] ^= 1;

    // Saving it again keeps hnswlib's file and records which library wrote it.
    const again = join(dir, 'again');
    await bank.save(again);
    assert.equal(JSON.parse(await readFile(join(again, 'bank.json'), 'utf8')).hnswLibrary, 'hnswlib');
    assert.deepEqual((await MemoryBank.load(again)).hnswNearest(queries, 2), h);
    await writeFile(join(dir, 'bank.hnsw'), corrupt);
    await assert.rejects(MemoryBank.load(dir), /bank\.hnsw is corrupt/);
  });
});
