// Runs as BullMQ flows: a parent job that becomes runnable once all its shard children completed.
//   training:   build-index (patchcore-index)  <- extract-features x shards (patchcore-features)
//               or, with more shards than the fan-in, a reduce tree:
//               build-index <- reduce (patchcore-reduce) <- ... <- reduce <- extract-features, at most F inputs a node
//   evaluation: report      (patchcore-report) <- score-shard x shards      (patchcore-score)
//   (an unlabelled scoring run is an evaluation flow whose report payload carries `unlabelled`)
//
// Job ids are derived from the run and shard ids ("<run>~features~<shard>"), so submitting a run twice
// adds nothing the second time: BullMQ ignores an add whose job id exists. '~' cannot occur in run or
// shard ids, so an id splits back unambiguously, and BullMQ forbids ':' in custom ids.
//
// A child that fails its last attempt fails the parent (failParentOnFailure): the run then ends
// 'failed' instead of waiting for ever, and `status` shows the child's reason.
import { createHash } from 'node:crypto';
import { FlowProducer, Queue, type FlowJob, type Job, type JobsOptions, type JobState } from 'bullmq';
import type { Redis } from 'ioredis';
import { DEFAULT_QUEUE_PREFIX } from './config.js';
import {
  defaultJobOptions,
  idProblem,
  validatePayload,
  FEATURES_QUEUE,
  INDEX_QUEUE,
  PAYLOAD_LIMITS,
  REDUCE_QUEUE,
  REPORT_QUEUE,
  SCORE_QUEUE,
  type BuildIndexPayload,
  type ExtractFeaturesPayload,
  type QueueName,
  type ReduceInput,
  type ReducePayload,
  type ReportPayload,
  type ScoreShardPayload,
} from './jobs.js';

const SEP = '~';

export const jobIds = {
  buildIndex: (runId: string) => `${runId}${SEP}index`,
  extractFeatures: (runId: string, shardId: string) => `${runId}${SEP}features${SEP}${shardId}`,
  report: (runId: string) => `${runId}${SEP}report`,
  scoreShard: (runId: string, shardId: string) => `${runId}${SEP}score${SEP}${shardId}`,
  /** A reduce-tree node "<level>-<index>". */
  reduce: (runId: string, node: string) => `${runId}${SEP}reduce${SEP}${node}`,
};

/** Inputs merged by one reduce step unless `--fan-in` says otherwise: runs of up to this many shards need no tree. */
export const DEFAULT_FAN_IN = 8;

/** The job id of one input of a reduce step or of the root. */
export function inputJobId(runId: string, input: ReduceInput): string {
  return input.kind === 'shard' ? jobIds.extractFeatures(runId, input.id) : jobIds.reduce(runId, input.id);
}

export interface ReduceNodePlan {
  /** "<level>-<index>": level 1 merges shards, level 2 merges level-1 outputs, ... */
  node: string;
  inputs: ReduceInput[];
}

export interface ReduceTreePlan {
  nodes: ReduceNodePlan[];
  /** What the root (build-index) merges: at most fan-in inputs. */
  rootInputs: ReduceInput[];
  /** Levels of merging, the root included: ceil(log_F(shards)), 1 for a run of at most F shards. */
  depth: number;
}

/**
 * The reduce tree over `shardIds` in their order: consecutive groups of at most `fanIn` become one node of the next
 * level until at most `fanIn` remain, which the root merges. A group of one is passed up as it is (no node of one
 * input). The same shards and fan-in always give the same tree, so node ids are stable across resubmissions.
 */
export function planReduceTree(shardIds: readonly string[], fanIn: number): ReduceTreePlan {
  if (!Number.isInteger(fanIn) || fanIn < 2 || fanIn > PAYLOAD_LIMITS.fanIn) {
    throw new Error(`fan-in ${fanIn} is invalid: expected an integer from 2 to ${PAYLOAD_LIMITS.fanIn}`);
  }
  let layer: ReduceInput[] = shardIds.map((id) => ({ kind: 'shard', id }));
  const nodes: ReduceNodePlan[] = [];
  let level = 0;
  while (layer.length > fanIn) {
    level++;
    const next: ReduceInput[] = [];
    for (let g = 0; g * fanIn < layer.length; g++) {
      const members = layer.slice(g * fanIn, (g + 1) * fanIn);
      if (members.length === 1) {
        next.push(members[0]);
        continue;
      }
      const node = `${level}-${g}`;
      nodes.push({ node, inputs: members });
      next.push({ kind: 'reduce', id: node });
    }
    layer = next;
  }
  return { nodes, rootInputs: layer, depth: level + 1 };
}

/** A reduce node's own coreset seed, derived from the run's seed and the node id: the same run, the same seeds. */
export function nodeSeed(runSeed: number, node: string): number {
  return createHash('sha256').update(`${runSeed}/${node}`).digest().readInt32LE(0);
}

/** The shard id in a child job id (or in a child key "<prefix>:<queue>:<jobId>"), else null. */
export function shardIdOfJobId(jobIdOrKey: string): string | null {
  const jobId = jobIdOrKey.slice(jobIdOrKey.lastIndexOf(':') + 1);
  const parts = jobId.split(SEP);
  return parts.length === 3 ? parts[2] : null;
}

export function createFlowProducer(connection: Redis, prefix = DEFAULT_QUEUE_PREFIX): FlowProducer {
  return new FlowProducer({ connection, prefix });
}

export interface ShardSpec {
  shardId: string;
  imageKeys: string[];
}

export interface TrainingRunSpec {
  runId: string;
  category: string;
  version: string;
  recipe: ExtractFeaturesPayload['recipe'];
  datasetPrefix: string;
  frame: ExtractFeaturesPayload['frame'];
  weights: BuildIndexPayload['weights'];
  sigma?: number;
  batchSize: number;
  perShardCoreset?: ExtractFeaturesPayload['perShardCoreset'];
  coreset: BuildIndexPayload['coreset'];
  hnsw: BuildIndexPayload['hnsw'];
  shards: ShardSpec[];
  /** Shards of held-out good images: feature jobs under the root, scored against the bank, not merged into it. */
  validationShards?: ShardSpec[];
  /** Reduce tree: a run of more shards than this is merged by a tree of reduce jobs of at most this many inputs. */
  fanIn?: number;
  /** Incremental retraining: the version whose bank joins the new images' coresets at the root. */
  parentModel?: BuildIndexPayload['parentModel'];
  imagesPrefix?: string;
  /** Overrides of defaultJobOptions for every job of the run (attempts, backoff, retention). */
  jobOptions?: JobsOptions;
}

export interface EvaluationRunSpec {
  runId: string;
  category: string;
  model: ScoreShardPayload['model'];
  datasetPrefix: string;
  shards: ShardSpec[];
  jobOptions?: JobsOptions;
  /** An unlabelled scoring run (`submit score --images`): the same shards, its own report. */
  unlabelled?: ReportPayload['unlabelled'];
}

export interface EnqueuedRun {
  runId: string;
  parentJobId: string;
  childJobIds: string[];
  /** True when the parent job already existed, i.e. nothing was added. */
  alreadySubmitted: boolean;
}

// Only options that make sense for every job of a run; ids and parent links are ours to set.
function jobOptionsFor(jobId: string, overrides: JobsOptions | undefined, child: boolean): JobsOptions {
  const { jobId: _ignored, parent: _parent, ...rest } = overrides ?? {};
  return { ...defaultJobOptions, ...rest, jobId, ...(child ? { failParentOnFailure: true } : {}) };
}

function checkRunId(what: string, runId: string): void {
  const problem = idProblem(String(runId));
  if (problem) throw new Error(`${what}: run id ${JSON.stringify(runId)} ${problem}`);
}

async function addRun(
  flowProducer: FlowProducer,
  parentQueue: QueueName,
  parentId: string,
  flow: FlowJob,
  childJobIds: string[],
  runId: string,
): Promise<EnqueuedRun> {
  // Informational only (another producer may race us); the deterministic ids are what prevent duplicates.
  const existing = await flowProducer.getFlow({ queueName: parentQueue, id: parentId, depth: 0, maxChildren: 1 });
  await flowProducer.add(flow);
  return { runId, parentJobId: parentId, childJobIds, alreadySubmitted: existing?.job !== undefined };
}

/** Enqueues build-index over one extract-features job per shard; every payload is validated first. */
export async function enqueueTrainingFlow(flowProducer: FlowProducer, spec: TrainingRunSpec): Promise<EnqueuedRun> {
  checkRunId('training run', spec.runId);
  const parentId = jobIds.buildIndex(spec.runId);
  const featureJob = (s: ShardSpec, perShardCoreset: ExtractFeaturesPayload['perShardCoreset']) => {
    const shardProblem = idProblem(String(s.shardId));
    if (shardProblem) throw new Error(`training run ${spec.runId}: shard id ${JSON.stringify(s.shardId)} ${shardProblem}`);
    const jobId = jobIds.extractFeatures(spec.runId, s.shardId);
    const data: ExtractFeaturesPayload = validatePayload(
      'extract-features',
      {
        runId: spec.runId,
        shardId: s.shardId,
        imageKeys: s.imageKeys,
        datasetPrefix: spec.datasetPrefix,
        recipe: spec.recipe,
        frame: spec.frame,
        weights: { sha256: spec.weights.sha256 },
        perShardCoreset,
        batchSize: spec.batchSize,
      },
      jobId,
    );
    return { name: 'extract-features', queueName: FEATURES_QUEUE, data, opts: jobOptionsFor(jobId, spec.jobOptions, true) };
  };
  const children = spec.shards.map((s) => featureJob(s, spec.perShardCoreset ?? null));
  // Held-out images keep every patch row: they are scored, not reduced.
  const validation = (spec.validationShards ?? []).map((s) => featureJob(s, null));
  const tree = spec.fanIn !== undefined && spec.shards.length > spec.fanIn ? planReduceTree(spec.shards.map((s) => s.shardId), spec.fanIn) : null;
  const parentData: BuildIndexPayload = validatePayload(
    'build-index',
    {
      runId: spec.runId,
      category: spec.category,
      version: spec.version,
      recipe: spec.recipe,
      coreset: spec.coreset,
      hnsw: spec.hnsw,
      weights: spec.weights,
      frame: spec.frame,
      sigma: spec.sigma,
      shards: [...spec.shards, ...(spec.validationShards ?? [])].map((s) => s.shardId),
      ...(validation.length ? { validationShards: spec.validationShards!.map((s) => s.shardId) } : {}),
      ...(tree ? { inputs: tree.rootInputs, tree: { fanIn: spec.fanIn, nodes: tree.nodes.map((n) => n.node) } } : {}),
      ...(spec.parentModel ? { parentModel: spec.parentModel } : {}),
      ...(spec.imagesPrefix ? { imagesPrefix: spec.imagesPrefix } : {}),
    },
    parentId,
  );
  const rootChildren = [...(tree ? reduceTreeFlows(spec, tree, children) : children), ...validation];
  const flow: FlowJob = {
    name: 'build-index',
    queueName: INDEX_QUEUE,
    data: parentData,
    opts: jobOptionsFor(parentId, spec.jobOptions, false),
    children: rootChildren,
  };
  const childJobIds = [...children, ...validation].map((c) => c.opts.jobId!).concat(tree?.nodes.map((n) => jobIds.reduce(spec.runId, n.node)) ?? []);
  return addRun(flowProducer, INDEX_QUEUE, parentId, flow, childJobIds, spec.runId);
}

/** The root's children of a tree run: nested reduce jobs down to the feature jobs (`leaves`, one per shard). */
function reduceTreeFlows(spec: TrainingRunSpec, tree: ReduceTreePlan, leaves: FlowJob[]): FlowJob[] {
  const leafOf = new Map(spec.shards.map((s, i) => [s.shardId, leaves[i]]));
  const nodeOf = new Map(tree.nodes.map((n) => [n.node, n]));
  const flowOf = (input: ReduceInput): FlowJob => {
    if (input.kind === 'shard') return leafOf.get(input.id)!;
    const node = nodeOf.get(input.id)!;
    const jobId = jobIds.reduce(spec.runId, node.node);
    const data: ReducePayload = validatePayload(
      'reduce',
      {
        runId: spec.runId, node: node.node, recipe: spec.recipe, inputs: node.inputs,
        coreset: { ...spec.coreset, seed: nodeSeed(spec.coreset.seed, node.node) },
      },
      jobId,
    );
    return { name: 'reduce', queueName: REDUCE_QUEUE, data, opts: jobOptionsFor(jobId, spec.jobOptions, true), children: node.inputs.map(flowOf) };
  };
  return tree.rootInputs.map(flowOf);
}

/** Enqueues report over one score-shard job per shard; every payload is validated first. */
export async function enqueueEvaluationFlow(flowProducer: FlowProducer, spec: EvaluationRunSpec): Promise<EnqueuedRun> {
  checkRunId('evaluation run', spec.runId);
  const parentId = jobIds.report(spec.runId);
  const children = spec.shards.map((s) => {
    const shardProblem = idProblem(String(s.shardId));
    if (shardProblem) throw new Error(`evaluation run ${spec.runId}: shard id ${JSON.stringify(s.shardId)} ${shardProblem}`);
    const jobId = jobIds.scoreShard(spec.runId, s.shardId);
    const data: ScoreShardPayload = validatePayload(
      'score-shard',
      { runId: spec.runId, shardId: s.shardId, model: spec.model, imageKeys: s.imageKeys, datasetPrefix: spec.datasetPrefix },
      jobId,
    );
    return { name: 'score-shard', queueName: SCORE_QUEUE, data, opts: jobOptionsFor(jobId, spec.jobOptions, true) };
  });
  const parentData: ReportPayload = validatePayload(
    'report',
    {
      runId: spec.runId,
      model: spec.model,
      shards: spec.shards.map((s) => s.shardId),
      datasetPrefix: spec.datasetPrefix,
      category: spec.category,
      ...(spec.unlabelled ? { unlabelled: spec.unlabelled } : {}),
    },
    parentId,
  );
  const flow: FlowJob = {
    name: 'report',
    queueName: REPORT_QUEUE,
    data: parentData,
    opts: jobOptionsFor(parentId, spec.jobOptions, false),
    children,
  };
  return addRun(flowProducer, REPORT_QUEUE, parentId, flow, children.map((c) => c.opts.jobId!), spec.runId);
}

/**
 * The return values of a parent job's children by shard id. Throws naming the job and the shards
 * when one of `shards` has no result (a parent only runs once all children completed, so this means
 * the flow was built wrongly or a child was removed by hand).
 */
export async function collectShardResults<T = unknown>(job: Job, shards: readonly string[]): Promise<Map<string, T>> {
  const values = await job.getChildrenValues<T>();
  const byShard = new Map<string, T>();
  for (const [key, value] of Object.entries(values)) {
    const shard = shardIdOfJobId(key);
    if (shard !== null) byShard.set(shard, value);
  }
  const missing = shards.filter((s) => !byShard.has(s));
  if (missing.length > 0) {
    throw new Error(`job ${job.id} (${job.name}): no result from shard(s) ${missing.join(', ')}`);
  }
  return byShard;
}

/**
 * The return values of a job's children by child job id (reduce steps and the root of a tree run, whose children
 * are of several kinds). Throws naming the job and the children when one of `childJobIds` has no result.
 */
export async function collectChildResults<T = unknown>(job: Job, childJobIds: readonly string[]): Promise<Map<string, T>> {
  const values = await job.getChildrenValues<T>();
  const byId = new Map<string, T>();
  for (const [key, value] of Object.entries(values)) byId.set(key.slice(key.lastIndexOf(':') + 1), value);
  const missing = childJobIds.filter((id) => !byId.has(id));
  if (missing.length > 0) throw new Error(`job ${job.id} (${job.name}): no result from ${missing.join(', ')}`);
  return byId;
}

export type RunKind = 'training' | 'evaluation';
export type RunState = 'missing' | 'queued' | 'running' | 'completed' | 'failed';
export type JobStateOrMissing = JobState | 'missing';

export interface JobProgressView {
  queue: QueueName;
  jobId: string;
  state: JobStateOrMissing;
  /** What the handler last passed to updateProgress (a number or an object), null before that. */
  progress: unknown;
  attemptsMade: number;
  /** Reason of the last failed attempt, also while a retry is pending. */
  failedReason: string | null;
  /** What the handler returned, once the job completed. */
  returnValue?: unknown;
}

export interface ShardProgressView extends JobProgressView {
  shardId: string;
}

export interface RunProgress {
  runId: string;
  kind: RunKind;
  state: RunState;
  parent: JobProgressView | null;
  counts: { total: number; done: number; active: number; waiting: number; delayed: number; failed: number; missing: number };
  shards: ShardProgressView[];
  /** Jobs that failed for good (children and parent), with their reasons. */
  failures: { jobId: string; shardId: string | null; reason: string; attemptsMade: number }[];
  /** A tree-reduced training run: its reduce steps by state (their failures are in `failures`, shardId null). */
  reduce?: { total: number; done: number; active: number; failed: number };
}

const RUN_QUEUES: Record<RunKind, { parent: QueueName; child: QueueName; parentId: (r: string) => string; childId: (r: string, s: string) => string }> = {
  training: { parent: INDEX_QUEUE, child: FEATURES_QUEUE, parentId: jobIds.buildIndex, childId: jobIds.extractFeatures },
  evaluation: { parent: REPORT_QUEUE, child: SCORE_QUEUE, parentId: jobIds.report, childId: jobIds.scoreShard },
};

async function jobView(queue: Queue, jobId: string): Promise<JobProgressView> {
  // State first: the job hash read after it is at least as new, so a 'failed' job has its reason.
  const missing: JobProgressView = { queue: queue.name as QueueName, jobId, state: 'missing', progress: null, attemptsMade: 0, failedReason: null };
  const state = await queue.getJobState(jobId);
  if (state === 'unknown') return missing;
  const job = await queue.getJob(jobId);
  if (!job) return missing;
  return {
    queue: queue.name as QueueName,
    jobId,
    state,
    progress: job.progress ?? null,
    attemptsMade: job.attemptsMade,
    failedReason: job.failedReason || null,
    returnValue: job.returnvalue ?? null,
  };
}

/**
 * Where a run stands, for the `status` command: the parent job and every shard job with state,
 * progress and failure reason. Reads only (one lookup per shard, 100 at a time).
 */
export async function runProgress(
  connection: Redis,
  runId: string,
  kind: RunKind,
  opts: { prefix?: string } = {},
): Promise<RunProgress> {
  checkRunId(`${kind} run`, runId);
  const q = RUN_QUEUES[kind];
  const prefix = opts.prefix ?? DEFAULT_QUEUE_PREFIX;
  const parentQueue = new Queue(q.parent, { connection, prefix, skipMetasUpdate: true });
  const childQueue = new Queue(q.child, { connection, prefix, skipMetasUpdate: true });
  // Connection errors surface as rejected reads below; without listeners BullMQ would also print them.
  const ignore = () => {};
  parentQueue.on('error', ignore);
  childQueue.on('error', ignore);
  try {
    const counts = { total: 0, done: 0, active: 0, waiting: 0, delayed: 0, failed: 0, missing: 0 };
    const parentJob = await parentQueue.getJob(q.parentId(runId));
    if (!parentJob) return { runId, kind, state: 'missing', parent: null, counts, shards: [], failures: [] };
    const parent = await jobView(parentQueue, q.parentId(runId));
    const shardIds: string[] = Array.isArray(parentJob.data?.shards) ? parentJob.data.shards.map(String) : [];
    // Completed children are listed in the parent's dependencies even after retention removed them.
    const deps = await parentJob.getDependencies();
    const processed = new Set(Object.keys(deps.processed ?? {}).map((k) => shardIdOfJobId(k)));

    const shards: ShardProgressView[] = [];
    for (let i = 0; i < shardIds.length; i += 100) {
      const chunk = shardIds.slice(i, i + 100);
      const views = await Promise.all(
        chunk.map(async (shardId): Promise<ShardProgressView> => {
          const view = await jobView(childQueue, q.childId(runId, shardId));
          if (processed.has(shardId) && view.state === 'missing') view.state = 'completed';
          return { shardId, ...view };
        }),
      );
      shards.push(...views);
    }

    const failures: RunProgress['failures'] = [];
    for (const s of shards) {
      counts.total++;
      switch (s.state) {
        case 'completed': counts.done++; break;
        case 'active': counts.active++; break;
        case 'delayed': counts.delayed++; break;
        case 'failed': counts.failed++; break;
        case 'missing': counts.missing++; break;
        default: counts.waiting++; // waiting, prioritized, waiting-children
      }
      if (s.state === 'failed') {
        failures.push({ jobId: s.jobId, shardId: s.shardId, reason: s.failedReason ?? 'unknown', attemptsMade: s.attemptsMade });
      }
    }
    const nodes: string[] = kind === 'training' && Array.isArray(parentJob.data?.tree?.nodes) ? parentJob.data.tree.nodes.map(String) : [];
    let reduce: RunProgress['reduce'];
    if (nodes.length > 0) {
      reduce = { total: nodes.length, done: 0, active: 0, failed: 0 };
      const reduceQueue = new Queue(REDUCE_QUEUE, { connection, prefix, skipMetasUpdate: true });
      reduceQueue.on('error', ignore);
      try {
        for (const node of nodes) {
          const view = await jobView(reduceQueue, jobIds.reduce(runId, node));
          if (view.state === 'completed') reduce.done++;
          else if (view.state === 'active') reduce.active++;
          else if (view.state === 'failed') {
            reduce.failed++;
            failures.push({ jobId: view.jobId, shardId: null, reason: view.failedReason ?? 'unknown', attemptsMade: view.attemptsMade });
          }
        }
      } finally {
        await reduceQueue.close();
      }
    }
    if (parent.state === 'failed') {
      failures.push({ jobId: parent.jobId, shardId: null, reason: parent.failedReason ?? 'unknown', attemptsMade: parent.attemptsMade });
    }

    let state: RunState;
    if (parent.state === 'completed') state = 'completed';
    else if (parent.state === 'failed' || counts.failed > 0 || (reduce?.failed ?? 0) > 0) state = 'failed';
    else if (parent.state === 'active' || counts.active + counts.done + counts.delayed > 0) state = 'running';
    else state = 'queued';
    return { runId, kind, state, parent, counts, shards, failures, ...(reduce ? { reduce } : {}) };
  } finally {
    await Promise.all([parentQueue.close(), childQueue.close()]);
  }
}

export interface RetriedRun {
  runId: string;
  kind: RunKind;
  /** Jobs moved from failed back to the queue (children, and the parent when it failed on its own). */
  retried: string[];
}

// A parent failed because a child failed (failParentOnFailure) carries a deferred failure ("defa") and sits in
// `failed`; BullMQ's retry of the children does not bring it back. This puts it back in waiting-children, as it
// was before the child failed, so the retried children's completion releases it again.
const REOPEN_PARENT = `
local jobKey = KEYS[1]
if redis.call("ZREM", KEYS[2], ARGV[1]) == 1 then
  redis.call("HDEL", jobKey, "defa", "failedReason", "finishedOn", "processedOn", "stacktrace")
  redis.call("ZADD", KEYS[3], tonumber(ARGV[2]), ARGV[1])
  return 1
end
return 0`;

/** A run's parent job and its queues, open for the duration of `use`: what retry and cancel work on. */
interface RunJobs {
  q: (typeof RUN_QUEUES)[RunKind];
  prefix: string;
  parentQueue: Queue;
  childQueue: Queue;
  parentId: string;
  parent: Job;
  shardIds: string[];
  /** A tree run's reduce steps, top level first, in their queue (none for other runs). */
  reduceQueue: Queue;
  nodeIds: string[];
}

async function withRunJobs<T>(connection: Redis, runId: string, kind: RunKind, opts: { prefix?: string }, use: (r: RunJobs) => Promise<T>): Promise<T> {
  checkRunId(`${kind} run`, runId);
  const q = RUN_QUEUES[kind];
  const prefix = opts.prefix ?? DEFAULT_QUEUE_PREFIX;
  const parentQueue = new Queue(q.parent, { connection, prefix, skipMetasUpdate: true });
  const childQueue = new Queue(q.child, { connection, prefix, skipMetasUpdate: true });
  const reduceQueue = new Queue(REDUCE_QUEUE, { connection, prefix, skipMetasUpdate: true });
  try {
    const parentId = q.parentId(runId);
    const parent = await parentQueue.getJob(parentId);
    if (!parent) throw new Error(`no ${kind} run "${runId}" in the queues (prefix "${prefix}")`);
    const shardIds: string[] = Array.isArray(parent.data?.shards) ? parent.data.shards.map(String) : [];
    const nodes: string[] = kind === 'training' && Array.isArray(parent.data?.tree?.nodes) ? parent.data.tree.nodes.map(String) : [];
    const level = (node: string) => Number(node.split('-')[0]) || 0;
    const nodeIds = [...nodes].sort((a, b) => level(b) - level(a));
    return await use({ q, prefix, parentQueue, childQueue, parentId, parent, shardIds, reduceQueue, nodeIds });
  } finally {
    await Promise.all([parentQueue.close(), childQueue.close(), reduceQueue.close()]);
  }
}

/**
 * `patchcore retry <run>`: every failed job of the run back to the queue with fresh attempts. Children first go
 * back into their parent's dependencies; a parent that failed because of them waits for them again (in a tree
 * run, at every level: the root and the reduce steps).
 */
export function retryRun(connection: Redis, runId: string, kind: RunKind, opts: { prefix?: string } = {}): Promise<RetriedRun> {
  return withRunJobs(connection, runId, kind, opts, async ({ q, prefix, parentQueue, childQueue, parentId, parent, shardIds, reduceQueue, nodeIds }) => {
    // Every job of the run, parents before their children: the root, the reduce steps top level first, the shards.
    const all: { queue: Queue; id: string }[] = [
      { queue: parentQueue, id: parentId },
      ...nodeIds.map((n) => ({ queue: reduceQueue, id: jobIds.reduce(runId, n) })),
      ...shardIds.map((s) => ({ queue: childQueue, id: q.childId(runId, s) })),
    ];
    const failed = new Map<string, { queue: Queue; job: Job }>();
    for (const { queue, id } of all) {
      if ((await queue.getJobState(id)) === 'failed') failed.set(id, { queue, job: id === parentId ? parent : (await queue.getJob(id))! });
    }
    const childIdsOf = (job: Job): string[] => {
      if (job.queueName === childQueue.name) return [];
      const inputs: ReduceInput[] | undefined = job.data?.inputs;
      return inputs ? inputs.map((i) => inputJobId(runId, i)) : shardIds.map((s) => q.childId(runId, s));
    };
    const retried: string[] = [];
    for (const [id, { queue, job }] of failed) {
      if (childIdsOf(job).some((c) => failed.has(c))) {
        // Failed because a child failed: back to waiting for its children, which are retried below.
        const base = `${prefix}:${queue.name}`;
        await connection.eval(REOPEN_PARENT, 3, `${base}:${id}`, `${base}:failed`, `${base}:waiting-children`, id, String(Date.now()));
      } else {
        await job.retry('failed', { resetAttemptsMade: true, resetAttemptsStarted: true });
      }
      retried.push(id);
    }
    return { runId, kind, retried };
  });
}

export interface CancelledRun {
  runId: string;
  kind: RunKind;
  /** Jobs removed from the queues. */
  removed: string[];
  /** Jobs a worker is running now: they cannot be taken away and finish on their own; nothing follows them. */
  running: string[];
}

/**
 * `patchcore cancel <run>`: removes every job of the run that no worker holds (the parent first, so no finished
 * child can release it). Running jobs finish or fail on their own. Its ids are free again afterwards.
 */
export function cancelRun(connection: Redis, runId: string, kind: RunKind, opts: { prefix?: string } = {}): Promise<CancelledRun> {
  return withRunJobs(connection, runId, kind, opts, async ({ q, parentQueue, childQueue, parentId, shardIds, reduceQueue, nodeIds }) => {
    const removed: string[] = [];
    const running: string[] = [];
    const take = async (queue: Queue, id: string) => {
      const state = await queue.getJobState(id);
      if (state === 'unknown') return;
      if (state === 'active') {
        running.push(id);
        return;
      }
      // removeChildren false: the children are handled one by one, active ones left to finish.
      if ((await queue.remove(id, { removeChildren: false })) === 1) removed.push(id);
      else running.push(id);
    };
    await take(parentQueue, parentId);
    for (const node of nodeIds) await take(reduceQueue, jobIds.reduce(runId, node));
    for (const shardId of shardIds) await take(childQueue, q.childId(runId, shardId));
    return { runId, kind, removed, running };
  });
}
