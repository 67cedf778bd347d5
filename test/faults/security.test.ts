// Security of the deployed pipeline, with real worker processes: secrets come only from the environment and never
// reach a log line, a job's failure reason or `patchcore status`, even when credentials are wrong or Redis goes
// away; a hand-made job pushed straight into a queue is refused before it reads or writes anything; and names
// typed by a user cannot make a key escape its prefix.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { Queue } from 'bullmq';
import { FEATURES_QUEUE } from '../../shared/queue/jobs.js';
import { ingestDataset, submitTraining } from '../../services/producer/submit.js';
import { makeBottleSubset } from '../helpers/subset.js';
import { Cluster, runCli, silentLog, until, type WorkerProcess } from './harness.js';

const REDIS_PASSWORD = 'rEdis-Pa55/with:odd@chars';
const WRONG_REDIS_PASSWORD = 'wr0ng-redis-pa55word';
const S3_KEY_ID = 'AKIAFAULTTESTKEY0001';
const S3_SECRET = 'sEcReT+s3/key-for-the-fault-tests';
const WRONG_S3_KEY_ID = 'AKIAWRONGKEYID000002';
const WRONG_S3_SECRET = 'wr0ng+s3/secret-for-the-fault-tests';
const SECRETS = [REDIS_PASSWORD, WRONG_REDIS_PASSWORD, S3_SECRET, WRONG_S3_SECRET, S3_KEY_ID, WRONG_S3_KEY_ID];
const forms = (s: string) => [s, encodeURIComponent(s)];

const data = makeBottleSubset({ train: 2, test: {} });
let c: Cluster;
let wrongS3: WorkerProcess;
let wrongRedis: WorkerProcess;

before(async () => {
  c = await Cluster.start({
    workers: ['features', 'index'],
    redis: { password: REDIS_PASSWORD, appendOnly: true, appendFsync: 'always' },
    s3: { credentials: { accessKeyId: S3_KEY_ID, secretAccessKey: S3_SECRET } },
    env: { LOG_LEVEL: 'debug' },
  });
  await ingestDataset(c.store, data, 'mini');
  // Misconfigured pods: the wrong S3 keys (on its own queue prefix, so only it takes that job), the wrong Redis password.
  [wrongS3, wrongRedis] = await Promise.all([
    c.spawn('features', { S3_ACCESS_KEY_ID: WRONG_S3_KEY_ID, S3_SECRET_ACCESS_KEY: WRONG_S3_SECRET, QUEUE_PREFIX: 'wrongcreds' }),
    c.spawn('index', { REDIS_URL: `redis://:${encodeURIComponent(WRONG_REDIS_PASSWORD)}@127.0.0.1:${c.redis.port}` }),
  ]);
});

after(async () => {
  await c?.stop();
});

const goodPayload = (runId: string) => ({
  runId, shardId: '0000', imageKeys: ['datasets/mini/train/good/000.png'], datasetPrefix: 'datasets/mini/', recipe: 'paper',
  frame: { resize: 256, crop: 224 }, weights: { sha256: c.weights.sha256 }, batchSize: 1,
});

async function finalState(q: Queue, jobId: string) {
  await until(`${jobId} to finish`, async () => ['completed', 'failed'].includes(await q.getJobState(jobId)), 60_000);
  const job = (await q.getJob(jobId))!;
  return { state: await q.getJobState(jobId), reason: job.failedReason, attemptsMade: job.attemptsMade };
}

test('secrets never reach a log line, a failure reason or status, with good and wrong credentials and a Redis restart', { timeout: 120_000 }, async () => {
  // Real work with the right credentials: a small training run over S3 and a password-protected Redis.
  await submitTraining({ store: c.store, flows: c.flows, log: silentLog }, {
    dataset: 'mini', category: 'bottle', runId: 'train-sec', version: 'v-sec', shardSize: 2, batchSize: 1, coresetRatio: 0.1, weights: c.weights,
  });
  const run = await c.waitRun('train-sec', 'training', 90_000);
  assert.equal(run.state, 'completed', `${JSON.stringify(run.failures)}\n${c.logTail()}`);

  // The wrong S3 keys: the request is refused and the job fails with the server's reason (whose XML body echoes
  // the key id, which must stay out of the message).
  const wrongQueue = new Queue(FEATURES_QUEUE, { connection: c.connection, prefix: 'wrongcreds' });
  wrongQueue.on('error', () => {});
  await wrongQueue.add('extract-features', goodPayload('train-wrong'), { jobId: 'wrong-creds', attempts: 1 });
  const wrong = await finalState(wrongQueue, 'wrong-creds');
  await wrongQueue.close();
  assert.equal(wrong.state, 'failed');
  assert.ok(wrongS3.events.some((e) => e.msg === 'job failed' && e.jobId === 'wrong-creds'), 'the misconfigured worker took the job');
  assert.match(wrong.reason, /could not be read from the bucket: S3 getObject of s3:\/\/patchcore-faults\/datasets\/mini\/train\/good\/000.png failed: InvalidAccessKeyId: The AWS Access Key Id you provided does not exist in our records\. \(HTTP 403\)/);

  // The wrong Redis password: refused, logged, never echoed.
  await wrongRedis.waitForLog('a Redis authentication error', (e) => /WRONGPASS|NOAUTH/.test(String(e.err)), 20_000);
  // Redis restarts under the workers: connection errors name the server, with the password masked.
  await c.redis.restart({ crash: true, downMs: 500 });
  await until('the workers to reconnect', () => c.liveWorkers().filter((w) => w !== wrongRedis)
    .every((w) => w.events.some((e) => e.msg === 'redis connection restored')), 30_000);

  const status = await runCli(['status', 'train-sec'], { ...c.env, LOG_LEVEL: 'debug' });
  assert.equal(status.code, 0, status.stderr);
  const everything = [...c.workers.flatMap((w) => w.lines), status.stdout, status.stderr, wrong.reason].join('\n');
  // Positive controls: the error paths above were logged, with the secrets masked.
  assert.match(everything, /redis:\/\/:\*\*\*@127\.0\.0\.1:\d+/);
  assert.match(everything, /"msg":"job failed"/);
  assert.match(everything, /InvalidAccessKeyId/);
  for (const secret of SECRETS) {
    for (const form of forms(secret)) assert.equal(everything.includes(form), false, `a secret (${secret.slice(0, 4)}...) appears in the output`);
  }
});

test('hand-crafted payloads pushed with raw BullMQ are refused before any read or write', { timeout: 60_000 }, async () => {
  const keysBefore = await c.keys();
  const seenBefore = c.proxy.seen.length;
  const q = c.queue(FEATURES_QUEUE);
  const evil: [string, string, unknown, RegExp][] = [
    ['evil-shape', 'extract-features', { ...goodPayload('../../models/bottle'), imageKeys: ['/etc/passwd'], datasetPrefix: '/' },
      /^invalid extract-features payload in job evil-shape: runId: "\.\.\/\.\.\/models\/bottle" must be 1 to 128 characters of A-Z a-z 0-9 \. _ -/],
    ['evil-prefix', 'extract-features', { ...goodPayload('evil-prefix'), datasetPrefix: 'models/bottle/', imageKeys: ['models/bottle/v-sec/bank.f32'] },
      /^dataset prefix "models\/bottle\/": expected "datasets\/<name>\/"$/],
    ['evil-dotdot', 'extract-features', { ...goodPayload('evil-dotdot'), imageKeys: ['datasets/mini/../../runs/train-sec/embeddings/0000.bin'] },
      /^dataset prefix "datasets\/mini\/": image key "\.\.\/\.\.\/runs\/train-sec\/embeddings\/0000\.bin" is not a safe relative path: it contains "\.\."$/],
    ['evil-name', 'build-index', goodPayload('evil-name'),
      /^job evil-name in queue patchcore-features is named "build-index", expected "extract-features"$/],
  ];
  try {
    for (const [jobId, name, payload] of evil) await q.add(name, payload, { jobId, attempts: 3, backoff: { type: 'fixed', delay: 100 } });
    for (const [jobId, , , reason] of evil) {
      const r = await finalState(q, jobId);
      assert.equal(r.state, 'failed', jobId);
      assert.match(r.reason, reason);
      assert.equal(r.attemptsMade, 1, `${jobId}: a malformed payload is not retried`);
    }
  } finally {
    await q.close();
  }
  assert.deepEqual(await c.keys(), keysBefore, 'a refused job wrote to the bucket');
  assert.deepEqual(c.proxy.seen.slice(seenBefore), [], 'a refused job touched the bucket');
});

test('names typed by a user cannot escape their prefix: submit, ingest and report refuse them first', { timeout: 60_000 }, async () => {
  const keysBefore = await c.keys();
  // BullMQ workers set their queue's `stalled-check` marker on their own clock: not something a refused command wrote.
  const queueKeys = async () => (await c.connection.keys('bull:*')).filter((k) => !k.endsWith(':stalled-check')).sort();
  const redisKeysBefore = await queueKeys();
  const env = { ...c.env, LOG_LEVEL: 'warn' };
  const cases: [string[], RegExp][] = [
    [['submit', 'train', '--dataset', '../x'],
      /^patchcore submit: dataset name "\.\.\/x" is not a valid key segment: only letters, digits, "\.", "_" and "-" are allowed\n$/],
    [['submit', 'train', '--dataset', 'mini', '--run-id', '../../models/bottle/latest'],
      /^patchcore submit: run id "\.\.\/\.\.\/models\/bottle\/latest" is not a valid key segment: only letters, digits/],
    [['submit', 'evaluate', '--dataset', 'mini', '--category', '..'],
      /^patchcore submit: model category "\.\." is not a valid key segment: it must not start with "\."\n$/],
    [['ingest', data, '--dataset', 'mini/../../runs'],
      /^patchcore ingest: dataset name "mini\/\.\.\/\.\.\/runs" is not a valid key segment/],
    [['report', 'get', '../datasets/mini', data],
      /^patchcore report: run id "\.\.\/datasets\/mini" is not a valid key segment/],
  ];
  const results = await Promise.all(cases.map(([args]) => runCli(args, env)));
  results.forEach((r, i) => {
    assert.equal(r.code, 1, `${cases[i][0].join(' ')}: ${r.stderr}`);
    // The AWS SDK may print a Node version notice too; the error is the line the command prints.
    assert.match(`${r.stderr.split('\n').find((l) => l.startsWith('patchcore ')) ?? r.stderr}\n`, cases[i][1]);
  });
  assert.deepEqual(await c.keys(), keysBefore);
  assert.deepEqual(await queueKeys(), redisKeysBefore);
});
