// The scale benchmark: training, evaluation and unlabelled scoring through the real queue and worker processes, on
// synthetic archives of growing size (not part of the tests; docs/scale.md reads its figures).
//
//   npm run scale -- --images 1000,4000,16000 [--json <file>] [--fan-in F] [--bank-rows N] [--workers k]
//                    [--per-shard-coreset r] [--shard-size n] [--data <category dir>] [--seed n]
//
// It starts a private redis-server and s3rver, writes one nested archive (scripts/scale-archive.ts: image i is the
// same at every size) and then, per size, with fresh worker processes (k feature workers, an index worker, a scorer):
// trains a model with the same bank size at every size, evaluates it on the category's test set (bottle by default),
// and scores the archive's first 4,000 images (all, when fewer) as an unlabelled run. The smallest size is also
// trained as today's single pass (one global coreset over every patch) for the quality comparison.
//
// Peak RSS is each worker process's kernel high-water mark (VmHWM in /proc/<pid>/status), reset through
// /proc/<pid>/clear_refs when a phase starts, so a phase's peak is its own: the scorer's "score" peak covers its
// score-shard jobs, its "report" peak the report job (reset when that job's start is logged). Linux only.
//
// Training goes through the reduce tree (`submit train --images --fan-in --coreset-size`), the single pass through
// the same flow with no per-shard coreset and one merge step, and the unlabelled run through `submit score --images`.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { pathToFileURL } from 'node:url';
import { Queue } from 'bullmq';
import { watchRun } from '../cli/commands/pipeline.js';
import { accountRun } from '../shared/distributed/accounting.js';
import { UserError } from '../shared/errors.js';
import { createLogger, type Logger } from '../shared/log.js';
import { BACKBONE_LAYERS, INPUT_NAME, opsUpTo } from '../shared/backbone/resnet50.js';
import { defaultDatasetDir } from '../shared/paths.js';
import { startProgress } from '../shared/run/progress.js';
import { jobIds, type RunKind, type RunProgress } from '../shared/queue/flows.js';
import { datasetPrefix, modelVersionPrefix, reportKey, reportPrefix, runPrefix, shardName } from '../shared/storage/keys.js';
import type { ObjectStore } from '../shared/storage/object-store.js';
import { submitEvaluation, submitScoring, submitTraining, type ProducerContext } from '../services/producer/submit.js';
import { PAYLOAD_LIMITS } from '../shared/queue/jobs.js';
import { PAPER_FRAME_SPEC } from '../shared/image/index.js';
import { Cluster, type WorkerKind, type WorkerProcess } from '../test/faults/harness.js';
import { archiveImageName, writeArchive, type ArchiveTarget } from './scale-archive.js';

/** Patches per training image: the paper recipe's 28x28 grid at the default 224 crop. */
export const PATCHES_PER_IMAGE = 28 * 28;
/** The unlabelled run scores the archive's first this many images. */
export const UNLABELLED_MAX = 4000;

export interface PeakRss {
  features: number;
  index: number;
  score: number;
  report: number;
}

export interface Metrics {
  image_auroc: number;
  pixel_auroc: number;
  aupro: number;
}

/** One training at one archive size, with its evaluation and (tree runs) its unlabelled scoring. */
export interface SizeResult {
  images: number;
  patches: number;
  /** Training wall time, submit to published model. */
  wall_s: number;
  images_per_s: number;
  peak_rss_mib: PeakRss;
  bank_rows: number;
  metrics: Metrics;
  flow: string;
  fan_in: number | null;
  shards: number;
  /** Seconds per stage summed over the training run's jobs (compute, storage and queue wait per stage). */
  stages_s: Record<string, number>;
  /** Seconds per stage of the run's last job alone (today the index job: merge, global coreset, index, save). */
  root_job_s: Record<string, number>;
  bytes_written: { training: number; model: number; evaluation: number; unlabelled: number };
  evaluation: { images: number; wall_s: number; peak_rss_mib: { score: number; report: number }; stages_s: Record<string, number> };
  unlabelled: { images: number; wall_s: number; images_per_s: number; peak_rss_mib: { score: number; report: number }; stages_s: Record<string, number> } | null;
  redis: { jobs: number; bytes_per_job: number; used_memory_end_bytes: number };
}

export interface ScaleReport {
  sizes: SizeResult[];
  single_pass: SizeResult | null;
  settings: { bank_rows: number; fan_in: number | null; workers: number; shard_size: number; per_shard_coreset: number; seed: number; data: string };
  archive: { images: number; bytes: number; wall_s: number };
  /** Redis memory per queued feature job, measured on a throwaway queue (measureRedisBytesPerJob). */
  redis_probe: { jobs: number; payload_bytes: number; bytes_per_job: number };
  host: { cpus: number; loadavg: number[] };
  /** backboneMacs(224) in billions: the GPU estimate's starting point. */
  backbone_gmac_per_image: number;
}

export interface ScaleOptions {
  sizes: number[];
  bankRows: number;
  fanIn: number | null;
  workers: number;
  shardSize: number;
  perShardCoreset: number;
  seed: number;
  data: string;
}

const USAGE = `usage: npm run scale -- --images 1000,4000,16000 [--json <file>] [--fan-in F] [--bank-rows N] [--workers k]
       [--per-shard-coreset r] [--shard-size n] [--data <category dir>] [--seed n]`;

export function parseScaleArgs(argv: string[]): ScaleOptions & { json?: string } {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      options: {
        images: { type: 'string', default: '1000,4000,16000' }, json: { type: 'string' }, 'fan-in': { type: 'string' },
        'bank-rows': { type: 'string', default: '16384' }, workers: { type: 'string', default: '2' },
        'per-shard-coreset': { type: 'string', default: '0.1' }, 'shard-size': { type: 'string', default: '32' },
        data: { type: 'string', default: defaultDatasetDir('bottle') }, seed: { type: 'string', default: '1' },
        help: { type: 'boolean' },
      },
    });
  } catch (err) {
    throw new UserError((err as Error).message);
  }
  const a = parsed.values;
  if (a.help) {
    process.stdout.write(`${USAGE}\n`);
    process.exit(0);
  }
  const int = (flag: string, text: string, min = 1) => {
    const n = Number(text);
    if (!Number.isInteger(n) || n < min) throw new UserError(`--${flag}: expected an integer >= ${min}, got "${text}"`);
    return n;
  };
  const sizes = [...new Set(a.images!.split(',').map((s) => int('images', s.trim())))].sort((x, y) => x - y);
  const perShard = Number(a['per-shard-coreset']);
  if (!(perShard > 0 && perShard <= 1)) throw new UserError(`--per-shard-coreset: expected a ratio in (0, 1], got "${a['per-shard-coreset']}"`);
  return {
    sizes, bankRows: int('bank-rows', a['bank-rows']!), fanIn: a['fan-in'] === undefined ? null : int('fan-in', a['fan-in'], 2),
    workers: int('workers', a.workers!), shardSize: int('shard-size', a['shard-size']!), perShardCoreset: perShard,
    seed: int('seed', a.seed!, 0), data: a.data!, json: a.json,
  };
}

// ---- peak RSS from /proc -----------------------------------------------------------------------------------------

/**
 * Multiply-accumulates of the backbone part PatchCore runs (conv1 to conv4_block6, shared/backbone/resnet50.ts) on
 * one `side` x `side` image: the convolutions only (BN is folded into them; pooling and adds are negligible).
 * The GPU estimate of docs/scale.md starts from it.
 */
export function backboneMacs(side = 224): number {
  const sides = new Map<string, number>([[INPUT_NAME, side]]);
  let macs = 0;
  for (const op of opsUpTo([...BACKBONE_LAYERS])) {
    const inSide = sides.get(op.inputs[0]);
    if (inSide === undefined) throw new Error(`backboneMacs: ${op.name} reads ${op.inputs[0]}, which no earlier op writes`);
    if (op.kind === 'add') {
      sides.set(op.output, inSide);
      continue;
    }
    const out = Math.floor((inSide + 2 * op.pad - op.kernel) / op.stride) + 1;
    sides.set(op.output, out);
    if (op.kind === 'conv') macs += out * out * op.kernel * op.kernel * op.inChannels * op.outChannels;
  }
  return macs;
}

/** A process's peak RSS since start or since the last resetPeakRss, in MiB. */
export function peakRssOf(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const m = /^VmHWM:\s+(\d+) kB/m.exec(status);
  if (!m) throw new Error(`/proc/${pid}/status has no VmHWM line`);
  return Math.round(Number(m[1]) / 1024);
}

/** Resets the process's peak RSS to its current RSS (Linux: "5" to clear_refs). */
export function resetPeakRss(pid: number): void {
  writeFileSync(`/proc/${pid}/clear_refs`, '5');
}

// ---- adapters to the flows -------------------------------------------------------------------------------------

interface Submitted {
  runId: string;
  kind: RunKind;
  /** Jobs the run put in Redis. */
  jobs: number;
  shards: number;
}

interface TrainingAsk {
  dataset: string;
  category: string;
  version: string;
  runId: string;
  images: number;
  bankRows: number;
  fanIn: number | null;
  perShardCoreset: number;
  shardSize: number;
  weights: Cluster['weights'];
}

/** The paper frame (784 patches per image), pinned so that patch counts match docs/scale.md whatever the default frame. */
const SCALE_FRAME = PAPER_FRAME_SPEC;

/**
 * The scalable training flow: the reduce tree (`submit train --images <archive> --fan-in F --coreset-size <bank
 * rows>`), every feature shard first reduced by its own coreset, then groups of at most F merged level by level.
 */
async function submitTreeTraining(ctx: ProducerContext, t: TrainingAsk): Promise<Submitted & { flow: string }> {
  const r = await submitTraining(ctx, {
    images: datasetPrefix(t.dataset), category: t.category, version: t.version, runId: t.runId, shardSize: t.shardSize,
    coresetSize: t.bankRows, ...(t.fanIn !== null ? { fanIn: t.fanIn } : {}), perShardCoresetRatio: t.perShardCoreset,
    frame: SCALE_FRAME, weights: t.weights,
  });
  return { runId: r.runId, kind: 'training', jobs: r.shards + (r.tree?.nodes ?? 0) + 1, shards: r.shards, flow: r.tree && r.tree.depth > 1 ? 'reduce-tree' : 'merge-and-reduce' };
}

/**
 * Today's single pass for the quality comparison: every patch of every image into one coreset of the same bank size
 * in the root job (no per-shard coreset; the fan-in at its maximum so that the shards are merged in one step).
 */
async function submitSinglePass(ctx: ProducerContext, t: TrainingAsk): Promise<Submitted & { flow: string }> {
  const r = await submitTraining(ctx, {
    images: datasetPrefix(t.dataset), category: t.category, version: t.version, runId: t.runId, shardSize: t.shardSize,
    coresetSize: t.bankRows, fanIn: PAYLOAD_LIMITS.fanIn, perShardCoresetRatio: null, frame: SCALE_FRAME, weights: t.weights,
  });
  if (r.tree && r.tree.depth > 1) throw new Error(`single pass over ${t.images} images needs more than ${PAYLOAD_LIMITS.fanIn} shards: raise --shard-size`);
  return { runId: r.runId, kind: 'training', jobs: r.shards + 1, shards: r.shards, flow: 'single-pass' };
}

/** Unlabelled scoring of the archive's first `count` images (`submit score --images <prefix>`), at the model's threshold. */
async function submitUnlabelled(ctx: ProducerContext, u: { dataset: string; category: string; version: string; runId: string; shardSize: number }): Promise<Submitted> {
  const r = await submitScoring(ctx, { images: datasetPrefix(u.dataset), category: u.category, version: u.version, runId: u.runId, shardSize: u.shardSize });
  return { runId: r.runId, kind: 'evaluation', jobs: r.shards + 1, shards: r.shards };
}

// ---- the benchmark ---------------------------------------------------------------------------------------------

const round = (x: number, digits = 3): number => Number(x.toFixed(digits));
const toSeconds = (ms: number): number => round(ms / 1000, 2);
const say = (line: string): void => void process.stdout.write(`${line}\n`);

async function prefixBytes(store: ObjectStore, prefix: string): Promise<number> {
  let n = 0;
  for await (const o of store.list(prefix)) n += o.size;
  return n;
}

async function redisUsedMemory(c: Cluster): Promise<number> {
  const m = /^used_memory:(\d+)/m.exec(await c.connection.info('memory'));
  if (!m) throw new Error('Redis INFO memory has no used_memory line');
  return Number(m[1]);
}

/**
 * Redis memory per queued job, from INFO used_memory around `jobs` jobs added to a throwaway queue with the payload
 * of a feature shard of `shardSize` archive images (the bulk of a training run's jobs); the queue is removed after.
 */
export async function measureRedisBytesPerJob(c: Cluster, jobs: number, shardSize: number): Promise<{ jobs: number; payload_bytes: number; bytes_per_job: number }> {
  const queue = new Queue('scale-redis-probe', { connection: c.connection, prefix: c.redisConfig.prefix });
  try {
    const payload = (i: number) => ({
      runId: 'scale-probe-train', shardId: shardName(i % 10000), datasetPrefix: datasetPrefix('scale-16000'),
      imageKeys: Array.from({ length: shardSize }, (_, k) => `${datasetPrefix('scale-16000')}train/good/${archiveImageName(i * shardSize + k)}`),
      recipe: 'paper', frame: { resize: 256, crop: 224 }, weights: { sha256: 'f'.repeat(64) }, perShardCoreset: { ratio: 0.1, seed: 0 }, batchSize: 8,
    });
    await queue.add('warm-up', payload(0)); // the queue's own keys, not a job's share
    const before = await redisUsedMemory(c);
    for (let i = 0; i < jobs; i += 500) {
      await queue.addBulk(Array.from({ length: Math.min(500, jobs - i) }, (_, k) => ({
        name: 'extract-features', data: payload(i + k), opts: { jobId: `scale-probe~features~${i + k}` },
      })));
    }
    const after = await redisUsedMemory(c);
    return { jobs, payload_bytes: JSON.stringify(payload(0)).length, bytes_per_job: Math.round((after - before) / jobs) };
  } finally {
    await queue.obliterate({ force: true });
    await queue.close();
  }
}

/** Seconds per stage of a run's jobs, with their compute, storage and queue-wait totals. */
async function runStages(c: Cluster, s: Submitted): Promise<Record<string, number>> {
  const shards = Array.from({ length: s.shards }, (_, i) => shardName(i));
  const t = await accountRun(c.connection, c.redisConfig.prefix, s.runId, s.kind, shards);
  const out: Record<string, number> = { compute: toSeconds(t.compute_ms), storage: toSeconds(t.storage_ms) };
  if (t.queue_wait_ms !== null) out.queue_wait = toSeconds(t.queue_wait_ms);
  for (const [stage, ms] of Object.entries(t.by_stage_ms)) out[stage] = toSeconds(ms);
  return out;
}

/** Names of the archive datasets: one per training size, one per unlabelled run, one for the labelled test set. */
export const datasets = {
  archive: (images: number) => `scale-${images}`,
  unlabelled: (images: number) => `scale-unlabelled-${images}`,
  test: 'scale-test',
};

/** Where the archive's images go: training sizes under train/good/, the unlabelled sets under test/good/. */
export function archiveTargets(sizes: number[]): ArchiveTarget[] {
  return [
    ...sizes.map((n) => ({ prefix: `${datasetPrefix(datasets.archive(n))}train/good/`, count: n })),
    ...unlabelledSizes(sizes).map((n) => ({ prefix: `${datasetPrefix(datasets.unlabelled(n))}test/good/`, count: n })),
  ];
}

/** The unlabelled runs' sizes: the archive's first UNLABELLED_MAX images at most. */
export const unlabelledSizes = (sizes: number[]): number[] => [...new Set(sizes.map((n) => Math.min(n, UNLABELLED_MAX)))];

class ScaleBench {
  private workers: WorkerProcess[] = [];
  private stopping = false;
  private abort = new AbortController();
  private spawned = 0;

  constructor(private readonly c: Cluster, private readonly o: ScaleOptions, private readonly log: Logger, private readonly workDir: string) {}

  private get ctx(): ProducerContext {
    return { store: this.c.store, flows: this.c.flows, log: this.log };
  }

  /** Fresh worker processes, so that each size's peaks are its own. A worker that dies stops the benchmark. */
  private async startWorkers(): Promise<void> {
    this.stopping = false;
    this.abort = new AbortController();
    const kinds: WorkerKind[] = [...Array<WorkerKind>(this.o.workers).fill('features'), 'index', 'score'];
    // Model caches inside the benchmark's own folder, removed with it.
    this.workers = await Promise.all(kinds.map((k, i) => this.c.spawn(k, { MODEL_CACHE_DIR: join(this.workDir, `model-cache-${++this.spawned}-${i}`) })));
    for (const w of this.workers) {
      void w.exited.then(() => {
        if (this.stopping) return;
        this.log.error({ worker: w.name, log: w.tail(20) }, 'a worker exited unexpectedly: stopping the benchmark');
        this.abort.abort();
      });
    }
  }

  private async stopWorkers(): Promise<void> {
    this.stopping = true;
    await Promise.all(this.workers.map((w) => w.kill('SIGTERM')));
    this.workers = [];
  }

  private pids(kind: WorkerKind): number[] {
    return this.workers.filter((w) => w.kind === kind).map((w) => w.child.pid!);
  }

  private peak(kind: WorkerKind): number {
    return Math.max(...this.pids(kind).map(peakRssOf));
  }

  private wait(s: Submitted): Promise<RunProgress> {
    return watchRun(this.c.connection, s.runId, s.kind, this.c.redisConfig.prefix, this.log, this.abort.signal);
  }

  /** A scoring run (evaluation or unlabelled) with the scorer's peak RSS over its score jobs and over its report job. */
  private async scoringRun(submit: () => Promise<Submitted>) {
    const scorer = this.workers.find((w) => w.kind === 'score')!;
    const pid = scorer.child.pid!;
    resetPeakRss(pid);
    const t0 = performance.now();
    const submitted = await submit();
    let scorePeak = 0;
    const reportStarted = scorer.waitForLog('the report job to start', (e) => e.msg === 'job started' && e.jobId === jobIds.report(submitted.runId), 24 * 3600_000)
      .then(() => {
        scorePeak = peakRssOf(pid);
        resetPeakRss(pid);
      });
    reportStarted.catch(() => {}); // awaited below; a run that fails first reports its own error
    await this.wait(submitted);
    const wall = (performance.now() - t0) / 1000;
    await reportStarted;
    const peak = { score: scorePeak, report: peakRssOf(pid) };
    const bytes = (await prefixBytes(this.c.store, runPrefix(submitted.runId))) + (await prefixBytes(this.c.store, reportPrefix(submitted.runId)));
    return { submitted, wall_s: round(wall, 1), peak, bytes, stages_s: await runStages(this.c, submitted) };
  }

  /** One size: train (the tree flow, or today's single pass), evaluate, and for the tree score the unlabelled set. */
  async runSize(images: number, mode: 'tree' | 'single'): Promise<SizeResult> {
    const dataset = datasets.archive(images);
    const category = mode === 'tree' ? dataset : `${dataset}-single`;
    const version = 'v1';
    await this.startWorkers();
    try {
      const ask: TrainingAsk = {
        dataset, category, version, runId: `${category}-train`, images, bankRows: this.o.bankRows, fanIn: this.o.fanIn,
        perShardCoreset: this.o.perShardCoreset, shardSize: this.o.shardSize, weights: this.c.weights,
      };
      say(`${category}: training on ${images} images (${mode === 'tree' ? 'scalable flow' : 'single pass'})`);
      const redisBefore = await redisUsedMemory(this.c);
      const t0 = performance.now();
      const submitted = await (mode === 'tree' ? submitTreeTraining : submitSinglePass)(this.ctx, ask);
      const redisAfter = await redisUsedMemory(this.c);
      const trained = await this.wait(submitted);
      const wall = (performance.now() - t0) / 1000;
      const result = trained.parent?.returnValue as { bank: number; trainPatches: number; images: number; timings_ms?: Record<string, number> } | undefined;
      if (!result) throw new Error(`training run ${submitted.runId} completed without a result`);
      const features = this.peak('features');
      const index = this.peak('index');

      say(`${category}: evaluating on ${this.o.data}`);
      const evaluation = await this.scoringRun(() => submitEvaluation(this.ctx, {
        dataset: datasets.test, category, version, runId: `${category}-eval`, shardSize: this.o.shardSize,
      }).then((r) => ({ runId: r.runId, kind: 'evaluation' as const, jobs: r.shards + 1, shards: r.shards })));
      const m = JSON.parse((await this.c.store.getObject(reportKey(evaluation.submitted.runId, 'metrics.json'))).toString()) as Metrics & { images: number };

      let unlabelled: Awaited<ReturnType<ScaleBench['scoringRun']>> | null = null;
      const u = Math.min(images, UNLABELLED_MAX);
      if (mode === 'tree') {
        say(`${category}: scoring ${u} unlabelled archive images`);
        unlabelled = await this.scoringRun(() => submitUnlabelled(this.ctx, {
          dataset: datasets.unlabelled(u), category, version, runId: `${category}-unlabelled`, shardSize: this.o.shardSize,
        }));
      }
      const out: SizeResult = {
        images: result.images,
        patches: result.trainPatches,
        wall_s: round(wall, 1),
        images_per_s: round(result.images / wall, 2),
        peak_rss_mib: {
          features, index,
          score: Math.max(evaluation.peak.score, unlabelled?.peak.score ?? 0),
          report: Math.max(evaluation.peak.report, unlabelled?.peak.report ?? 0),
        },
        bank_rows: result.bank,
        metrics: { image_auroc: m.image_auroc, pixel_auroc: m.pixel_auroc, aupro: m.aupro },
        flow: submitted.flow,
        fan_in: this.o.fanIn,
        shards: submitted.shards,
        stages_s: await runStages(this.c, submitted),
        root_job_s: Object.fromEntries(Object.entries(result.timings_ms ?? {}).map(([k, ms]) => [k, toSeconds(ms)])),
        bytes_written: {
          training: await prefixBytes(this.c.store, runPrefix(submitted.runId)),
          model: await prefixBytes(this.c.store, modelVersionPrefix(category, version)),
          evaluation: evaluation.bytes,
          unlabelled: unlabelled?.bytes ?? 0,
        },
        evaluation: { images: m.images, wall_s: evaluation.wall_s, peak_rss_mib: evaluation.peak, stages_s: evaluation.stages_s },
        unlabelled: unlabelled && {
          images: u, wall_s: unlabelled.wall_s, images_per_s: round(u / unlabelled.wall_s, 2), peak_rss_mib: unlabelled.peak,
          stages_s: unlabelled.stages_s,
        },
        redis: {
          jobs: submitted.jobs, bytes_per_job: Math.round((redisAfter - redisBefore) / submitted.jobs),
          used_memory_end_bytes: await redisUsedMemory(this.c),
        },
      };
      say(`${category}: ${out.images} images in ${out.wall_s} s (${out.images_per_s} img/s), bank ${out.bank_rows} rows, `
        + `peak RSS MiB ${JSON.stringify(out.peak_rss_mib)}, image AUROC ${round(m.image_auroc, 4)}, pixel AUROC ${round(m.pixel_auroc, 4)}, AUPRO ${round(m.aupro, 4)}`);
      return out;
    } finally {
      await this.stopWorkers();
    }
  }
}

export async function runScale(o: ScaleOptions): Promise<ScaleReport> {
  const log = createLogger('scale');
  const c = await Cluster.start({
    workers: [],
    // The default job lock: a long coreset on busy cores must not look like a dead worker.
    env: { LOCK_DURATION_MS: '60000', SHUTDOWN_GRACE_MS: '10000' },
    bucket: 'patchcore-scale',
  });
  // Straight to s3rver: the harness's fault proxy would only add a hop (and CPU) to every transfer.
  c.env.S3_ENDPOINT = c.s3.endpoint;
  const workDir = mkdtempSync(join(tmpdir(), 'patchcore-scale-'));
  // The harness kills every process it started on exit and Ctrl-C; the archive and the model caches go too.
  const removeArchive = () => {
    rmSync(c.s3.directory, { recursive: true, force: true });
    rmSync(workDir, { recursive: true, force: true });
  };
  process.once('exit', removeArchive);
  try {
    say(`scale: sizes ${o.sizes.join(', ')}; bank ${o.bankRows} rows; ${o.workers} feature workers; data ${o.data}`);
    const redisProbe = await measureRedisBytesPerJob(c, 2000, o.shardSize);
    say(`scale: Redis holds ${redisProbe.bytes_per_job} bytes per queued feature job (${redisProbe.payload_bytes}-byte payload)`);
    const testPrefix = datasetPrefix(datasets.test);
    await c.store.uploadDir(join(o.data, 'test'), `${testPrefix}test/`);
    await c.store.uploadDir(join(o.data, 'ground_truth'), `${testPrefix}ground_truth/`);

    const targets = archiveTargets(o.sizes);
    const total = Math.max(...targets.map((t) => t.count));
    const bar = startProgress('archive', total, log);
    const t0 = performance.now();
    const bytes = await writeArchive(c.store, targets, { seed: o.seed, sourceDir: join(o.data, 'train', 'good'), onImage: () => bar.tick() });
    bar.stop();
    const archive = { images: total, bytes: [...bytes.values()].reduce((a, b) => a + b, 0), wall_s: round((performance.now() - t0) / 1000, 1) };
    say(`scale: archive of ${total} images written in ${archive.wall_s} s (${archive.bytes} bytes over ${targets.length} prefixes)`);

    const bench = new ScaleBench(c, o, log, workDir);
    const sizes: SizeResult[] = [];
    let singlePass: SizeResult | null = null;
    for (const n of o.sizes) {
      sizes.push(await bench.runSize(n, 'tree'));
      if (n === o.sizes[0]) singlePass = await bench.runSize(n, 'single');
    }
    return {
      sizes, single_pass: singlePass,
      settings: {
        bank_rows: o.bankRows, fan_in: o.fanIn, workers: o.workers, shard_size: o.shardSize, per_shard_coreset: o.perShardCoreset,
        seed: o.seed, data: o.data,
      },
      archive,
      redis_probe: redisProbe,
      host: { cpus: cpus().length, loadavg: loadavg().map((l) => round(l, 2)) },
      backbone_gmac_per_image: round(backboneMacs(224) / 1e9, 3),
    };
  } finally {
    await c.stop();
    removeArchive();
    process.off('exit', removeArchive);
  }
}

/** The summary table: one line per size. */
export function formatScaleTable(r: ScaleReport): string {
  const rows = [['run', 'images', 'patches', 'wall s', 'img/s', 'bank', 'RSS feat', 'RSS index', 'RSS score', 'RSS report', 'img AUROC', 'px AUROC', 'AUPRO']];
  const line = (name: string, s: SizeResult) => [
    name, s.images, s.patches, s.wall_s, s.images_per_s, s.bank_rows, s.peak_rss_mib.features, s.peak_rss_mib.index,
    s.peak_rss_mib.score, s.peak_rss_mib.report, s.metrics.image_auroc.toFixed(4), s.metrics.pixel_auroc.toFixed(4), s.metrics.aupro.toFixed(4),
  ].map(String);
  for (const s of r.sizes) rows.push(line(s.flow, s));
  if (r.single_pass) rows.push(line('single-pass', r.single_pass));
  const widths = rows[0].map((_, i) => Math.max(...rows.map((row) => row[i].length)));
  return rows.map((row) => row.map((v, i) => v.padStart(widths[i])).join('  ')).join('\n');
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  try {
    const o = parseScaleArgs(process.argv.slice(2));
    const report = await runScale(o);
    say(formatScaleTable(report));
    if (o.json) writeFileSync(o.json, JSON.stringify(report, null, 2) + '\n');
    say(JSON.stringify(report));
  } catch (err) {
    if (err instanceof UserError) {
      process.stderr.write(`scale: ${err.message}\n${USAGE}\n`);
      process.exitCode = 2;
    } else throw err;
  }
}
