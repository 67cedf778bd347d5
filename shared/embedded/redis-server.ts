// A private redis-server: its own free port on 127.0.0.1, its own temp dir, no persistence unless asked for.
// Used by the tests and by `patchcore demo` when no REDIS_URL is given.
// Usage:  const redis = await startRedisServer();  ...  after(() => redis.stop());
// Each call starts a separate server, so a test may kill one (redis.kill()) without disturbing others.
// Fault tests start it with { appendOnly: true } and call restart(): the same port, directory and AOF, so
// clients see a Redis that went away and came back with its data.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface RedisServer {
  readonly port: number;
  /** redis://127.0.0.1:<port> */
  readonly url: string;
  readonly dir: string;
  /** Stops the server (SIGTERM, then SIGKILL after 2 s) and removes its directory. Safe to call twice. */
  stop(): Promise<void>;
  /** Kills the server abruptly (SIGKILL), as a crash or network loss would look to clients. */
  kill(): Promise<void>;
  /**
   * Stops the server (SIGTERM, or SIGKILL with `crash`), waits `downMs`, and starts it again on the same port
   * and directory; with appendOnly it comes back with its data. Resolves once it answers PING again.
   */
  restart(opts?: { crash?: boolean; downMs?: number }): Promise<void>;
}

export interface RedisServerOptions {
  readyTimeoutMs?: number;
  /** Persist every write to an append-only file in the server's directory (survives restart()). Default false. */
  appendOnly?: boolean;
  /** With appendOnly: 'always' fsyncs every write, so even a SIGKILL loses nothing; default 'everysec'. */
  appendFsync?: 'always' | 'everysec';
  /** Require this password (written to a config file in the server's directory, not on the command line). */
  password?: string;
}

const live = new Set<ChildProcess>();
let exitHookInstalled = false;

/** The redis-server executable: $REDIS_SERVER_BIN, else `redis-server` on PATH. */
export function redisServerBin(): string {
  return process.env.REDIS_SERVER_BIN || 'redis-server';
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

/**
 * One PING over a raw socket; true on +PONG (or -NOAUTH: alive, but wants a password). Avoids a client library
 * (and its reconnect noise) here.
 */
function ping(port: number, timeoutMs = 200): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = connect({ host: '127.0.0.1', port });
    let reply = '';
    const done = (ok: boolean) => {
      clearTimeout(timer);
      sock.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    sock.once('error', () => done(false));
    sock.on('data', (d) => {
      reply += d.toString('latin1');
      if (reply.includes('\r\n')) done(reply.startsWith('+PONG') || reply.startsWith('-NOAUTH'));
    });
    sock.once('connect', () => sock.write('PING\r\n'));
  });
}

function waitExit(child: ChildProcess, ms: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

function serverArgs(port: number, dir: string, opts: RedisServerOptions): string[] {
  const args: string[] = [];
  if (opts.password !== undefined) {
    const conf = join(dir, 'redis.conf');
    // Quoted for redis' config parser; the file is private to this server's temp directory.
    writeFileSync(conf, `requirepass "${opts.password.replace(/["\\]/g, (c) => `\\${c}`)}"\n`, { mode: 0o600 });
    args.push(conf);
  }
  args.push('--port', String(port), '--bind', '127.0.0.1', '--save', '', '--dir', dir);
  if (opts.appendOnly) args.push('--appendonly', 'yes', '--appendfsync', opts.appendFsync ?? 'everysec');
  else args.push('--appendonly', 'no');
  return args;
}

async function startOnce(bin: string, args: string[], port: number, readyTimeoutMs: number): Promise<ChildProcess> {
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const keep = (d: Buffer) => {
    output = (output + d.toString()).slice(-4000);
  };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  let spawnError: Error | undefined;
  child.once('error', (err) => {
    spawnError = err;
  });
  const deadline = Date.now() + readyTimeoutMs;
  while (Date.now() < deadline) {
    if (spawnError) {
      throw new Error(`cannot start ${bin} (set REDIS_SERVER_BIN to its path): ${spawnError.message}`);
    }
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`${bin} on port ${port} exited (${child.exitCode ?? child.signalCode}) before answering PING:\n${output}`);
    }
    if (await ping(port)) return child;
    await new Promise((r) => setTimeout(r, 20));
  }
  child.kill('SIGKILL');
  throw new Error(`${bin} on port ${port} did not answer PING within ${readyTimeoutMs} ms:\n${output}`);
}

/** Starts a private redis-server and resolves once it answers PING. */
export async function startRedisServer(opts: RedisServerOptions = {}): Promise<RedisServer> {
  const bin = redisServerBin();
  const dir = mkdtempSync(join(tmpdir(), 'patchcore-redis-'));
  let child: ChildProcess | undefined;
  let port = 0;
  let lastError: unknown;
  // The free port may be taken between probing and binding; a fresh port on retry fixes that race.
  for (let tryNo = 0; tryNo < 3 && !child; tryNo++) {
    port = await freePort();
    try {
      child = await startOnce(bin, serverArgs(port, dir, opts), port, opts.readyTimeoutMs ?? 5000);
    } catch (err) {
      lastError = err;
      if ((err as Error).message.startsWith('cannot start')) break;
    }
  }
  if (!child) {
    rmSync(dir, { recursive: true, force: true });
    throw lastError;
  }
  let proc = child;
  live.add(proc);
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    // A test run that dies early must not leave servers behind.
    process.once('exit', () => {
      for (const c of live) c.kill('SIGKILL');
    });
  }
  const halt = async (signal: NodeJS.Signals) => {
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill(signal);
      if (!(await waitExit(proc, 2000))) {
        proc.kill('SIGKILL');
        await waitExit(proc, 2000);
      }
    }
    live.delete(proc);
  };
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    dir,
    async stop() {
      await halt('SIGTERM');
      rmSync(dir, { recursive: true, force: true });
    },
    async kill() {
      await halt('SIGKILL');
    },
    async restart(restartOpts = {}) {
      await halt(restartOpts.crash ? 'SIGKILL' : 'SIGTERM');
      if (restartOpts.downMs) await new Promise((r) => setTimeout(r, restartOpts.downMs));
      proc = await startOnce(bin, serverArgs(port, dir, opts), port, opts.readyTimeoutMs ?? 5000);
      live.add(proc);
    },
  };
}

/** Polls `probe` until it returns a truthy value (returned) or `timeoutMs` passes (throws naming `what`). */
export async function waitFor<T>(
  what: string,
  probe: () => T | Promise<T>,
  opts: { timeoutMs?: number; intervalMs?: number } = {},
): Promise<NonNullable<T>> {
  const deadline = Date.now() + (opts.timeoutMs ?? 10_000);
  let last: T | undefined;
  while (Date.now() < deadline) {
    last = await probe();
    if (last) return last as NonNullable<T>;
    await new Promise((r) => setTimeout(r, opts.intervalMs ?? 20));
  }
  throw new Error(`timed out waiting for ${what} (last value: ${JSON.stringify(last)})`);
}
