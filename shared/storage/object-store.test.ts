// test-lane: integration (real redis-server, s3rver or Chromium)
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, request, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { inspect } from 'node:util';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { z } from 'zod';
import { defaultDatasetDir } from '../paths.js';
import { storageConfigFromEnv } from './config.js';
import { datasetKey, datasetPrefix } from './keys.js';
import { localPathForKey, NotFoundError, ObjectStore, StorageError } from './object-store.js';
import { startS3rver, type S3Server } from '../embedded/s3-server.js';

const MiB = 1024 * 1024;
let s3: S3Server;
let store: ObjectStore;
let scratch: string;

before(async () => {
  s3 = await startS3rver();
  scratch = await mkdtemp(join(tmpdir(), 'patchcore-storage-test-'));
  store = new ObjectStore(storageConfigFromEnv(s3.env), { partSize: 5 * MiB });
  assert.equal(await store.ensureBucket(), 'created');
  assert.equal(await store.ensureBucket(), 'exists');
});

after(async () => {
  store?.destroy();
  await s3?.stop();
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

/** Records the S3 command names the store's client sends while `fn` runs. */
async function commandsDuring(fn: () => Promise<unknown>, target = store): Promise<string[]> {
  const seen: string[] = [];
  const name = `record-${Math.random()}`;
  target.client.middlewareStack.add(
    (next, context) => async (args) => {
      seen.push(String(context.commandName));
      return next(args);
    },
    { step: 'initialize', name },
  );
  try {
    await fn();
  } finally {
    target.client.middlewareStack.remove(name);
  }
  return seen;
}

const count = (names: string[], name: string): number => names.filter((n) => n === name).length;
const md5 = (b: Buffer): string => createHash('md5').update(b).digest('hex');

function pattern(bytes: number, seed: number): Buffer {
  const b = Buffer.allocUnsafe(bytes);
  let s = seed >>> 0;
  for (let i = 0; i < bytes; i += 4) {
    s = (s * 1664525 + 1013904223) >>> 0;
    b.writeUInt32LE(s, i);
  }
  return b;
}

function chunked(buf: Buffer, chunk = 64 * 1024): Readable {
  return Readable.from(
    (function* () {
      for (let o = 0; o < buf.length; o += chunk) yield buf.subarray(o, o + chunk);
    })(),
  );
}

async function readAll(r: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of r) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

test('small objects round-trip from string, Buffer, Uint8Array and stream; head and exists', async () => {
  await store.putObject('small/a.txt', 'héllo', 'text/plain');
  await store.putObject('small/b.bin', Buffer.from([0, 1, 2, 255]));
  await store.putObject('small/c.bin', new Uint8Array([9, 8, 7]));
  const streamed = await store.putObject('small/d.bin', Readable.from([Buffer.from('abc'), Buffer.from('def')]));
  assert.equal(streamed.size, 6);

  assert.equal((await store.getObject('small/a.txt')).toString('utf8'), 'héllo');
  assert.deepEqual([...(await store.getObject('small/b.bin'))], [0, 1, 2, 255]);
  assert.deepEqual([...(await store.getObject('small/c.bin'))], [9, 8, 7]);
  assert.equal((await readAll(await store.getStream('small/d.bin'))).toString(), 'abcdef');

  const info = await store.head('small/a.txt');
  assert.deepEqual(info, { size: 6, etag: `"${md5(Buffer.from('héllo'))}"` });
  assert.equal(await store.head('small/missing'), null);
  assert.equal(await store.exists('small/b.bin'), true);
  assert.equal(await store.exists('small/zzz'), false);

  // The exposed client is set up for s3rver too: a raw PutObject of a stream stores the bytes, not
  // the aws-chunked framing the SDK's default checksum mode would send.
  await store.client.send(
    new PutObjectCommand({ Bucket: store.bucket, Key: 'small/raw.bin', Body: Readable.from([Buffer.from('raw bytes')]), ContentLength: 9 }),
  );
  assert.equal((await store.getObject('small/raw.bin')).toString(), 'raw bytes');

  await store.delete('small/b.bin');
  assert.equal(await store.exists('small/b.bin'), false);
  await store.delete('small/b.bin'); // deleting a missing key is fine
});

test('a 12 MB buffer and a 12 MB stream go multipart in 5 MiB parts and read back identical', async () => {
  const big = pattern(12 * 1000 * 1000, 7);
  let put;
  const cmds = await commandsDuring(async () => {
    put = await store.putObject('big/buffer.bin', big);
  });
  assert.equal(count(cmds, 'CreateMultipartUploadCommand'), 1);
  assert.equal(count(cmds, 'UploadPartCommand'), 3);
  assert.equal(count(cmds, 'CompleteMultipartUploadCommand'), 1);
  assert.equal(count(cmds, 'PutObjectCommand'), 0);
  assert.equal(put!.size, big.length);
  assert.ok((await store.getObject('big/buffer.bin')).equals(big));

  const streamCmds = await commandsDuring(() => store.putObject('big/stream.bin', chunked(big)));
  assert.equal(count(streamCmds, 'UploadPartCommand'), 3);
  const back = await readAll(await store.getStream('big/stream.bin'));
  assert.equal(md5(back), md5(big));
  assert.equal((await store.head('big/stream.bin'))?.size, big.length);

  // A real dataset image, streamed from disk (one part: below the multipart threshold).
  const imagePath = join(defaultDatasetDir('bottle'), 'train', 'good', '000.png');
  const key = datasetKey('bottle', 'train/good/000.png');
  await store.putObject(key, createReadStream(imagePath), 'image/png');
  assert.ok((await store.getObject(key)).equals(await readFile(imagePath)));
});

test('lists more than 1000 keys across pages, in key order; deletePrefix removes them all and nothing beside', async () => {
  const n = 1005;
  const keys = Array.from({ length: n }, (_, i) => `many/k${String(i).padStart(4, '0')}.json`);
  const queue = [...keys];
  await Promise.all(
    Array.from({ length: 16 }, async () => {
      for (let k = queue.shift(); k !== undefined; k = queue.shift()) await store.putObject(k, k);
    }),
  );
  await store.putObject('many-sibling/keep.txt', 'keep');
  await store.putObject('many0', 'keep');

  let listed: Array<{ key: string; size: number }> = [];
  const small = await commandsDuring(async () => {
    for await (const o of store.list('many/', { pageSize: 100 })) listed.push(o);
  });
  assert.equal(count(small, 'ListObjectsV2Command'), 11);
  assert.deepEqual(listed.map((o) => o.key), keys);
  assert.ok(listed.every((o) => o.size === 'many/k0000.json'.length));

  listed = [];
  const full = await commandsDuring(async () => {
    for await (const o of store.list('many/')) listed.push(o);
  });
  assert.equal(count(full, 'ListObjectsV2Command'), 2, 'the server caps a page at 1000 keys');
  assert.equal(listed.length, n);

  const plain: string[] = [];
  for await (const o of store.list('many/k100')) plain.push(o.key);
  assert.deepEqual(plain, ['many/k1000.json', 'many/k1001.json', 'many/k1002.json', 'many/k1003.json', 'many/k1004.json']);

  // "many" is a folder prefix: many-sibling/ and many0 survive.
  const delCmds = await commandsDuring(async () => assert.equal(await store.deletePrefix('many'), n));
  assert.equal(count(delCmds, 'DeleteObjectsCommand'), 2);
  let left = 0;
  for await (const _ of store.list('many/')) left++;
  assert.equal(left, 0);
  assert.equal(await store.exists('many-sibling/keep.txt'), true);
  assert.equal(await store.exists('many0'), true);
  await assert.rejects(store.deletePrefix(''), { message: 'deletePrefix: refusing an empty prefix (it would empty the whole bucket)' });
});

test('uploadDir then downloadPrefix reproduces a directory tree byte for byte', async () => {
  const src = join(scratch, 'src');
  const files: Record<string, Buffer> = {
    'top.bin': pattern(300_000, 1),
    'a/b/c.txt': Buffer.from('deep'),
    'sp ace/ü.txt': Buffer.from('unicode name'),
    'empty.dat': Buffer.alloc(0),
    'big/six.bin': pattern(6 * MiB, 2), // over the threshold: streamed, multipart
  };
  for (const [rel, body] of Object.entries(files)) {
    await mkdir(join(src, rel, '..'), { recursive: true });
    await writeFile(join(src, rel), body);
  }
  const prefix = datasetPrefix('tree');
  const written = await store.uploadDir(src, prefix);
  const expectedKeys = Object.keys(files).map((rel) => prefix + rel).sort();
  assert.deepEqual(written.map((w) => w.key), expectedKeys);
  assert.deepEqual(
    written.map((w) => w.size),
    expectedKeys.map((k) => files[k.slice(prefix.length)].length),
  );

  const dst = join(scratch, 'dst');
  const got = await store.downloadPrefix(prefix, dst);
  assert.equal(got.files, 5);
  assert.equal(got.bytes, Object.values(files).reduce((s, b) => s + b.length, 0));
  for (const [rel, body] of Object.entries(files)) assert.ok((await readFile(join(dst, rel))).equals(body), rel);
  const all = await readdir(dst, { recursive: true });
  assert.ok(!all.some((f) => String(f).includes('.download-')), 'no temporary files left');

  await assert.rejects(store.uploadDir(join(scratch, 'nope'), prefix), { message: `uploadDir: ${join(scratch, 'nope')} is not a directory` });
});

test('a missing key is a NotFoundError naming bucket and key; a missing bucket says so', async () => {
  const message = 'object "nope/x.json" not found in bucket "patchcore-test" (s3://patchcore-test/nope/x.json)';
  await assert.rejects(store.getObject('nope/x.json'), (e: unknown) => {
    assert.ok(e instanceof NotFoundError);
    assert.equal(e.message, message);
    assert.equal(e.key, 'nope/x.json');
    return true;
  });
  await assert.rejects(store.getStream('nope/x.json'), { message });
  await assert.rejects(store.getJson('nope/x.json'), { message });

  const other = new ObjectStore(storageConfigFromEnv({ ...s3.env, S3_BUCKET: 'no-such-bucket' }));
  try {
    await assert.rejects(other.getObject('a'), {
      name: 'StorageError',
      message: 'S3 getObject of s3://no-such-bucket/a failed: bucket "no-such-bucket" does not exist (S3_BUCKET; create it or call ensureBucket())',
    });
  } finally {
    other.destroy();
  }
});

test('JSON and manifests: schema checked, errors name the key', async () => {
  const RunManifest = z.object({ run: z.string(), shards: z.array(z.object({ key: z.string(), size: z.number() })) });
  const manifest = { run: 'r1', shards: [{ key: 'runs/r1/scores/0000.json', size: 12 }] };
  assert.equal(await store.getManifest('runs/r1/run.json', RunManifest), null, 'not committed yet');
  await store.putManifest('runs/r1/run.json', manifest);
  assert.deepEqual(await store.getManifest('runs/r1/run.json', RunManifest), manifest);
  assert.deepEqual(await store.getJson('runs/r1/run.json'), manifest);

  await store.putJson('runs/r1/bad.json', { run: 7, shards: [{ key: 'k' }] });
  await assert.rejects(store.getJson('runs/r1/bad.json', RunManifest), {
    message:
      'object "runs/r1/bad.json" in bucket "patchcore-test" does not match the expected schema: ' +
      'run: Invalid input: expected string, received number; shards.0.size: Invalid input: expected number, received undefined',
  });
  await store.putObject('runs/r1/torn.json', '{"run": "r1", "sha');
  await assert.rejects(store.getJson('runs/r1/torn.json'), /^Error: object "runs\/r1\/torn.json" in bucket "patchcore-test" is not valid JSON: /);
  await assert.rejects(store.putJson('x.json', undefined), { message: 'putJson("x.json"): the value cannot be written as JSON (undefined)' });
});

test('keys that could escape are refused before any request', async () => {
  await assert.rejects(store.putObject('/abs.txt', 'x'), { message: 'object key "/abs.txt" is invalid: it starts with "/"' });
  await assert.rejects(store.putObject('runs/../x', 'x'), { message: 'object key "runs/../x" is invalid: it contains a ".." segment' });
  await assert.rejects(store.getObject('a//b'), { message: 'object key "a//b" is invalid: it contains an empty segment ("//")' });
  await assert.rejects(store.getObject(''), { message: 'object key "" is invalid: it is empty' });
  assert.equal(localPathForKey('/tmp/d', 'p/', 'p/a/b.txt'), '/tmp/d/a/b.txt');
  assert.throws(() => localPathForKey('/tmp/d', 'p/', 'p/../../etc/passwd'), {
    message: 'object key "p/../../etc/passwd" below prefix "p/" "../../etc/passwd" is not a safe relative path: it contains ".."',
  });
  assert.throws(() => localPathForKey('/tmp/d', 'p/', 'p//etc/passwd'), /is not a safe relative path: it is absolute/);
});

test('secrets stay out of errors and of what a logger prints about the store', async () => {
  // s3rver checks the access key id but not SigV4 signatures, so the failure here is an unknown key id.
  const secret = 'definitely-not-the-S3RVER-secret-0123456789';
  const keyId = 'AKIAWRONGKEY0123';
  const wrong = new ObjectStore(
    storageConfigFromEnv({ ...s3.env, S3_ACCESS_KEY_ID: keyId, S3_SECRET_ACCESS_KEY: secret, S3_MAX_ATTEMPTS: '1' }),
  );
  try {
    const views = [JSON.stringify(wrong), inspect(wrong, { depth: 4 }), JSON.stringify({ store: wrong })];
    for (const v of views) assert.ok(!v.includes(secret) && !v.includes(keyId), v);
    await assert.rejects(wrong.putObject('x.txt', 'x'), (e: unknown) => {
      assert.ok(e instanceof StorageError);
      assert.equal(
        e.message,
        'S3 putObject of s3://patchcore-test/x.txt failed: InvalidAccessKeyId: The AWS Access Key Id you provided does not exist in our records. (HTTP 403)',
      );
      assert.ok(!e.message.includes(secret) && !e.message.includes(keyId));
      return true;
    });
  } finally {
    wrong.destroy();
  }
});

/** An HTTP proxy in front of s3rver that misbehaves on demand. */
async function flakyProxy(
  target: string,
  misbehave: (req: IncomingMessage, res: ServerResponse, n: number) => 'forward' | 'cut-body' | 'handled',
): Promise<{ url: string; requests: () => number; close: () => Promise<void> }> {
  const upstream = new URL(target);
  let n = 0;
  const server: Server = createServer((req, res) => {
    const action = misbehave(req, res, ++n);
    if (action === 'handled') return;
    const up = request(
      { host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: req.headers },
      (upRes) => {
        res.writeHead(upRes.statusCode ?? 502, upRes.headers);
        if (action === 'cut-body') {
          upRes.once('data', (chunk: Buffer) => {
            res.write(chunk.subarray(0, Math.min(chunk.length, 1000)));
            setTimeout(() => res.socket?.destroy(), 20);
          });
        } else {
          upRes.pipe(res);
        }
      },
    );
    req.pipe(up);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests: () => n,
    close: () => new Promise((r) => {
      server.closeAllConnections();
      server.close(() => r());
    }),
  };
}

const slowDown = (res: ServerResponse): 'handled' => {
  res.writeHead(503, { 'content-type': 'application/xml' });
  res.end('<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>');
  return 'handled';
};

test('transient errors are retried with backoff up to S3_MAX_ATTEMPTS; a body cut mid-way is re-fetched', async () => {
  const payload = pattern(200_000, 3);
  await store.putObject('retry/data.bin', payload);

  let failures = 2;
  const proxy = await flakyProxy(s3.endpoint, (_req, res) => (failures-- > 0 ? slowDown(res) : 'forward'));
  const patient = new ObjectStore(storageConfigFromEnv({ ...s3.env, S3_ENDPOINT: proxy.url, S3_MAX_ATTEMPTS: '3' }));
  const impatient = new ObjectStore(storageConfigFromEnv({ ...s3.env, S3_ENDPOINT: proxy.url, S3_MAX_ATTEMPTS: '1' }));
  try {
    assert.ok((await patient.getObject('retry/data.bin')).equals(payload));
    assert.equal(proxy.requests(), 3, 'two 503s, then success');

    failures = 1;
    await assert.rejects(impatient.putObject('retry/other.bin', 'x'), {
      message: 'S3 putObject of s3://patchcore-test/retry/other.bin failed: SlowDown: Please reduce your request rate. (HTTP 503)',
    });

    let cut = 1;
    const cutter = await flakyProxy(s3.endpoint, (req) => (req.method === 'GET' && cut-- > 0 ? 'cut-body' : 'forward'));
    const reader = new ObjectStore(storageConfigFromEnv({ ...s3.env, S3_ENDPOINT: cutter.url, S3_MAX_ATTEMPTS: '3' }));
    try {
      assert.ok((await reader.getObject('retry/data.bin')).equals(payload));
      assert.equal(cutter.requests(), 2, 'the broken body was fetched again');
    } finally {
      reader.destroy();
      await cutter.close();
    }
  } finally {
    patient.destroy();
    impatient.destroy();
    await proxy.close();
  }
});
