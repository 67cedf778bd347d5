import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { inspect } from 'node:util';
import { pino } from 'pino';
import { bucketNameProblem, storageConfigFromEnv } from './config.js';

const SECRET = 'wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY';
const KEY_ID = 'AKIAIOSFODNN7EXAMPLE';

function configError(env: Record<string, string | undefined>): string {
  try {
    storageConfigFromEnv(env);
  } catch (e) {
    return (e as Error).message;
  }
  assert.fail(`expected ${JSON.stringify(Object.keys(env))} to be rejected`);
}

test('defaults: AWS without endpoint, path style with an endpoint, empty variables count as unset', () => {
  const aws = storageConfigFromEnv({ S3_BUCKET: 'patchcore-data' });
  assert.deepEqual(aws.toJSON(), {
    endpoint: null,
    region: 'us-east-1',
    bucket: 'patchcore-data',
    forcePathStyle: false,
    maxAttempts: 5,
    credentials: 'AWS default chain',
  });
  assert.equal(aws.credentials(), undefined);

  const minio = storageConfigFromEnv({
    S3_BUCKET: 'patchcore-data',
    S3_ENDPOINT: 'http://minio:9000/',
    S3_REGION: 'eu-west-3',
    S3_MAX_ATTEMPTS: '8',
    S3_ACCESS_KEY_ID: KEY_ID,
    S3_SECRET_ACCESS_KEY: SECRET,
  });
  assert.equal(minio.endpoint, 'http://minio:9000');
  assert.equal(minio.forcePathStyle, true);
  assert.equal(minio.region, 'eu-west-3');
  assert.equal(minio.maxAttempts, 8);
  assert.deepEqual(minio.credentials(), { accessKeyId: KEY_ID, secretAccessKey: SECRET });

  const virtualHost = storageConfigFromEnv({ S3_BUCKET: 'abc', S3_ENDPOINT: 'https://s3.example.com', S3_FORCE_PATH_STYLE: 'false' });
  assert.equal(virtualHost.forcePathStyle, false);
  assert.equal(storageConfigFromEnv({ S3_BUCKET: 'abc', S3_FORCE_PATH_STYLE: 'YES' }).forcePathStyle, true);

  const blanks = storageConfigFromEnv({ S3_BUCKET: 'abc', S3_ENDPOINT: '', S3_REGION: ' ', S3_ACCESS_KEY_ID: '', S3_SECRET_ACCESS_KEY: '' });
  assert.equal(blanks.endpoint, undefined);
  assert.equal(blanks.region, 'us-east-1');
  assert.equal(blanks.credentials(), undefined);
});

test('each invalid variable is named with what is wrong', () => {
  assert.equal(configError({}), 'invalid storage configuration: S3_BUCKET is required (the bucket that holds datasets, runs and models)');
  assert.equal(
    configError({ S3_BUCKET: 'My_Bucket' }),
    'invalid storage configuration: S3_BUCKET "My_Bucket" is not a valid S3 bucket name: may contain only lowercase letters, digits, "." and "-"',
  );
  assert.equal(
    configError({ S3_BUCKET: 'ab' }),
    'invalid storage configuration: S3_BUCKET "ab" is not a valid S3 bucket name: must be 3 to 63 characters long (it has 2)',
  );
  assert.equal(
    configError({ S3_ENDPOINT: 'minio:9000 ', S3_BUCKET: 'abc' }),
    'invalid storage configuration: S3_ENDPOINT "minio:9000 " must be an http:// or https:// URL',
  );
  assert.equal(
    configError({ S3_ENDPOINT: 'not a url', S3_BUCKET: 'abc' }),
    'invalid storage configuration: S3_ENDPOINT is not a valid URL (expected e.g. http://minio:9000)',
  );
  assert.equal(
    configError({ S3_ENDPOINT: 'http://minio:9000/data', S3_BUCKET: 'abc' }),
    'invalid storage configuration: S3_ENDPOINT "http://minio:9000/data" must be a bare server URL without a path or query',
  );
  assert.equal(
    configError({ S3_BUCKET: 'abc', S3_FORCE_PATH_STYLE: 'maybe' }),
    'invalid storage configuration: S3_FORCE_PATH_STYLE must be true or false, got "maybe"',
  );
  assert.equal(
    configError({ S3_BUCKET: 'abc', S3_MAX_ATTEMPTS: '0' }),
    'invalid storage configuration: S3_MAX_ATTEMPTS must be an integer from 1 to 20, got "0"',
  );
  assert.equal(
    configError({ S3_BUCKET: 'abc', S3_REGION: 'US East' }),
    'invalid storage configuration: S3_REGION "US East" is not a region name (lowercase letters, digits and "-", e.g. us-east-1)',
  );
  // Several problems are reported together.
  assert.equal(
    configError({ S3_REGION: 'Bad Region', S3_MAX_ATTEMPTS: 'x' }),
    'invalid storage configuration: S3_REGION "Bad Region" is not a region name (lowercase letters, digits and "-", e.g. us-east-1); ' +
      'S3_BUCKET is required (the bucket that holds datasets, runs and models); S3_MAX_ATTEMPTS must be an integer from 1 to 20, got "x"',
  );
});

test('bucket-name rules', () => {
  for (const ok of ['abc', 'patchcore-data', 'my.bucket.1', 'a'.repeat(63)]) assert.equal(bucketNameProblem(ok), null, ok);
  assert.equal(bucketNameProblem('a'.repeat(64)), 'must be 3 to 63 characters long (it has 64)');
  assert.equal(bucketNameProblem('-abc'), 'must begin and end with a lowercase letter or digit');
  assert.equal(bucketNameProblem('abc.'), 'must begin and end with a lowercase letter or digit');
  assert.equal(bucketNameProblem('a..b'), 'must not contain two adjacent periods');
  assert.equal(bucketNameProblem('192.168.5.4'), 'must not be formatted as an IP address');
  assert.equal(bucketNameProblem('xn--abc'), 'must not start with the reserved prefix "xn--"');
  assert.equal(bucketNameProblem('data-s3alias'), 'must not end with the reserved suffix "-s3alias"');
});

test('secrets never appear in errors, JSON, inspect or a logger line', () => {
  const halfPairs = [
    { S3_BUCKET: 'abc', S3_SECRET_ACCESS_KEY: SECRET },
    { S3_BUCKET: 'Bad Bucket', S3_SECRET_ACCESS_KEY: SECRET, S3_ACCESS_KEY_ID: KEY_ID },
    { S3_BUCKET: 'abc', S3_ENDPOINT: `http://${KEY_ID}:${SECRET}@minio:9000` },
  ];
  const messages = halfPairs.map(configError);
  assert.equal(
    messages[0],
    'invalid storage configuration: S3_SECRET_ACCESS_KEY is set but S3_ACCESS_KEY_ID is not; set both, or neither to use the AWS default credential chain',
  );
  assert.equal(
    messages[2],
    'invalid storage configuration: S3_ENDPOINT must not contain credentials; set S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY instead',
  );
  assert.equal(
    configError({ S3_BUCKET: 'abc', S3_ACCESS_KEY_ID: KEY_ID }),
    'invalid storage configuration: S3_ACCESS_KEY_ID is set but S3_SECRET_ACCESS_KEY is not; set both, or neither to use the AWS default credential chain',
  );
  for (const m of messages) {
    assert.ok(!m.includes(SECRET), m);
    assert.ok(!m.includes(KEY_ID), m);
  }

  const config = storageConfigFromEnv({ S3_BUCKET: 'abc', S3_ACCESS_KEY_ID: KEY_ID, S3_SECRET_ACCESS_KEY: SECRET });
  let logged = '';
  const sink = new Writable({
    write(chunk, _enc, done) {
      logged += String(chunk);
      done();
    },
  });
  pino({ base: null }, sink).info({ config, nested: { storage: config } }, 'starting');
  const views = [JSON.stringify(config), JSON.stringify({ config }), String(config), inspect(config, { depth: 5 }), inspect({ ...config }), logged];
  for (const v of views) {
    assert.ok(!v.includes(SECRET), `secret leaked: ${v}`);
    assert.ok(!v.includes(KEY_ID), `access key id leaked: ${v}`);
  }
  assert.match(logged, /"bucket":"abc"/); // the logger did print the config, redacted
  assert.equal(JSON.parse(JSON.stringify(config)).credentials, 'static (S3_ACCESS_KEY_ID)');
});
