// Retraining guards against a real redis-server and s3rver: `schedule set` refuses what would fail or swamp the
// workers at tick time, and a tick that finds the previous scheduled run still going is skipped and counted.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Redis } from 'ioredis';
import { pino } from 'pino';
import { UserError } from '../../shared/errors.js';
import { startRedisServer, type RedisServer } from '../../shared/embedded/redis-server.js';
import { startS3rver, type S3Server } from '../../shared/embedded/s3-server.js';
import { createRedisConnection, redisConfigFromEnv } from '../../shared/queue/config.js';
import { cancelRun } from '../../shared/queue/flows.js';
import { storageConfigFromEnv } from '../../shared/storage/config.js';
import { ObjectStore } from '../../shared/storage/object-store.js';
import { ingestDataset } from '../../services/producer/submit.js';
import { listSchedules, runRetrain, setSchedule, skippedTicks } from '../../services/producer/scheduler.js';

let redis: RedisServer;
let s3: S3Server;
let conn: Redis;
let store: ObjectStore;
const log = pino({ level: 'silent' });

before(async () => {
  redis = await startRedisServer();
  conn = createRedisConnection(redisConfigFromEnv({ REDIS_URL: redis.url }));
  s3 = await startS3rver('ops-schedule');
  store = new ObjectStore(storageConfigFromEnv(s3.env));
  await store.ensureBucket();
  const dir = mkdtempSync(join(tmpdir(), 'patchcore-ops-ds-'));
  mkdirSync(join(dir, 'train', 'good'), { recursive: true });
  writeFileSync(join(dir, 'train', 'good', '000.png'), 'stand-in');
  await ingestDataset(store, dir, 'sched');
});
after(async () => {
  store?.destroy();
  await conn?.quit();
  await redis?.stop();
  await s3?.stop();
});

test('schedule set refuses a bad or too frequent cron, an unknown time zone and a category too long for its run ids', async () => {
  const set = (cron: string, extra: { category?: string; tz?: string } = {}) =>
    setSchedule(conn, 'bull', { category: extra.category ?? 'sched', dataset: 'sched', cron, tz: extra.tz });
  await assert.rejects(set('* * * * * *'), (e: Error) => e instanceof UserError && /--cron "\* \* \* \* \* \*" fires every 1 s at times; the minimum interval between retrainings is 10 min/.test(e.message));
  await assert.rejects(set('*/5 * * * *'), /fires every 300 s at times/);
  await assert.rejects(set('0,5 2 * * *'), /fires every 300 s at times/);
  await assert.rejects(set('every night'), /--cron "every night" has 2 fields; expected 5/);
  await assert.rejects(set('61 * * * *'), /--cron "61 \* \* \* \*" is not a valid cron expression/);
  await assert.rejects(set('0 2 * * *', { tz: 'Mars/Olympus' }), /--tz "Mars\/Olympus" is not a known time zone/);
  await assert.rejects(set('0 2 * * *', { category: 'c'.repeat(110) }), /the category name is too long or invalid for the run ids of its ticks .*use a category of at most 99 characters/);
  assert.deepEqual(await listSchedules(conn, 'bull'), [], 'a refused schedule was stored');
  const ok = await set('0 2 * * *');
  assert.equal(ok.id, 'retrain-sched');
  assert.equal((await listSchedules(conn, 'bull')).length, 1);
  // A caller may allow a shorter interval explicitly (the soak does).
  await setSchedule(conn, 'bull', { category: 'fast', dataset: 'sched', cron: '*/20 * * * * *' }, { minIntervalMs: 10_000 });
});

test('a tick while the previous scheduled run is still going is skipped and counted; after it ends, ticks run again', async () => {
  const ctx = { store, connection: conn, prefix: 'bull', log, weights: { file: 'w.h5', sha256: '0f'.repeat(32) } };
  const payload = { dataset: 'sched', category: 'guard' };
  const t0 = Date.parse('2026-06-01T02:00:00Z');
  const first = await runRetrain(payload, t0, ctx);
  assert.ok(!('skipped' in first) && first.runId === 'train-guard-20260601T020000Z-sched');
  // No worker runs here: the first run stays queued.
  const second = await runRetrain(payload, t0 + 3600_000, ctx);
  assert.deepEqual(second, { skipped: true, category: 'guard', runningRunId: first.runId, skippedTicks: 1 });
  const third = await runRetrain(payload, t0 + 7200_000, ctx);
  assert.ok('skipped' in third && third.skippedTicks === 2);
  assert.equal(await skippedTicks(conn, 'bull', 'guard'), 2);
  // A retried tick job of the run in flight re-submits the same run (a no-op), not a skip.
  const again = await runRetrain(payload, t0, ctx);
  assert.ok(!('skipped' in again) && again.alreadySubmitted);
  // Two ticks handled at once by two scheduler workers: one run, one skip.
  await cancelRun(conn, first.runId, 'training', { prefix: 'bull' });
  const both = await Promise.all([runRetrain(payload, t0 + 10_800_000, ctx), runRetrain(payload, t0 + 14_400_000, ctx)]);
  assert.equal(both.filter((r) => 'skipped' in r).length, 1, JSON.stringify(both));
});
