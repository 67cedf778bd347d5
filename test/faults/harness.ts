// A small private deployment for fault tests and the soak: a redis-server, s3rver behind a fault-injecting proxy,
// and real worker processes (`patchcore worker ...`) whose JSON logs are parsed, so a test can see which process
// runs which job and kill exactly that one. Everything is bounded: every wait has a deadline, and stop() (also
// run at process exit) kills every process it started.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Queue, type FlowProducer } from 'bullmq';
import type { Redis } from 'ioredis';
import { pino } from 'pino';
import { startRedisServer, type RedisServer, type RedisServerOptions } from '../../shared/embedded/redis-server.js';
import { startS3rver, type S3Server, type S3ServerOptions } from '../../shared/embedded/s3-server.js';
import { defaultWeightsPath, repoRoot } from '../../shared/paths.js';
import { sha256File } from '../../shared/pipeline/weights.js';
import { createRedisConnection, redisConfigFromEnv, type RedisConfig } from '../../shared/queue/config.js';
import { createFlowProducer, runProgress, type RunKind, type RunProgress } from '../../shared/queue/flows.js';
import type { QueueName } from '../../shared/queue/jobs.js';
import { storageConfigFromEnv } from '../../shared/storage/config.js';
import { ObjectStore } from '../../shared/storage/object-store.js';
import { startFaultProxy, type FaultProxy } from './fault-proxy.js';

export type WorkerKind = 'features' | 'index' | 'score';

export const silentLog = pino({ level: 'silent' });

export interface LogLine {
  msg?: string;
  jobId?: string;
  queue?: string;
  [k: string]: unknown;
}

const live = new Set<ChildProcess>();
let exitHook = false;

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Polls `probe` until it returns a truthy value, or throws naming `what` after `timeoutMs`. */
export async function until<T>(what: string, probe: () => T | Promise<T>, timeoutMs: number, intervalMs = 50): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v) return v as NonNullable<T>;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(intervalMs);
  }
}

/** Rejects after `ms` naming `what`, so an await on a stuck system ends. */
export async function withTimeout<T>(what: string, p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

/** One `patchcore worker <kind>` process with its log lines. */
export class WorkerProcess {
  readonly lines: string[] = [];
  readonly events: LogLine[] = [];
  readonly exited: Promise<void>;
  private listeners = new Set<(l: LogLine) => void>();

  constructor(readonly kind: WorkerKind, readonly name: string, readonly child: ChildProcess) {
    // 'close', not 'exit': by then every line the process wrote has been read.
    this.exited = new Promise((r) => child.once('close', () => r()));
    let partial = '';
    const onData = (d: Buffer) => {
      partial += d.toString();
      const parts = partial.split('\n');
      partial = parts.pop()!;
      for (const line of parts) {
        if (line.trim() === '') continue;
        this.lines.push(line);
        if (!line.startsWith('{')) continue;
        try {
          const ev = JSON.parse(line) as LogLine;
          this.events.push(ev);
          for (const l of this.listeners) l(ev);
        } catch {
          // not a log line
        }
      }
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
  }

  get alive(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** The first log line (past or future) that satisfies `pred`. */
  waitForLog(what: string, pred: (l: LogLine) => boolean, timeoutMs: number): Promise<LogLine> {
    const past = this.events.find(pred);
    if (past) return Promise.resolve(past);
    return withTimeout(`${this.name}: ${what}`, new Promise<LogLine>((resolve, reject) => {
      const l = (ev: LogLine) => {
        if (pred(ev)) {
          this.listeners.delete(l);
          resolve(ev);
        }
      };
      this.listeners.add(l);
      void this.exited.then(() => {
        const how = this.child.signalCode ?? `code ${this.child.exitCode}`;
        if (this.listeners.delete(l)) reject(new Error(`${this.name} exited (${how}) while waiting for ${what}:\n${this.tail()}`));
      });
    }), timeoutMs);
  }

  startedJob(jobId: string): boolean {
    return this.events.some((e) => e.msg === 'job started' && e.jobId === jobId);
  }

  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    if (this.alive) this.child.kill(signal);
    await withTimeout(`${this.name} to exit after ${signal}`, this.exited, 15_000);
    live.delete(this.child);
  }

  tail(n = 15): string {
    return this.lines.slice(-n).map((l) => `[${this.name}] ${l.slice(0, 400)}`).join('\n');
  }
}

export interface ClusterOptions {
  workers?: WorkerKind[];
  redis?: RedisServerOptions;
  s3?: S3ServerOptions;
  /** Extra environment of every worker. */
  env?: Record<string, string>;
  /** The bucket; default patchcore-faults. */
  bucket?: string;
}

export class Cluster {
  readonly workers: WorkerProcess[] = [];
  private spawned = 0;
  readonly weights = { file: defaultWeightsPath(), sha256: '' };

  private constructor(
    readonly redis: RedisServer,
    readonly s3: S3Server,
    readonly proxy: FaultProxy,
    /** Worker environment (S3 through the proxy). */
    readonly env: Record<string, string>,
    readonly redisConfig: RedisConfig,
    /** The test's own clients: S3 directly (no faults), Redis in blocking mode (waits through restarts). */
    readonly store: ObjectStore,
    readonly connection: Redis,
    readonly flows: FlowProducer,
  ) {}

  static async start(opts: ClusterOptions = {}): Promise<Cluster> {
    if (!exitHook) {
      exitHook = true;
      process.once('exit', () => {
        for (const c of live) c.kill('SIGKILL');
      });
      // A test runner that times out (or Ctrl-C) sends a signal, which skips 'exit' hooks: turn it into an exit so
      // that the workers here and the redis-server (shared/embedded) are killed too.
      for (const [signal, code] of [['SIGTERM', 143], ['SIGINT', 130]] as const) process.once(signal, () => process.exit(code));
    }
    const redis = await startRedisServer(opts.redis);
    const s3 = await startS3rver(opts.bucket ?? 'patchcore-faults', opts.s3);
    const proxy = await startFaultProxy(s3.endpoint, s3.bucket);
    const auth = opts.redis?.password !== undefined ? `:${encodeURIComponent(opts.redis.password)}@` : '';
    const env: Record<string, string> = {
      ...s3.env,
      S3_ENDPOINT: proxy.endpoint,
      REDIS_URL: `redis://${auth}127.0.0.1:${redis.port}`,
      LOG_LEVEL: 'info',
      LOCK_DURATION_MS: '5000',
      SHUTDOWN_GRACE_MS: '2000',
      ...opts.env,
    };
    const redisConfig = redisConfigFromEnv(env);
    const store = new ObjectStore(storageConfigFromEnv({ ...env, S3_ENDPOINT: s3.endpoint }));
    await store.ensureBucket();
    const connection = createRedisConnection(redisConfig, { mode: 'blocking', connectionName: 'fault-test' });
    const flows = createFlowProducer(connection, redisConfig.prefix);
    flows.on('error', () => {}); // outages are the point here; reads below surface them
    const cluster = new Cluster(redis, s3, proxy, env, redisConfig, store, connection, flows);
    try {
      cluster.weights.sha256 = await sha256File(cluster.weights.file);
      await Promise.all((opts.workers ?? []).map((k) => cluster.spawn(k)));
    } catch (err) {
      await cluster.stop();
      throw err;
    }
    return cluster;
  }

  /** Starts `patchcore worker <kind>` and resolves once every queue of it is being served. */
  async spawn(kind: WorkerKind, extraEnv: Record<string, string> = {}): Promise<WorkerProcess> {
    const name = `${kind}#${++this.spawned}`;
    const env = {
      ...process.env, ...this.env, MODEL_CACHE_DIR: mkdtempSync(join(tmpdir(), 'patchcore-fault-cache-')), ...extraEnv,
    };
    const child = spawn(process.execPath, [join(repoRoot, 'bin', 'patchcore.js'), 'worker', kind], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    live.add(child);
    const w = new WorkerProcess(kind, name, child);
    this.workers.push(w);
    const queues = kind === 'score' ? 2 : 1;
    await w.waitForLog('worker started', () => w.events.filter((e) => e.msg === 'worker started').length >= queues, 60_000);
    return w;
  }

  liveWorkers(kind?: WorkerKind): WorkerProcess[] {
    return this.workers.filter((w) => w.alive && (kind === undefined || w.kind === kind));
  }

  /** The live worker whose log says it started `jobId` (waits for it). */
  async workerRunning(jobId: string, timeoutMs = 60_000): Promise<WorkerProcess> {
    return until(`a worker to start job ${jobId}`, () => this.workers.find((w) => w.alive && w.startedJob(jobId)), timeoutMs, 20);
  }

  async progress(runId: string, kind: RunKind): Promise<RunProgress> {
    return runProgress(this.connection, runId, kind, { prefix: this.redisConfig.prefix });
  }

  /** Waits until a shard job of the run reports done >= `atLeast` images but is not finished. */
  async midShard(runId: string, kind: RunKind, shardId: string, atLeast = 1, timeoutMs = 60_000): Promise<void> {
    await until(`shard ${shardId} of ${runId} to be part-way`, async () => {
      const p = await this.progress(runId, kind);
      const s = p.shards.find((x) => x.shardId === shardId);
      const done = (s?.progress as { done?: number } | null)?.done ?? 0;
      if (s?.state === 'completed') throw new Error(`shard ${shardId} of ${runId} finished before it could be interrupted`);
      return s?.state === 'active' && done >= atLeast;
    }, timeoutMs, 20);
  }

  /** Waits for the run to complete or fail (bounded), tolerating Redis being away meanwhile. */
  async waitRun(runId: string, kind: RunKind, timeoutMs = 120_000): Promise<RunProgress> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`run ${runId} did not finish within ${timeoutMs} ms\n${this.logTail()}`);
      const p = await withTimeout(`status of ${runId}`, this.progress(runId, kind), left).catch((e: Error) => {
        if (Date.now() >= deadline) throw new Error(`${e.message}\n${this.logTail()}`);
        return null;
      });
      if (p && (p.state === 'completed' || p.state === 'failed')) return p;
      await sleep(100);
    }
  }

  /** A raw BullMQ queue (for hand-made jobs); close it after use. */
  queue(name: QueueName): Queue {
    const q = new Queue(name, { connection: this.connection, prefix: this.redisConfig.prefix });
    q.on('error', () => {});
    return q;
  }

  /** Every key in the bucket, sorted. */
  async keys(prefix = ''): Promise<string[]> {
    const out: string[] = [];
    for await (const o of this.store.list(prefix)) out.push(o.key);
    return out.sort();
  }

  logTail(n = 15): string {
    return this.workers.map((w) => w.tail(n)).join('\n');
  }

  async stop(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.kill('SIGKILL').catch(() => {})));
    await withTimeout('closing the flow producer', this.flows.close(), 5000).catch(() => {});
    this.connection.disconnect();
    this.store.destroy();
    await this.proxy.close().catch(() => {});
    await this.s3.stop().catch(() => {});
    await this.redis.stop().catch(() => {});
  }
}

/** Runs the `patchcore` CLI with `env` (bounded); resolves with its exit code and output. */
export function runCli(args: string[], env: Record<string, string | undefined>, timeoutMs = 60_000): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(repoRoot, 'bin', 'patchcore.js'), ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    live.add(child);
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d) => (stdout += d));
    child.stderr!.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`patchcore ${args.join(' ')} did not finish within ${timeoutMs} ms\n${stderr}`));
    }, timeoutMs);
    child.once('exit', (code) => {
      clearTimeout(timer);
      live.delete(child);
      resolve({ code, stdout, stderr });
    });
  });
}
