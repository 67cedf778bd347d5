import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  JOB_KINDS,
  KIND_OF_QUEUE,
  QUEUE_OF_KIND,
  defaultJobOptions,
  idProblem,
  validatePayload,
  type ExtractFeaturesPayload,
} from './jobs.js';

const features: ExtractFeaturesPayload = {
  runId: 'run-2024.05_a',
  shardId: '0003',
  imageKeys: ['datasets/bottle/train/good/000.png', 'datasets/bottle/train/good/001.png'],
  datasetPrefix: 'datasets/bottle/',
  recipe: 'paper',
  frame: { resize: 256, crop: 224 },
  weights: { sha256: 'ab'.repeat(32) },
  perShardCoreset: { ratio: 0.25, seed: 7 },
  batchSize: 8,
};

test('queue names and kinds map both ways', () => {
  assert.deepEqual(QUEUE_OF_KIND, {
    'extract-features': 'patchcore-features',
    'build-index': 'patchcore-index',
    'score-shard': 'patchcore-score',
    report: 'patchcore-report',
    retrain: 'patchcore-schedule',
    reduce: 'patchcore-reduce',
  });
  for (const kind of JOB_KINDS) assert.equal(KIND_OF_QUEUE[QUEUE_OF_KIND[kind]], kind);
});

test('a valid payload comes back as is; unknown fields are dropped', () => {
  assert.deepEqual(validatePayload('extract-features', features, 'j1'), features);
  const withExtra = validatePayload('extract-features', { ...features, addedLater: 1 }, 'j1');
  assert.ok(!('addedLater' in withExtra));
  const noCoreset = { ...features } as Partial<ExtractFeaturesPayload>;
  delete noCoreset.perShardCoreset;
  assert.equal(validatePayload('extract-features', noCoreset, 'j1').perShardCoreset, undefined);
  assert.equal(validatePayload('extract-features', { ...features, perShardCoreset: null }, 'j1').perShardCoreset, null);
});

test('errors name the kind, the job and every bad field', () => {
  assert.throws(
    () => validatePayload('extract-features', { ...features, shardId: '00:3', imageKeys: ['a', 2], recipe: 'x' }, 'run-1~features~0003'),
    {
      message:
        'invalid extract-features payload in job run-1~features~0003: shardId: "00:3" must be 1 to 128 characters of ' +
        'A-Z a-z 0-9 . _ -; imageKeys[1]: Invalid input: expected string, received number; ' +
        'recipe: Invalid option: expected one of "paper"|"seed"',
    },
  );
  assert.throws(
    () => validatePayload('extract-features', { ...features, batchSize: 0, weights: { sha256: 'XYZ' } }, 'j9'),
    {
      message:
        'invalid extract-features payload in job j9: weights.sha256: must be 64 lowercase hex digits; ' +
        'batchSize: Too small: expected number to be >=1',
    },
  );
  assert.throws(() => validatePayload('report', null, 'r~report'), {
    message: 'invalid report payload in job r~report: (payload): Invalid input: expected object, received null',
  });
  assert.throws(
    () =>
      validatePayload(
        'build-index',
        {
          runId: 'r', category: 'bottle', version: 'v1', recipe: 'seed',
          coreset: { ratio: 0.1, seed: 0, projectionDim: 128 }, hnsw: { M: 16, efConstruction: 200, efSearch: 64 },
          weights: { file: 'w.h5', sha256: 'ab'.repeat(32) }, frame: { resize: 256, crop: 224 },
          shards: ['0', '1', '0'],
        },
        'r~index',
      ),
    { message: 'invalid build-index payload in job r~index: shards[2]: duplicate shard id "0"' },
  );
  assert.throws(
    () =>
      validatePayload(
        'score-shard',
        { runId: 'r', shardId: '0', model: { category: 'bottle', version: '../v1' }, imageKeys: [], datasetPrefix: 'd/' },
        'r~score~0',
      ),
    {
      message:
        'invalid score-shard payload in job r~score~0: model.version: "../v1" must be 1 to 128 characters of A-Z a-z 0-9 . _ -; ' +
        'imageKeys: Too small: expected array to have >=1 items',
    },
  );
});

test('ids: the allowed alphabet, 128 characters at most, no leading "." or ".."', () => {
  for (const ok of ['0003', 'run-1', 'a.b_c', 'x'.repeat(128)]) assert.equal(idProblem(ok), null, ok);
  for (const bad of ['', 'x'.repeat(129), 'a:b', 'a/b', 'a~b', 'ä']) {
    assert.equal(idProblem(bad), 'must be 1 to 128 characters of A-Z a-z 0-9 . _ -', bad);
  }
  assert.equal(idProblem('.hidden'), 'must not start with "." or contain ".."');
  assert.equal(idProblem('a..b'), 'must not start with "." or contain ".."');
});

test('default job options retry with exponential backoff and bound retention', () => {
  assert.equal(defaultJobOptions.attempts, 3);
  assert.deepEqual(defaultJobOptions.backoff, { type: 'exponential', delay: 10_000 });
  assert.ok(defaultJobOptions.removeOnComplete.count > 0 && defaultJobOptions.removeOnComplete.age > 0);
  assert.ok(defaultJobOptions.removeOnFail.count > 0 && defaultJobOptions.removeOnFail.age > 0);
});
