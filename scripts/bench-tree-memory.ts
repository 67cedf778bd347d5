// Memory of the index side of a tree-reduced training run at a fixed bank cap, for runs of several sizes: the index
// worker process (root build-index and reduce steps) should peak at about the same RSS however many images the run
// has. Real redis-server, s3rver and worker processes on the bottle training images (not part of the tests).
//
//   node --import tsx scripts/bench-tree-memory.ts [--sizes 52,209] [--cap 1000] [--fan-in 4] [--shard-size 8] [--flat] [--json <file>]
//
// --flat also runs each size as a single pass (one root over every shard's raw embeddings, no per-shard coreset:
// today's flow for runs of at most F shards), for comparison.
// Per size: a fresh index worker process; its resident set idle before the run and the largest sampled during it
// (their difference: what the root and reduce jobs took), its VmHWM (start-up included), the jobs' own
// peak_rss_mib (the process's high-water mark when each finished), the tree's shape, the bank rows and the wall time.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Queue } from 'bullmq';
import { pino } from 'pino';
import { startRedisServer } from '../shared/embedded/redis-server.js';
import { startS3rver } from '../shared/embedded/s3-server.js';
import type { ReduceResult } from '../shared/distributed/reduce.js';
import { defaultDatasetDir, defaultWeightsPath, repoRoot } from '../shared/paths.js';
import { sha256File } from '../shared/pipeline/weights.js';
import { createRedisConnection, redisConfigFromEnv } from '../shared/queue/config.js';
import { createFlowProducer, jobIds } from '../shared/queue/flows.js';
import { REDUCE_QUEUE } from '../shared/queue/jobs.js';
import { storageConfigFromEnv } from '../shared/storage/config.js';
import { ObjectStore } from '../shared/storage/object-store.js';
import { ingestDataset, submitTraining, waitForRun } from '../services/producer/submit.js';

const { values: args } = parseArgs({
  options: {
    sizes: { type: 'string', default: '52,209' },
    cap: { type: 'string', default: '1000' },
    'fan-in': { type: 'string', default: '4' },
    'shard-size': { type: 'string', default: '8' },
    json: { type: 'string' },
    flat: { type: 'boolean', default: false },
  },
});
const sizes = args.sizes!.split(',').map(Number);
const cap = Number(args.cap);
const fanIn = Number(args['fan-in']);
const shardSize = Number(args['shard-size']);

const statusMiB = (pid: number, field: 'VmHWM' | 'VmRSS') =>
  Math.round(Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024);

/** Samples a process's resident set every 50 ms: its start-up high-water mark would hide the jobs' own peak. */
function sampleRss(pid: number): { stop(): number } {
  let max = statusMiB(pid, 'VmRSS');
  const timer = setInterval(() => {
    try {
      max = Math.max(max, statusMiB(pid, 'VmRSS'));
    } catch {
      // the process has exited
    }
  }, 50);
  return { stop: () => (clearInterval(timer), max) };
}

function startWorker(kind: string, env: NodeJS.ProcessEnv): Promise<ChildProcess> {
  const child = spawn(process.execPath, [join(repoRoot, 'bin', 'patchcore.js'), 'worker', kind], { env, stdio: ['ignore', 'ignore', 'pipe'] });
  const queues = kind === 'index' ? 2 : 1;
  return new Promise((resolve, reject) => {
    let started = 0;
    child.stderr!.on('data', (d: Buffer) => {
      started += (d.toString().match(/"msg":"worker started"/g) ?? []).length;
      if (started === queues) resolve(child);
    });
    child.once('exit', (code) => reject(new Error(`${kind} worker exited with ${code}`)));
  });
}

const stop = (w: ChildProcess) => new Promise<void>((r) => {
  if (w.exitCode !== null) return r();
  w.once('exit', () => r());
  w.kill('SIGTERM');
});

const redis = await startRedisServer();
const s3 = await startS3rver('patchcore-tree-memory');
const env = { ...process.env, ...s3.env, REDIS_URL: redis.url, LOG_LEVEL: 'info', HEALTH_PORT: '0' };
const store = new ObjectStore(storageConfigFromEnv(env));
const redisConfig = redisConfigFromEnv(env);
const connection = createRedisConnection(redisConfig, { mode: 'fail-fast' });
const flows = createFlowProducer(connection, redisConfig.prefix);
const log = pino({ level: 'silent' });
const features = await startWorker('features', env);
const rows: Record<string, unknown>[] = [];
try {
  await store.ensureBucket();
  const weights = { file: defaultWeightsPath(), sha256: await sha256File(defaultWeightsPath()) };
  const src = join(defaultDatasetDir('bottle'), 'train/good');
  const ingested = new Set<number>();
  for (const [mode, n] of (args.flat ? ['tree', 'flat'] : ['tree']).flatMap((m) => sizes.map((n) => [m, n] as const))) {
    const dir = mkdtempSync(join(tmpdir(), 'patchcore-tree-memory-'));
    mkdirSync(join(dir, 'images'));
    for (const f of readdirSync(src).sort().slice(0, n)) symlinkSync(join(src, f), join(dir, 'images', f));
    if (!ingested.has(n)) await ingestDataset(store, dir, `bottle-${n}`);
    ingested.add(n);
    const index = await startWorker('index', env);
    await new Promise((r) => setTimeout(r, 2000));
    const idle = statusMiB(index.pid!, 'VmRSS');
    const sampler = sampleRss(index.pid!);
    const t0 = performance.now();
    const run = await submitTraining({ store, flows, log }, {
      images: `datasets/bottle-${n}/images/`, category: `mem-${mode}-${n}`, shardSize, fanIn: mode === 'flat' ? 64 : fanIn, coresetSize: cap, weights,
    });
    const done = await waitForRun(connection, run.runId, 'training', redisConfig.prefix, { timeoutMs: 3_600_000 });
    if (done.state !== 'completed') throw new Error(`run of ${n} images: ${JSON.stringify(done.failures)}`);
    const peak = sampler.stop();
    const hwm = statusMiB(index.pid!, 'VmHWM');
    const reduceQueue = new Queue(REDUCE_QUEUE, { connection, prefix: redisConfig.prefix });
    const steps: ReduceResult[] = [];
    const parent = await new Queue('patchcore-index', { connection, prefix: redisConfig.prefix }).getJob(jobIds.buildIndex(run.runId));
    for (const node of (parent!.data.tree?.nodes ?? []) as string[]) steps.push((await reduceQueue.getJob(jobIds.reduce(run.runId, node)))!.returnvalue);
    await reduceQueue.close();
    const root = done.parent!.returnValue as { bank: number; mergedRows: number; peak_rss_mib: number };
    rows.push({
      mode, images: n, shards: run.shards, fan_in: run.tree!.fanIn, cap, depth: run.tree!.depth, reduce_steps: steps.length,
      max_step_input_rows: Math.max(root.mergedRows, ...steps.map((s) => s.inputRows)), bank_rows: root.bank,
      index_worker_idle_rss_mib: idle, index_worker_peak_rss_mib: peak, index_worker_jobs_mib: peak - idle, index_worker_hwm_mib: hwm,
      max_reduce_step_rss_mib: Math.max(0, ...steps.map((s) => s.peak_rss_mib)), root_rss_mib: root.peak_rss_mib,
      wall_s: Math.round((performance.now() - t0) / 100) / 10,
    });
    await stop(index);
  }
} finally {
  await stop(features);
  await flows.close();
  await connection.quit();
  store.destroy();
  await redis.stop();
  await s3.stop();
}
console.table(rows);
// Peak RSS of the largest run over the smallest's, per mode.
const ratio = (mode: string) => {
  const of = rows.filter((r) => r.mode === mode).map((r) => r.index_worker_peak_rss_mib as number);
  return of.length > 1 ? Math.round((of.at(-1)! / of[0]) * 1000) / 1000 : null;
};
const out = { sizes: rows, ratio_peak_rss: { tree: ratio('tree'), flat: ratio('flat') } };
process.stdout.write(JSON.stringify(out) + '\n');
if (args.json) writeFileSync(args.json, JSON.stringify(out, null, 2));
