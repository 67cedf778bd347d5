// Model publication against a real s3rver (with S3's conditional-write semantics, shared/embedded/s3-server.ts):
// a version is written once, `latest` only moves forward whatever order overlapping builds finish in, and a
// bank file altered in storage is refused by the scorer's loader.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PermanentError } from '../../shared/errors.js';
import type { S3Server } from '../../shared/embedded/s3-server.js';
import { claimKey, loadStoredModel, readLatest, setLatest, uploadModel } from '../../shared/distributed/model-store.js';
import { modelKey, runManifestKey } from '../../shared/storage/keys.js';
import { PreconditionFailedError, type ObjectStore } from '../../shared/storage/object-store.js';
import { useS3Store } from '../helpers/s3-store.js';
import { makeBankDir, makeManifest } from './fixtures.js';

let s3: S3Server;
let store: ObjectStore;
const cache = () => mkdtempSync(join(tmpdir(), 'patchcore-ops-cache-'));

useS3Store('ops-publication', (server, objects) => {
  s3 = server;
  store = objects;
});

test('the embedded S3 server decides conditional writes as S3 does, one writer at a time per key', async () => {
  // If-None-Match: * from 12 writers at once: exactly one creates the object.
  const outcomes = await Promise.allSettled(
    Array.from({ length: 12 }, (_, i) => store.putObject('cond/once', `writer ${i}`, 'text/plain', { ifNoneMatch: '*' })),
  );
  const won = outcomes.filter((o) => o.status === 'fulfilled');
  assert.equal(won.length, 1);
  assert.ok(outcomes.filter((o) => o.status === 'rejected').every((o) => (o as PromiseRejectedResult).reason instanceof PreconditionFailedError));
  const winner = (won[0] as PromiseFulfilledResult<{ etag?: string }>).value;
  const stored = await store.getWithEtag('cond/once');
  assert.equal(stored!.etag, winner.etag);

  // If-Match: the ETag just read replaces; a stale one, or a missing key, is refused.
  const next = await store.putObject('cond/once', 'second', 'text/plain', { ifMatch: stored!.etag });
  await assert.rejects(store.putObject('cond/once', 'third', 'text/plain', { ifMatch: stored!.etag }), PreconditionFailedError);
  await assert.rejects(store.putObject('cond/missing', 'x', 'text/plain', { ifMatch: next.etag! }), PreconditionFailedError);
  assert.equal((await store.getObject('cond/once')).toString(), 'second');
  // Compare-and-swap from 8 writers that all read the same ETag: one wins.
  const read = (await store.getWithEtag('cond/once'))!;
  const cas = await Promise.allSettled(Array.from({ length: 8 }, (_, i) => store.putObject('cond/once', `cas ${i}`, 'text/plain', { ifMatch: read.etag })));
  assert.equal(cas.filter((o) => o.status === 'fulfilled').length, 1);
  // Unconditional writes still overwrite.
  await store.putObject('cond/once', 'plain');
  assert.equal((await store.getObject('cond/once')).toString(), 'plain');
});

test('a write whose client goes away mid-body does not hold up later writes of the key', { timeout: 30_000 }, async () => {
  // A raw PUT that announces 1 MiB, sends 1 KiB and drops the connection (as a killed worker would).
  const { request } = await import('node:http');
  await new Promise<void>((resolve) => {
    const req = request(`${s3.endpoint}/${s3.bucket}/cond/cut`, { method: 'PUT', headers: { 'content-length': String(1 << 20) } });
    req.on('error', () => resolve());
    req.write(Buffer.alloc(1024));
    setTimeout(() => {
      req.destroy();
      resolve();
    }, 300);
  });
  const r = await store.putObject('cond/cut', 'after the cut', 'text/plain', { ifNoneMatch: '*' }).catch((e: Error) => e);
  // Either outcome is S3's (the cut write never completed, so the create wins); what must not happen is a hang.
  assert.ok(!(r instanceof Error) || r instanceof PreconditionFailedError, String(r));
  await store.putObject('cond/cut', 'plain');
  assert.equal((await store.getObject('cond/cut')).toString(), 'plain');
});

async function publish(category: string, version: string, runId: string, runCreatedAt: string, seed: number) {
  await store.putJson(runManifestKey(runId), { kind: 'training', runId, category, version, createdAt: runCreatedAt });
  const dir = await makeBankDir(seed);
  // The manifest's own createdAt is the build's end (now), as merge-index writes it; ordering uses the run's.
  await uploadModel(store, category, version, dir, makeManifest(category), { runId });
  return setLatest(store, category, version, runId);
}

test('two overlapping trainings: the older run finishing last does not move latest backwards', async () => {
  const t0 = Date.parse('2026-01-01T02:00:00Z');
  // Newer run (tick 2) publishes first, the older (tick 1) afterwards.
  const newer = await publish('overlap', 'v-2', 'train-overlap-2', new Date(t0 + 60_000).toISOString(), 2);
  assert.deepEqual(newer, { moved: true, latest: 'v-2' });
  const older = await publish('overlap', 'v-1', 'train-overlap-1', new Date(t0).toISOString(), 1);
  assert.deepEqual(older, { moved: false, latest: 'v-2' });
  assert.equal((await readLatest(store, 'overlap'))!.version, 'v-2');
  // A duplicate build of the older run (same run, same content) publishes nothing and moves nothing.
  const dupDir = await makeBankDir(1);
  const dup = await uploadModel(store, 'overlap', 'v-1', dupDir, makeManifest('overlap'), { runId: 'train-overlap-1' });
  assert.equal(dup.published, false);
  assert.deepEqual(await setLatest(store, 'overlap', 'v-1', 'train-overlap-1'), { moved: false, latest: 'v-2' });
  // A third, newer run moves it on.
  assert.deepEqual(await publish('overlap', 'v-3', 'train-overlap-3', new Date(t0 + 120_000).toISOString(), 3), { moved: true, latest: 'v-3' });
});

test('many publishers racing for latest at once: it ends at the newest version, and never went back on the way', async () => {
  const t0 = Date.parse('2026-02-01T00:00:00Z');
  const n = 8;
  for (let i = 0; i < n; i++) {
    const runId = `train-race-${i}`;
    await store.putJson(runManifestKey(runId), { kind: 'training', runId, category: 'race', version: `v-${i}`, createdAt: new Date(t0 + i * 1000).toISOString() });
    await uploadModel(store, 'race', `v-${i}`, await makeBankDir(100 + i, 4), makeManifest('race', undefined, 4), { runId });
  }
  const seen: string[] = [];
  let watching = true;
  const watcher = (async () => {
    while (watching) {
      const l = await readLatest(store, 'race');
      if (l && seen.at(-1) !== l.version) seen.push(l.version);
      await new Promise((r) => setTimeout(r, 2));
    }
  })();
  // Shuffled order, all at once.
  const order = [5, 1, 7, 0, 3, 6, 2, 4];
  await Promise.all(order.map((i) => setLatest(store, 'race', `v-${i}`, `train-race-${i}`)));
  watching = false;
  await watcher;
  assert.equal((await readLatest(store, 'race'))!.version, 'v-7');
  const indices = seen.map((v) => Number(v.slice(2)));
  assert.deepEqual(indices, [...indices].sort((a, b) => a - b), `latest went backwards: ${seen.join(' -> ')}`);
});

test('an existing version is never overwritten, and a second run cannot take a claimed version', async () => {
  await publish('keep', 'v-a', 'train-keep-a', '2026-03-01T00:00:00Z', 11);
  const before = await store.getObject(modelKey('keep', 'v-a', 'bank.f32'));
  const other = await makeBankDir(12);
  await assert.rejects(uploadModel(store, 'keep', 'v-a', other, makeManifest('keep'), { runId: 'train-keep-b' }),
    (e: Error) => e instanceof PermanentError && /model version keep\/v-a already exists/.test(e.message));
  assert.ok((await store.getObject(modelKey('keep', 'v-a', 'bank.f32'))).equals(before), 'bank.f32 was overwritten');

  // A version claimed by a build in progress (claim, no manifest yet): another run stops before writing anything.
  await store.putJson(claimKey('keep', 'v-b'), { runId: 'train-keep-c', claimedAt: new Date().toISOString() }, { ifNoneMatch: '*' });
  await assert.rejects(uploadModel(store, 'keep', 'v-b', other, makeManifest('keep'), { runId: 'train-keep-d' }),
    /model version keep\/v-b is being published by run train-keep-c/);
  assert.equal(await store.exists(modelKey('keep', 'v-b', 'bank.f32')), false);
  // The claiming run itself (a retried build job) may go on.
  const r = await uploadModel(store, 'keep', 'v-b', other, makeManifest('keep'), { runId: 'train-keep-c' });
  assert.equal(r.published, true);
});

test('the manifest lists each bank file with size and sha256; a file altered in storage is refused by the loader', async () => {
  await publish('tamper', 'v-t', 'train-tamper', '2026-04-01T00:00:00Z', 21);
  const manifest = JSON.parse((await store.getObject(modelKey('tamper', 'v-t', 'manifest.json'))).toString());
  // A bank this small is searched exactly: no index file.
  assert.deepEqual(manifest.files.map((f: { name: string }) => f.name), ['bank.f32', 'bank.json']);
  const bankF32 = await store.getObject(modelKey('tamper', 'v-t', 'bank.f32'));
  assert.equal(manifest.files[0].size, bankF32.length);
  // Intact: loads.
  const ok = await loadStoredModel(store, 'tamper', 'v-t', cache());
  assert.equal(ok.bank.count, 16);

  // Same size, one value changed, and bank.json's checksum rewritten to match: only the manifest can tell.
  const altered = Buffer.from(bankF32);
  altered.writeFloatLE(0.5, 40);
  await store.putObject(modelKey('tamper', 'v-t', 'bank.f32'), altered);
  const bankJson = await store.getObject(modelKey('tamper', 'v-t', 'bank.json'));
  const meta = JSON.parse(bankJson.toString());
  const { createHash } = await import('node:crypto');
  meta.sha256 = createHash('sha256').update(altered).digest('hex');
  await store.putObject(modelKey('tamper', 'v-t', 'bank.json'), JSON.stringify(meta));
  await assert.rejects(loadStoredModel(store, 'tamper', 'v-t', cache()),
    /model tamper\/v-t: bank\.f32 in storage does not match the manifest \(sha256 [0-9a-f]{64}, the manifest records [0-9a-f]{64}\)/);
  // A file of another size is refused from its HEAD, before the download.
  await store.putObject(modelKey('tamper', 'v-t', 'bank.f32'), bankF32);
  await store.putObject(modelKey('tamper', 'v-t', 'bank.json'), Buffer.alloc(10));
  await assert.rejects(loadStoredModel(store, 'tamper', 'v-t', cache()), /model tamper\/v-t: bank\.json has 10 bytes, expected \d+ \(the manifest's size\)/);
  // Restored: loads again.
  await store.putObject(modelKey('tamper', 'v-t', 'bank.json'), bankJson);
  assert.equal((await loadStoredModel(store, 'tamper', 'v-t', cache())).bank.count, 16);
});
