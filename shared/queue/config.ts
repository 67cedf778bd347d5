// Redis / queue settings from the environment, validated once at start-up so a bad setting stops a
// worker with a message naming the variable, not on its first job.
//
//   REDIS_URL          redis://[user[:password]@]host[:port][/db], or rediss://... for TLS;
//                      default redis://127.0.0.1:6379. Percent-encode special characters in the password.
//   QUEUE_PREFIX       key prefix of every queue; default 'bull'. A hash tag such as '{patchcore}' keeps all
//                      of a queue's keys in one Redis Cluster slot, as BullMQ's Lua scripts require there.
//   WORKER_CONCURRENCY jobs one worker runs at once; default 1
//   HEALTH_PORT        port of the worker's health endpoint; unset = no endpoint, 0 = any free port
//   SHUTDOWN_GRACE_MS  how long a stopping worker lets running jobs finish; default 30000
//   LOCK_DURATION_MS   job lock lifetime (renewed at half of it while the event loop is free); default 60000
//
// An empty variable counts as unset. The password lives in a private field: it never reaches an error
// message, JSON.stringify, util.inspect or a logger (the URL is shown as redis://:***@host:port).
import { isIP } from 'node:net';
import { inspect } from 'node:util';
import { Redis, type RedisOptions } from 'ioredis';
import { z } from 'zod';
import { UserError } from '../errors.js';
import type { Logger } from '../log.js';
import { placeholderSecretProblems } from '../secret-placeholders.js';

export const DEFAULT_REDIS_URL = 'redis://127.0.0.1:6379';
export const DEFAULT_QUEUE_PREFIX = 'bull';

/** What a logger may print. */
export interface RedactedRedisConfig {
  url: string;
  prefix: string;
  tls: boolean;
}

export interface RedisConfigInit {
  host: string;
  port: number;
  db: number;
  tls: boolean;
  username?: string;
  password?: string;
  prefix: string;
}

export class RedisConfig {
  readonly host: string;
  readonly port: number;
  readonly db: number;
  readonly tls: boolean;
  readonly username: string | undefined;
  readonly prefix: string;
  readonly #password: string | undefined;

  constructor(init: RedisConfigInit) {
    this.host = init.host;
    this.port = init.port;
    this.db = init.db;
    this.tls = init.tls;
    this.username = init.username;
    this.prefix = init.prefix;
    this.#password = init.password;
  }

  /** The password for the Redis client only. */
  password(): string | undefined {
    return this.#password;
  }

  /** The URL with the password replaced by ***; safe to log. */
  get redactedUrl(): string {
    const scheme = this.tls ? 'rediss' : 'redis';
    const user = this.username ? encodeURIComponent(this.username) : '';
    const auth = this.#password !== undefined ? `${user}:***@` : user ? `${user}@` : '';
    const host = isIP(this.host) === 6 ? `[${this.host}]` : this.host;
    return `${scheme}://${auth}${host}:${this.port}${this.db ? `/${this.db}` : ''}`;
  }

  toJSON(): RedactedRedisConfig {
    return { url: this.redactedUrl, prefix: this.prefix, tls: this.tls };
  }

  [inspect.custom](): string {
    return `RedisConfig ${inspect(this.toJSON())}`;
  }

  toString(): string {
    return `RedisConfig ${JSON.stringify(this.toJSON())}`;
  }
}

const blankToUndefined = (v: unknown): unknown => (typeof v === 'string' && v.trim() === '' ? undefined : v);
const optionalString = z.preprocess(blankToUndefined, z.string().optional());

/** Masks the userinfo of something URL-like that failed to parse, so a mistyped password is not echoed. */
function maskUserinfo(raw: string): string {
  return raw.replace(/\/\/[^/?#]*@/, '//***@');
}

// Letters, digits, '.', '_', '-', with at most one {hash tag}; never ':' (BullMQ's key separator).
const PREFIX_RE = /^[A-Za-z0-9._-]*(\{[A-Za-z0-9._-]+\})?[A-Za-z0-9._-]*$/;

function intVar(name: string, min: number, max: number) {
  return optionalString.superRefine((v, ctx) => {
    if (v !== undefined && !(/^\d+$/.test(v.trim()) && Number(v) >= min && Number(v) <= max)) {
      ctx.addIssue({ code: 'custom', message: `${name} must be an integer from ${min} to ${max}, got "${v}"` });
    }
  });
}

const RedisEnvSchema = z.object({
  REDIS_URL: optionalString.superRefine((v, ctx) => {
    if (v === undefined) return;
    const fail = (message: string) => ctx.addIssue({ code: 'custom', message });
    let url: URL;
    try {
      url = new URL(v);
    } catch {
      fail(`REDIS_URL "${maskUserinfo(v)}" is not a valid URL (expected e.g. redis://:password@redis:6379)`);
      return;
    }
    const shown = maskUserinfo(v);
    if (url.protocol !== 'redis:' && url.protocol !== 'rediss:') {
      fail(`REDIS_URL "${shown}" must start with redis:// or rediss:// (TLS)`);
    } else if (url.hostname === '') {
      fail(`REDIS_URL "${shown}" has no host`);
    } else if (url.pathname !== '' && url.pathname !== '/' && !/^\/\d{1,5}$/.test(url.pathname)) {
      fail(`REDIS_URL "${shown}" has path "${url.pathname}": only a database number such as /0 is allowed`);
    } else if (url.search !== '' || url.hash !== '') {
      fail(`REDIS_URL "${shown}" must not have a query or fragment`);
    }
  }),
  QUEUE_PREFIX: optionalString.superRefine((v, ctx) => {
    if (v === undefined) return;
    if (v.length > 64 || !PREFIX_RE.test(v)) {
      ctx.addIssue({
        code: 'custom',
        message:
          `QUEUE_PREFIX "${v}" is invalid: use up to 64 letters, digits, ".", "_" or "-", ` +
          'optionally with one {hash tag} for Redis Cluster (e.g. {patchcore}); ":" is not allowed',
      });
    }
  }),
});

/** A setting the user must fix: a UserError, whose message the CLI prints without a stack. */
function throwIssues(what: string, issues: readonly { message: string }[]): never {
  // Only our own messages (which never hold secrets) are used; the ZodError itself is not attached.
  throw new UserError(`invalid ${what}: ${issues.map((i) => i.message).join('; ')}`);
}

/** Refuses a REDIS_URL still holding the Secret template's placeholder password (shared/secret-placeholders.ts). */
function refusePlaceholderPassword(env: Record<string, string | undefined>): void {
  const problems = placeholderSecretProblems(env, ['REDIS_URL']);
  if (problems.length) throw new Error(`invalid Redis configuration: ${problems.join('; ')}`);
}

/**
 * Reads and validates REDIS_URL and QUEUE_PREFIX. Throws one Error listing every problem
 * ("invalid Redis configuration: REDIS_URL ...; QUEUE_PREFIX ..."); the password never appears in it.
 */
export function redisConfigFromEnv(env: Record<string, string | undefined> = process.env): RedisConfig {
  refusePlaceholderPassword(env);
  const parsed = RedisEnvSchema.safeParse({ REDIS_URL: env.REDIS_URL, QUEUE_PREFIX: env.QUEUE_PREFIX });
  if (!parsed.success) throwIssues('Redis configuration', parsed.error.issues);
  const url = new URL(parsed.data.REDIS_URL ?? DEFAULT_REDIS_URL);
  const db = url.pathname.length > 1 ? Number(url.pathname.slice(1)) : 0;
  return new RedisConfig({
    // WHATWG URL keeps the brackets of an IPv6 literal; sockets want it bare.
    host: url.hostname.replace(/^\[(.*)\]$/, '$1'),
    port: url.port === '' ? 6379 : Number(url.port),
    db,
    tls: url.protocol === 'rediss:',
    username: url.username === '' ? undefined : decodeURIComponent(url.username),
    password: url.password === '' ? undefined : decodeURIComponent(url.password),
    prefix: parsed.data.QUEUE_PREFIX ?? DEFAULT_QUEUE_PREFIX,
  });
}

export interface WorkerSettings {
  concurrency: number;
  /** null: no health endpoint; 0: any free port. */
  healthPort: number | null;
  shutdownGraceMs: number;
  lockDurationMs: number;
}

const WorkerEnvSchema = z.object({
  WORKER_CONCURRENCY: intVar('WORKER_CONCURRENCY', 1, 256),
  HEALTH_PORT: intVar('HEALTH_PORT', 0, 65535),
  SHUTDOWN_GRACE_MS: intVar('SHUTDOWN_GRACE_MS', 0, 3_600_000),
  LOCK_DURATION_MS: intVar('LOCK_DURATION_MS', 5_000, 3_600_000),
});

/** Reads WORKER_CONCURRENCY, HEALTH_PORT, SHUTDOWN_GRACE_MS and LOCK_DURATION_MS (see the top of this file). */
export function workerSettingsFromEnv(env: Record<string, string | undefined> = process.env): WorkerSettings {
  const parsed = WorkerEnvSchema.safeParse({
    WORKER_CONCURRENCY: env.WORKER_CONCURRENCY,
    HEALTH_PORT: env.HEALTH_PORT,
    SHUTDOWN_GRACE_MS: env.SHUTDOWN_GRACE_MS,
    LOCK_DURATION_MS: env.LOCK_DURATION_MS,
  });
  if (!parsed.success) throwIssues('worker configuration', parsed.error.issues);
  const v = parsed.data;
  return {
    concurrency: v.WORKER_CONCURRENCY === undefined ? 1 : Number(v.WORKER_CONCURRENCY),
    healthPort: v.HEALTH_PORT === undefined ? null : Number(v.HEALTH_PORT),
    shutdownGraceMs: v.SHUTDOWN_GRACE_MS === undefined ? 30_000 : Number(v.SHUTDOWN_GRACE_MS),
    lockDurationMs: v.LOCK_DURATION_MS === undefined ? 60_000 : Number(v.LOCK_DURATION_MS),
  };
}

/**
 * BullMQ's stalled-job check interval for a lock duration. A job whose worker died is moved back to wait by the
 * first check after its lock expired and after it was seen unlocked once, i.e. within lockDuration + 2 x this.
 * BullMQ's default interval (30 s) ignores lockDuration, so a short LOCK_DURATION_MS alone would not make
 * recovery fast; half the lock, kept between 1 s and 30 s, does (the check is one cheap script per worker).
 */
export function stalledIntervalMs(lockDurationMs: number): number {
  return Math.min(30_000, Math.max(1_000, Math.round(lockDurationMs / 2)));
}

/**
 * How often a job may be recovered from a dead worker before it fails ("job stalled more than allowable limit").
 * BullMQ's default of 1 fails a job on the second preemption; 3 survives a bad night of dying workers and
 * still stops a job that crashes every worker it lands on.
 */
export const MAX_STALLED_COUNT = 3;

/**
 * Delay before reconnect attempt `times` (1, 2, ...): 100 ms doubling to a 5 s cap, spread by +-25% so that
 * many workers do not all reconnect in the same instant after a Redis restart.
 */
export function reconnectDelayMs(times: number, random: () => number = Math.random): number {
  const base = Math.min(100 * 2 ** Math.max(0, times - 1), 5000);
  return Math.round(base * (0.75 + 0.5 * random()));
}

/** Connect attempts a 'fail-fast' connection makes before giving up (about 1.5 s in all). */
export const FAIL_FAST_CONNECT_ATTEMPTS = 4;

export interface RedisConnectionOptions {
  /**
   * 'blocking' (default): for workers, QueueEvents and long-lived services; commands wait through
   * outages and reconnects never stop (BullMQ requires maxRetriesPerRequest: null for workers).
   * 'fail-fast': for one-shot commands (submit, status); a command fails after one retry and the
   * client gives up connecting after FAIL_FAST_CONNECT_ATTEMPTS, so a CLI does not hang on a dead Redis.
   */
  mode?: 'blocking' | 'fail-fast';
  /** Shown by CLIENT LIST; helps find a worker's connections. */
  connectionName?: string;
  /** Connection errors are logged here (one line per distinct message until the next 'ready'). */
  logger?: Logger;
}

/** ioredis options for `cfg`; exposed so tests and tools can see exactly what a connection uses. */
export function redisOptions(cfg: RedisConfig, opts: RedisConnectionOptions = {}): RedisOptions {
  const failFast = opts.mode === 'fail-fast';
  return {
    host: cfg.host,
    port: cfg.port,
    db: cfg.db,
    username: cfg.username,
    password: cfg.password(),
    // Certificate checks stay on; the servername makes SNI work behind managed-Redis proxies.
    tls: cfg.tls ? (isIP(cfg.host) ? {} : { servername: cfg.host }) : undefined,
    connectionName: opts.connectionName,
    maxRetriesPerRequest: failFast ? 1 : null,
    enableReadyCheck: true,
    connectTimeout: 10_000,
    retryStrategy: (times: number) =>
      failFast && times >= FAIL_FAST_CONNECT_ATTEMPTS ? null : reconnectDelayMs(times),
  };
}

/** An ioredis client for `cfg`. Pass it as `connection` to BullMQ; its owner closes it (quit()). */
export function createRedisConnection(cfg: RedisConfig, opts: RedisConnectionOptions = {}): Redis {
  const client = new Redis(redisOptions(cfg, opts));
  // Without a listener ioredis prints every reconnect failure to the console.
  let lastMessage = '';
  client.on('error', (err: Error) => {
    if (err.message === lastMessage) return;
    lastMessage = err.message;
    opts.logger?.warn({ redis: cfg.redactedUrl, err: err.message }, 'redis connection error');
  });
  client.on('ready', () => {
    if (lastMessage !== '') opts.logger?.info({ redis: cfg.redactedUrl }, 'redis connection restored');
    lastMessage = '';
  });
  return client;
}
