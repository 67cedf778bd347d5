// Where a run's time went: the stage timings every job returns, summed over the run's jobs and split into compute
// (decode, backbone, features, coreset, index, scoring, maps, metrics, report) and storage transfers (download,
// upload, list). Wall time minus the busiest worker's share is what queues and scheduling cost.
import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { jobIds, type RunKind } from '../queue/flows.js';
import { FEATURES_QUEUE, INDEX_QUEUE, REPORT_QUEUE, SCORE_QUEUE } from '../queue/jobs.js';

const STORAGE_STAGES = new Set(['download', 'upload', 'list', 'load_model']);
// Time spent waiting for another stage, already counted there.
const WAIT_STAGES = new Set(['decode_wait']);

export interface RunAccounting {
  jobs: number;
  compute_ms: number;
  storage_ms: number;
  by_stage_ms: Record<string, number>;
}

export async function accountRun(connection: Redis, prefix: string, runId: string, kind: RunKind, shards: string[]): Promise<RunAccounting> {
  const [parentQueue, childQueue, childId, parentId] =
    kind === 'training'
      ? [INDEX_QUEUE, FEATURES_QUEUE, jobIds.extractFeatures, jobIds.buildIndex]
      : [REPORT_QUEUE, SCORE_QUEUE, jobIds.scoreShard, jobIds.report];
  const parent = new Queue(parentQueue, { connection, prefix });
  const child = new Queue(childQueue, { connection, prefix });
  const byStage: Record<string, number> = {};
  let jobs = 0;
  const add = (value: unknown) => {
    const timings = (value as { timings_ms?: Record<string, number> } | null)?.timings_ms;
    if (!timings) return;
    jobs++;
    for (const [stage, ms] of Object.entries(timings)) if (stage !== 'total') byStage[stage] = (byStage[stage] ?? 0) + ms;
  };
  try {
    for (const shard of shards) add((await child.getJob(childId(runId, shard)))?.returnvalue);
    add((await parent.getJob(parentId(runId)))?.returnvalue);
  } finally {
    await parent.close();
    await child.close();
  }
  let compute = 0;
  let storage = 0;
  for (const [stage, ms] of Object.entries(byStage)) {
    if (STORAGE_STAGES.has(stage)) storage += ms;
    else if (!WAIT_STAGES.has(stage)) compute += ms;
  }
  return { jobs, compute_ms: Math.round(compute), storage_ms: Math.round(storage), by_stage_ms: byStage };
}
