// An HTTP proxy between the workers and the S3-compatible server that injects storage faults on request:
// delays, uploads cut off half-way, and requests held until the test says go. Workers use its endpoint as
// S3_ENDPOINT; the test itself talks to the server directly. Headers are forwarded untouched, so SigV4
// signatures (which cover the Host header the client sent) still verify upstream.
// When the upstream server is down the client's socket is destroyed, which clients see as a reset
// connection, as they would behind a load balancer.
import { createServer, request, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface ProxiedRequest {
  method: string;
  /** The object key (path-style URL without the bucket), '' for bucket-level requests. */
  key: string;
}

export interface FaultRule {
  match(req: ProxiedRequest): boolean;
  /** Wait this long before forwarding (a slow network or a slow server). */
  delayMs?: number;
  /** Forward only this many bytes of the request body, then drop both connections (an upload that dies). */
  cutAfterBytes?: number;
  /** Drop the client's connection without forwarding anything (a reset connection). */
  reset?: boolean;
  /** Apply to this many matching requests, then retire; default: every one. */
  times?: number;
  /** Called when the rule fires, before the fault is applied. */
  onMatch?(req: ProxiedRequest): void;
}

export interface FaultProxy {
  endpoint: string;
  port: number;
  /** Every request seen, in order ("GET datasets/x/train/good/000.png"). */
  readonly seen: string[];
  /** Requests the upstream server did not answer (it was down), and requests reset by a rule. */
  readonly dropped: string[];
  /** Adds a rule (the newest active rule that matches applies); returns a function that removes it. */
  addRule(rule: FaultRule): () => void;
  clearRules(): void;
  close(): Promise<void>;
}

function keyOf(url: string, bucket: string): string {
  const path = decodeURIComponent((url.split('?')[0] ?? '').replace(/^\//, ''));
  return path === bucket ? '' : path.startsWith(`${bucket}/`) ? path.slice(bucket.length + 1) : path;
}

/** Starts a proxy on 127.0.0.1 (free port) forwarding to `upstream` (e.g. http://127.0.0.1:4568). */
export async function startFaultProxy(upstream: string, bucket: string): Promise<FaultProxy> {
  const target = new URL(upstream);
  const rules: { rule: FaultRule; left: number }[] = [];
  const seen: string[] = [];
  const dropped: string[] = [];

  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const info: ProxiedRequest = { method: req.method ?? 'GET', key: keyOf(req.url ?? '/', bucket) };
    seen.push(`${info.method} ${info.key}`);
    const active = rules.find((r) => r.left > 0 && r.rule.match(info));
    if (active) active.left--;
    const rule = active?.rule;
    rule?.onMatch?.(info);
    if (rule?.delayMs) await new Promise((r) => setTimeout(r, rule.delayMs));
    // A client that gave up (or was killed) while we waited sends nothing on.
    if (req.socket.destroyed) return;
    if (rule?.reset) {
      dropped.push(`${info.method} ${info.key}`);
      req.socket.destroy();
      return;
    }

    const up = request({
      host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers, agent: false,
    });
    up.on('response', (upRes) => {
      res.writeHead(upRes.statusCode ?? 502, upRes.headers);
      upRes.pipe(res);
    });
    up.on('error', () => {
      dropped.push(`${info.method} ${info.key}`);
      req.socket.destroy();
    });
    if (rule?.cutAfterBytes !== undefined) {
      let sent = 0;
      const limit = rule.cutAfterBytes;
      req.on('data', (chunk: Buffer) => {
        if (sent >= limit) return;
        const part = chunk.subarray(0, limit - sent);
        sent += part.length;
        up.write(part);
        if (sent >= limit) {
          // Let the bytes reach the server, then kill both sides mid-body.
          setTimeout(() => {
            up.destroy();
            req.socket.destroy();
          }, 50);
        }
      });
      req.on('end', () => {
        if (sent < limit) up.end();
      });
    } else {
      req.pipe(up);
    }
  };

  const server: Server = createServer((req, res) => {
    handle(req, res).catch(() => req.socket.destroy());
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    port,
    seen,
    dropped,
    addRule(rule) {
      const entry = { rule, left: rule.times ?? Infinity };
      rules.unshift(entry);
      return () => {
        const i = rules.indexOf(entry);
        if (i >= 0) rules.splice(i, 1);
      };
    },
    clearRules() {
      rules.length = 0;
    },
    async close() {
      const closing = new Promise<void>((r) => server.close(() => r()));
      server.closeAllConnections();
      await closing;
    },
  };
}
