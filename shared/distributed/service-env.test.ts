// The worker processes' own settings: defaults, and a bad value refused as a UserError naming the variable.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { UserError } from '../errors.js';
import { serviceSettingsFromEnv } from './service-env.js';

test('service settings: defaults, empty counts as unset, bad values name their variable', () => {
  const defaults = serviceSettingsFromEnv({ BATCH_SIZE: '', PATCHCORE_ENGINE: '' });
  assert.deepEqual([defaults.engine, defaults.batchSize, defaults.modelCacheDir], ['auto', 8, join(tmpdir(), 'patchcore-models')]);
  const set = serviceSettingsFromEnv({ PATCHCORE_ENGINE: 'onnx', BATCH_SIZE: '16', MODEL_CACHE_DIR: 'cache', PATCHCORE_WEIGHTS: 'w.h5' });
  assert.deepEqual(set, { engine: 'onnx', batchSize: 16, modelCacheDir: resolve('cache'), weightsPath: resolve('w.h5') });
  for (const [env, message] of [
    [{ BATCH_SIZE: '0' }, 'BATCH_SIZE: must be an integer from 1 to 999'],
    [{ BATCH_SIZE: '8.5' }, 'BATCH_SIZE: must be an integer from 1 to 999'],
  ] as const) {
    assert.throws(() => serviceSettingsFromEnv(env), (err: unknown) => err instanceof UserError && err.message === message);
  }
  assert.throws(() => serviceSettingsFromEnv({ PATCHCORE_ENGINE: 'cuda' }), (err: unknown) => err instanceof UserError && /^PATCHCORE_ENGINE: /.test(err.message));
});
