// Where a run's time went, read back from the queue: the stage timings every job returns, summed over the run's
// jobs and split into compute and storage transfers (shared/run/timings.ts), and the time jobs waited in the queue.
import { Queue, type Job } from 'bullmq';
import type { Redis } from 'ioredis';
import { jobIds, type RunKind } from '../queue/flows.js';
import { FEATURES_QUEUE, INDEX_QUEUE, REPORT_QUEUE, SCORE_QUEUE } from '../queue/jobs.js';
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
    add(await parent.getJob(parentId(runId)), lastChild);
  } finally {
    await parent.close();
    await child.close();
  }
  return sumJobTimings(all);
}
