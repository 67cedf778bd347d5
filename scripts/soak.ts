// Soak test: many tiny training + evaluation runs against a private redis-server and s3rver with 2-3 feature
// workers, an index worker and a scorer as real processes, while workers are SIGKILLed at random and restarted.
// Every finished run is checked image by image against its dataset: an image missing from a run that completed is
// lost, an image counted twice is a duplicate; both must stay 0. A run that fails must fail loudly (state failed,
// with reasons) and is counted apart.
//
//   npm run soak -- [--minutes 5 | --runs N] [--feature-workers 2] [--seed 1] [--json soak.json]
//
// Alongside, a retraining schedule of the same category ticks every 20 s (a scheduler worker in this process runs
// the ticks through the real scheduler code, so its runs overlap the main loop's trainings and publish in any
// order), gc runs every 5 s with small retention settings, and a watcher reads `latest` every 250 ms and counts
// every move to an older version (latest_backwards, must be 0). At the end one more gc pass, then the bucket's
// bytes are compared with what the retention settings allow (retention_bound_bytes, from the largest model
// version, report and run intermediates seen).
//
// Writes a line per run and a summary; --json writes {"runs","faults","images","lost","duplicates","failed_runs",
// "latest_backwards","bucket_bytes_end","retention_bound_bytes","scheduled_runs","skipped_ticks","gc_passes",
// "gc_deleted_bytes"}. Exits 1 when an image was lost or duplicated, a run failed or got stuck, latest moved
// backwards or the bucket ended above the retention bound.
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { Worker } from 'bullmq';
import { tickOf } from '../services/producer/main.js';
import { removeSchedule, runRetrain, setSchedule, skippedTicks } from '../services/producer/scheduler.js';
import { ingestDataset, submitEvaluation, submitTraining } from '../services/producer/submit.js';
import { listStoredDataset } from '../shared/distributed/dataset-store.js';
import { isNewer, readLatest } from '../shared/distributed/model-store.js';
import { createRedisConnection } from '../shared/queue/config.js';
import { SCHEDULE_QUEUE, type RetrainPayload } from '../shared/queue/jobs.js';
import { bucketUsage, collectGarbage, inUseFromQueues, type RetentionSettings } from '../shared/retention/gc.js';
import { datasetPrefix, datasetsRoot, embeddingsPrefix, mapsPrefix, modelKey, modelsRoot, reportKey, reportsRoot, runsRoot, scoresPrefix } from '../shared/storage/keys.js';
import { decodeTensorFile } from '../shared/storage/tensor-file.js';
import { Cluster, silentLog, type WorkerKind, type WorkerProcess } from '../test/faults/harness.js';
import { makeBottleSubset } from '../test/helpers/subset.js';

const { values: args } = parseArgs({
  options: {
    minutes: { type: 'string' }, runs: { type: 'string' }, 'feature-workers': { type: 'string', default: '2' },
    seed: { type: 'string', default: '1' }, json: { type: 'string' }, help: { type: 'boolean' },
  },
});
if (args.help) {
  process.stdout.write('usage: soak [--minutes N (default 5) | --runs N] [--feature-workers 2|3] [--seed N] [--json file]\n');
  process.exit(0);
}
const positive = (name: string, v: string | undefined) => {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!(n > 0)) throw new Error(`--${name} must be a positive number, got "${v}"`);
  return n;
};
const maxRuns = positive('runs', args.runs);
const minutes = positive('minutes', args.minutes) ?? (maxRuns ? Infinity : 5);
const featureWorkers = positive('feature-workers', args['feature-workers'])!;
if (!Number.isInteger(featureWorkers) || featureWorkers > 4) throw new Error('--feature-workers must be 1 to 4');

// A small deterministic PRNG (mulberry32): the same --seed gives the same choices (timing still varies).
let state = Number(args.seed) >>> 0 || 1;
function random(): number {
  state = (state + 0x6d2b79f5) >>> 0;
  let t = state;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const pick = <T>(xs: T[]): T => xs[Math.floor(random() * xs.length)];
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** Whether the worker's log shows a job started and not yet finished. */
const running = (w: WorkerProcess) =>
  w.events.filter((e) => e.msg === 'job started').length > w.events.filter((e) => e.msg === 'job done' || e.msg === 'job failed').length;

const totals = {
  runs: 0, faults: 0, images: 0, lost: 0, duplicates: 0, failed_runs: 0,
  latest_backwards: 0, bucket_bytes_end: 0, retention_bound_bytes: 0, scheduled_runs: 0, skipped_ticks: 0, gc_passes: 0, gc_deleted_bytes: 0,
};
const RETENTION: RetentionSettings = { keepVersions: 3, keepReports: 3, graceMs: 60_000 };
/** Runs whose outputs the main loop is checking right now: gc leaves them alone like a queued run. */
const checking = new Set<string>();
/** The largest footprint of each kind seen, for the retention bound. */
const largest = { version: 0, report: 0, trainIntermediates: 0, evalIntermediates: 0, runJson: 0 };
/** Updates `largest` from what the bucket holds now: every model version, report and run's intermediates. */
async function measureLargest(store: { list(p: string): AsyncIterable<{ key: string; size: number }> }): Promise<void> {
  const sizes = new Map<string, number>();
  for await (const o of store.list('')) {
    const m = /^(models\/[^/]+\/[^/]+\/|reports\/[^/]+\/|runs\/[^/]+\/(?:embeddings|scores|maps)\/|runs\/[^/]+\/run\.json)/.exec(o.key);
    if (!m) continue;
    // Scores and maps of one run count together, as one evaluation's intermediates.
    const id = m[1].replace(/\/(scores|maps)\/$/, '/eval/');
    sizes.set(id, (sizes.get(id) ?? 0) + o.size);
  }
  for (const [id, bytes] of sizes) {
    if (id.startsWith('models/')) largest.version = Math.max(largest.version, bytes);
    else if (id.startsWith('reports/')) largest.report = Math.max(largest.report, bytes);
    else if (id.endsWith('/embeddings/')) largest.trainIntermediates = Math.max(largest.trainIntermediates, bytes);
    else if (id.endsWith('/eval/')) largest.evalIntermediates = Math.max(largest.evalIntermediates, bytes);
    else if (id.endsWith('run.json')) largest.runJson = Math.max(largest.runJson, bytes);
  }
}
const prefixBytes = async (store: { list(p: string): AsyncIterable<{ size: number }> }, prefix: string) => {
  let n = 0;
  for await (const o of store.list(prefix)) n += o.size;
  return n;
};
/** Kills that hit a worker in the middle of a job. */
let midJob = 0;
const problems: string[] = [];
const say = (line: string) => process.stdout.write(`${line}\n`);

/** Counts each expected id in `seen`: missing ones are lost, extra or repeated ones duplicates. */
function tally(runId: string, expected: string[], seen: string[]): { lost: number; duplicates: number } {
  const want = new Set(expected);
  const counts = new Map<string, number>();
  for (const id of seen) counts.set(id, (counts.get(id) ?? 0) + 1);
  let lost = 0;
  let duplicates = 0;
  for (const id of want) if (!counts.has(id)) lost++;
  for (const [id, n] of counts) duplicates += want.has(id) ? n - 1 : n;
  if (lost || duplicates) problems.push(`${runId}: ${lost} lost, ${duplicates} duplicated`);
  return { lost, duplicates };
}

async function main(): Promise<void> {
  const c = await Cluster.start({
    workers: [...Array<WorkerKind>(featureWorkers).fill('features'), 'index', 'score'],
    env: { BATCH_SIZE: '1' }, // info logs: the harness reads them to see workers start
    bucket: 'patchcore-soak',
  });
  // Ctrl-C ends the soak at once; the harness then kills every process it started.
  let stopping = false;
  try {
    await ingestDataset(c.store, makeBottleSubset({ train: 4, test: { good: 2, broken_large: 1, contamination: 1 } }), 'soak');
    const prefix = datasetPrefix('soak');
    const dataset = await listStoredDataset(c.store, prefix, { train: true, test: true });
    const trainKeys = dataset.train.map((i) => prefix + i.path);
    const testIds = dataset.test.map((i) => i.path);
    // Image reads a little slow, so that kills land in the middle of shards.
    c.proxy.addRule({ match: (r) => r.method === 'GET' && r.key.startsWith(prefix), delayMs: 150 });
    say(`soak: ${featureWorkers} feature workers, index worker, scorer; ${trainKeys.length} train + ${testIds.length} test images a run; seed ${args.seed}`);

    const deadline = Date.now() + minutes * 60_000;
    // The fault injector: every 2-6 s a random worker is SIGKILLed; its replacement starts at once, in the
    // background (as an orchestrator would), so further kills may land while it is still starting.
    const restarts: Promise<unknown>[] = [];
    const injector = (async () => {
      while (!stopping) {
        await sleep(2000 + random() * 4000);
        if (stopping) break;
        const r = random();
        const kind: WorkerKind = r < 0.7 ? 'features' : r < 0.85 ? 'index' : 'score';
        // Workers that have started (a replacement still booting is left alone); mostly one in the middle of a job.
        const victims = c.liveWorkers(kind).filter((w) => w.events.some((e) => e.msg === 'worker started'));
        if (victims.length === 0) continue;
        const busy = victims.filter(running);
        const victim = busy.length > 0 && random() < 0.75 ? pick(busy) : pick(victims);
        if (running(victim)) midJob++;
        await victim.kill('SIGKILL');
        totals.faults++;
        restarts.push(c.spawn(kind).catch((err: Error) => problems.push(`restarting a ${kind} worker failed: ${err.message.split('\n')[0]}`)));
      }
      await Promise.all(restarts);
    })();

    const producer = { store: c.store, flows: c.flows, log: silentLog };
    const prefixQ = c.redisConfig.prefix;

    // Scheduled retraining of the same category, every 20 s (the soak allows that; production's minimum is 10 min).
    const schedulePayload: RetrainPayload = { dataset: 'soak', category: 'bottle', coresetRatio: 0.1, shardSize: 2 };
    await setSchedule(c.connection, prefixQ, { ...schedulePayload, cron: '*/20 * * * * *' }, { minIntervalMs: 10_000 });
    const scheduledRuns = new Set<string>();
    const schedulerConnection = createRedisConnection(c.redisConfig);
    const scheduler = new Worker(SCHEDULE_QUEUE, async (job) => {
      const r = await runRetrain(job.data as RetrainPayload, tickOf(job.id, job.timestamp), {
        store: c.store, connection: c.connection, prefix: prefixQ, log: silentLog, weights: c.weights,
      });
      if (!('skipped' in r)) scheduledRuns.add(r.runId);
      return r;
    }, { connection: schedulerConnection, prefix: prefixQ, concurrency: 2 });
    scheduler.on('error', () => {});

    // gc every 5 s, with the queues' view plus the runs being checked here.
    const gcLoop = (async () => {
      while (!stopping) {
        await sleep(5000);
        if (stopping) break;
        try {
          await measureLargest(c.store);
          const inUse = await inUseFromQueues(c.connection, prefixQ);
          for (const r of checking) inUse.runs.add(r);
          const r = await collectGarbage(c.store, RETENTION, { inUse });
          totals.gc_passes++;
          totals.gc_deleted_bytes += r.deletedBytes;
        } catch (err) {
          problems.push(`gc pass failed: ${(err as Error).message.split('\n')[0]}`);
        }
      }
    })();

    // The latest watcher: every move must be to a newer version (its run's creation, then version id).
    let lastLatest: { version: string; createdAt: string } | null = null;
    const watcher = (async () => {
      while (!stopping) {
        const l = await readLatest(c.store, 'bottle').catch(() => null);
        if (l && l.createdAt && l.version !== lastLatest?.version) {
          const now: { version: string; createdAt: string } = { version: l.version, createdAt: l.createdAt };
          if (lastLatest && !isNewer(now, lastLatest)) {
            totals.latest_backwards++;
            problems.push(`latest moved backwards: ${lastLatest.version} (${lastLatest.createdAt}) -> ${now.version} (${now.createdAt})`);
          }
          lastLatest = now;
        }
        await sleep(250);
      }
    })();
    for (let n = 1; !stopping && Date.now() < deadline && (maxRuns === undefined || totals.runs < maxRuns); n++) {
      const t0 = Date.now();
      const trainId = `soak-train-${n}`;
      const version = `v-${n}`;
      checking.add(trainId);
      await submitTraining(producer, {
        dataset: 'soak', category: 'bottle', runId: trainId, version, shardSize: 1 + Math.floor(random() * 2), batchSize: 1,
        coresetRatio: 0.1, weights: c.weights,
      });
      const trained = await c.waitRun(trainId, 'training', 240_000).catch((e: Error) => ({ state: 'stuck', failures: [{ reason: e.message.split('\n')[0] }] }));
      totals.runs++;
      if (trained.state !== 'completed') {
        checking.delete(trainId);
        totals.failed_runs++;
        problems.push(`${trainId} ${trained.state}: ${trained.failures.map((f) => f.reason).join('; ')}`);
        say(`${trainId}: ${trained.state.toUpperCase()} ${trained.failures.map((f) => f.reason).join('; ')}`);
        continue;
      }
      // Every training image in exactly one embeddings file, and in the model's count.
      const seenTrain: string[] = [];
      for await (const o of c.store.list(embeddingsPrefix(trainId))) {
        seenTrain.push(...decodeTensorFile(await c.store.getObject(o.key), o.key).header.images.map((i) => i.key));
      }
      const manifest = JSON.parse((await c.store.getObject(modelKey('bottle', version, 'manifest.json'))).toString());
      if (manifest.training.images !== trainKeys.length) problems.push(`${trainId}: the model counts ${manifest.training.images} images`);
      largest.trainIntermediates = Math.max(largest.trainIntermediates, await prefixBytes(c.store, embeddingsPrefix(trainId)));
      largest.version = Math.max(largest.version, await prefixBytes(c.store, `${modelsRoot}bottle/${version}/`));
      largest.runJson = Math.max(largest.runJson, await prefixBytes(c.store, `${runsRoot}${trainId}/run.json`));
      const t = tally(trainId, trainKeys, seenTrain);
      totals.lost += t.lost;
      totals.duplicates += t.duplicates;
      totals.images += trainKeys.length;

      const evalId = `soak-eval-${n}`;
      checking.add(evalId);
      await submitEvaluation(producer, { dataset: 'soak', category: 'bottle', version, runId: evalId, shardSize: 1 + Math.floor(random() * 2) });
      const evaluated = await c.waitRun(evalId, 'evaluation', 240_000).catch((e: Error) => ({ state: 'stuck', failures: [{ reason: e.message.split('\n')[0] }] }));
      totals.runs++;
      checking.delete(trainId);
      if (evaluated.state !== 'completed') {
        checking.delete(evalId);
        totals.failed_runs++;
        problems.push(`${evalId} ${evaluated.state}: ${evaluated.failures.map((f) => f.reason).join('; ')}`);
        say(`${evalId}: ${evaluated.state.toUpperCase()} ${evaluated.failures.map((f) => f.reason).join('; ')}`);
        continue;
      }
      const rows = (await c.store.getObject(reportKey(evalId, 'scores.csv'))).toString().trim().split('\n').slice(1);
      const metrics = JSON.parse((await c.store.getObject(reportKey(evalId, 'metrics.json'))).toString());
      if (metrics.images !== testIds.length) problems.push(`${evalId}: metrics.json counts ${metrics.images} images`);
      largest.evalIntermediates = Math.max(largest.evalIntermediates, (await prefixBytes(c.store, scoresPrefix(evalId))) + (await prefixBytes(c.store, mapsPrefix(evalId))));
      largest.report = Math.max(largest.report, await prefixBytes(c.store, `${reportsRoot}${evalId}/`));
      checking.delete(evalId);
      const e = tally(evalId, testIds, rows.map((l) => l.split(',')[0]));
      totals.lost += e.lost;
      totals.duplicates += e.duplicates;
      totals.images += testIds.length;
      say(`run ${n}: ${trainId} + ${evalId} ok in ${((Date.now() - t0) / 1000).toFixed(1)} s (faults so far ${totals.faults})`);
    }
    // Stop the schedule, let the scheduled runs in flight finish (workers are still being killed meanwhile).
    await removeSchedule(c.connection, prefixQ, 'bottle');
    await scheduler.close();
    await schedulerConnection.quit();
    for (const runId of scheduledRuns) {
      const p = await c.waitRun(runId, 'training', 240_000).catch((e: Error) => ({ state: 'stuck', failures: [{ reason: e.message.split('\n')[0] }] }));
      if (p.state !== 'completed') {
        totals.failed_runs++;
        problems.push(`${runId} ${p.state}: ${p.failures.map((f) => f.reason).join('; ')}`);
      }
    }
    totals.scheduled_runs = scheduledRuns.size;
    totals.skipped_ticks = await skippedTicks(c.connection, prefixQ, 'bottle');
    stopping = true;
    await Promise.all([injector, gcLoop, watcher]);

    // A last gc pass with nothing in flight, then the bucket against what the settings allow: the datasets, per
    // category keepVersions versions plus latest plus one being published, keepReports reports plus one being
    // written, and for every run folder retention keeps its run.json; intermediates of runs in flight (one main
    // training or evaluation and one scheduled training at a time) and of runs within the grace period.
    await measureLargest(c.store);
    const last = await collectGarbage(c.store, RETENTION, { inUse: await inUseFromQueues(c.connection, prefixQ) });
    totals.gc_passes++;
    totals.gc_deleted_bytes += last.deletedBytes;
    const usage = await bucketUsage(c.store);
    totals.bucket_bytes_end = usage.total;
    const datasetBytes = await prefixBytes(c.store, datasetsRoot);
    const versions = RETENTION.keepVersions + 2;
    const reports = RETENTION.keepReports + 1;
    const intermediates = 2 * largest.trainIntermediates + largest.evalIntermediates;
    totals.retention_bound_bytes = datasetBytes + versions * largest.version + reports * largest.report
      + (versions + reports) * largest.runJson + intermediates;
    say(`bucket: ${usage.total} bytes at the end (${JSON.stringify(usage.byRoot)}), retention bound ${totals.retention_bound_bytes}`);
    if (usage.total > totals.retention_bound_bytes) problems.push(`the bucket holds ${usage.total} bytes, above the retention bound ${totals.retention_bound_bytes}`);
  } finally {
    stopping = true;
    await c.stop();
  }
}

try {
  await main();
} catch (err) {
  problems.push(`soak aborted: ${(err as Error).message}`);
  totals.failed_runs++;
}
say(`soak: ${totals.runs} runs, ${totals.faults} faults injected (${midJob} mid-job), ${totals.images} images, ${totals.lost} lost, ${totals.duplicates} duplicates, ${totals.failed_runs} failed runs`);
say(`      ${totals.scheduled_runs} scheduled runs, ${totals.skipped_ticks} ticks skipped, latest moved backwards ${totals.latest_backwards} times, ${totals.gc_passes} gc passes deleted ${totals.gc_deleted_bytes} bytes; bucket ${totals.bucket_bytes_end} of ${totals.retention_bound_bytes} allowed bytes`);
for (const p of problems) say(`  problem: ${p}`);
if (args.json) writeFileSync(args.json, JSON.stringify(totals) + '\n');
process.exitCode = totals.lost || totals.duplicates || totals.failed_runs || totals.latest_backwards || totals.bucket_bytes_end > totals.retention_bound_bytes ? 1 : 0;
