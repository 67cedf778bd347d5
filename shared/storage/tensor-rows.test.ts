// test-lane: integration (real redis-server, s3rver or Chromium)
// readTensorRows against a real S3-compatible server (s3rver): byte-range reads give back exactly the rows of the
// file, in order and in whole rows; the header is refused before any row is read; a damaged file is named.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { StageTimer } from '../run/timings.js';
import type { ObjectStore } from './object-store.js';
import { encodeTensorFile, type TensorFileHeader } from './tensor-file.js';
import { readTensorRows } from './tensor-rows.js';
import { useS3Store } from '../../test/helpers/s3-store.js';

let store: ObjectStore;

useS3Store('patchcore-tensor-rows', (_server, objects) => {
  store = objects;
});

const dim = 6;
const count = 9001;
const data = Float32Array.from({ length: count * dim }, (_, i) => Math.sin(i) * 1000);
const header: TensorFileHeader = { dtype: 'float32', dim, count, grid: [1, 1], images: [{ key: 'a.png', offset: 0, patches: count }], recipe: 'test' };

async function collect(key: string, chunkBytes: number) {
  const chunks: Float32Array[] = [];
  const seen: TensorFileHeader[] = [];
  const r = await readTensorRows(store, key, new StageTimer(), (h) => seen.push(h), async (rows) => {
    chunks.push(rows.slice());
  }, { chunkBytes });
  const rows = new Float32Array(chunks.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const c of chunks) {
    rows.set(c, at);
    at += c.length;
  }
  return { r, rows, chunks, seen };
}

test('the rows come back whole and in order, in one GET or in byte ranges of whole rows', async () => {
  const body = encodeTensorFile(header, data);
  await store.putObject('t/rows.bin', body);
  // 1,000 bytes a chunk: 41 whole rows of 24 bytes each, so the last range is a short one.
  for (const chunkBytes of [1000, 1 << 24]) {
    const { r, rows, chunks, seen } = await collect('t/rows.bin', chunkBytes);
    assert.deepEqual(rows, data, `chunkBytes ${chunkBytes}`);
    assert.equal(r.bytes, body.length);
    assert.equal(r.header.count, count);
    assert.equal(seen.length, 1);
    for (const c of chunks) assert.equal(c.length % dim, 0, 'whole rows only');
    if (chunkBytes === 1000) assert.equal(chunks.length, Math.ceil(count / 41));
    else assert.equal(chunks.length, 1);
  }
});

test('a header refused by onHeader reads no rows; truncated and missing files are named', async () => {
  await store.putObject('t/refused.bin', encodeTensorFile(header, data));
  let rowsRead = 0;
  await assert.rejects(
    readTensorRows(store, 't/refused.bin', new StageTimer(), () => { throw new Error('wrong recipe'); }, async () => { rowsRead++; }, { chunkBytes: 1000 }),
    /wrong recipe/,
  );
  assert.equal(rowsRead, 0);

  const body = encodeTensorFile(header, data);
  await store.putObject('t/truncated.bin', body.subarray(0, body.length - 10));
  for (const chunkBytes of [1000, 1 << 24]) {
    await assert.rejects(collect('t/truncated.bin', chunkBytes), /embeddings file "t\/truncated.bin" is truncated: expected 216024 data bytes, found 216014/);
  }
  await assert.rejects(collect('t/absent.bin', 1000), /embeddings file "t\/absent.bin" does not exist/);
});
