// Training as a reduce tree, through a real redis-server, s3rver and separate worker processes on real bottle images
// with the real weights: a run of 6 shards at fan-in 2 (depth 3) publishes a capped bank that the same run repeated
// reproduces bit for bit and that scores the bottle test subset; a reduce job run again rewrites the same bytes;
// an incremental run adds new images to that bank as a new version; held-out images (--validation-split) are scored
// against the bank as a local fit scores them; bad input is refused by name.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Queue } from 'bullmq';
import { pino } from 'pino';
import { SUBMIT_TRAIN } from '../cli/commands/pipeline.js';
import { UsageError } from '../cli/args.js';
import { startRedisServer, type RedisServer } from '../shared/embedded/redis-server.js';
import { startS3rver, type S3Server } from '../shared/embedded/s3-server.js';
import { UserError } from '../shared/errors.js';
import { accountRun } from '../shared/distributed/accounting.js';
import { reduceNode, type InputResult, type ReduceResult } from '../shared/distributed/reduce.js';
import { readLatest } from '../shared/distributed/model-store.js';
import { fitModel } from '../shared/local/fit.js';
import { ModelManifestSchema } from '../shared/model/manifest.js';
import { defaultDatasetDir, defaultWeightsPath, repoRoot } from '../shared/paths.js';
import { sha256File } from '../shared/pipeline/weights.js';
import { createRedisConnection, redisConfigFromEnv } from '../shared/queue/config.js';
import { collectChildResults, createFlowProducer, inputJobId, jobIds } from '../shared/queue/flows.js';
import { FEATURES_QUEUE, REDUCE_QUEUE, type ExtractFeaturesPayload, type ReducePayload } from '../shared/queue/jobs.js';
import { modelKey, reduceKey, reducePrefix, reportKey } from '../shared/storage/keys.js';
import { ObjectStore } from '../shared/storage/object-store.js';
import { storageConfigFromEnv } from '../shared/storage/config.js';
import { decodeTensorFile } from '../shared/storage/tensor-file.js';
import { ingestDataset, submitEvaluation, submitTraining, waitForRun } from '../services/producer/submit.js';
import { makeBottleSubset } from './helpers/subset.js';

const log = pino({ level: 'silent' });
const CAP = 400;
const data = makeBottleSubset({ train: 12, test: { good: 4, broken_large: 2, broken_small: 2, contamination: 2 } });
const work = mkdtempSync(join(tmpdir(), 'patchcore-tree-'));
let redis: RedisServer;
let s3: S3Server;
let env: Record<string, string | undefined>;
const workers: ChildProcess[] = [];
const workerOutput: string[] = [];

/** Three more bottle training images (12-14) in a layout of no particular shape: batch-1/cam-a/..., batch-1/x.png. */
function newImagesFolder(): string {
  const root = mkdtempSync(join(tmpdir(), 'patchcore-new-images-'));
  const src = join(defaultDatasetDir('bottle'), 'train/good');
  const [a, b, c] = readdirSync(src).sort().slice(12, 15);
  mkdirSync(join(root, 'batch-1/cam-a'), { recursive: true });
  symlinkSync(join(src, a), join(root, 'batch-1/cam-a', `line3-${a}`));
  symlinkSync(join(src, b), join(root, 'batch-1/cam-a', `line3-${b}`));
  symlinkSync(join(src, c), join(root, 'batch-1', `z-${c}`));
  return root;
}

before(async () => {
  redis = await startRedisServer();
  s3 = await startS3rver('patchcore-tree');
  env = { ...process.env, ...s3.env, REDIS_URL: redis.url, LOG_LEVEL: 'warn', HEALTH_PORT: '0', MODEL_CACHE_DIR: join(work, 'cache') };
  for (const kind of ['features', 'features', 'index', 'score']) {
    const child = spawn(process.execPath, [join(repoRoot, 'bin', 'patchcore.js'), 'worker', kind], { env, stdio: ['ignore', 'ignore', 'pipe'] });
    child.stderr!.on('data', (d) => workerOutput.push(`[${kind}] ${d}`));
    workers.push(child);
  }
});

after(async () => {
  await Promise.all(workers.map((w) => new Promise<void>((r) => {
    if (w.exitCode !== null) return r();
    w.once('exit', () => r());
    w.kill('SIGTERM');
  })));
  await redis?.stop();
  await s3?.stop();
});

/** `patchcore <args>` against this test's Redis and s3rver: exit status, stdout and stderr. */
function runCli(args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [join(repoRoot, 'bin', 'patchcore.js'), ...args], { env: { ...env, LOG_LEVEL: 'warn' }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d) => (stdout += d));
  child.stderr!.on('data', (d) => (stderr += d));
  return new Promise((resolve) => child.once('exit', (status) => resolve({ status, stdout, stderr })));
}

function clients() {
  const store = new ObjectStore(storageConfigFromEnv(env));
  const redisConfig = redisConfigFromEnv(env);
  const connection = createRedisConnection(redisConfig, { mode: 'fail-fast' });
  const flows = createFlowProducer(connection, redisConfig.prefix);
  const close = async () => {
    await flows.close();
    await connection.quit();
    store.destroy();
  };
  return { store, connection, flows, prefix: redisConfig.prefix, ctx: { store, flows, log }, close };
}

let weights: { file: string; sha256: string } | undefined;
let firstVersion = '';

test('a reduce tree of depth 3 (6 shards, fan-in 2) publishes a capped bank, the same bank when repeated, that scores bottle', { timeout: 900_000 }, async () => {
  const c = clients();
  try {
    await c.store.ensureBucket();
    await ingestDataset(c.store, data, 'bottle-tree');
    weights = { file: defaultWeightsPath(), sha256: await sha256File(defaultWeightsPath()) };
    const request = { dataset: 'bottle-tree', category: 'tree', shardSize: 2, fanIn: 2, coresetSize: CAP, weights };
    const train = await submitTraining(c.ctx, request);
    assert.equal(train.shards, 6);
    // Level 1: 1-0, 1-1, 1-2 over shard pairs; level 2: 2-0 over 1-0 and 1-1; the root merges 2-0 and 1-2.
    assert.deepEqual(train.tree, { fanIn: 2, depth: 3, nodes: 4 });
    const reduceQueue = new Queue(REDUCE_QUEUE, { connection: c.connection, prefix: c.prefix });
    try {
      const before = await reduceQueue.getJobCountByTypes('waiting', 'waiting-children', 'active', 'completed', 'failed', 'delayed');
      assert.equal(before, 4);
      // Submitting the same run again adds nothing.
      const again = await submitTraining(c.ctx, { ...request, runId: train.runId, version: train.version });
      assert.equal(again.alreadySubmitted, true);
      assert.equal(await reduceQueue.getJobCountByTypes('waiting', 'waiting-children', 'active', 'completed', 'failed', 'delayed'), 4);

      const done = await waitForRun(c.connection, train.runId, 'training', c.prefix, { timeoutMs: 600_000 });
      assert.equal(done.state, 'completed', `${JSON.stringify(done.failures)}\n${workerOutput.join('')}`);
      firstVersion = train.version!;
      // status shows the reduce steps too.
      assert.deepEqual(done.reduce, { total: 4, done: 4, active: 0, failed: 0 });
      assert.equal(done.counts.done, 6);
      // The run's accounting counts every job: 6 feature jobs, 4 reduce steps and the root.
      assert.equal((await accountRun(c.connection, c.prefix, train.runId, 'training', ['0000', '0001', '0002', '0003', '0004', '0005'])).jobs, 11);
      const manifest = await c.store.getManifest(modelKey('tree', firstVersion, 'manifest.json'), ModelManifestSchema);
      assert.ok(manifest);
      // The cap bounds the bank: the root had more rows than that to choose from.
      assert.equal(manifest.bank.count, CAP);
      assert.ok((done.parent!.returnValue as { mergedRows: number }).mergedRows > CAP);
      assert.equal(manifest.coreset.size, CAP);
      assert.equal(manifest.coreset.ratio, null);
      assert.deepEqual(manifest.training.tree, { fanIn: 2, depth: 3, nodes: 4 });
      assert.equal(manifest.training.images, 12);
      assert.equal(manifest.coreset.trainPatches, 12 * 32 * 32); // the default whole-image frame: 32x32 patches per bottle image
      for (const job of ['features', 'reduce', 'index']) assert.ok(manifest.training.jobs?.[job], `training.jobs.${job}`);
      assert.equal(manifest.training.jobs!.reduce.jobs, 4);
      // Every reduce step held at most fan-in x (rows of one input), and wrote at most the cap.
      const leafRows = Math.round(0.1 * 2 * 32 * 32);
      for (const node of ['1-0', '1-1', '1-2', '2-0']) {
        const r = (await reduceQueue.getJob(jobIds.reduce(train.runId, node)))!.returnvalue as ReduceResult;
        assert.ok(r.inputRows <= 2 * Math.max(CAP, leafRows), `${node}: ${r.inputRows} input rows`);
        assert.ok(r.rows <= CAP, `${node}: ${r.rows} rows`);
        assert.ok(await c.store.exists(reduceKey(train.runId, node)), node);
      }
      // The leaves were reduced by their own coresets (on by default in a tree run).
      const leaf = (await new Queue(FEATURES_QUEUE, { connection: c.connection, prefix: c.prefix }).getJob(jobIds.extractFeatures(train.runId, '0000')))!;
      assert.deepEqual((leaf.data as ExtractFeaturesPayload).perShardCoreset, { ratio: 0.1, seed: 0 });

      // The same run again (the same images, named through --images this time): the same bank, bit for bit.
      const repeat = await submitTraining(c.ctx, { images: 'datasets/bottle-tree/train/', category: 'tree', shardSize: 2, fanIn: 2, coresetSize: CAP, weights });
      assert.deepEqual(repeat.tree, train.tree);
      const repeated = await waitForRun(c.connection, repeat.runId, 'training', c.prefix, { timeoutMs: 600_000 });
      assert.equal(repeated.state, 'completed', `${JSON.stringify(repeated.failures)}\n${workerOutput.join('')}`);
      const bank = await c.store.getObject(modelKey('tree', firstVersion, 'bank.f32'));
      assert.ok(bank.equals(await c.store.getObject(modelKey('tree', repeat.version!, 'bank.f32'))), 'the repeated run built another bank');
      // Their reduce steps kept the same rows (the headers differ by the run id only).
      for (const node of ['1-0', '2-0']) {
        const rowsOf = async (run: string) => {
          const { data } = decodeTensorFile(await c.store.getObject(reduceKey(run, node)), node);
          return Buffer.from(data.buffer, data.byteOffset, data.byteLength);
        };
        assert.ok((await rowsOf(train.runId)).equals(await rowsOf(repeat.runId)), node);
      }

      // A reduce job run again (a retry, a duplicate) writes the same object, and nothing else.
      const job = (await reduceQueue.getJob(jobIds.reduce(train.runId, '2-0')))!;
      const payload = job.data as ReducePayload;
      const results = await collectChildResults<InputResult>(job, payload.inputs.map((i) => inputJobId(train.runId, i)));
      const written = await c.store.getObject(reduceKey(train.runId, '2-0'));
      const listed = async () => { const keys = []; for await (const o of c.store.list(reducePrefix(train.runId))) keys.push(o.key); return keys; };
      const keysBefore = await listed();
      const rerun = await reduceNode(payload, results, { store: c.store, log });
      assert.ok(written.equals(await c.store.getObject(reduceKey(train.runId, '2-0'))), 'a re-run reduce step wrote other bytes');
      assert.equal(rerun.rows, (job.returnvalue as ReduceResult).rows);
      assert.deepEqual(await listed(), keysBefore);
    } finally {
      await reduceQueue.close();
    }

    // The tree-reduced bank scores the bottle test subset.
    const evaluation = await submitEvaluation(c.ctx, { dataset: 'bottle-tree', category: 'tree', version: firstVersion, shardSize: 5 });
    const evaluated = await waitForRun(c.connection, evaluation.runId, 'evaluation', c.prefix, { timeoutMs: 600_000 });
    assert.equal(evaluated.state, 'completed', `${JSON.stringify(evaluated.failures)}\n${workerOutput.join('')}`);
    const metrics = JSON.parse((await c.store.getObject(reportKey(evaluation.runId, 'metrics.json'))).toString());
    assert.ok(metrics.image_auroc >= 0.99, `image AUROC ${metrics.image_auroc}`);
  } finally {
    await c.close();
  }
});

test('incremental retraining: --from-version latest --images <prefix> adds new images to the bank as a new version', { timeout: 600_000 }, async () => {
  assert.ok(firstVersion, 'needs the tree run');
  const c = clients();
  try {
    await ingestDataset(c.store, newImagesFolder(), 'bottle-new');
    const latestBefore = (await readLatest(c.store, 'tree'))!.version;
    // Through the command line, as an operator would (the parent's frame, seed and cap carry over).
    // Asynchronously: s3rver runs in this process and must keep answering.
    const cli = await runCli(['submit', 'train', '--images', 'datasets/bottle-new/batch-1', '--category', 'tree',
      '--from-version', 'latest', '--shard-size', '2', '--fan-in', '2']);
    assert.equal(cli.status, 0, cli.stderr);
    const run = JSON.parse(cli.stdout.trim().split('\n').at(-1)!) as Awaited<ReturnType<typeof submitTraining>>;
    assert.equal(run.images, 3);
    assert.equal(run.parentVersion, latestBefore);
    // Only the new images are read: the run's feature jobs name nothing else.
    const features = new Queue(FEATURES_QUEUE, { connection: c.connection, prefix: c.prefix });
    try {
      for (const shard of ['0000', '0001']) {
        const p = (await features.getJob(jobIds.extractFeatures(run.runId, shard)))!.data as ExtractFeaturesPayload;
        for (const key of p.imageKeys) assert.match(key, /^datasets\/bottle-new\/batch-1\//);
      }
    } finally {
      await features.close();
    }
    const done = await waitForRun(c.connection, run.runId, 'training', c.prefix, { timeoutMs: 600_000 });
    assert.equal(done.state, 'completed', `${JSON.stringify(done.failures)}\n${workerOutput.join('')}`);
    const manifest = (await c.store.getManifest(modelKey('tree', run.version!, 'manifest.json'), ModelManifestSchema))!;
    assert.deepEqual(manifest.training.parent, { category: 'tree', version: latestBefore });
    assert.deepEqual(manifest.training.added, { images: 3, prefix: 'datasets/bottle-new/batch-1/' });
    assert.equal(manifest.training.images, 15);
    assert.equal(manifest.coreset.trainPatches, 15 * 32 * 32);
    // The parent's cap carries over; the version is new and latest moved forward to it.
    assert.equal(manifest.coreset.size, CAP);
    assert.equal(manifest.bank.count, CAP);
    assert.notEqual(run.version, latestBefore);
    assert.equal((await readLatest(c.store, 'tree'))!.version, run.version);
    const parentBank = await c.store.getObject(modelKey('tree', latestBefore, 'bank.f32'));
    assert.ok(!parentBank.equals(await c.store.getObject(modelKey('tree', run.version!, 'bank.f32'))), 'the new images changed nothing');
  } finally {
    await c.close();
  }
});

// The held-out images of `fit --validation-split` and `submit train --validation-split` are chosen alike; without a
// tree (one training shard) the distributed bank equals the local one, so their held-out scores must agree too.
test('--validation-split holds out good images: not in the bank, scored against it as fit scores them', { timeout: 600_000 }, async () => {
  const c = clients();
  try {
    await c.store.ensureBucket();
    await ingestDataset(c.store, data, 'bottle-held-out');
    weights ??= { file: defaultWeightsPath(), sha256: await sha256File(defaultWeightsPath()) };
    const run = await submitTraining(c.ctx, { dataset: 'bottle-held-out', category: 'held-out', shardSize: 32, validationSplit: 0.25, weights });
    assert.equal(run.images, 12);
    assert.equal(run.shards, 1);
    assert.deepEqual(run.validation, { images: 3, shards: 1 });
    const done = await waitForRun(c.connection, run.runId, 'training', c.prefix, { timeoutMs: 600_000 });
    assert.equal(done.state, 'completed', `${JSON.stringify(done.failures)}\n${workerOutput.join('')}`);
    // status follows the held-out shard like any other.
    assert.deepEqual(done.shards.map((x) => x.shardId), ['0000', 'v0000']);
    const manifest = (await c.store.getManifest(modelKey('held-out', run.version!, 'manifest.json'), ModelManifestSchema))!;
    assert.equal(manifest.training.images, 9);
    assert.equal(manifest.coreset.trainPatches, 9 * 32 * 32);

    const local = await fitModel({
      dataDir: data, modelDir: join(work, 'held-out-local'), weightsPath: defaultWeightsPath(), validationSplit: 0.25, logger: log,
    });
    assert.deepEqual(manifest.validation!.images, local.validation!.images.map((id) => `datasets/bottle-held-out/${id}`));
    assert.equal(manifest.validation!.images.length, 3);
    manifest.validation!.scores.forEach((score, i) => {
      assert.ok(Math.abs(score - local.validation!.scores[i]) <= 1e-6 * local.validation!.scores[i], `held-out image ${i}: ${score} vs ${local.validation!.scores[i]}`);
    });
    const bank = await c.store.getObject(modelKey('held-out', run.version!, 'bank.f32'));
    assert.ok(bank.equals(readFileSync(join(work, 'held-out-local', 'bank.f32'))), 'the distributed bank is not the local one');
  } finally {
    await c.close();
  }
});

test('bad input is refused naming it: unknown --from-version, an --images prefix without images, --fan-in 1', { timeout: 60_000 }, async () => {
  const c = clients();
  try {
    await c.store.ensureBucket();
    const w = { file: defaultWeightsPath(), sha256: 'ab'.repeat(32) };
    const refused = async (req: Parameters<typeof submitTraining>[1], message: RegExp) => {
      await assert.rejects(submitTraining(c.ctx, req), (err: Error) => {
        assert.ok(err instanceof UserError, `${err.name}: ${err.message}`);
        assert.match(err.message, message);
        return true;
      });
    };
    await ingestDataset(c.store, newImagesFolder(), 'bottle-bad');
    await refused({ images: 'datasets/bottle-bad/batch-1/', category: 'tree', fromVersion: 'v-nope', weights: w },
      /^--from-version "v-nope": category "tree" has no published version "v-nope"/);
    await refused({ images: 'datasets/bottle-bad/batch-1/', category: 'nothing-yet', fromVersion: 'latest', weights: w },
      /^--from-version "latest": category "nothing-yet" has no model yet/);
    await refused({ images: 'datasets/bottle-bad/batch-2/', weights: w }, /^no images under "datasets\/bottle-bad\/batch-2\/" in the bucket/);
    await refused({ images: '../x/', weights: w }, /^--images "\.\.\/x\/" is not a prefix of images in the bucket/);
    await refused({ dataset: 'bottle-bad', images: 'datasets/bottle-bad/', weights: w }, /either --dataset <name> .* or --images <prefix>/);
    await refused({ images: 'datasets/bottle-bad/', fanIn: 1, weights: w }, /^--fan-in 1 is out of range: expected an integer from 2 to 64/);
    assert.throws(() => SUBMIT_TRAIN.parse(['--dataset', 'd', '--fan-in', '1']),
      (err: Error) => err instanceof UsageError && err.message === 'patchcore submit train: --fan-in: expected an integer from 2 to 64');
    assert.throws(() => SUBMIT_TRAIN.parse(['--coreset-size', '0', '--images', 'datasets/d/']),
      (err: Error) => err instanceof UsageError && err.message === 'patchcore submit train: --coreset-size: expected a positive integer');
    // Nothing was enqueued by any of them.
    const features = new Queue(FEATURES_QUEUE, { connection: c.connection, prefix: c.prefix });
    try {
      const all = await features.getJobs(['waiting', 'waiting-children', 'active', 'delayed']);
      assert.equal(all.filter((j) => (j.data as ExtractFeaturesPayload).datasetPrefix === 'datasets/bottle-bad/').length, 0);
    } finally {
      await features.close();
    }
  } finally {
    await c.close();
  }
});
