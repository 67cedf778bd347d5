/**
 * The bucket as the pipeline sees it: typed get/put/list/delete over @aws-sdk/client-s3, working
 * against AWS S3, MinIO and s3rver alike.
 *
 * Atomicity convention (S3 has no transactions; every worker relies on this):
 * 1. A writer puts all of its data objects first (embeddings, scores, bank files, ...) and awaits them.
 * 2. Only then does it put one small manifest / marker JSON (putManifest) that lists those objects
 *    (keys and sizes; uploadDir returns exactly that list). The manifest is the commit point.
 * 3. Readers start from the manifest (getManifest: null = not committed yet) and trust only the
 *    objects it lists. Anything under a prefix that no manifest lists is an unfinished or crashed
 *    write: ignore it; cleanup may delete it.
 * 4. Objects are never rewritten in place with different content: a new model is a new
 *    models/<category>/<version>/ prefix, and the `latest` pointer is switched (put) last.
 * 5. Where two writers may race for one key (a model version's manifest, the `latest` pointer), the
 *    write is conditional (PutConditions: If-None-Match: * creates only, If-Match: <etag> replaces only
 *    what the writer read); the loser gets PreconditionFailedError. AWS S3 and MinIO honour both headers;
 *    the embedded s3rver does through the middleware in shared/embedded/s3-server.ts.
 * AWS S3 and MinIO give read-after-write consistency, so a reader that sees the manifest sees the data.
 *
 * Retries: the SDK's standard retry strategy (exponential backoff with jitter) retries throttling,
 * 5xx, timeouts and connection errors up to config.maxAttempts attempts per request. Bodies given as
 * a Readable go through lib-storage's Upload, which buffers each part, so parts are retried too.
 * A download whose body breaks off after the response started is retried here (getObject,
 * downloadPrefix). getStream hands the live body to the caller and cannot retry it.
 *
 * s3rver / older S3-compatible servers: with a custom endpoint the client computes request
 * checksums only when an operation requires them (requestChecksumCalculation 'WHEN_REQUIRED'). The
 * SDK's default since 3.729 ('WHEN_SUPPORTED') sends a PutObject with a stream body aws-chunked with
 * a trailing CRC32, which s3rver stores verbatim: the object then holds chunk framing, not the data.
 * (putObject itself only ever sends buffers, but `client` is public.) Override with options.checksums.
 */
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { inspect } from 'node:util';
import {
  CreateBucketCommand,
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  type BucketLocationConstraint,
  type GetObjectCommandOutput,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import type { z } from 'zod';
import { storageConfigFromEnv, type StorageConfig } from './config.js';
import { MAX_KEY_BYTES, normaliseRelativePath } from './keys.js';
import { PermanentError } from '../errors.js';

const MiB = 1024 * 1024;
/** S3's smallest allowed part (all but the last). */
export const MIN_PART_SIZE = 5 * MiB;

export interface ObjectStoreOptions {
  /** Multipart part size in bytes; default 8 MiB, at least 5 MiB. */
  partSize?: number;
  /** Buffers larger than this go multipart; default = partSize. Readable bodies always use Upload. */
  multipartThreshold?: number;
  /** Parts of one upload in flight at once; default 4 (memory: partSize * uploadQueueSize). */
  uploadQueueSize?: number;
  /** MaxKeys per ListObjectsV2 page; default 1000 (the S3 maximum). */
  listPageSize?: number;
  /** Files in flight at once in uploadDir / downloadPrefix; default 8. */
  transferConcurrency?: number;
  /** TCP connect timeout; default 5000 ms. */
  connectionTimeoutMs?: number;
  /** Socket idle timeout of a request; default 120000 ms. */
  socketTimeoutMs?: number;
  /** Request checksums: default 'when-required' with a custom endpoint, 'when-supported' on AWS. */
  checksums?: 'when-required' | 'when-supported';
}

export interface ListedObject {
  key: string;
  size: number;
  /** When the object was last written (absent if the server did not say). */
  lastModified?: Date;
}

/** Conditions of a write (S3 conditional writes). */
export interface PutConditions {
  /** '*': write only if no object has the key. */
  ifNoneMatch?: '*';
  /** Write only if the object exists with this ETag (as head/getWithEtag returned it). */
  ifMatch?: string;
}

export interface ObjectInfo {
  size: number;
  etag: string;
}

export interface PutResult {
  key: string;
  size: number;
  etag: string | undefined;
}

export type PutBody = Buffer | Uint8Array | string | Readable;

/** A key (or a bucket) that does not exist. */
export class NotFoundError extends Error {
  override readonly name = 'NotFoundError';
  constructor(
    readonly bucket: string,
    readonly key: string,
    options?: { cause?: unknown },
  ) {
    super(`object "${key}" not found in bucket "${bucket}" (s3://${bucket}/${key})`, options);
  }
}

/**
 * A conditional write lost: the key exists (If-None-Match: *), or no longer has the ETag the writer read, or is
 * gone (If-Match). Re-read and decide again; retrying the same write cannot succeed.
 */
export class PreconditionFailedError extends Error {
  override readonly name = 'PreconditionFailedError';
  constructor(
    readonly bucket: string,
    readonly key: string,
    readonly conditions: PutConditions,
    options?: { cause?: unknown },
  ) {
    const what = conditions.ifNoneMatch ? 'it already exists' : `it no longer has ETag ${conditions.ifMatch}`;
    super(`conditional write of s3://${bucket}/${key} refused: ${what}`, options);
  }
}

/** An object larger than the reader allows; refused from its Content-Length, before its body is read. */
export class ObjectTooLargeError extends PermanentError {
  constructor(readonly bucket: string, readonly key: string, readonly size: number, readonly maxBytes: number) {
    super(`object "${key}" in bucket "${bucket}" is ${size} bytes; at most ${maxBytes} are allowed here`);
  }
}

/** Any other failed S3 operation; the message names the operation, the object and the S3 error. */
export class StorageError extends Error {
  override readonly name = 'StorageError';
  constructor(
    readonly operation: string,
    readonly bucket: string,
    readonly target: string,
    detail: string,
    options?: { cause?: unknown },
  ) {
    super(`S3 ${operation} of s3://${bucket}/${target} failed: ${detail}`, options);
  }
}

interface SdkError {
  name?: string;
  message?: string;
  code?: string;
  $metadata?: { httpStatusCode?: number; attempts?: number };
}
// Failures of the local disk, not of the network: retrying the download would not help.
const LOCAL_FS_ERRORS = new Set(['ENOSPC', 'EACCES', 'EPERM', 'EROFS', 'EISDIR', 'ENOTDIR', 'EEXIST', 'EMFILE', 'ENFILE', 'EDQUOT']);
const sdkError = (e: unknown): SdkError => (typeof e === 'object' && e !== null ? (e as SdkError) : {});
const httpStatus = (e: unknown): number | undefined => sdkError(e).$metadata?.httpStatusCode;

/** Checks a raw object key: what keys.ts builds always passes; this guards hand-written keys. */
export function checkObjectKey(key: string, what = 'object key'): string {
  const bad = (why: string): never => {
    throw new Error(`${what} ${JSON.stringify(key)} is invalid: ${why}`);
  };
  if (typeof key !== 'string' || key.length === 0) bad('it is empty');
  if (Buffer.byteLength(key, 'utf8') > MAX_KEY_BYTES) bad(`it is longer than ${MAX_KEY_BYTES} bytes`);
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(key)) bad('it contains a control character');
  if (key.startsWith('/')) bad('it starts with "/"');
  const segments = key.split('/');
  for (let i = 0; i < segments.length; i++) {
    const s = segments[i];
    if (s === '.' || s === '..') bad(`it contains a "${s}" segment`);
    if (s === '' && i < segments.length - 1) bad('it contains an empty segment ("//")');
  }
  return key;
}

/** A prefix treated as a folder: "runs/a" and "runs/a/" both mean "runs/a/", never "runs/ab/...". */
function folderPrefix(prefix: string, what: string): string {
  if (prefix === '') return '';
  const p = prefix.endsWith('/') ? prefix : `${prefix}/`;
  checkObjectKey(p, what);
  return p;
}

/** Where `key` (listed under `prefix`) lands inside localDir; refuses anything that would escape it. */
export function localPathForKey(localDir: string, prefix: string, key: string): string {
  if (!key.startsWith(prefix)) throw new Error(`object key ${JSON.stringify(key)} is not under prefix "${prefix}"`);
  const rel = normaliseRelativePath(`object key ${JSON.stringify(key)} below prefix "${prefix}"`, key.slice(prefix.length));
  const root = resolve(localDir);
  const target = resolve(root, ...rel.split('/'));
  if (!target.startsWith(root + sep)) {
    throw new Error(`object key ${JSON.stringify(key)} would be written outside ${root}`);
  }
  return target;
}

/** Reads a body completely; with a known length, into one preallocated buffer. */
async function readBody(body: Readable, expected: number | undefined): Promise<Buffer> {
  if (expected === undefined) {
    const chunks: Buffer[] = [];
    for await (const c of body) chunks.push(c as Buffer);
    return Buffer.concat(chunks);
  }
  const out = Buffer.allocUnsafe(expected);
  let n = 0;
  for await (const chunk of body) {
    const c = chunk as Buffer;
    if (n + c.length > expected) throw new Error(`body is longer than its Content-Length ${expected}`);
    c.copy(out, n);
    n += c.length;
  }
  if (n !== expected) throw new Error(`body ended after ${n} of ${expected} bytes`);
  return out;
}

async function forEachLimit<T>(items: AsyncIterable<T> | Iterable<T>, limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  const running = new Set<Promise<void>>();
  let failure: { error: unknown } | undefined;
  for await (const item of items) {
    if (failure) break;
    const p = fn(item).then(
      () => {
        running.delete(p);
      },
      (error: unknown) => {
        running.delete(p);
        failure ??= { error };
      },
    );
    running.add(p);
    if (running.size >= limit) await Promise.race(running);
  }
  await Promise.all(running);
  if (failure) throw failure.error;
}

async function* walkFiles(root: string, dir = root): AsyncGenerator<string> {
  const entries = await readdir(dir, { withFileTypes: true });
  entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (const e of entries) {
    const p = join(dir, e.name);
    if (e.isDirectory()) yield* walkFiles(root, p);
    else if (e.isFile()) yield p;
    else if (e.isSymbolicLink() && (await stat(p)).isFile()) yield p; // linked files yes, linked dirs no (loops)
  }
}

export class ObjectStore {
  readonly client: S3Client;
  readonly bucket: string;
  readonly #config: StorageConfig;
  readonly #partSize: number;
  readonly #multipartThreshold: number;
  readonly #uploadQueueSize: number;
  readonly #listPageSize: number;
  readonly #transferConcurrency: number;

  constructor(config: StorageConfig, options: ObjectStoreOptions = {}) {
    this.#config = config;
    this.bucket = config.bucket;
    this.#partSize = options.partSize ?? 8 * MiB;
    if (!Number.isInteger(this.#partSize) || this.#partSize < MIN_PART_SIZE) {
      throw new Error(`ObjectStore option partSize ${options.partSize} is invalid: S3 parts are at least ${MIN_PART_SIZE} bytes`);
    }
    this.#multipartThreshold = options.multipartThreshold ?? this.#partSize;
    this.#uploadQueueSize = positiveInt('uploadQueueSize', options.uploadQueueSize ?? 4);
    this.#listPageSize = positiveInt('listPageSize', options.listPageSize ?? 1000);
    this.#transferConcurrency = positiveInt('transferConcurrency', options.transferConcurrency ?? 8);
    const checksums = options.checksums ?? (config.endpoint ? 'when-required' : 'when-supported');
    const checksumMode = checksums === 'when-required' ? 'WHEN_REQUIRED' : 'WHEN_SUPPORTED';
    const clientConfig: S3ClientConfig = {
      region: config.region,
      endpoint: config.endpoint,
      forcePathStyle: config.forcePathStyle,
      credentials: config.credentials(),
      maxAttempts: config.maxAttempts,
      retryMode: 'standard',
      requestChecksumCalculation: checksumMode,
      responseChecksumValidation: checksumMode,
      requestHandler: {
        connectionTimeout: options.connectionTimeoutMs ?? 5_000,
        requestTimeout: options.socketTimeoutMs ?? 120_000,
      },
    };
    this.client = new S3Client(clientConfig);
  }

  /** An ObjectStore from the S3_* variables (see config.ts). */
  static fromEnv(env: Record<string, string | undefined> = process.env, options?: ObjectStoreOptions): ObjectStore {
    return new ObjectStore(storageConfigFromEnv(env), options);
  }

  get config(): StorageConfig {
    return this.#config;
  }

  /** Closes the client's sockets. */
  destroy(): void {
    this.client.destroy();
  }

  toJSON(): unknown {
    return { objectStore: this.#config.toJSON() };
  }

  [inspect.custom](): string {
    return `ObjectStore ${inspect(this.#config.toJSON())}`;
  }

  /** Creates the bucket unless it exists (safe when many workers race to do it). */
  async ensureBucket(): Promise<'exists' | 'created'> {
    if (await this.#bucketExists()) return 'exists';
    const region = this.#config.region;
    try {
      await this.client.send(
        new CreateBucketCommand({
          Bucket: this.bucket,
          ...(region !== 'us-east-1' ? { CreateBucketConfiguration: { LocationConstraint: region as BucketLocationConstraint } } : {}),
        }),
      );
      return 'created';
    } catch (e) {
      const name = sdkError(e).name;
      if (name === 'BucketAlreadyOwnedByYou') return 'exists';
      // Another worker won the race, or the (global) name belongs to somebody else.
      if (name === 'BucketAlreadyExists' && (await this.#bucketExists())) return 'exists';
      if (name === 'BucketAlreadyExists') {
        throw new StorageError('createBucket', this.bucket, '', 'the bucket name is taken by another account; choose another S3_BUCKET', { cause: e });
      }
      throw this.#wrap('createBucket', '', e);
    }
  }

  async #bucketExists(): Promise<boolean> {
    try {
      await this.client.send(new HeadBucketCommand({ Bucket: this.bucket }));
      return true;
    } catch (e) {
      if (httpStatus(e) === 404) return false;
      if (httpStatus(e) === 403) {
        throw new StorageError('headBucket', this.bucket, '', 'access denied (wrong credentials, or the bucket belongs to another account)', { cause: e });
      }
      throw this.#wrap('headBucket', '', e);
    }
  }

  /**
   * Writes one object. Buffers up to multipartThreshold go in one PutObject; larger buffers and
   * every Readable stream go through a multipart Upload (parts of partSize, streamed, retried).
   */
  async putObject(key: string, body: PutBody, contentType = 'application/octet-stream', conditions?: PutConditions): Promise<PutResult> {
    checkObjectKey(key);
    const data = typeof body === 'string' ? Buffer.from(body, 'utf8') : body;
    if (conditions && (conditions.ifNoneMatch || conditions.ifMatch)) {
      // One PutObject, whatever the size (S3 allows 5 GiB): a conditional write is decided once, not per part.
      if (!(data instanceof Uint8Array)) throw new Error(`putObject("${key}"): a conditional write needs a Buffer body, not a stream`);
      try {
        const r = await this.client.send(
          new PutObjectCommand({
            Bucket: this.bucket, Key: key, Body: data, ContentType: contentType, ContentLength: data.byteLength,
            IfNoneMatch: conditions.ifNoneMatch, IfMatch: conditions.ifMatch,
          }),
        );
        return { key, size: data.byteLength, etag: r.ETag };
      } catch (e) {
        const status = httpStatus(e);
        const name = sdkError(e).name;
        // 412: the condition did not hold; 409: a concurrent conditional write won; 404 with If-Match: the key is gone.
        if (status === 412 || status === 409 || name === 'PreconditionFailed' || (conditions.ifMatch && (status === 404 || name === 'NoSuchKey'))) {
          throw new PreconditionFailedError(this.bucket, key, conditions, { cause: e });
        }
        throw this.#wrap('putObject', key, e);
      }
    }
    try {
      if (data instanceof Uint8Array && data.byteLength <= this.#multipartThreshold) {
        const r = await this.client.send(
          new PutObjectCommand({ Bucket: this.bucket, Key: key, Body: data, ContentType: contentType, ContentLength: data.byteLength }),
        );
        return { key, size: data.byteLength, etag: r.ETag };
      }
      const upload = new Upload({
        client: this.client,
        params: { Bucket: this.bucket, Key: key, Body: data, ContentType: contentType },
        partSize: this.#partSize,
        queueSize: this.#uploadQueueSize,
        leavePartsOnError: false,
      });
      let size = 0;
      upload.on('httpUploadProgress', (p) => {
        if (p.loaded !== undefined && p.loaded > size) size = p.loaded;
      });
      const r = await upload.done();
      return { key, size, etag: r.ETag };
    } catch (e) {
      throw this.#wrap('putObject', key, e);
    }
  }

  /**
   * The whole object in memory. Throws NotFoundError when the key does not exist; with maxBytes, an object larger
   * than that is refused (ObjectTooLargeError) from the response's Content-Length before its body is read. With
   * range, only bytes [start, end) (an HTTP Range request).
   */
  async getObject(key: string, opts: { maxBytes?: number; range?: { start: number; end: number } } = {}): Promise<Buffer> {
    const { range } = opts;
    if (range && !(Number.isInteger(range.start) && Number.isInteger(range.end) && range.start >= 0 && range.end > range.start)) {
      throw new Error(`getObject ${key}: byte range [${range.start}, ${range.end}) must be non-empty integers from 0`);
    }
    const rangeHeader = range ? `bytes=${range.start}-${range.end - 1}` : undefined;
    return this.#download('getObject', key, (res) => {
      if (opts.maxBytes !== undefined && (res.ContentLength === undefined || res.ContentLength > opts.maxBytes)) {
        (res.Body as Readable | undefined)?.destroy?.();
        throw new ObjectTooLargeError(this.bucket, key, res.ContentLength ?? -1, opts.maxBytes);
      }
      return readBody(res.Body as Readable, res.ContentLength);
    }, rangeHeader);
  }

  /** The whole object and its ETag (for a later If-Match write), or null when the key does not exist. */
  async getWithEtag(key: string): Promise<{ body: Buffer; etag: string } | null> {
    try {
      return await this.#download('getObject', key, async (res) => ({
        body: await readBody(res.Body as Readable, res.ContentLength),
        etag: res.ETag ?? '',
      }));
    } catch (e) {
      if (e instanceof NotFoundError) return null;
      throw e;
    }
  }

  /** The object's body as a stream (not retried once it started). Throws NotFoundError when absent. */
  async getStream(key: string): Promise<Readable> {
    checkObjectKey(key);
    try {
      const res = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key }));
      return res.Body as Readable;
    } catch (e) {
      throw this.#wrap('getObject', key, e);
    }
  }

  /** Size and ETag, or null when the key does not exist (or the bucket: a HEAD 404 carries no error code). */
  async head(key: string): Promise<ObjectInfo | null> {
    checkObjectKey(key);
    try {
      const r = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: key }));
      return { size: r.ContentLength ?? 0, etag: r.ETag ?? '' };
    } catch (e) {
      if (httpStatus(e) === 404) return null;
      throw this.#wrap('headObject', key, e);
    }
  }

  async exists(key: string): Promise<boolean> {
    return (await this.head(key)) !== null;
  }

  /**
   * Every object whose key starts with `prefix` (a plain string prefix: "runs/a" also matches
   * "runs/ab/..."; use the folder prefixes of keys.ts), in key order, fetched page by page.
   */
  async *list(prefix: string, options: { pageSize?: number } = {}): AsyncGenerator<ListedObject> {
    if (prefix !== '') checkObjectKey(prefix, 'list prefix');
    const pageSize = positiveInt('pageSize', options.pageSize ?? this.#listPageSize);
    let token: string | undefined;
    do {
      let page;
      try {
        page = await this.client.send(
          new ListObjectsV2Command({ Bucket: this.bucket, Prefix: prefix, MaxKeys: pageSize, ContinuationToken: token }),
        );
      } catch (e) {
        throw this.#wrap('listObjectsV2', prefix, e);
      }
      for (const o of page.Contents ?? []) {
        if (o.Key !== undefined) yield { key: o.Key, size: o.Size ?? 0, ...(o.LastModified ? { lastModified: o.LastModified } : {}) };
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
      if (page.IsTruncated && !token) {
        throw new StorageError('listObjectsV2', this.bucket, prefix, 'the server said the listing is truncated but sent no NextContinuationToken');
      }
    } while (token);
  }

  /** Deletes one object; deleting a missing key is not an error (S3 semantics). */
  async delete(key: string): Promise<void> {
    checkObjectKey(key);
    try {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: key }));
    } catch (e) {
      throw this.#wrap('deleteObject', key, e);
    }
  }

  /** Deletes everything under the folder `prefix` ("/" appended if missing); returns how many objects. */
  async deletePrefix(prefix: string): Promise<number> {
    if (prefix === '' || prefix === '/') throw new Error('deletePrefix: refusing an empty prefix (it would empty the whole bucket)');
    const folder = folderPrefix(prefix, 'deletePrefix prefix');
    let deleted = 0;
    let batch: string[] = [];
    const flush = async (): Promise<void> => {
      if (batch.length === 0) return;
      const keys = batch;
      batch = [];
      let r;
      try {
        r = await this.client.send(
          new DeleteObjectsCommand({ Bucket: this.bucket, Delete: { Objects: keys.map((Key) => ({ Key })), Quiet: true } }),
        );
      } catch (e) {
        throw this.#wrap('deleteObjects', folder, e);
      }
      const errors = r.Errors ?? [];
      if (errors.length > 0) {
        const sample = errors.slice(0, 3).map((x) => `${x.Key} (${x.Code}: ${x.Message})`).join(', ');
        throw new StorageError('deleteObjects', this.bucket, folder, `${errors.length} of ${keys.length} objects could not be deleted: ${sample}`);
      }
      deleted += keys.length;
    };
    // Deleting a listed page does not disturb the continuation token of the next one.
    for await (const o of this.list(folder)) {
      batch.push(o.key);
      if (batch.length === 1000) await flush();
    }
    await flush();
    return deleted;
  }

  async putJson(key: string, value: unknown, conditions?: PutConditions): Promise<PutResult> {
    const text = JSON.stringify(value);
    if (text === undefined) throw new Error(`putJson("${key}"): the value cannot be written as JSON (${typeof value})`);
    return this.putObject(key, text, 'application/json', conditions);
  }

  /** Parsed JSON, checked against `schema` when given; errors name the bucket and key. */
  async getJson(key: string): Promise<unknown>;
  async getJson<T>(key: string, schema: z.ZodType<T>): Promise<T>;
  async getJson<T>(key: string, schema?: z.ZodType<T>): Promise<T | unknown> {
    return this.#parseJson(key, await this.getObject(key), schema);
  }

  #parseJson<T>(key: string, buf: Buffer, schema?: z.ZodType<T>): T | unknown {
    let value: unknown;
    try {
      value = JSON.parse(buf.toString('utf8'));
    } catch (e) {
      throw new Error(`object "${key}" in bucket "${this.bucket}" is not valid JSON: ${(e as Error).message}`);
    }
    if (!schema) return value;
    const parsed = schema.safeParse(value);
    if (!parsed.success) {
      const issues = parsed.error.issues.slice(0, 5).map((i) => `${i.path.length ? i.path.join('.') : '(root)'}: ${i.message}`);
      throw new Error(`object "${key}" in bucket "${this.bucket}" does not match the expected schema: ${issues.join('; ')}`);
    }
    return parsed.data;
  }

  /**
   * Writes the manifest / completion marker of a group of objects. Call it only after every data
   * object it lists has been written (awaited): its presence is what tells readers the data is complete.
   */
  async putManifest(key: string, manifest: unknown): Promise<PutResult> {
    return this.putJson(key, manifest);
  }

  /** The manifest checked against `schema`, or null while it has not been written (not complete yet). */
  async getManifest<T>(key: string, schema: z.ZodType<T>): Promise<T | null> {
    let buf: Buffer;
    try {
      buf = await this.getObject(key);
    } catch (e) {
      if (e instanceof NotFoundError) return null;
      throw e;
    }
    return this.#parseJson(key, buf, schema) as T;
  }

  /**
   * Downloads every object under the folder `prefix` into localDir, keeping the relative paths
   * (each file is written to a temporary name and renamed, so a crash leaves no half file under
   * the real name). Keys ending in "/" (console folder markers) are skipped.
   */
  async downloadPrefix(prefix: string, localDir: string): Promise<{ files: number; bytes: number }> {
    const folder = folderPrefix(prefix, 'downloadPrefix prefix');
    let files = 0;
    let bytes = 0;
    await forEachLimit(this.list(folder), this.#transferConcurrency, async (o) => {
      if (o.key.endsWith('/')) return;
      const target = localPathForKey(localDir, folder, o.key);
      await mkdir(dirname(target), { recursive: true });
      const partial = `${target}.download-${process.pid}`;
      try {
        await this.#download('getObject', o.key, async (res) => {
          await pipeline(res.Body as Readable, createWriteStream(partial));
        });
        await rename(partial, target);
      } catch (e) {
        await rm(partial, { force: true });
        throw e;
      }
      files++;
      bytes += o.size;
    });
    return { files, bytes };
  }

  /**
   * Uploads every regular file under localDir to `prefix` + its relative path ("/" separators).
   * Returns what was written, sorted by key: the list to record in the manifest written afterwards.
   */
  async uploadDir(localDir: string, prefix: string): Promise<ListedObject[]> {
    const folder = folderPrefix(prefix, 'uploadDir prefix');
    const root = resolve(localDir);
    const rootStat = await stat(root).catch(() => null);
    if (!rootStat?.isDirectory()) throw new Error(`uploadDir: ${root} is not a directory`);
    const written: ListedObject[] = [];
    await forEachLimit(walkFiles(root), this.#transferConcurrency, async (file) => {
      const rel = normaliseRelativePath(`file ${file}`, relative(root, file).split(sep).join('/'));
      const key = checkObjectKey(folder + rel);
      const size = (await stat(file)).size;
      // Small files in one retryable PutObject; big ones streamed through a multipart Upload.
      const body = size <= this.#multipartThreshold ? await readFile(file) : createReadStream(file);
      const r = await this.putObject(key, body);
      written.push({ key, size: r.size });
    });
    return written.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }

  /** GetObject + consume, retrying (with backoff) when the body breaks off after the response began. */
  async #download<T>(op: string, key: string, consume: (res: GetObjectCommandOutput) => Promise<T>, range?: string): Promise<T> {
    checkObjectKey(key);
    for (let attempt = 1; ; attempt++) {
      let res: GetObjectCommandOutput;
      try {
        res = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key, ...(range ? { Range: range } : {}) }));
      } catch (e) {
        throw this.#wrap(op, key, e);
      }
      try {
        return await consume(res);
      } catch (e) {
        (res.Body as Readable | undefined)?.destroy?.();
        if (e instanceof ObjectTooLargeError) throw e; // the same object again would be just as large
        const local = LOCAL_FS_ERRORS.has(String(sdkError(e).code));
        if (local || attempt >= this.#config.maxAttempts) {
          const why = local ? 'writing it locally failed' : `reading the body failed after ${attempt} attempts`;
          throw new StorageError(op, this.bucket, key, `${why}: ${(e as Error).message}`, { cause: e });
        }
        await sleep(Math.random() * Math.min(5_000, 100 * 2 ** attempt));
      }
    }
  }

  #wrap(op: string, target: string, e: unknown): Error {
    if (e instanceof NotFoundError || e instanceof StorageError) return e;
    const err = sdkError(e);
    if (err.name === 'NoSuchKey') return new NotFoundError(this.bucket, target, { cause: e });
    if (err.name === 'NoSuchBucket') {
      return new StorageError(op, this.bucket, target, `bucket "${this.bucket}" does not exist (S3_BUCKET; create it or call ensureBucket())`, { cause: e });
    }
    const status = httpStatus(e);
    const attempts = err.$metadata?.attempts;
    let detail = `${err.name ?? 'Error'}: ${err.message ?? String(e)}`;
    if (status !== undefined) detail += ` (HTTP ${status}${attempts && attempts > 1 ? `, after ${attempts} attempts` : ''})`;
    if (status === 403 && (op === 'getObject' || op === 'headObject')) {
      detail += '; note that S3 answers 403 instead of 404 for a missing key when the credentials lack s3:ListBucket';
    }
    return new StorageError(op, this.bucket, target, detail, { cause: e });
  }
}

function positiveInt(name: string, v: number): number {
  if (!Number.isInteger(v) || v < 1) throw new Error(`ObjectStore option ${name} must be a positive integer, got ${v}`);
  return v;
}
