// Where a run's time went, read back from the queue: the stage timings every job returns, summed over the run's
// jobs and split into compute and storage transfers (shared/run/timings.ts), and the time jobs waited in the queue.
import { Queue, type Job } from 'bullmq';
import type { Redis } from 'ioredis';
import { jobIds, type RunKind } from '../queue/flows.js';
import { FEATURES_QUEUE, INDEX_QUEUE, REDUCE_QUEUE, REPORT_QUEUE, SCORE_QUEUE } from '../queue/jobs.js';
import { jobTimings, queueWaitMs, sumJobTimings, type JobTimings } from '../run/timings.js';

export type RunAccounting = JobTimings;

export async function accountRun(connection: Redis, prefix: string, runId: string, kind: RunKind, shards: string[]): Promise<RunAccounting> {
  const [parentQueue, childQueue, childId, parentId] =
    kind === 'training'
      ? [INDEX_QUEUE, FEATURES_QUEUE, jobIds.extractFeatures, jobIds.buildIndex]
      : [REPORT_QUEUE, SCORE_QUEUE, jobIds.scoreShard, jobIds.report];
  const parent = new Queue(parentQueue, { connection, prefix });
  const child = new Queue(childQueue, { connection, prefix });
  const all: JobTimings[] = [];
  const add = (job: Job | undefined, readySince?: number) => {
    const timings = (job?.returnvalue as { timings_ms?: Record<string, number> } | null)?.timings_ms;
    if (job && timings) all.push(jobTimings(timings, queueWaitMs(job, readySince)));
  };
  try {
    let lastChild = 0;
    for (const shard of shards) {
      const job = await child.getJob(childId(runId, shard));
      add(job);
      lastChild = Math.max(lastChild, job?.finishedOn ?? 0);
    }
    const root = await parent.getJob(parentId(runId));
    // A tree-reduced training run: its reduce steps, with the queue wait each measured from its own inputs.
    const nodes: string[] = Array.isArray(root?.data?.tree?.nodes) ? root!.data.tree.nodes.map(String) : [];
    if (nodes.length > 0) {
      const reduce = new Queue(REDUCE_QUEUE, { connection, prefix });
      try {
        for (const node of nodes) {
          const job = await reduce.getJob(jobIds.reduce(runId, node));
          const r = job?.returnvalue as { timings_ms?: Record<string, number>; queue_wait_ms?: number | null } | null;
          if (r?.timings_ms) all.push(jobTimings(r.timings_ms, r.queue_wait_ms ?? null));
          lastChild = Math.max(lastChild, job?.finishedOn ?? 0);
        }
      } finally {
        await reduce.close();
      }
    }
    add(root, lastChild);
  } finally {
    await parent.close();
    await child.close();
  }
  return sumJobTimings(all);
}
