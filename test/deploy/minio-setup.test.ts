// k8s/base/minio-setup.sh, run with sh as the set-up Job and compose's minio-init run it. MinIO and its `mc` client
// cannot run here (no binary, no network), so `mc` is a stand-in on PATH that records its arguments and answers a
// repeated policy attach the way MinIO does; what is checked is the script's own logic: which users, policies and
// bucket it asks for, that it can run again, and what it refuses before touching MinIO.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoRoot } from '../../shared/paths.js';

const SCRIPT = join(repoRoot, 'k8s/base/minio-setup.sh');
const POLICY_DIR = join(repoRoot, 'k8s/base/minio-policies');
const ROLES = ['feature-worker', 'index-worker', 'scorer', 'producer'];
const prefix = (role: string) => role.toUpperCase().replaceAll('-', '_');

let dir: string;

// The stand-in: logs each call as a JSON line; "admin policy attach" of a pair attached before fails with MinIO's
// message; MC_STUB_FAIL=attach makes every attach fail with another error.
const STUB = `#!${process.execPath}
const fs = require('node:fs');
const args = process.argv.slice(2);
fs.appendFileSync(process.env.MC_STUB_LOG, JSON.stringify(args) + '\\n');
const i = args.indexOf('attach');
if (i > 0 && args[i - 1] === 'policy') {
  if (process.env.MC_STUB_FAIL === 'attach') { console.error('mc: <ERROR> Unable to connect to minio:9000'); process.exit(1); }
  const mark = process.env.MC_STUB_STATE + '/' + args.slice(i + 2).join('_').replace(/[^A-Za-z0-9_-]/g, '_');
  if (fs.existsSync(mark)) { console.error('mc: <ERROR> Unable to make user/group policy association. The specified policy change is already in effect.'); process.exit(1); }
  fs.writeFileSync(mark, '');
}
`;

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'patchcore-minio-setup-'));
  writeFileSync(join(dir, 'mc'), STUB);
  chmodSync(join(dir, 'mc'), 0o755);
});

after(() => rmSync(dir, { recursive: true, force: true }));

function env(overrides: Record<string, string | undefined> = {}): Record<string, string> {
  const e: Record<string, string | undefined> = {
    PATH: `${dir}:${process.env.PATH ?? ''}`,
    MC_STUB_LOG: join(dir, 'calls.log'),
    MC_STUB_STATE: dir,
    MC_CONFIG_DIR: join(dir, 'mc-config'),
    MC_HOST_store: 'http://patchcore-admin:root-0f3a9c2e71b4@minio:9000',
    S3_BUCKET: 'patchcore',
    POLICY_DIR,
  };
  for (const role of ROLES) {
    e[`${prefix(role)}_S3_ACCESS_KEY_ID`] = `patchcore-${role}`;
    e[`${prefix(role)}_S3_SECRET_ACCESS_KEY`] = `secret-of-${role}`;
  }
  Object.assign(e, overrides);
  return Object.fromEntries(Object.entries(e).filter(([, v]) => v !== undefined)) as Record<string, string>;
}

function run(overrides: Record<string, string | undefined> = {}): { code: number | null; stderr: string; calls: string[][] } {
  rmSync(join(dir, 'calls.log'), { force: true });
  const r = spawnSync('sh', [SCRIPT], { env: env(overrides), encoding: 'utf8' });
  const log = join(dir, 'calls.log');
  const calls = existsSync(log) ? readFileSync(log, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as string[]) : [];
  // Every call goes to the private config folder (the root filesystem is read-only).
  for (const c of calls) assert.deepEqual(c.slice(0, 2), ['--config-dir', join(dir, 'mc-config')]);
  return { code: r.status, stderr: r.stderr, calls: calls.map((c) => c.slice(2)) };
}

test('creates the bucket, then one user per service with its own policy; running it again changes nothing', () => {
  const first = run();
  assert.equal(first.code, 0, first.stderr);
  const expected = [
    ['mb', '--ignore-existing', 'store/patchcore'],
    ...ROLES.flatMap((role) => [
      ['admin', 'policy', 'create', 'store', `patchcore-${role}`, `${POLICY_DIR}/${role}.json`],
      ['admin', 'user', 'add', 'store', `patchcore-${role}`, `secret-of-${role}`],
      ['admin', 'policy', 'attach', 'store', `patchcore-${role}`, '--user', `patchcore-${role}`],
    ]),
  ];
  assert.deepEqual(first.calls, expected);
  // A second run (the Job after `kubectl apply`, compose after `up`): MinIO refuses the repeated attach; that is fine.
  const second = run();
  assert.equal(second.code, 0, second.stderr);
  assert.deepEqual(second.calls, expected);
});

test('the demo user (compose) gets every service\'s policy', () => {
  const r = run({ DEMO_S3_ACCESS_KEY_ID: 'patchcore-demo', DEMO_S3_SECRET_ACCESS_KEY: 'secret-of-demo' });
  assert.equal(r.code, 0, r.stderr);
  const demo = r.calls.filter((c) => c.includes('patchcore-demo'));
  assert.deepEqual(demo, [
    ['admin', 'user', 'add', 'store', 'patchcore-demo', 'secret-of-demo'],
    ...ROLES.map((role) => ['admin', 'policy', 'attach', 'store', `patchcore-${role}`, '--user', 'patchcore-demo']),
  ]);
});

test('refuses placeholder or missing secrets and a bucket the policies do not name, before calling MinIO', () => {
  const placeholder = run({ SCORER_S3_SECRET_ACCESS_KEY: 'CHANGE_ME' });
  assert.equal(placeholder.code, 1);
  assert.match(placeholder.stderr, /SCORER_S3_SECRET_ACCESS_KEY still holds the placeholder CHANGE_ME/);
  assert.deepEqual(placeholder.calls, []);

  const rootPlaceholder = run({ MC_HOST_store: 'http://patchcore-admin:CHANGE_ME@minio:9000' });
  assert.equal(rootPlaceholder.code, 1);
  assert.match(rootPlaceholder.stderr, /MC_HOST_store still holds the placeholder/);
  assert.ok(!rootPlaceholder.stderr.includes('patchcore-admin:'), 'the root URL is not echoed');

  const missing = run({ PRODUCER_S3_ACCESS_KEY_ID: undefined });
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /PRODUCER_S3_ACCESS_KEY_ID is not set/);
  assert.deepEqual(missing.calls, []);

  const bucket = run({ S3_BUCKET: 'inspection' });
  assert.equal(bucket.code, 1);
  assert.match(bucket.stderr, /feature-worker\.json does not name the bucket inspection \(S3_BUCKET\)/);
  assert.deepEqual(bucket.calls, []);
});

test('any other failure of mc fails the set-up, with mc\'s message', () => {
  const r = run({ MC_STUB_FAIL: 'attach' });
  assert.equal(r.code, 1);
  assert.match(r.stderr, /cannot attach policy patchcore-feature-worker to user patchcore-feature-worker: .*Unable to connect/);
});
