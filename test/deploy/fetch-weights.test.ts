// The init container script k8s/base/fetch-weights.mjs, run as the pods run it (node --import tsx, from the
// repository root as from /app in the image) against a real S3-compatible server.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startS3rver, type S3Server } from '../../shared/embedded/s3-server.js';
import { repoRoot } from '../../shared/paths.js';
import { ObjectStore } from '../../shared/storage/object-store.js';
import { storageConfigFromEnv } from '../../shared/storage/config.js';

const SCRIPT = join(repoRoot, 'k8s', 'base', 'fetch-weights.mjs');
const KEY = 'weights/resnet50-test.h5';
const body = randomBytes(3 * 1024 * 1024 + 17);
const sha256 = createHash('sha256').update(body).digest('hex');

let s3: S3Server;
let dir: string;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'patchcore-fetch-weights-'));
  s3 = await startS3rver('patchcore-weights-test');
  const store = new ObjectStore(storageConfigFromEnv(s3.env));
  await store.ensureBucket();
  await store.putObject(KEY, body);
  store.destroy();
});

after(async () => {
  await s3?.stop();
  rmSync(dir, { recursive: true, force: true });
});

function run(env: Record<string, string>): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', SCRIPT], {
      cwd: repoRoot,
      env: { PATH: process.env.PATH ?? '', HOME: tmpdir(), ...s3.env, ...env },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr!.on('data', (d) => (stderr += d));
    child.once('error', reject);
    child.once('exit', (code) => resolve({ code, stderr }));
  });
}

test('copies the weights object to PATCHCORE_WEIGHTS and checks WEIGHTS_SHA256', async () => {
  const target = join(dir, 'ok', 'weights.h5');
  const r = await run({ WEIGHTS_OBJECT_KEY: KEY, PATCHCORE_WEIGHTS: target, WEIGHTS_SHA256: sha256.toUpperCase() });
  assert.equal(r.code, 0, r.stderr);
  assert.ok(readFileSync(target).equals(body));
  const line = JSON.parse(r.stderr.trim().split('\n').pop()!) as Record<string, unknown>;
  assert.deepEqual([line.msg, line.key, line.bytes, line.sha256], ['weights ready', KEY, body.length, sha256]);
});

test('a checksum mismatch, a missing object or a missing setting fails with a message naming it, leaving no file', async () => {
  const wrong = await run({ WEIGHTS_OBJECT_KEY: KEY, PATCHCORE_WEIGHTS: join(dir, 'bad', 'w.h5'), WEIGHTS_SHA256: '0'.repeat(64) });
  assert.equal(wrong.code, 1);
  assert.match(wrong.stderr, new RegExp(`has sha256 ${sha256}, but WEIGHTS_SHA256 is 0{64}`));
  assert.deepEqual(readdirSync(join(dir, 'bad')), [], 'neither the file nor its .partial is left');

  const missing = await run({ WEIGHTS_OBJECT_KEY: 'weights/nope.h5', PATCHCORE_WEIGHTS: join(dir, 'missing', 'w.h5'), WEIGHTS_SHA256: sha256 });
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /weights\/nope\.h5/);
  assert.ok(!existsSync(join(dir, 'missing', 'w.h5')));

  const unset = await run({ PATCHCORE_WEIGHTS: join(dir, 'unset.h5'), WEIGHTS_SHA256: sha256 });
  assert.equal(unset.code, 1);
  assert.match(unset.stderr, /WEIGHTS_OBJECT_KEY is not set/);

  const malformed = await run({ WEIGHTS_OBJECT_KEY: KEY, PATCHCORE_WEIGHTS: join(dir, 'malformed', 'w.h5'), WEIGHTS_SHA256: 'abc' });
  assert.equal(malformed.code, 1);
  assert.match(malformed.stderr, /WEIGHTS_SHA256 \\"abc\\" is not a sha256/);
  assert.ok(!existsSync(join(dir, 'malformed')), 'nothing is downloaded before the settings are checked');
});

test('the sha256 is required: without WEIGHTS_SHA256 nothing is fetched', async () => {
  for (const value of [undefined, '', '  ']) {
    const target = join(dir, 'no-sha', 'w.h5');
    const r = await run({ WEIGHTS_OBJECT_KEY: KEY, PATCHCORE_WEIGHTS: target, ...(value === undefined ? {} : { WEIGHTS_SHA256: value }) });
    assert.equal(r.code, 1, `WEIGHTS_SHA256=${JSON.stringify(value)}`);
    assert.match(r.stderr, /WEIGHTS_SHA256 is not set/);
    assert.ok(!existsSync(join(dir, 'no-sha')), 'nothing is downloaded');
  }
});

test('k8s/base/config.yaml\'s WEIGHTS_SHA256 is the sha256 of the shared weights file it names', async (t) => {
  const { parse } = await import('yaml');
  const config = parse(readFileSync(join(repoRoot, 'k8s/base/config.yaml'), 'utf8')) as { data: Record<string, string> };
  const { WEIGHTS_OBJECT_KEY: key, WEIGHTS_SHA256: expected } = config.data;
  assert.match(expected, /^[0-9a-f]{64}$/, 'WEIGHTS_SHA256 is set (the init container requires it)');
  const shared = join(process.env.PATCHCORE_SHARED_DIR ?? join(repoRoot, '..', 'shared'), key);
  if (!existsSync(shared)) return t.skip(`${shared} is not here`);
  assert.equal(createHash('sha256').update(readFileSync(shared)).digest('hex'), expected, `sha256 of ${shared}`);
});
