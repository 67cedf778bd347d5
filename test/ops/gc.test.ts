// Retention against a real s3rver and redis-server: gc removes old versions, published runs' intermediates and
// old reports, and never the version `latest` names or one an unfinished evaluation uses (seen in the queue or
// in the bucket).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { startRedisServer, type RedisServer } from '../../shared/embedded/redis-server.js';
import { readLatest, setLatest, uploadModel } from '../../shared/distributed/model-store.js';
import { createRedisConnection, redisConfigFromEnv } from '../../shared/queue/config.js';
import { createFlowProducer, enqueueEvaluationFlow } from '../../shared/queue/flows.js';
import { bucketUsage, collectGarbage, inUseFromQueues, retentionSettingsFromEnv } from '../../shared/retention/gc.js';
import { embeddingsKey, mapsKey, modelKey, modelVersionPrefix, reportKey, runManifestKey, runPrefix, scoresKey } from '../../shared/storage/keys.js';
import type { ObjectStore } from '../../shared/storage/object-store.js';
import { useS3Store } from '../helpers/s3-store.js';
import { makeBankDir, makeManifest } from './fixtures.js';

let redis: RedisServer;
let store: ObjectStore;

useS3Store('ops-gc', (_server, objects) => {
  store = objects;
});
before(async () => {
  redis = await startRedisServer();
});
after(async () => {
  await redis?.stop();
});

const T0 = Date.parse('2026-05-01T00:00:00Z');
const at = (i: number) => new Date(T0 + i * 60_000).toISOString();

async function trainingRun(i: number, opts: { publish: boolean; moveLatest?: boolean }) {
  const runId = `train-gc-${i}`;
  const version = `v-${i}`;
  await store.putJson(runManifestKey(runId), { kind: 'training', runId, category: 'gc', version, createdAt: at(i) });
  await store.putObject(embeddingsKey(runId, 0), Buffer.alloc(4096, i));
  if (opts.publish) {
    await uploadModel(store, 'gc', version, await makeBankDir(i, 4), makeManifest('gc', at(i), 4), { runId });
    if (opts.moveLatest !== false) await setLatest(store, 'gc', version, runId);
  }
}

async function evaluationRun(runId: string, version: string, i: number, withReport: boolean) {
  await store.putJson(runManifestKey(runId), { kind: 'evaluation', runId, category: 'gc', version, createdAt: at(i) });
  await store.putObject(scoresKey(runId, 0), '{}');
  await store.putObject(mapsKey(runId, 0), Buffer.alloc(2048));
  if (withReport) {
    await store.putObject(reportKey(runId, 'metrics.json'), '{}');
    await store.putObject(reportKey(runId, 'index.html'), '<html></html>');
  }
}

const exists = (category: string, version: string) => store.exists(modelKey(category, version, 'manifest.json'));
const keysUnder = async (prefix: string) => {
  const out: string[] = [];
  for await (const o of store.list(prefix)) out.push(o.key);
  return out;
};

test('retention settings from the environment: defaults, and a bad value named', () => {
  assert.deepEqual(retentionSettingsFromEnv({}), { keepVersions: 5, keepReports: 20, graceMs: 86_400_000, intervalMs: 0 });
  assert.deepEqual(retentionSettingsFromEnv({ GC_KEEP_VERSIONS: '2', GC_KEEP_REPORTS: ' 3 ', GC_GRACE_MS: '0', GC_INTERVAL_MS: '' }),
    { keepVersions: 2, keepReports: 3, graceMs: 0, intervalMs: 0 });
  assert.throws(() => retentionSettingsFromEnv({ GC_KEEP_VERSIONS: '0' }), /GC_KEEP_VERSIONS must be an integer of at least 1, got "0"/);
  assert.throws(() => retentionSettingsFromEnv({ GC_GRACE_MS: '1h' }), /GC_GRACE_MS must be an integer of at least 0, got "1h"/);
});

test('gc keeps the newest versions, latest and versions in use, and removes the rest and published intermediates', { timeout: 60_000 }, async () => {
  for (let i = 1; i <= 6; i++) await trainingRun(i, { publish: true });
  // v-7 is published but its build has not moved latest yet (the window between the manifest and setLatest).
  await trainingRun(7, { publish: true, moveLatest: false });
  // v-8 is being built: embeddings written, no manifest yet.
  await trainingRun(8, { publish: false });
  await store.putObject(modelKey('gc', 'v-8', 'bank.f32'), Buffer.alloc(1024));
  assert.equal((await readLatest(store, 'gc'))!.version, 'v-6');
  // An evaluation of v-2 whose report is not written yet (bucket view), one of v-3 waiting in the queue (queue
  // view: no worker runs here), and two finished evaluations of v-6 with reports.
  await evaluationRun('eval-gc-a', 'v-2', 10, false);
  await evaluationRun('eval-gc-old', 'v-6', 11, true);
  await evaluationRun('eval-gc-new', 'v-6', 12, true);
  const connection = createRedisConnection(redisConfigFromEnv({ REDIS_URL: redis.url }));
  const flows = createFlowProducer(connection, 'bull');
  await enqueueEvaluationFlow(flows, {
    runId: 'eval-gc-queued', category: 'gc', model: { category: 'gc', version: 'v-3' }, datasetPrefix: 'datasets/gc/',
    shards: [{ shardId: '0000', imageKeys: ['datasets/gc/test/good/000.png'] }],
  });
  const inUse = await inUseFromQueues(connection, 'bull');
  assert.ok(inUse.models.has('gc/v-3') && inUse.runs.has('eval-gc-queued'));
  await flows.close();
  await connection.quit();

  const settings = { keepVersions: 1, keepReports: 1, graceMs: 3600_000 };
  const usageBefore = await bucketUsage(store);
  const dry = await collectGarbage(store, settings, { dryRun: true, inUse });
  assert.equal((await bucketUsage(store)).total, usageBefore.total, 'a dry run deleted something');
  const done = await collectGarbage(store, settings, { inUse });
  assert.deepEqual(done.deleted.map((d) => d.target), dry.deleted.map((d) => d.target), 'the dry run said something else');

  // Kept: v-7 (newest), v-6 (latest), v-2 and v-3 (in use); gone: v-1, v-4, v-5; v-8 (unpublished, fresh) stays.
  for (const v of ['v-7', 'v-6', 'v-2', 'v-3']) assert.ok(await exists('gc', v), `${v} was removed`);
  for (const v of ['v-1', 'v-4', 'v-5']) assert.deepEqual(await keysUnder(modelVersionPrefix('gc', v)), [], `${v} was kept`);
  assert.deepEqual(done.protected.sort(), ['gc/v-2', 'gc/v-3', 'gc/v-6']);
  assert.ok(await store.exists(modelKey('gc', 'v-8', 'bank.f32')), 'the version being built was removed');
  // Intermediates: gone for published runs, kept for the run in progress and the unfinished evaluation.
  assert.equal(await store.exists(embeddingsKey('train-gc-7', 0)), false);
  assert.equal(await store.exists(embeddingsKey('train-gc-6', 0)), false);
  assert.ok(await store.exists(embeddingsKey('train-gc-8', 0)));
  assert.ok(await store.exists(mapsKey('eval-gc-a', 0)));
  assert.equal(await store.exists(mapsKey('eval-gc-new', 0)), false);
  // Runs whose version went are removed whole; the older report went with its run folder.
  assert.deepEqual(await keysUnder(runPrefix('train-gc-1')), []);
  assert.ok(await store.exists(runManifestKey('train-gc-6')));
  assert.deepEqual(await keysUnder('reports/eval-gc-old/'), []);
  assert.deepEqual(await keysUnder(runPrefix('eval-gc-old')), []);
  assert.ok(await store.exists(reportKey('eval-gc-new', 'index.html')));
  assert.ok((await bucketUsage(store)).total < usageBefore.total - done.deletedBytes + 1);

  // Past the grace period, with the queue drained: the stale build and the abandoned evaluation go too, and the
  // versions they held are no longer protected; latest (v-6) still is.
  const later = await collectGarbage(store, settings, { now: Date.now() + 2 * 3600_000 });
  assert.ok(later.deleted.some((d) => d.target === modelVersionPrefix('gc', 'v-8')));
  assert.equal(await store.exists(embeddingsKey('train-gc-8', 0)), false);
  assert.ok(await exists('gc', 'v-6'), 'latest was removed');
  assert.ok(await exists('gc', 'v-7'));
  for (const v of ['v-2', 'v-3']) assert.equal(await exists('gc', v), false, `${v} is no longer in use and should go`);
  assert.equal((await readLatest(store, 'gc'))!.version, 'v-6');
});
