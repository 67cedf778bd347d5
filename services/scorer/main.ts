// Scorer: score-shard jobs (anomaly scores and maps of one shard of test images) and the report jobs that
// gather a run's shards into metrics and the report (or, for an unlabelled scoring run, into per-image results and
// the score distribution). One process serves both queues.
import { createBackbone, type CreateBackboneOptions } from '../../shared/backbone/engine.js';
import { ModelCache } from '../../shared/distributed/model-store.js';
import { buildRunReport, type ReportJobResult } from '../../shared/distributed/report-job.js';
import { ModelBackbones, scoreShard } from '../../shared/distributed/score-shard.js';
import { buildUnlabelledReport, type UnlabelledReportResult } from '../../shared/distributed/unlabelled-report.js';
import { runningService, serviceContext, workerDefaults, type RunningService } from '../../shared/distributed/service.js';
import { sha256File } from '../../shared/pipeline/weights.js';
import { REPORT_QUEUE, SCORE_QUEUE } from '../../shared/queue/jobs.js';
import { WorkerRuntime } from '../../shared/queue/worker-runtime.js';

export async function startScorer(opts: { handleSignals?: boolean } = {}): Promise<RunningService> {
  const ctx = serviceContext('scorer');
  const { settings } = ctx;
  const weightsSha256 = await sha256File(settings.weightsPath);
  const backboneWith = (precision: Pick<CreateBackboneOptions, 'precision' | 'calibration'>) =>
    createBackbone({ engine: settings.engine, weightsPath: settings.weightsPath, logger: ctx.log, ...precision });
  // fp32 once per process, shared by every fp32 model; an int8 model version gets its own, with its ranges, on first use.
  const backbones = new ModelBackbones(await backboneWith({ precision: 'fp32' }), backboneWith);
  const models = new ModelCache(ctx.store, settings.modelCacheDir);
  const common = workerDefaults(ctx, opts.handleSignals);
  const scoring = await new WorkerRuntime(
    SCORE_QUEUE,
    (payload, job) =>
      scoreShard(payload, {
        store: ctx.store, models, backbones, weightsSha256, log: job.log, job: job.job, batchSize: settings.batchSize,
        progress: (done, total) => job.progress({ done, total }),
      }),
    common,
  ).start();
  // No port of its own: it shares the process's metrics registry, which the score worker's /metrics serves.
  const reports = await new WorkerRuntime(
    REPORT_QUEUE,
    (payload, job): Promise<ReportJobResult | UnlabelledReportResult> => payload.unlabelled
      ? buildUnlabelledReport({ ...payload, unlabelled: payload.unlabelled }, { store: ctx.store, models, log: job.log, job: job.job })
      : buildRunReport(payload, { store: ctx.store, models, log: job.log, job: job.job }),
    { ...common, concurrency: 1, healthPort: null },
  ).start();
  return runningService(ctx, [scoring, reports], () => backbones.dispose());
}
