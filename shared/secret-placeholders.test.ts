// Start-up refuses the Secret template's placeholder secrets: through the real config readers the services call.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import { repoRoot } from './paths.js';
import { redisConfigFromEnv } from './queue/config.js';
import { placeholderSecretProblems, SECRET_PLACEHOLDER } from './secret-placeholders.js';
import { storageConfigFromEnv } from './storage/config.js';

const template = (parse(readFileSync(join(repoRoot, 'k8s/secret.template.yaml'), 'utf8')) as { stringData: Record<string, string> }).stringData;

test('the Secret template\'s Redis URL is refused at start-up, naming REDIS_URL', () => {
  assert.ok(template.REDIS_URL.includes(SECRET_PLACEHOLDER), 'the template still uses the placeholder this check looks for');
  assert.throws(() => redisConfigFromEnv({ REDIS_URL: template.REDIS_URL }), (err: Error) => {
    assert.match(err.message, /^invalid Redis configuration: REDIS_URL still holds the placeholder CHANGE_ME of k8s\/secret\.template\.yaml/);
    return true;
  });
  assert.throws(() => redisConfigFromEnv({ REDIS_URL: 'redis://:change_me@redis:6379' }), /REDIS_URL still holds the placeholder/);
  assert.equal(redisConfigFromEnv({ REDIS_URL: 'redis://:3f9a0c1d2e@redis:6379' }).password(), '3f9a0c1d2e');
});

test('placeholder S3 credentials are refused at start-up, naming each variable and never echoing a value', () => {
  const secretKeys = Object.keys(template).filter((k) => k.endsWith('S3_SECRET_ACCESS_KEY'));
  assert.ok(secretKeys.length >= 1, 'the template has S3 secret keys');
  for (const key of secretKeys) {
    assert.throws(
      () => storageConfigFromEnv({ S3_BUCKET: 'patchcore', S3_ACCESS_KEY_ID: 'patchcore-scorer', S3_SECRET_ACCESS_KEY: template[key] }),
      /^Error: invalid storage configuration: S3_SECRET_ACCESS_KEY still holds the placeholder CHANGE_ME/,
      key,
    );
  }
  const secret = 'my-CHANGE_ME-4b1d';
  assert.throws(
    () => storageConfigFromEnv({ S3_BUCKET: 'patchcore', S3_ACCESS_KEY_ID: 'CHANGE_ME', S3_SECRET_ACCESS_KEY: secret }),
    (err: Error) => {
      assert.match(err.message, /S3_ACCESS_KEY_ID still holds the placeholder/);
      assert.match(err.message, /S3_SECRET_ACCESS_KEY still holds the placeholder/);
      assert.ok(!err.message.includes(secret), 'the value is not echoed');
      return true;
    },
  );
  const ok = storageConfigFromEnv({ S3_BUCKET: 'patchcore', S3_ACCESS_KEY_ID: 'patchcore-scorer', S3_SECRET_ACCESS_KEY: 'a1b2c3d4e5f6' });
  assert.equal(ok.credentials()?.secretAccessKey, 'a1b2c3d4e5f6');
  assert.equal(storageConfigFromEnv({ S3_BUCKET: 'patchcore' }).credentials(), undefined, 'no credentials at all stays allowed (IRSA)');
});

test('placeholderSecretProblems looks only at the variables it is given', () => {
  assert.deepEqual(placeholderSecretProblems({ A: 'CHANGE_ME', B: 'x' }, ['B']), []);
  assert.equal(placeholderSecretProblems({ A: 'xchange_mex' }, ['A', 'C']).length, 1);
});
