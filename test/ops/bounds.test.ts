// Bounded inputs: the payload caps, the producer's early checks naming the flag, the failed-share rule, the
// lower default pixel limit and the size check before an object's body is read (real s3rver).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import sharp from 'sharp';
import { DEFAULT_MAX_PIXELS, decodeImage } from '../../shared/image/index.js';
import { PermanentError, UserError } from '../../shared/errors.js';
import { checkFailedShare, PAYLOAD_LIMITS, validatePayload } from '../../shared/queue/jobs.js';
import { ObjectTooLargeError, type ObjectStore } from '../../shared/storage/object-store.js';
import { checkTrainingLimits, splitShards } from '../../services/producer/submit.js';
import { useS3Store } from '../helpers/s3-store.js';

let store: ObjectStore;
useS3Store('ops-bounds', (_server, objects) => {
  store = objects;
});

const extract = (over: Record<string, unknown>) => ({
  runId: 'r', shardId: '0000', imageKeys: ['datasets/d/train/good/0.png'], datasetPrefix: 'datasets/d/', recipe: 'paper',
  frame: { resize: 256, crop: 224 }, weights: { sha256: '0f'.repeat(32) }, batchSize: 8, ...over,
});

test('payload caps: frame, shard size, projection dim and HNSW parameters', () => {
  assert.throws(() => validatePayload('extract-features', extract({ frame: { resize: 100_000, crop: 224 } }), 'j'), /frame\.resize: Too big: expected number to be <=1024/);
  assert.throws(() => validatePayload('extract-features', extract({ imageKeys: Array.from({ length: 1001 }, (_, i) => `datasets/d/${i}.png`) }), 'j'), /imageKeys: Too big/);
  const build = {
    runId: 'r', category: 'c', version: 'v', recipe: 'paper', coreset: { ratio: 0.1, seed: 0, projectionDim: 128 },
    weights: { file: 'w.h5', sha256: '0f'.repeat(32) }, frame: { resize: 256, crop: 224 }, hnsw: { M: 16, efConstruction: 200, efSearch: 64 }, shards: ['0000'],
  };
  validatePayload('build-index', build, 'j');
  assert.throws(() => validatePayload('build-index', { ...build, coreset: { ...build.coreset, projectionDim: 1_000_000 } }, 'j'), /coreset\.projectionDim: Too big/);
  assert.throws(() => validatePayload('build-index', { ...build, hnsw: { ...build.hnsw, efConstruction: 1e9 } }, 'j'), /hnsw\.efConstruction: Too big/);
  assert.throws(() => validatePayload('retrain', { dataset: 'd', category: 'c', shardSize: 5000 }, 'j'), /shardSize: Too big/);
});

test('the producer names the flag that is over its limit before writing anything', () => {
  assert.throws(() => checkTrainingLimits({ frame: { resize: 4096, crop: 224 } }), (e: Error) => e instanceof UserError && /--resize 4096 is out of range: expected an integer from 1 to 1024/.test(e.message));
  assert.throws(() => checkTrainingLimits({ hnsw: { M: 1000 } }), /HNSW M 1000 is out of range/);
  assert.throws(() => splitShards(['a'], 5000), /--shard-size 5000 is above the limit of 1000 images per shard/);
  checkTrainingLimits({ frame: { resize: 256, crop: null }, batchSize: 8, shardSize: 32 });
});

test('a run fails when more than the allowed share of its images could not be read', () => {
  const failed = (n: number) => Array.from({ length: n }, (_, i) => ({ id: `train/good/${i}.png`, error: 'unsupported image format' }));
  checkFailedShare('training run r', failed(5), 100); // exactly 5%: allowed
  assert.throws(() => checkFailedShare('training run r', failed(6), 100),
    (e: Error) => e instanceof PermanentError && /training run r: 6 of 100 images \(6\.0%\) could not be read, more than the 5\.0% allowed; e\.g\. train\/good\/0\.png \(unsupported image format\)/.test(e.message));
  checkFailedShare('training run r', failed(6), 100, 0.1);
  assert.equal(PAYLOAD_LIMITS.defaultMaxFailedShare, 0.05);
});

test('decoding refuses more than 40 megapixels by default, from the header', async () => {
  assert.equal(DEFAULT_MAX_PIXELS, 40_000_000);
  // 6500 x 6500 = 42.25 MP of one colour: a small PNG whose pixels would take 127 MB decoded.
  const png = await sharp({ create: { width: 6500, height: 6500, channels: 3, background: { r: 9, g: 9, b: 9 } } }).png().toBuffer();
  await assert.rejects(decodeImage(png, 'huge.png'), /Cannot decode image "huge\.png": 6500x6500 exceeds the 40000000-pixel limit/);
});

test('an object larger than the reader allows is refused from its Content-Length, without retries', async () => {
  await store.putObject('big/object.bin', Buffer.alloc(4096));
  assert.equal((await store.getObject('big/object.bin', { maxBytes: 4096 })).length, 4096);
  await assert.rejects(store.getObject('big/object.bin', { maxBytes: 4095 }),
    (e: Error) => e instanceof ObjectTooLargeError && e instanceof PermanentError && /object "big\/object\.bin" in bucket "ops-bounds" is 4096 bytes; at most 4095 are allowed here/.test(e.message));
});
