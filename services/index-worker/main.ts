// Index worker: build-index jobs (the root of a training run: coreset bank, HNSW index, model version) and reduce
// jobs (the inner nodes of a large run's reduce tree). One process serves both queues.
import { mergeShardsIntoModel, rootInputs } from '../../shared/distributed/merge-index.js';
import { reduceNode, type InputResult } from '../../shared/distributed/reduce.js';
import { runningService, serviceContext, workerDefaults, type RunningService } from '../../shared/distributed/service.js';
import { collectChildResults, inputJobId } from '../../shared/queue/flows.js';
import { INDEX_QUEUE, REDUCE_QUEUE } from '../../shared/queue/jobs.js';
import { WorkerRuntime } from '../../shared/queue/worker-runtime.js';

export async function startIndexWorker(opts: { handleSignals?: boolean } = {}): Promise<RunningService> {
  const ctx = serviceContext('index-worker');
  const common = workerDefaults(ctx, opts.handleSignals);
  const index = await new WorkerRuntime(
    INDEX_QUEUE,
    async (payload, job) => {
      const results = await collectChildResults<InputResult>(job.job, rootInputs(payload).map((i) => inputJobId(payload.runId, i)));
      return mergeShardsIntoModel(payload, results, { store: ctx.store, log: job.log, job: job.job });
    },
    common,
  ).start();
  // No port of its own: it shares the process's metrics registry, which the index worker's /metrics serves.
  const reduce = await new WorkerRuntime(
    REDUCE_QUEUE,
    async (payload, job) => {
      const results = await collectChildResults<InputResult>(job.job, payload.inputs.map((i) => inputJobId(payload.runId, i)));
      return reduceNode(payload, results, { store: ctx.store, log: job.log, job: job.job });
    },
    { ...common, healthPort: null },
  ).start();
  return runningService(ctx, [index, reduce]);
}
