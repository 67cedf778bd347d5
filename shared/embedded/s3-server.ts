// A real S3-compatible server (s3rver) in this process, for the tests and for `patchcore demo` when no
// S3_ENDPOINT is given: on 127.0.0.1 with a free port and a fresh temporary directory (call stop()).
//
// s3rver 3.7 encrypts ListObjectsV2 continuation tokens with single DES, which OpenSSL 3 (Node >= 17)
// only offers in its legacy provider: every truncated listing then fails with HTTP 500. The shim
// below maps s3rver's 'des' to 'des-ede3-cbc' with the key repeated three times, which is the same
// cipher (EDE with K1 = K2 = K3 is single DES); it only touches calls that ask for 'des'.
//
// Conditional writes: s3rver 3.7 ignores If-None-Match / If-Match on PutObject and CompleteMultipartUpload.
// AWS S3 (since 2024) and MinIO honour them, and the model publication relies on them, so the middleware
// below gives the embedded server S3's documented behaviour
// (https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-writes.html):
//   If-None-Match: *       the write succeeds only when no object has the key, else 412 PreconditionFailed;
//   If-Match: <etag>       only when the object exists with that ETag: 412 PreconditionFailed on another ETag,
//                          404 NoSuchKey when there is no object.
// Writes to one key pass through a per-key lock, so two concurrent conditional PUTs are decided one after the
// other: exactly one `If-None-Match: *` wins. A GET or HEAD of a key waits for the write of it under way.
//
// Atomic objects: s3rver writes an object's files in place (truncate, then write), so a GET racing a PUT of
// the same key could read an empty or partial body; S3 serves the old object or the new one, never a part.
// atomicObjectWrites() below writes each file beside its place and renames it there.
import { randomUUID, createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import type { Server } from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';

const require = createRequire(import.meta.url);

export interface S3Server {
  endpoint: string;
  port: number;
  bucket: string;
  /** S3_* variables for storageConfigFromEnv / ObjectStore.fromEnv (s3rver's dummy credentials, or yours). */
  env: Record<string, string>;
  directory: string;
  /** Stops the server and removes its directory. Safe to call twice. */
  stop(): Promise<void>;
  /** Stops the server, dropping open connections, but keeps its directory (an outage); see restart(). */
  kill(): Promise<void>;
  /** Starts it again (after kill(), or stops it first) on the same port and directory: every object is back. */
  restart(): Promise<void>;
}

export interface S3ServerOptions {
  /** Accept this key pair besides s3rver's S3RVER/S3RVER, and put it in `env`. */
  credentials?: { accessKeyId: string; secretAccessKey: string };
}

interface KoaContext {
  method: string;
  path: string;
  query: Record<string, string | string[] | undefined>;
  get(header: string): string;
  status: number;
  type: string;
  body: unknown;
  store: { getMetadata(bucket: string, key: string): Promise<{ etag: string }> };
  res: import('node:http').ServerResponse;
}
type KoaMiddleware = (ctx: KoaContext, next: () => Promise<void>) => Promise<void>;

interface S3rverInstance {
  run(): Promise<{ port: number }>;
  store: FilesystemStore;
  close(): Promise<void>;
  httpServer?: Server;
  middleware: KoaMiddleware[];
}

const xmlError = (code: string, message: string, key: string) =>
  `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>${message}</Message><Key>${key.replace(/[<>&]/g, '')}</Key></Error>`;

/** S3's conditional-write semantics for PutObject and CompleteMultipartUpload (path-style requests). */
export function conditionalWrites(): KoaMiddleware {
  const locks = new Map<string, Promise<void>>();
  return async (ctx, next) => {
    const ifNoneMatch = ctx.get('if-none-match');
    const ifMatch = ctx.get('if-match');
    const isWrite =
      (ctx.method === 'PUT' && ctx.query.partNumber === undefined && ctx.get('x-amz-copy-source') === '') ||
      (ctx.method === 'POST' && ctx.query.uploadId !== undefined);
    const m = /^\/([^/]+)\/(.+)$/.exec(ctx.path);
    if (!m) return next();
    const bucket = m[1];
    const key = decodeURIComponent(m[2]);
    const lockId = `${bucket}/${key}`;
    if (!isWrite) {
      // A read waits for the write under way, so that it does not pair one version's length with the other's body.
      if (ctx.method === 'GET' || ctx.method === 'HEAD') await locks.get(lockId);
      return next();
    }
    // Chain on the previous write of this key; every write takes the lock, conditional or not.
    const previous = locks.get(lockId) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((r) => (release = r));
    const tail = previous.then(() => mine);
    locks.set(lockId, tail);
    await previous;
    try {
      if (ifNoneMatch || ifMatch) {
        const etag = await ctx.store.getMetadata(bucket, key).then((md) => md.etag, () => null);
        let fail: [number, string, string] | null = null;
        if (ifNoneMatch && ifNoneMatch.trim() !== '*') fail = [501, 'NotImplemented', 'If-None-Match supports only "*" on writes'];
        else if (ifNoneMatch && etag !== null) fail = [412, 'PreconditionFailed', 'At least one of the pre-conditions you specified did not hold'];
        else if (ifMatch && etag === null) fail = [404, 'NoSuchKey', 'The specified key does not exist.'];
        else if (ifMatch && ifMatch.trim() !== '*' && ifMatch.trim() !== etag) {
          fail = [412, 'PreconditionFailed', 'At least one of the pre-conditions you specified did not hold'];
        }
        if (fail) {
          ctx.status = fail[0];
          ctx.type = 'application/xml';
          ctx.body = xmlError(fail[1], fail[2], key);
          return;
        }
      }
      // A client that goes away mid-body (a cut connection) can leave s3rver's write pending for ever; the lock
      // must not wait for it, or every later write of the key would hang behind it.
      const gone = new Promise<void>((resolve) => ctx.res.once('close', () => resolve()));
      await Promise.race([next(), gone]);
    } finally {
      release();
      if (locks.get(lockId) === tail) locks.delete(lockId);
    }
  };
}
type S3rverClass = new (options: Record<string, unknown>) => S3rverInstance;

/** The part of s3rver's FilesystemStore (lib/stores/filesystem.js) that atomicObjectWrites replaces. */
interface FilesystemStore {
  getResourcePath(bucket: string, key: string, resource: string): string;
  putObject(object: { bucket: string; key: string; content: Buffer | Readable; metadata: Record<string, string> }): Promise<{ size: number; md5: string }>;
  putMetadata(bucket: string, key: string, metadata: Record<string, string>, md5?: string): Promise<void>;
}

/** Writes `data` to a temporary file beside `path`, then renames it over `path` (atomic within a directory). */
async function replaceFile(path: string, data: Readable | string, onChunk?: (chunk: Buffer) => void): Promise<void> {
  const tmp = `${path}.${randomUUID()}.tmp`; // not an object to s3rver: its listing keeps only "._S3rver_object" names
  try {
    if (typeof data === 'string') await writeFile(tmp, data);
    else {
      const tap = new Transform({ transform(chunk: Buffer, _enc, done) { onChunk?.(chunk); done(null, chunk); } });
      await pipeline(data, tap, createWriteStream(tmp));
    }
    await rename(tmp, path);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
}

/**
 * s3rver's putObject and putMetadata, with every file written by replaceFile: the body first, then its MD5 (the
 * ETag) and metadata, so that a reader may see a new body with the old ETag for a moment (a conditional write
 * based on it fails and re-reads) but never an old body with the new ETag (which would let a stale decision win).
 */
function atomicObjectWrites(store: FilesystemStore): void {
  const allowed = (require('s3rver/lib/models/object.js') as { ALLOWED_METADATA: string[] }).ALLOWED_METADATA;
  store.putMetadata = async (bucket, key, metadata, md5) => {
    const kept = Object.entries(metadata).filter(([k]) => allowed.includes(k) || k.startsWith('x-amz-meta-'));
    if (md5) await replaceFile(store.getResourcePath(bucket, key, 'object.md5'), md5);
    await replaceFile(store.getResourcePath(bucket, key, 'metadata.json'), JSON.stringify(Object.fromEntries(kept), null, 2));
  };
  store.putObject = async (object) => {
    const path = store.getResourcePath(object.bucket, object.key, 'object');
    await mkdir(dirname(path), { recursive: true });
    const hash = createHash('md5');
    let size = 0;
    const body = Buffer.isBuffer(object.content) ? Readable.from([object.content]) : object.content;
    await replaceFile(path, body, (chunk) => {
      hash.update(chunk);
      size += chunk.length;
    });
    const md5 = hash.digest('hex');
    await store.putMetadata(object.bucket, object.key, object.metadata, md5);
    return { size, md5 };
  };
}

type CipherFactory = (alg: string, key: Buffer, iv: Buffer | null, opts?: unknown) => unknown;
interface MutableCrypto {
  createCipheriv: CipherFactory;
  createDecipheriv: CipherFactory;
  __s3rverDesShim?: boolean;
}

function ensureDesForS3rver(): void {
  const crypto = require('node:crypto') as MutableCrypto;
  if (crypto.__s3rverDesShim) return;
  try {
    crypto.createCipheriv('des', Buffer.alloc(8), Buffer.alloc(8));
    return; // legacy provider loaded (e.g. --openssl-legacy-provider): nothing to do
  } catch {
    // fall through to the shim
  }
  const cipher = crypto.createCipheriv;
  const decipher = crypto.createDecipheriv;
  const tripled = (key: Buffer): Buffer => Buffer.concat([key, key, key]);
  crypto.createCipheriv = (alg, key, iv, opts) =>
    String(alg).toLowerCase() === 'des' ? cipher('des-ede3-cbc', tripled(key), iv, opts) : cipher(alg, key, iv, opts);
  crypto.createDecipheriv = (alg, key, iv, opts) =>
    String(alg).toLowerCase() === 'des' ? decipher('des-ede3-cbc', tripled(key), iv, opts) : decipher(alg, key, iv, opts);
  crypto.__s3rverDesShim = true;
}

/** Starts s3rver; the bucket is not created (ObjectStore.ensureBucket() does that). */
export async function startS3rver(bucket = 'patchcore-test', opts: S3ServerOptions = {}): Promise<S3Server> {
  ensureDesForS3rver();
  const S3rver = require('s3rver') as S3rverClass;
  if (opts.credentials) {
    // s3rver accepts only access key ids of its one built-in account (SigV4 signatures themselves are not
    // verified, so a wrong secret goes unnoticed; a wrong key id is refused); register this pair there.
    const account = require('s3rver/lib/models/account.js') as { DUMMY_ACCOUNT: { createKeyPair(id: string, secret: string): void } };
    account.DUMMY_ACCOUNT.createKeyPair(opts.credentials.accessKeyId, opts.credentials.secretAccessKey);
  }
  const directory = await mkdtemp(join(tmpdir(), 'patchcore-s3rver-'));
  const create = (port: number): S3rverInstance => {
    const s = new S3rver({ address: '127.0.0.1', port, silent: true, directory });
    atomicObjectWrites(s.store);
    // First in the chain (before s3rver's routes): the request body is not consumed when it refuses a write.
    s.middleware.unshift(conditionalWrites());
    return s;
  };
  let server: S3rverInstance | null = create(0);
  const { port } = await server.run();
  const endpoint = `http://127.0.0.1:${port}`;
  const halt = async () => {
    if (!server) return;
    const s = server;
    server = null;
    const closing = s.close();
    s.httpServer?.closeAllConnections(); // keep-alive sockets of clients not yet destroyed
    await closing;
  };
  return {
    endpoint,
    port,
    bucket,
    directory,
    env: {
      S3_ENDPOINT: endpoint,
      S3_BUCKET: bucket,
      S3_REGION: 'us-east-1',
      S3_ACCESS_KEY_ID: opts.credentials?.accessKeyId ?? 'S3RVER',
      S3_SECRET_ACCESS_KEY: opts.credentials?.secretAccessKey ?? 'S3RVER',
    },
    async stop() {
      await halt();
      await rm(directory, { recursive: true, force: true });
    },
    kill: halt,
    async restart() {
      await halt();
      const s = create(port);
      await s.run();
      server = s;
    },
  };
}
