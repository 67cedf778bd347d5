// The distributed pipeline's commands: workers, dataset upload, run submission, status and report download.
// Redis and S3 come from the environment (REDIS_URL, QUEUE_PREFIX, S3_*; see the README).
import { resolve } from 'node:path';
import { z } from 'zod';
import { createLogger } from '../../shared/log.js';
import { sha256File } from '../../shared/pipeline/weights.js';
import { startProgress } from '../../shared/run/progress.js';
import { createRedisConnection, redisConfigFromEnv } from '../../shared/queue/config.js';
import { createFlowProducer, runProgress, type RunKind, type RunProgress } from '../../shared/queue/flows.js';
import { reportPrefix } from '../../shared/storage/keys.js';
import { ObjectStore } from '../../shared/storage/object-store.js';
import { listSchedules, removeSchedule, setSchedule } from '../../services/producer/scheduler.js';
import { ingestDataset, runKindOf, submitEvaluation, submitScoring, submitTraining, waitForRun } from '../../services/producer/submit.js';
import { UsageError, defineCommand, positional } from '../args.js';
import { FRAME_OPTIONS, MODEL_OPTIONS, OPTIONS as O, QUEUE_OPTIONS, TILE_OPTIONS, allOptional, frameSpecFromOptions } from '../options.js';

const WORKER_KINDS = ['features', 'index', 'score', 'scheduler'] as const;

export const WORKER = defineCommand({
  name: 'worker',
  synopsis: `<${WORKER_KINDS.join('|')}>`,
  about: `Runs one worker of the distributed pipeline until SIGTERM/SIGINT (what each service's container runs).
Configuration from the environment: REDIS_URL, QUEUE_PREFIX, S3_ENDPOINT, S3_BUCKET, S3_REGION,
S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY, S3_FORCE_PATH_STYLE, WORKER_CONCURRENCY, HEALTH_PORT,
SHUTDOWN_GRACE_MS, LOCK_DURATION_MS, PATCHCORE_WEIGHTS, PATCHCORE_ENGINE, BATCH_SIZE, MODEL_CACHE_DIR.`,
  positionals: [positional('kind', z.enum(WORKER_KINDS, { error: 'expected features, index, score or scheduler' }))],
});
export const WORKER_USAGE = WORKER.usage;

export async function workerCommand(argv: string[]): Promise<void> {
  const { kind } = WORKER.parse(argv);
  const starters = {
    features: async () => (await import('../../services/feature-worker/main.js')).startFeatureWorker(),
    index: async () => (await import('../../services/index-worker/main.js')).startIndexWorker(),
    score: async () => (await import('../../services/scorer/main.js')).startScorer(),
    scheduler: async () => (await import('../../services/producer/main.js')).startScheduler(),
  };
  const service = await starters[kind]();
  await Promise.all(service.handles.map((h) => h.closed));
  await service.close();
}

function producerContext(name: string) {
  const log = createLogger(name);
  const store = ObjectStore.fromEnv();
  const redisConfig = redisConfigFromEnv();
  const connection = createRedisConnection(redisConfig, { mode: 'fail-fast', connectionName: name, logger: log });
  const flows = createFlowProducer(connection, redisConfig.prefix);
  const close = async () => {
    await flows.close();
    await connection.quit().catch(() => connection.disconnect());
    store.destroy();
  };
  return { log, store, connection, flows, prefix: redisConfig.prefix, close };
}

export const INGEST = defineCommand({
  name: 'ingest',
  synopsis: '<dir> --dataset <name>',
  about: `Uploads a local folder to datasets/<name>/ in the bucket (S3_* variables), every file under its relative path:
an MVTec AD category (train/good/, test/<type>/, ground_truth/<type>/) for --dataset runs, or images in any layout
for --images runs (an image's id is its path relative to the folder).`,
  positionals: [positional('dir')],
  options: [O.dataset],
});
export const INGEST_USAGE = INGEST.usage;

export async function ingestCommand(argv: string[]): Promise<void> {
  const opts = INGEST.parse(argv);
  const store = ObjectStore.fromEnv();
  try {
    await store.ensureBucket();
    const r = await ingestDataset(store, resolve(opts.dir), opts.dataset);
    process.stdout.write(JSON.stringify({ dataset: opts.dataset, prefix: r.prefix, files: r.files, images: r.images, layout: r.layout }) + '\n');
  } finally {
    store.destroy();
  }
}

const SUBMIT_TRAIN_FLAGS = defineCommand({
  name: 'submit train',
  synopsis: '--dataset <name> | --images <prefix> [options]',
  about: `The training images: --dataset <name> (its train/good/) or --images <prefix> (every image under it).
The workers use the --weights file; its sha256 goes into the jobs. Runs of more shards than --fan-in are reduced
as a tree; --coreset-size caps the bank and every reduce step. --from-version <v|latest> --images <prefix> adds new
good images to a version: a new version from that bank and the new images' coresets. --validation-split holds out
good images (as fit does) and scores them against the new bank: the model's threshold for submit score.`,
  options: [
    O.dataset.optional(), ...QUEUE_OPTIONS.filter((o) => o !== O.dataset), ...MODEL_OPTIONS, O['coreset-size'], O['per-shard-coreset'],
    O['fan-in'], O.images, O['from-version'], O['validation-split'], O['batch-size'], O.seed, ...FRAME_OPTIONS, ...allOptional(TILE_OPTIONS),
    O.version, O.weights,
  ],
});
/** --dataset stays required unless --images names the images instead. */
export const SUBMIT_TRAIN: typeof SUBMIT_TRAIN_FLAGS = {
  ...SUBMIT_TRAIN_FLAGS,
  parse(argv) {
    const o = SUBMIT_TRAIN_FLAGS.parse(argv);
    if (o.dataset === undefined && o.images === undefined) throw new UsageError('patchcore submit train: --dataset: is required');
    return o;
  },
};
export const SUBMIT_EVALUATE = defineCommand({
  name: 'submit evaluate',
  synopsis: '--dataset <name> [options]',
  options: [...QUEUE_OPTIONS, O['model-version']],
});
export const SUBMIT_SCORE = defineCommand({
  name: 'submit score',
  synopsis: '--images <prefix> [options]',
  about: `Scores every image under the prefix (any layout, no labels) with a model version: reports/<run>/results.csv and
results.jsonl (image, score, anomalous at the model's threshold, the key of its heatmap under reports/<run>/maps/),
summary.json and index.html (score distribution, most anomalous images). The threshold is the target FPR on the good
images the model held out at fit time (--validation-split); a model without them leaves "anomalous" empty.`,
  options: [O.images.required(), O.category, O['model-version'], O['target-fpr'], O['shard-size'], O['run-id'], O.wait],
});
export const SUBMIT_USAGE = `${SUBMIT_TRAIN.usage}\n${SUBMIT_EVALUATE.usage}\n${SUBMIT_SCORE.usage}`;

/** The feature workers run one fp32 backbone; an int8 model needs its ranges calibrated once and carried to every
 * worker, which distributed training does not do yet. Refused by name rather than as an unknown flag. */
export function refuseDistributedPrecision(argv: readonly string[]): void {
  const given = argv.find((a) => a === '--precision' || a.startsWith('--precision='));
  if (given === undefined) return;
  throw new UsageError('patchcore submit train: --precision is supported by local fit only for now '
    + '("patchcore fit --precision int8"); distributed training builds fp32 models');
}

export async function submitCommand(argv: string[]): Promise<void> {
  const [what, ...rest] = argv;
  if (what === 'score') return submitScoreCommand(rest);
  if (what !== 'train' && what !== 'evaluate') throw new UsageError('patchcore submit: expected "train", "evaluate" or "score"');
  // The flags are checked before connecting, so that a mistyped one is reported as such wherever Redis and S3 are.
  if (what === 'train') refuseDistributedPrecision(rest);
  const train = what === 'train' ? SUBMIT_TRAIN.parse(rest) : null;
  const evaluate = what === 'evaluate' ? SUBMIT_EVALUATE.parse(rest) : null;
  const ctx = producerContext('producer');
  try {
    let submitted;
    if (train) {
      const o = train;
      const weightsPath = resolve(o.weights);
      const fromParent = (flag: string) => o['from-version'] !== undefined && !rest.some((a) => a === `--${flag}` || a.startsWith(`--${flag}=`));
      submitted = await submitTraining(ctx, {
        dataset: o.dataset, images: o.images, fromVersion: o['from-version'], coresetSize: o['coreset-size'], fanIn: o['fan-in'],
        validationSplit: o['validation-split'], category: o.category, recipe: o.recipe, coresetRatio: o['coreset-ratio'],
        perShardCoresetRatio: o['per-shard-coreset'] ?? null, shardSize: o['shard-size'], batchSize: o['batch-size'],
        // An incremental run takes its parent's seed and frame unless they are given (the frame must then agree).
        seed: fromParent('seed') ? undefined : o.seed, runId: o['run-id'], version: o.version,
        frame: fromParent('resize') && fromParent('crop') && fromParent('frame') ? undefined : frameSpecFromOptions(o),
        weights: { file: weightsPath, sha256: await sha256File(weightsPath) },
      });
      process.stdout.write(JSON.stringify(submitted) + '\n');
      if (o.wait) await waitAndPrint(ctx, submitted.runId, 'training');
    } else {
      const o = evaluate!;
      submitted = await submitEvaluation(ctx, {
        dataset: o.dataset, category: o.category, version: o['model-version'], shardSize: o['shard-size'], runId: o['run-id'],
      });
      process.stdout.write(JSON.stringify(submitted) + '\n');
      if (o.wait) await waitAndPrint(ctx, submitted.runId, 'evaluation');
    }
  } finally {
    await ctx.close();
  }
}

async function submitScoreCommand(argv: string[]): Promise<void> {
  const o = SUBMIT_SCORE.parse(argv);
  const ctx = producerContext('producer');
  try {
    const submitted = await submitScoring(ctx, {
      images: o.images, category: o.category, version: o['model-version'], targetFpr: o['target-fpr'], shardSize: o['shard-size'], runId: o['run-id'],
    });
    process.stdout.write(JSON.stringify(submitted) + '\n');
    if (o.wait) await waitAndPrint(ctx, submitted.runId, 'evaluation');
  } finally {
    await ctx.close();
  }
}

/** Waits for a run with a progress bar over its shards; throws with the failure reasons if it fails. */
export async function watchRun(
  connection: Parameters<typeof waitForRun>[0], runId: string, kind: RunKind, prefix: string, log: ReturnType<typeof createLogger>,
  signal?: AbortSignal,
): Promise<RunProgress> {
  let bar: ReturnType<typeof startProgress> | null = null;
  let shown = 0;
  const final = await waitForRun(connection, runId, kind, prefix, {
    signal,
    onProgress: (p) => {
      bar ??= startProgress(`${kind} ${runId.slice(0, 24)}`, p.counts.total + 1, log);
      const done = p.counts.done + (p.state === 'completed' ? 1 : 0);
      if (done > shown) bar.tick(done - shown);
      shown = Math.max(shown, done);
    },
  });
  (bar as ReturnType<typeof startProgress> | null)?.stop();
  if (final.state === 'failed') {
    const reasons = final.failures.map((f) => `${f.jobId}: ${f.reason}`).join('\n  ');
    throw new Error(`${kind} run ${runId} failed:\n  ${reasons}`);
  }
  return final;
}

async function waitAndPrint(ctx: ReturnType<typeof producerContext>, runId: string, kind: RunKind): Promise<void> {
  const final = await watchRun(ctx.connection, runId, kind, ctx.prefix, ctx.log);
  process.stdout.write(JSON.stringify({ runId, state: final.state, result: final.parent?.returnValue ?? null }) + '\n');
}

export const STATUS = defineCommand({
  name: 'status',
  synopsis: '<run id> [--watch]',
  about: 'Shows a run\'s state and its shards\' progress.',
  positionals: [positional('run')],
  options: [O.watch],
});
export const STATUS_USAGE = STATUS.usage;

export async function statusCommand(argv: string[]): Promise<void> {
  const o = STATUS.parse(argv);
  const ctx = producerContext('status');
  try {
    const kind = await runKindOf(ctx.connection, o.run, ctx.prefix);
    if (!kind) throw new Error(`no run "${o.run}" in the queues (QUEUE_PREFIX "${ctx.prefix}")`);
    const p = o.watch ? await watchRun(ctx.connection, o.run, kind, ctx.prefix, ctx.log) : await runProgress(ctx.connection, o.run, kind, { prefix: ctx.prefix });
    process.stdout.write(JSON.stringify(p, null, 2) + '\n');
  } finally {
    await ctx.close();
  }
}

export const REPORT_GET = defineCommand({
  name: 'report get',
  synopsis: '<run id> <dir>',
  about: 'Downloads reports/<run id>/ (metrics.json, scores.csv, index.html, plots, gallery) into <dir>.',
  positionals: [positional('run'), positional('dir')],
});
export const REPORT_USAGE = REPORT_GET.usage;

export async function reportCommand(argv: string[]): Promise<void> {
  const [what, ...rest] = argv;
  if (what !== 'get') throw new UsageError('patchcore report: expected "get"');
  const o = REPORT_GET.parse(rest);
  const store = ObjectStore.fromEnv();
  try {
    const r = await store.downloadPrefix(reportPrefix(o.run), resolve(o.dir));
    if (r.files === 0) throw new Error(`run "${o.run}" has no report in the bucket (nothing under ${reportPrefix(o.run)})`);
    process.stdout.write(JSON.stringify({ run: o.run, dir: resolve(o.dir), files: r.files, bytes: r.bytes }) + '\n');
  } finally {
    store.destroy();
  }
}

export const SCHEDULE_SET = defineCommand({
  name: 'schedule set',
  synopsis: '<category> --dataset <name> --cron "<expr>" [options]',
  positionals: [positional('category')],
  // What is not given stays out of the schedule: each run applies the defaults of its time.
  options: [O.dataset, O.cron, O.tz, ...allOptional([...MODEL_OPTIONS, O['coreset-size'], O['per-shard-coreset'], O['fan-in'], O['shard-size'], O['validation-split']])],
});
export const SCHEDULE_LIST = defineCommand({ name: 'schedule list' });
export const SCHEDULE_REMOVE = defineCommand({ name: 'schedule remove', positionals: [positional('category')] });
export const SCHEDULE_USAGE = `${SCHEDULE_SET.usage}
${SCHEDULE_LIST.usage}
${SCHEDULE_REMOVE.usage}
  Scheduled retraining with a BullMQ job scheduler: at every cron tick a \`patchcore worker scheduler\` process submits
  a training run of the dataset; each run writes a new model version and moves the category's latest pointer
  only once that version is complete.`;

export async function scheduleCommand(argv: string[]): Promise<void> {
  const [what, ...rest] = argv;
  // The flags are checked before connecting, so that a mistyped one is reported as such wherever Redis is.
  const set = what === 'set' ? SCHEDULE_SET.parse(rest) : null;
  const remove = what === 'remove' ? SCHEDULE_REMOVE.parse(rest) : null;
  if (what === 'list') SCHEDULE_LIST.parse(rest);
  if (!set && !remove && what !== 'list') throw new UsageError('patchcore schedule: expected "set", "list" or "remove"');
  const ctx = producerContext('schedule');
  try {
    if (set) {
      const o = set;
      const r = await setSchedule(ctx.connection, ctx.prefix, {
        category: o.category, dataset: o.dataset, cron: o.cron, tz: o.tz, recipe: o.recipe, coresetRatio: o['coreset-ratio'],
        perShardCoresetRatio: o['per-shard-coreset'] ?? null, shardSize: o['shard-size'],
        coresetSize: o['coreset-size'], fanIn: o['fan-in'], validationSplit: o['validation-split'],
      });
      process.stdout.write(JSON.stringify({ scheduler: r.id, next: r.next ? new Date(r.next).toISOString() : null }) + '\n');
    } else if (remove) {
      const o = remove;
      const removed = await removeSchedule(ctx.connection, ctx.prefix, o.category);
      if (!removed) throw new Error(`no retraining schedule for category "${o.category}"`);
      process.stdout.write(JSON.stringify({ removed: o.category }) + '\n');
    } else {
      process.stdout.write(JSON.stringify(await listSchedules(ctx.connection, ctx.prefix), null, 2) + '\n');
    }
  } finally {
    await ctx.close();
  }
}
