// Index worker: build-index jobs (parents of a training run's shards) -> coreset bank, HNSW index, model version.
import { mergeShardsIntoModel } from '../../shared/distributed/merge-index.js';
import { runningService, serviceContext, workerDefaults, type RunningService } from '../../shared/distributed/service.js';
import type { ShardFeaturesResult } from '../../shared/distributed/shard-features.js';
import { collectShardResults } from '../../shared/queue/flows.js';
import { INDEX_QUEUE } from '../../shared/queue/jobs.js';
import { WorkerRuntime } from '../../shared/queue/worker-runtime.js';

export async function startIndexWorker(opts: { handleSignals?: boolean } = {}): Promise<RunningService> {
  const ctx = serviceContext('index-worker');
  const worker = await new WorkerRuntime(
    INDEX_QUEUE,
    async (payload, job) => {
      const shards = await collectShardResults<ShardFeaturesResult>(job.job, payload.shards);
      return mergeShardsIntoModel(payload, shards, { store: ctx.store, log: job.log, job: job.job });
    },
    workerDefaults(ctx, opts.handleSignals),
  ).start();
  return runningService(ctx, [worker]);
}
