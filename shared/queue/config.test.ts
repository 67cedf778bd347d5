import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { inspect } from 'node:util';
import { pino } from 'pino';
import {
  FAIL_FAST_CONNECT_ATTEMPTS,
  reconnectDelayMs,
  redisConfigFromEnv,
  redisOptions,
  workerSettingsFromEnv,
} from './config.js';

const SECRET = 's3cr#t/pa:ss';
const secretUrl = `redis://worker:${encodeURIComponent(SECRET)}@redis.internal:6380/2`;

test('defaults: local Redis on 6379, prefix bull, no TLS', () => {
  const cfg = redisConfigFromEnv({});
  assert.equal(cfg.host, '127.0.0.1');
  assert.equal(cfg.port, 6379);
  assert.equal(cfg.db, 0);
  assert.equal(cfg.tls, false);
  assert.equal(cfg.prefix, 'bull');
  assert.equal(cfg.password(), undefined);
  assert.deepEqual(cfg.toJSON(), { url: 'redis://127.0.0.1:6379', prefix: 'bull', tls: false });
  // Blank variables count as unset.
  assert.equal(redisConfigFromEnv({ REDIS_URL: ' ', QUEUE_PREFIX: '' }).redactedUrl, 'redis://127.0.0.1:6379');
});

test('username, percent-encoded password and database come from the URL', () => {
  const cfg = redisConfigFromEnv({ REDIS_URL: secretUrl, QUEUE_PREFIX: '{patchcore}' });
  assert.equal(cfg.username, 'worker');
  assert.equal(cfg.password(), SECRET);
  assert.equal(cfg.host, 'redis.internal');
  assert.equal(cfg.port, 6380);
  assert.equal(cfg.db, 2);
  assert.equal(cfg.prefix, '{patchcore}');
  const o = redisOptions(cfg);
  assert.equal(o.password, SECRET);
  assert.equal(o.username, 'worker');
  assert.equal(o.db, 2);
  assert.equal(o.tls, undefined);
  assert.equal(o.maxRetriesPerRequest, null);
  assert.equal(o.enableReadyCheck, true);
});

test('the password never shows in JSON, inspect, toString or a pino log line', () => {
  const cfg = redisConfigFromEnv({ REDIS_URL: secretUrl });
  const json = JSON.stringify({ redis: cfg });
  assert.equal(json, '{"redis":{"url":"redis://worker:***@redis.internal:6380/2","prefix":"bull","tls":false}}');
  const encoded = encodeURIComponent(SECRET);
  for (const text of [json, inspect(cfg), inspect({ deep: { cfg } }), String(cfg), `${cfg}`]) {
    assert.ok(!text.includes(SECRET) && !text.includes(encoded), text);
    assert.ok(text.includes('***'), text);
  }
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk, _enc, cb) {
      lines.push(chunk.toString());
      cb();
    },
  });
  pino(sink).info({ redis: cfg }, 'connecting');
  assert.equal(lines.length, 1);
  assert.ok(!lines[0].includes(encoded) && !lines[0].includes(SECRET), lines[0]);
  assert.ok(lines[0].includes('"url":"redis://worker:***@redis.internal:6380/2"'), lines[0]);
  // Password without a username: redis://:***@host
  assert.equal(redisConfigFromEnv({ REDIS_URL: 'redis://:hunter2@cache:6379' }).redactedUrl, 'redis://:***@cache:6379');
});

test('rediss:// turns TLS on with the host as SNI name', () => {
  const cfg = redisConfigFromEnv({ REDIS_URL: 'rediss://:pw@my-redis.cache.example.com' });
  assert.equal(cfg.tls, true);
  assert.equal(cfg.port, 6379);
  assert.equal(cfg.redactedUrl, 'rediss://:***@my-redis.cache.example.com:6379');
  assert.deepEqual(redisOptions(cfg).tls, { servername: 'my-redis.cache.example.com' });
  assert.deepEqual(redisOptions(redisConfigFromEnv({ REDIS_URL: 'rediss://10.0.0.5:6379' })).tls, {});
});

test('bad values: the error names the variable and never echoes the password', () => {
  assert.throws(
    () => redisConfigFromEnv({ REDIS_URL: 'http://:topsecret@redis:6379' }),
    { message: 'invalid Redis configuration: REDIS_URL "http://***@redis:6379" must start with redis:// or rediss:// (TLS)' },
  );
  assert.throws(
    () => redisConfigFromEnv({ REDIS_URL: 'redis://:topsecret@redis:6379/cache' }),
    { message: 'invalid Redis configuration: REDIS_URL "redis://***@redis:6379/cache" has path "/cache": only a database number such as /0 is allowed' },
  );
  assert.throws(
    () => redisConfigFromEnv({ REDIS_URL: 'not a url', QUEUE_PREFIX: 'a:b' }),
    {
      message:
        'invalid Redis configuration: REDIS_URL "not a url" is not a valid URL (expected e.g. redis://:password@redis:6379); ' +
        'QUEUE_PREFIX "a:b" is invalid: use up to 64 letters, digits, ".", "_" or "-", optionally with one {hash tag} ' +
        'for Redis Cluster (e.g. {patchcore}); ":" is not allowed',
    },
  );
  assert.throws(() => redisConfigFromEnv({ REDIS_URL: 'redis://h?tls=1' }), /REDIS_URL "redis:\/\/h\?tls=1" must not have a query/);
  assert.throws(() => redisConfigFromEnv({ QUEUE_PREFIX: '{a}{b}' }), /QUEUE_PREFIX "\{a\}\{b\}" is invalid/);
  assert.equal(redisConfigFromEnv({ QUEUE_PREFIX: 'pc-{prod}' }).prefix, 'pc-{prod}');
});

test('reconnect delays double from 100 ms to a 5 s cap with +-25% spread; fail-fast gives up', () => {
  assert.equal(reconnectDelayMs(1, () => 0.5), 100);
  assert.equal(reconnectDelayMs(2, () => 0.5), 200);
  assert.equal(reconnectDelayMs(4, () => 0.5), 800);
  assert.equal(reconnectDelayMs(30, () => 0.5), 5000);
  assert.equal(reconnectDelayMs(1, () => 0), 75);
  assert.equal(reconnectDelayMs(30, () => 0.999999), 6250);
  const cfg = redisConfigFromEnv({});
  const blocking = redisOptions(cfg).retryStrategy!;
  assert.equal(typeof blocking(1000), 'number');
  const failFast = redisOptions(cfg, { mode: 'fail-fast' });
  assert.equal(failFast.maxRetriesPerRequest, 1);
  assert.equal(typeof failFast.retryStrategy!(FAIL_FAST_CONNECT_ATTEMPTS - 1), 'number');
  assert.equal(failFast.retryStrategy!(FAIL_FAST_CONNECT_ATTEMPTS), null);
});

test('worker settings: defaults, values and errors naming the variable', () => {
  assert.deepEqual(workerSettingsFromEnv({}), { concurrency: 1, healthPort: null, shutdownGraceMs: 30_000, lockDurationMs: 60_000 });
  assert.deepEqual(
    workerSettingsFromEnv({ WORKER_CONCURRENCY: '4', HEALTH_PORT: '0', SHUTDOWN_GRACE_MS: '5000', LOCK_DURATION_MS: '120000' }),
    { concurrency: 4, healthPort: 0, shutdownGraceMs: 5000, lockDurationMs: 120_000 },
  );
  assert.throws(
    () => workerSettingsFromEnv({ HEALTH_PORT: '70000', WORKER_CONCURRENCY: 'two' }),
    {
      name: 'UserError',
      message:
        'invalid worker configuration: WORKER_CONCURRENCY must be an integer from 1 to 256, got "two"; ' +
        'HEALTH_PORT must be an integer from 0 to 65535, got "70000"',
    },
  );
});
