import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  datasetKey,
  datasetPrefix,
  embeddingsKey,
  embeddingsPrefix,
  mapsKey,
  modelKey,
  modelLatestKey,
  modelVersionPrefix,
  normaliseRelativePath,
  reportKey,
  runManifestKey,
  scoresKey,
  shardIndexOfKey,
  type ModelFile,
} from './keys.js';

test('builders produce the documented layout', () => {
  assert.equal(datasetKey('mvtec_ad-bottle', 'train/good/000.png'), 'datasets/mvtec_ad-bottle/train/good/000.png');
  assert.equal(datasetPrefix('bottle'), 'datasets/bottle/');
  assert.equal(runManifestKey('run-2024.06.01_a'), 'runs/run-2024.06.01_a/run.json');
  assert.equal(embeddingsKey('r1', 3), 'runs/r1/embeddings/0003.bin');
  assert.equal(embeddingsKey('r1', 'extra-a'), 'runs/r1/embeddings/extra-a.bin');
  assert.equal(embeddingsPrefix('r1'), 'runs/r1/embeddings/');
  assert.equal(scoresKey('r1', 9999), 'runs/r1/scores/9999.json');
  assert.equal(mapsKey('r1', 0), 'runs/r1/maps/0000.bin');
  assert.equal(modelKey('bottle', 'v3', 'bank.hnsw'), 'models/bottle/v3/bank.hnsw');
  assert.equal(modelKey('bottle', '2024-06-01T12-00-00Z', 'manifest.json'), 'models/bottle/2024-06-01T12-00-00Z/manifest.json');
  assert.equal(modelVersionPrefix('bottle', 'v3'), 'models/bottle/v3/');
  assert.equal(modelLatestKey('bottle'), 'models/bottle/latest');
  assert.equal(reportKey('r1', 'metrics.json'), 'reports/r1/metrics.json');
  assert.equal(shardIndexOfKey(scoresKey('r1', 17)), 17);
  assert.equal(shardIndexOfKey('runs/r1/run.json'), null);
});

test('relative paths are normalised but cannot leave their prefix', () => {
  assert.equal(datasetKey('bottle', 'train\\good\\001.png'), 'datasets/bottle/train/good/001.png');
  assert.equal(datasetKey('bottle', './train//good/./002.png/'), 'datasets/bottle/train/good/002.png');
  assert.equal(normaliseRelativePath('p', 'a b/ü.png'), 'a b/ü.png');

  const rejects: Array<[string, string]> = [
    ['../runs/x/run.json', 'dataset path "../runs/x/run.json" is not a safe relative path: it contains ".."'],
    ['train/../../x', 'dataset path "train/../../x" is not a safe relative path: it contains ".."'],
    ['..\\..\\etc\\passwd', 'dataset path "..\\\\..\\\\etc\\\\passwd" is not a safe relative path: it contains ".."'],
    ['/etc/passwd', 'dataset path "/etc/passwd" is not a safe relative path: it is absolute'],
    ['\\\\server\\share\\x', 'dataset path "\\\\\\\\server\\\\share\\\\x" is not a safe relative path: it is absolute'],
    ['C:\\data\\x.png', 'dataset path "C:\\\\data\\\\x.png" is not a safe relative path: it is absolute (drive letter)'],
    ['', 'dataset path "" is not a safe relative path: it names no file'],
    ['./', 'dataset path "./" is not a safe relative path: it names no file'],
    ['a\nb', 'dataset path "a\\nb" is not a safe relative path: it contains a control character'],
    [`${'x'.repeat(256)}.png`, `dataset path "${'x'.repeat(256)}.png" is not a safe relative path: a segment is longer than 255 bytes`],
  ];
  for (const [input, message] of rejects) {
    assert.throws(() => datasetKey('bottle', input), { message }, JSON.stringify(input));
  }
  assert.throws(() => reportKey('r1', '../../models/bottle/latest'), {
    message: 'report path "../../models/bottle/latest" is not a safe relative path: it contains ".."',
  });
  // A key over the S3 limit of 1024 bytes.
  assert.throws(() => datasetKey('bottle', Array(6).fill('y'.repeat(200)).join('/')), /S3 keys are at most 1024/);
});

test('id segments: only [A-Za-z0-9._-], no "..", no leading dot, bounded length', () => {
  const rejects: Array<[() => string, string]> = [
    [() => runManifestKey(''), 'run id "" is not a valid key segment: it is empty'],
    [() => runManifestKey('../x'), 'run id "../x" is not a valid key segment: only letters, digits, ".", "_" and "-" are allowed'],
    [() => runManifestKey('a/b'), 'run id "a/b" is not a valid key segment: only letters, digits, ".", "_" and "-" are allowed'],
    [() => runManifestKey('run 1'), 'run id "run 1" is not a valid key segment: only letters, digits, ".", "_" and "-" are allowed'],
    [() => runManifestKey('..'), 'run id ".." is not a valid key segment: it must not start with "."'],
    [() => runManifestKey('.hidden'), 'run id ".hidden" is not a valid key segment: it must not start with "."'],
    [() => runManifestKey('a..b'), 'run id "a..b" is not a valid key segment: it must not contain ".."'],
    [() => runManifestKey('r'.repeat(129)), `run id "${'r'.repeat(129)}" is not a valid key segment: it is longer than 128 characters (129)`],
    [() => datasetKey('bottle/../x', 'a.png'), 'dataset name "bottle/../x" is not a valid key segment: only letters, digits, ".", "_" and "-" are allowed'],
    [() => modelKey('bottle', 'v1', 'evil.sh' as ModelFile), 'model file "evil.sh" is not one of manifest.json, bank.f32, bank.usearch, bank.hnsw, bank.json'],
    [() => modelKey('café', 'v1', 'bank.f32'), 'model category "café" is not a valid key segment: only letters, digits, ".", "_" and "-" are allowed'],
    [() => modelKey('bottle', 'latest', 'bank.f32'), 'model version "latest" is reserved for the models/<category>/latest pointer'],
    [() => embeddingsKey('r1', -1), 'shard index -1 is invalid: expected an integer from 0 to 9999'],
    [() => embeddingsKey('r1', 1.5), 'shard index 1.5 is invalid: expected an integer from 0 to 9999'],
    [() => embeddingsKey('r1', 10000), 'shard index 10000 is invalid: expected an integer from 0 to 9999'],
    [() => scoresKey('r1', '../0001'), 'shard "../0001" is not a valid key segment: only letters, digits, ".", "_" and "-" are allowed'],
    [() => reportKey('', 'x.json'), 'run id "" is not a valid key segment: it is empty'],
  ];
  for (const [build, message] of rejects) assert.throws(build, { message });
  assert.equal(runManifestKey('r'.repeat(128)).length, 'runs//run.json'.length + 128);
});
