// Start-up shared by every worker process: configuration from the environment, Redis and S3 clients, the process's
// metrics registry, and an orderly exit once its workers have closed (on SIGTERM/SIGINT, or when the caller closes them).
import type { Redis } from 'ioredis';
import { createLogger, type Logger } from '../log.js';
import {
  createRedisConnection, redisConfigFromEnv, workerSettingsFromEnv,
  type RedisConfig, type WorkerSettings,
} from '../queue/config.js';
import { WorkerMetrics } from '../queue/metrics.js';
import type { WorkerRuntimeOptions } from '../queue/worker-runtime.js';
import { storageConfigFromEnv } from '../storage/config.js';
import { ObjectStore } from '../storage/object-store.js';
import { serviceSettingsFromEnv, type ServiceSettings } from './service-env.js';

export interface ServiceContext {
  log: Logger;
  redisConfig: RedisConfig;
  connection: Redis;
  store: ObjectStore;
  worker: WorkerSettings;
  settings: ServiceSettings;
  /** The one metrics registry of the process: every worker of it adds its queue, /metrics serves them all. */
  metrics: WorkerMetrics;
}

/** What runningService needs of a started worker. */
export interface StoppableWorker {
  close(): Promise<void>;
  readonly closed: Promise<void>;
}

export interface RunningService {
  /** The started workers (the name is read by cli/commands/pipeline.ts). */
  handles: StoppableWorker[];
  /** Closes every worker (gracefully), then the connections. */
  close(): Promise<void>;
}

export function serviceContext(name: string, env: Record<string, string | undefined> = process.env): ServiceContext {
  const log = createLogger(name, { service: name });
  const redisConfig = redisConfigFromEnv(env);
  const worker = workerSettingsFromEnv(env);
  const settings = serviceSettingsFromEnv(env);
  const store = new ObjectStore(storageConfigFromEnv(env));
  const connection = createRedisConnection(redisConfig, { mode: 'blocking', connectionName: name, logger: log });
  // The plain redacted views: pino's redaction cannot serialise the config classes themselves.
  log.info({ redis: redisConfig.toJSON(), storage: store.config.toJSON(), worker, settings }, `${name} starting`);
  return { log, redisConfig, connection, store, worker, settings, metrics: new WorkerMetrics() };
}

/** The WorkerRuntime options every service takes from its context: connection, prefix, logger, metrics, settings. */
export function workerDefaults(ctx: ServiceContext, handleSignals?: boolean): WorkerRuntimeOptions {
  return {
    metrics: ctx.metrics,
    connection: ctx.connection,
    prefix: ctx.redisConfig.prefix,
    logger: ctx.log,
    concurrency: ctx.worker.concurrency,
    healthPort: ctx.worker.healthPort,
    shutdownGraceMs: ctx.worker.shutdownGraceMs,
    lockDuration: ctx.worker.lockDurationMs,
    handleSignals,
  };
}

/** Wraps started workers so the process closes its connections once they have all stopped. */
export function runningService(ctx: ServiceContext, workers: StoppableWorker[], cleanup: () => void | Promise<void> = () => {}): RunningService {
  let closing: Promise<void> | null = null;
  const finish = async () => {
    await Promise.all(workers.map((w) => w.closed));
    await cleanup();
    await ctx.metrics.close();
    ctx.store.destroy();
    await ctx.connection.quit().catch(() => ctx.connection.disconnect());
    ctx.log.info('stopped');
  };
  const done = finish();
  return {
    handles: workers,
    close() {
      closing ??= Promise.all(workers.map((w) => w.close())).then(() => done);
      return closing;
    },
  };
}
