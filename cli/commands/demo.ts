// `patchcore demo`: the whole distributed pipeline on one machine. Without REDIS_URL / S3_ENDPOINT it starts a
// private redis-server and an s3rver in temp folders; it starts one worker of each kind as separate processes,
// uploads the data set, trains, evaluates, downloads the report and stops everything it started.
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { startRedisServer, type RedisServer } from '../../shared/embedded/redis-server.js';
import { startS3rver, type S3Server } from '../../shared/embedded/s3-server.js';
import { accountRun } from '../../shared/distributed/accounting.js';
import { createLogger } from '../../shared/log.js';
import { repoRoot } from '../../shared/paths.js';
import { sha256File } from '../../shared/pipeline/weights.js';
import { createRedisConnection, redisConfigFromEnv } from '../../shared/queue/config.js';
import { createFlowProducer } from '../../shared/queue/flows.js';
import { reportPrefix, shardName } from '../../shared/storage/keys.js';
import { ObjectStore } from '../../shared/storage/object-store.js';
import { storageConfigFromEnv } from '../../shared/storage/config.js';
import { ingestDataset, submitEvaluation, submitTraining } from '../../services/producer/submit.js';
import { defineCommand } from '../args.js';
import { OPTIONS as O } from '../options.js';
import { watchRun } from './pipeline.js';

export const DEMO = defineCommand({
  name: 'demo',
  synopsis: '[--data <category dir>] [--out <dir>] [options]',
  about: 'Uses REDIS_URL and S3_ENDPOINT/S3_BUCKET/... when set; otherwise starts its own redis-server and s3rver.',
  options: [
    O.data, O.out.default('patchcore-demo', './patchcore-demo'), O['feature-workers'], O['shard-size'], O['per-shard-coreset'], O.weights,
  ],
});
export const DEMO_USAGE = DEMO.usage;

const REDIS_MISSING = `redis-server was not found. Install it (Debian/Ubuntu: sudo apt-get install redis-server; macOS: brew install redis),
or point the demo at an existing Redis with REDIS_URL=redis://host:6379 (or set REDIS_SERVER_BIN to the binary).`;

function stopChild(child: ChildProcess, ms = 30_000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolveStop) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), ms);
    child.once('exit', () => {
      clearTimeout(timer);
      resolveStop();
    });
    child.kill('SIGTERM');
  });
}

export async function demoCommand(argv: string[]): Promise<void> {
  const o = DEMO.parse(argv);
  const log = createLogger('demo');
  const out = resolve(o.out);
  const dataDir = resolve(o.data);
  const weightsPath = resolve(o.weights);
  const category = dataDir.split('/').filter(Boolean).pop()!.replace(/[^A-Za-z0-9._-]/g, '-');
  mkdirSync(out, { recursive: true });
  const t0 = performance.now();
  const phases: Record<string, number> = {};
  const cleanups: (() => Promise<void>)[] = [];
  const children: ChildProcess[] = [];
  const interrupted = new AbortController();
  let stopping = false;
  const onSignal = () => {
    log.warn('interrupted: stopping workers and servers');
    interrupted.abort();
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    const env: Record<string, string | undefined> = { ...process.env };
    if (!env.REDIS_URL) {
      let redis: RedisServer;
      try {
        redis = await startRedisServer();
      } catch (err) {
        if ((err as Error).message.startsWith('cannot start')) throw new Error(REDIS_MISSING);
        throw err;
      }
      cleanups.push(() => redis.stop());
      env.REDIS_URL = redis.url;
      log.info({ redis: redis.url }, 'started a private redis-server');
    }
    if (!env.S3_ENDPOINT) {
      const s3: S3Server = await startS3rver('patchcore-demo');
      cleanups.push(() => s3.stop());
      Object.assign(env, s3.env);
      log.info({ endpoint: s3.endpoint }, 'started a private S3-compatible server (s3rver)');
    }
    const store = new ObjectStore(storageConfigFromEnv(env));
    cleanups.push(async () => store.destroy());
    await store.ensureBucket();

    // Workers are separate processes, as in production; their logs go to a file beside the report.
    const workerLog = createWriteStream(join(out, 'workers.log'));
    cleanups.push(() => new Promise((r) => workerLog.end(r)));
    const kinds = [...Array(o['feature-workers']).fill('features'), 'index', 'score'] as string[];
    for (const kind of kinds) {
      const child = spawn(process.execPath, [join(repoRoot, 'bin', 'patchcore.js'), 'worker', kind], {
        env: { ...env, PATCHCORE_WEIGHTS: weightsPath, HEALTH_PORT: '0', MODEL_CACHE_DIR: join(out, '.model-cache') },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      // A worker that dies on its own would leave the run waiting forever: stop and say so.
      child.once('exit', (code, signal) => {
        if (stopping) return;
        log.error({ worker: kind, code, signal, log: join(out, 'workers.log') }, 'a worker exited unexpectedly: stopping the demo');
        interrupted.abort();
      });
      child.stdout!.pipe(workerLog, { end: false });
      child.stderr!.pipe(workerLog, { end: false });
      children.push(child);
    }
    cleanups.push(async () => {
      stopping = true;
      await Promise.all(children.map((c) => stopChild(c)));
    });
    log.info({ workers: kinds }, 'workers started');

    const redisConfig = redisConfigFromEnv(env);
    const connection = createRedisConnection(redisConfig, { mode: 'fail-fast', connectionName: 'demo', logger: log });
    const flows = createFlowProducer(connection, redisConfig.prefix);
    cleanups.push(async () => {
      await flows.close();
      await connection.quit().catch(() => connection.disconnect());
    });
    const ctx = { store, flows, log };

    let t = performance.now();
    const ingested = await ingestDataset(store, dataDir, category);
    phases.ingest_ms = Math.round(performance.now() - t);
    log.info({ files: ingested.files, prefix: ingested.prefix }, 'data set uploaded');

    t = performance.now();
    const train = await submitTraining(ctx, {
      dataset: category, shardSize: o['shard-size'], perShardCoresetRatio: o['per-shard-coreset'] ?? null,
      weights: { file: weightsPath, sha256: await sha256File(weightsPath) },
    });
    const trained = await watchRun(connection, train.runId, 'training', redisConfig.prefix, log, interrupted.signal);
    phases.train_ms = Math.round(performance.now() - t);

    t = performance.now();
    const evaluation = await submitEvaluation(ctx, { dataset: category, version: train.version, shardSize: o['shard-size'] });
    const evaluated = await watchRun(connection, evaluation.runId, 'evaluation', redisConfig.prefix, log, interrupted.signal);
    phases.evaluate_ms = Math.round(performance.now() - t);

    t = performance.now();
    const reportDir = join(out, 'report');
    await store.downloadPrefix(reportPrefix(evaluation.runId), reportDir);
    phases.download_ms = Math.round(performance.now() - t);
    const metrics = JSON.parse(await import('node:fs/promises').then((fs) => fs.readFile(join(reportDir, 'metrics.json'), 'utf8')));
    const shardIds = (n: number) => Array.from({ length: n }, (_, i) => shardName(i));
    const accounting = {
      training: await accountRun(connection, redisConfig.prefix, train.runId, 'training', shardIds(train.shards)),
      evaluation: await accountRun(connection, redisConfig.prefix, evaluation.runId, 'evaluation', shardIds(evaluation.shards)),
    };
    const summary = {
      image_auroc: metrics.image_auroc, pixel_auroc: metrics.pixel_auroc, aupro: metrics.aupro, f1_max: metrics.f1_max,
      threshold: metrics.threshold, confusion_matrix: metrics.confusion_matrix, images: metrics.images,
      model: `${category}/${train.version}`, training_run: train.runId, evaluation_run: evaluation.runId,
      report: join(reportDir, 'index.html'), metrics: join(reportDir, 'metrics.json'),
      training: trained.parent?.returnValue ?? null, evaluation: evaluated.parent?.returnValue ?? null,
      wall_ms: { ...phases, total: Math.round(performance.now() - t0) },
      job_time_ms: accounting,
    };
    process.stdout.write(JSON.stringify(summary, null, 2) + '\n');
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    for (const cleanup of cleanups.reverse()) await cleanup().catch((err) => log.warn({ err: String(err) }, 'cleanup failed'));
  }
}
