// A small HTTP server for probes and scrapes: GET on a fixed set of paths, each answered by a function. It knows
// nothing of workers; the worker runtime decides what /healthz, /readyz and /metrics say.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from '../log.js';

export interface RouteAnswer {
  status: number;
  contentType: string;
  body: string;
}

export type Route = () => RouteAnswer | Promise<RouteAnswer>;

/** A JSON answer: 200 when `ok`, else 503 (what Kubernetes probes read). */
export function jsonAnswer(value: unknown, ok: boolean): RouteAnswer {
  return { status: ok ? 200 : 503, contentType: 'application/json', body: JSON.stringify(value) };
}

export class HealthServer {
  readonly #server: Server;
  #port: number | null = null;

  constructor(routes: Readonly<Record<string, Route>>, log: Logger) {
    this.#server = createServer((req, res) => {
      const path = (req.url ?? '').split('?')[0];
      const route = req.method === 'GET' && Object.hasOwn(routes, path) ? routes[path] : undefined;
      if (!route) {
        res.writeHead(404, { 'content-type': 'application/json' }).end('{"status":"not found"}');
        return;
      }
      Promise.resolve()
        .then(route)
        .then(
          (a) => res.writeHead(a.status, { 'content-type': a.contentType, 'cache-control': 'no-store' }).end(a.body),
          (err: unknown) => {
            log.warn({ path, err: (err as Error).message }, 'health server: request failed');
            if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
            res.end(`${path} unavailable: ${(err as Error).message}\n`);
          },
        );
    });
  }

  /** The bound port once listening, else null. */
  get port(): number | null {
    return this.#port;
  }

  /** Listens on `port` (0 = any free port); resolves with the bound port. */
  listen(port: number, host: string): Promise<number> {
    return new Promise((resolve, reject) => {
      this.#server.once('error', reject);
      this.#server.listen(port, host, () => {
        this.#server.off('error', reject);
        this.#port = (this.#server.address() as AddressInfo).port;
        resolve(this.#port);
      });
    });
  }

  /** Stops listening and drops open connections (a scrape in progress gets no answer). */
  close(): Promise<void> {
    if (!this.#server.listening) return Promise.resolve();
    return new Promise((resolve) => {
      this.#server.close(() => resolve());
      this.#server.closeAllConnections();
    });
  }
}
