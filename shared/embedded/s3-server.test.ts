// test-lane: integration (real redis-server, s3rver or Chromium)
// The embedded S3 server (s3rver with our middleware) serves whole objects as S3 does: a GET racing PUTs of the
// same key gets one complete version, never an empty or partial body, and the ETag it gets never belongs to a
// newer version than the body. Without atomicObjectWrites, s3rver truncates the file in place and this fails.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import type { ObjectStore } from '../storage/object-store.js';
import { useS3Store } from '../../test/helpers/s3-store.js';

let store: ObjectStore;

useS3Store('patchcore-s3-server', (_server, objects) => {
  store = objects;
});

test('a GET racing PUTs of one key gets a whole version, with an ETag no newer than its body', async () => {
  // Versions of different sizes (up to 2 MiB), each byte naming its version: a mix of two would show.
  const versions = Array.from({ length: 12 }, (_, v) => Buffer.alloc(64 * 1024 * (1 + (v % 4) * 10), v + 1));
  const etagOf = new Map(versions.map((b, v) => [`"${createHash('md5').update(b).digest('hex')}"`, v]));
  const key = 'race/object.bin';
  await store.putObject(key, versions[0]);
  let writing = true;
  const writer = (async () => {
    for (let v = 1; v < versions.length; v++) await store.putObject(key, versions[v]);
    writing = false;
  })();
  let reads = 0;
  const readers = Array.from({ length: 4 }, async () => {
    while (writing) {
      const got = await store.getWithEtag(key);
      assert.ok(got, 'the object vanished during a rewrite');
      const v = got.body[0] - 1;
      assert.ok(v >= 0 && v < versions.length, `a read got an empty or unknown body (${got.body.length} bytes)`);
      assert.ok(got.body.equals(versions[v]), `a read got a partial or mixed body: ${got.body.length} bytes, version ${v} has ${versions[v].length}`);
      const etagVersion = etagOf.get(got.etag);
      assert.ok(etagVersion !== undefined && etagVersion <= v, `a read paired version ${v}'s body with ETag ${got.etag} (version ${etagVersion})`);
      reads++;
    }
  });
  await Promise.all([writer, ...readers]);
  assert.ok(reads >= 4, `only ${reads} reads overlapped the writes`);
  assert.ok((await store.getObject(key)).equals(versions.at(-1)!), 'the last write is what stays');
});
