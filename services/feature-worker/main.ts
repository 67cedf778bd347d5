// Feature worker: extract-features jobs -> patch embeddings of one shard in object storage.
import { createBackbone } from '../../shared/backbone/engine.js';
import { runningService, serviceContext, workerDefaults, type RunningService } from '../../shared/distributed/service.js';
import { extractShardFeatures } from '../../shared/distributed/shard-features.js';
import { sha256File } from '../../shared/pipeline/weights.js';
import { FEATURES_QUEUE } from '../../shared/queue/jobs.js';
import { WorkerRuntime } from '../../shared/queue/worker-runtime.js';

export async function startFeatureWorker(opts: { handleSignals?: boolean } = {}): Promise<RunningService> {
  const ctx = serviceContext('feature-worker');
  const { settings } = ctx;
  const weightsSha256 = await sha256File(settings.weightsPath);
  const backbone = await createBackbone({ engine: settings.engine, weightsPath: settings.weightsPath, logger: ctx.log });
  const worker = await new WorkerRuntime(
    FEATURES_QUEUE,
    (payload, job) =>
      extractShardFeatures(payload, {
        store: ctx.store, backbone, weightsSha256, log: job.log, job: job.job,
        progress: (done, total) => job.progress({ done, total }),
      }),
    workerDefaults(ctx, opts.handleSignals),
  ).start();
  return runningService(ctx, [worker], () => backbone.dispose());
}
