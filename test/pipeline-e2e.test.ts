// The distributed pipeline end to end through a real redis-server, a real S3-compatible server (s3rver) and
// separate worker processes (two feature workers, an index worker, a scorer) on real bottle images, compared
// with the in-process fit/evaluate on the same images and settings: the bank, every score and the whole metrics.json
// (but for timings and ids) must be equal.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { z } from 'zod';
import { startRedisServer, type RedisServer } from '../shared/embedded/redis-server.js';
import { startS3rver, type S3Server } from '../shared/embedded/s3-server.js';
import { defaultWeightsPath, repoRoot } from '../shared/paths.js';
import { evaluateModel } from '../shared/local/evaluate.js';
import { fitModel } from '../shared/local/fit.js';
import { sha256File } from '../shared/pipeline/weights.js';
import { createRedisConnection, redisConfigFromEnv } from '../shared/queue/config.js';
import { createFlowProducer, runProgress } from '../shared/queue/flows.js';
import { modelKey, reportKey } from '../shared/storage/keys.js';
import { ObjectStore } from '../shared/storage/object-store.js';
import { storageConfigFromEnv } from '../shared/storage/config.js';
import { PAPER_FRAME_SPEC } from '../shared/image/index.js';
import { ingestDataset, submitEvaluation, submitTraining, waitForRun } from '../services/producer/submit.js';
import { listSchedules, removeSchedule, setSchedule } from '../services/producer/scheduler.js';
import { latestKey } from '../shared/distributed/model-store.js';
import { makeBottleSubset } from './helpers/subset.js';

const log = pino({ level: 'silent' });
const data = makeBottleSubset({ train: 8, test: { good: 2, broken_large: 2, contamination: 1 } });
const work = mkdtempSync(join(tmpdir(), 'patchcore-e2e-'));
let redis: RedisServer;
let s3: S3Server;
let env: Record<string, string | undefined>;
const workers: ChildProcess[] = [];
const workerOutput: string[] = [];

before(async () => {
  redis = await startRedisServer();
  s3 = await startS3rver('patchcore-e2e');
  env = { ...process.env, ...s3.env, REDIS_URL: redis.url, LOG_LEVEL: 'warn', HEALTH_PORT: '0', MODEL_CACHE_DIR: join(work, 'cache') };
  for (const kind of ['features', 'features', 'index', 'score', 'scheduler']) {
    const child = spawn(process.execPath, [join(repoRoot, 'bin', 'patchcore.js'), 'worker', kind], { env, stdio: ['ignore', 'ignore', 'pipe'] });
    child.stderr!.on('data', (d) => workerOutput.push(`[${kind}] ${d}`));
    workers.push(child);
  }
});

after(async () => {
  await Promise.all(workers.map((w) => new Promise<void>((r) => {
    if (w.exitCode !== null) return r();
    w.once('exit', () => r());
    w.kill('SIGTERM');
  })));
  await redis?.stop();
  await s3?.stop();
});

/** metrics.json without the keys that differ between any two runs: timings_ms, peak_rss_mib, model.dir, model.version. */
function comparable(metrics: Record<string, unknown>): Record<string, unknown> {
  const { timings_ms: _t, peak_rss_mib: _p, model, ...rest } = metrics;
  const { dir: _d, version: _v, ...modelRest } = model as Record<string, unknown>;
  return { ...rest, model: modelRest };
}

test('distributed train + evaluate equals in-process fit + evaluate on the same images', async () => {
  const store = new ObjectStore(storageConfigFromEnv(env));
  await store.ensureBucket();
  const redisConfig = redisConfigFromEnv(env);
  const connection = createRedisConnection(redisConfig, { mode: 'fail-fast' });
  const flows = createFlowProducer(connection, redisConfig.prefix);
  const ctx = { store, flows, log };
  try {
    const ingested = await ingestDataset(store, data, 'bottle-mini');
    assert.equal(ingested.files, 8 + 5 + 3);
    const weights = { file: defaultWeightsPath(), sha256: await sha256File(defaultWeightsPath()) };
    // The frame is given on both sides, so the comparison holds whatever either side's default.
    const train = await submitTraining(ctx, { dataset: 'bottle-mini', category: 'bottle', shardSize: 3, coresetRatio: 0.1, weights, frame: PAPER_FRAME_SPEC });
    assert.equal(train.shards, 3);
    // Submitting the same run again adds nothing.
    const again = await submitTraining(ctx, { dataset: 'bottle-mini', category: 'bottle', shardSize: 3, coresetRatio: 0.1, weights, frame: PAPER_FRAME_SPEC, runId: train.runId, version: train.version });
    assert.equal(again.alreadySubmitted, true);
    const trained = await waitForRun(connection, train.runId, 'training', redisConfig.prefix, { timeoutMs: 120_000 });
    assert.equal(trained.state, 'completed', `${JSON.stringify(trained.failures)}\n${workerOutput.join('')}`);
    const evaluation = await submitEvaluation(ctx, { dataset: 'bottle-mini', category: 'bottle', version: 'latest', shardSize: 2 });
    assert.equal(evaluation.version, train.version);
    const evaluated = await waitForRun(connection, evaluation.runId, 'evaluation', redisConfig.prefix, { timeoutMs: 120_000 });
    assert.equal(evaluated.state, 'completed', `${JSON.stringify(evaluated.failures)}\n${workerOutput.join('')}`);

    // The same images and settings in one process.
    const localModel = join(work, 'model');
    await fitModel({ dataDir: data, modelDir: localModel, weightsPath: defaultWeightsPath(), coresetRatio: 0.1, category: 'bottle', frame: PAPER_FRAME_SPEC, logger: log });
    const localOut = join(work, 'eval');
    const local = await evaluateModel({ modelDir: localModel, dataDir: data, outDir: localOut, weightsPath: defaultWeightsPath(), logger: log });

    const remoteBank = await store.getObject(modelKey('bottle', train.version!, 'bank.f32'));
    assert.ok(remoteBank.equals(readFileSync(join(localModel, 'bank.f32'))), 'distributed bank differs from the in-process bank');
    const remoteCsv = (await store.getObject(reportKey(evaluation.runId, 'scores.csv'))).toString();
    assert.equal(remoteCsv, readFileSync(join(localOut, 'scores.csv'), 'utf8'));
    const remote = JSON.parse((await store.getObject(reportKey(evaluation.runId, 'metrics.json'))).toString());
    const localFile = JSON.parse(readFileSync(join(localOut, 'metrics.json'), 'utf8'));
    for (const k of ['image_auroc', 'pixel_auroc', 'aupro', 'f1_max', 'threshold', 'confusion_matrix', 'images'] as const) {
      assert.deepEqual(remote[k], local[k], k);
    }
    // The whole metrics.json, key for key and value for value, but for what differs by nature: the timings
    // (timings_ms, peak_rss_mib) and the model's id (model.dir locally, model.version in the bucket).
    assert.equal(remote.model.version, train.version);
    assert.equal(localFile.model.dir, localModel);
    assert.deepEqual(comparable(remote), comparable(localFile));
    for (const k of ['decision', 'hnsw_recall_at_1', 'model', 'failed_images', 'per_defect_type', 'score_stats']) assert.ok(k in remote, k);
    assert.equal(typeof remote.hnsw_recall_at_1, 'number');
    // The distributed report's timings tell the whole run: training and evaluation jobs, queue wait included.
    for (const job of ['features', 'index', 'score', 'report']) {
      assert.ok(Object.keys(remote.timings_ms).some((k) => k.startsWith(`${job} compute`)), `${job} compute in ${Object.keys(remote.timings_ms)}`);
      assert.equal(typeof remote.timings_ms[`${job} queue wait`], 'number', `${job} queue wait`);
    }
    assert.ok(await store.exists(reportKey(evaluation.runId, 'index.html')));
    const progress = await runProgress(connection, evaluation.runId, 'evaluation', { prefix: redisConfig.prefix });
    assert.equal(progress.counts.done, 3);
  } finally {
    await flows.close();
    await connection.quit();
    store.destroy();
  }
});

test('scheduled retraining: each cron tick trains a new version; latest only ever names a complete one', async () => {
  const store = new ObjectStore(storageConfigFromEnv(env));
  const redisConfig = redisConfigFromEnv(env);
  const connection = createRedisConnection(redisConfig, { mode: 'fail-fast' });
  const tiny = makeBottleSubset({ train: 2, test: {} });
  try {
    await store.ensureBucket();
    await ingestDataset(store, tiny, 'bottle-tiny');
    // A 4-s schedule, far below production's 10-min minimum between retrainings: allowed explicitly for the test.
    const set = await setSchedule(connection, redisConfig.prefix, { category: 'tiny', dataset: 'bottle-tiny', cron: '*/4 * * * * *', shardSize: 1 }, { minIntervalMs: 1000 });
    assert.equal(set.id, 'retrain-tiny');
    assert.equal((await listSchedules(connection, redisConfig.prefix)).length, 1);
    const seen = new Set<string>();
    const deadline = Date.now() + 60_000;
    while (seen.size < 2 && Date.now() < deadline) {
      const latest = (await store.getManifest(latestKey('tiny'), z.object({ version: z.string() })))?.version;
      if (latest) {
        // The pointer moves only after the version's manifest (written last) exists.
        assert.ok(await store.exists(modelKey('tiny', latest, 'manifest.json')), `latest -> ${latest} has no manifest`);
        seen.add(latest);
      }
      await new Promise((r) => setTimeout(r, 500));
    }
    assert.ok(seen.size >= 2, `expected two scheduled versions within a minute, saw ${[...seen].join(', ')}\n${workerOutput.join('')}`);
    assert.equal(await removeSchedule(connection, redisConfig.prefix, 'tiny'), true);
    assert.equal((await listSchedules(connection, redisConfig.prefix)).length, 0);
  } finally {
    await connection.quit();
    store.destroy();
  }
});
