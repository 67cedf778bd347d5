// Unlabelled scoring end to end through a real redis-server, a real S3-compatible server (s3rver) and a separate
// scorer process, on real bottle images with the real weights: a flat folder of images (any layout) is ingested,
// scored with `patchcore submit score --images ... --wait` against a model fitted in-process (with held-out good
// images, so it has a threshold) and published to the bucket; results.csv / results.jsonl have one row per image,
// defects rank above good images, and the report shows the distribution and the top images. Bad input is refused by name.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { pino } from 'pino';
import { startRedisServer, type RedisServer } from '../shared/embedded/redis-server.js';
import { startS3rver, type S3Server } from '../shared/embedded/s3-server.js';
import { setLatest, uploadModel } from '../shared/distributed/model-store.js';
import { UserError } from '../shared/errors.js';
import { fitModel } from '../shared/local/fit.js';
import { defaultDatasetDir, defaultWeightsPath, repoRoot } from '../shared/paths.js';
import { createRedisConnection, redisConfigFromEnv } from '../shared/queue/config.js';
import { cancelRun, createFlowProducer } from '../shared/queue/flows.js';
import { storageConfigFromEnv } from '../shared/storage/config.js';
import { reportKey } from '../shared/storage/keys.js';
import { ObjectStore } from '../shared/storage/object-store.js';
import { ingestDataset, submitScoring, waitForRun } from '../services/producer/submit.js';
import { makeBottleSubset } from './helpers/subset.js';

const log = pino({ level: 'silent' });
const work = mkdtempSync(join(tmpdir(), 'patchcore-unlabelled-'));
const bottle = defaultDatasetDir('bottle');
let redis: RedisServer;
let s3: S3Server;
let env: Record<string, string | undefined>;
let scorer: ChildProcess;
const scorerOutput: string[] = [];

/** A flat folder of real bottle test images (links, nothing copied), one in a sub-folder, and a file that is no image. */
function flatFolder(): { dir: string; good: string[]; defect: string[] } {
  const dir = join(work, 'flat');
  mkdirSync(join(dir, 'line-2'), { recursive: true });
  const take = (type: string, n: number) => readdirSync(join(bottle, 'test', type)).sort().slice(0, n).map((f) => join(bottle, 'test', type, f));
  const good = take('good', 3).map((src, i) => {
    symlinkSync(src, join(dir, `frame-${i}a.png`));
    return `frame-${i}a.png`;
  });
  const defect = take('broken_large', 2).map((src, i) => {
    symlinkSync(src, join(dir, `frame-${i}b.png`));
    return `frame-${i}b.png`;
  });
  symlinkSync(take('contamination', 1)[0], join(dir, 'line-2', 'frame-9.png'));
  defect.push('line-2/frame-9.png');
  writeFileSync(join(dir, 'notes.txt'), 'not an image\n');
  return { dir, good, defect };
}

function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [join(repoRoot, 'bin', 'patchcore.js'), ...args], { env, timeout: 240_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }));
  });
}

/** RFC 4180 enough for these files: no field here holds a comma or a quote. */
const csvRows = (text: string) => text.trim().split('\n').map((l) => l.split(','));

before(async () => {
  redis = await startRedisServer();
  s3 = await startS3rver('patchcore-unlabelled');
  env = { ...process.env, ...s3.env, REDIS_URL: redis.url, LOG_LEVEL: 'warn', MODEL_CACHE_DIR: join(work, 'cache') };
  scorer = spawn(process.execPath, [join(repoRoot, 'bin', 'patchcore.js'), 'worker', 'score'], { env, stdio: ['ignore', 'ignore', 'pipe'] });
  scorer.stderr!.on('data', (d) => scorerOutput.push(String(d)));
});

after(async () => {
  if (scorer && scorer.exitCode === null) {
    await new Promise<void>((r) => {
      scorer.once('exit', () => r());
      scorer.kill('SIGTERM');
    });
  }
  await redis?.stop();
  await s3?.stop();
});

test('a flat folder is ingested and scored unlabelled: one result row per image, defects above good images, a report', { timeout: 600_000 }, async () => {
  const store = new ObjectStore(storageConfigFromEnv(env));
  const redisConfig = redisConfigFromEnv(env);
  const connection = createRedisConnection(redisConfig, { mode: 'fail-fast' });
  const flows = createFlowProducer(connection, redisConfig.prefix);
  const ctx = { store, flows, log };
  try {
    await store.ensureBucket();
    // A model with held-out good images (its threshold), published as the category's latest version.
    const train = makeBottleSubset({ train: 10, test: {} });
    const modelDir = join(work, 'model');
    const manifest = await fitModel({
      dataDir: train, modelDir, weightsPath: defaultWeightsPath(), coresetRatio: 0.1, validationSplit: 0.2, category: 'bottle', logger: log,
    });
    assert.equal(manifest.validation?.scores.length, 2);
    await uploadModel(store, 'bottle', 'v-held-out', modelDir, manifest);
    await setLatest(store, 'bottle', 'v-held-out');
    // The same bank without held-out images: no threshold.
    const { validation: _v, ...noValidation } = manifest;
    await uploadModel(store, 'bottle', 'v-no-threshold', modelDir, noValidation);

    const flat = flatFolder();
    const ingest = await cli(['ingest', flat.dir, '--dataset', 'line-photos']);
    assert.equal(ingest.code, 0, ingest.stderr);
    assert.deepEqual(JSON.parse(ingest.stdout), { dataset: 'line-photos', prefix: 'datasets/line-photos/', files: 7, images: 6, layout: 'images' });
    assert.equal(await store.exists('datasets/line-photos/line-2/frame-9.png'), true, 'the relative path is the key');
    // An MVTec AD category still uploads as one.
    assert.deepEqual(await ingestDataset(store, train, 'bottle-train'), { prefix: 'datasets/bottle-train/', files: 10, images: 10, layout: 'mvtec' });
    const ids = [...flat.good, ...flat.defect].sort();

    // Through the CLI, as a user runs it: 3 shards of 2, then the report.
    const run = await cli(['submit', 'score', '--images', 'line-photos', '--category', 'bottle', '--shard-size', '2', '--wait']);
    assert.equal(run.code, 0, `${run.stderr}\n${scorerOutput.join('')}`);
    const [submitted, finished] = run.stdout.trim().split('\n').map((l) => JSON.parse(l));
    assert.equal(submitted.images, 6);
    assert.equal(submitted.shards, 3);
    assert.equal(submitted.version, 'v-held-out');
    assert.equal(finished.state, 'completed');
    const runId: string = submitted.runId;
    assert.match(runId, /^score-bottle-/);

    const csv = csvRows((await store.getObject(reportKey(runId, 'results.csv'))).toString());
    assert.deepEqual(csv[0], ['image', 'score', 'anomalous', 'map']);
    assert.deepEqual(csv.slice(1).map((r) => r[0]).sort(), ids);
    const jsonl = (await store.getObject(reportKey(runId, 'results.jsonl'))).toString().trim().split('\n').map((l) => JSON.parse(l));
    assert.equal(jsonl.length, 6);
    const summary = JSON.parse((await store.getObject(reportKey(runId, 'summary.json'))).toString());
    const threshold: number = summary.threshold.value;
    assert.equal(summary.threshold.rule, 'target-fpr');
    assert.equal(summary.threshold.target_fpr, 0.01);
    assert.ok(threshold > Math.max(...manifest.validation!.scores), 'at a 1% FPR on 2 held-out images, neither is flagged');
    for (const [i, row] of jsonl.entries()) {
      assert.deepEqual(Object.keys(row), ['image', 'key', 'score', 'anomalous', 'map']);
      assert.equal(row.key, `datasets/line-photos/${row.image}`);
      assert.equal(row.map, `reports/${runId}/maps/${row.image}.png`);
      assert.equal(row.anomalous, row.score >= threshold);
      const line = csv.find((r) => r[0] === row.image)!;
      assert.deepEqual(line, [row.image, row.score.toPrecision(9), row.anomalous ? '1' : '0', row.map], `csv row ${i}`);
      const png = await store.getObject(row.map);
      assert.equal(png.subarray(1, 4).toString(), 'PNG', row.map);
    }
    const score = new Map(jsonl.map((r) => [r.image as string, r.score as number]));
    const worstGood = Math.max(...flat.good.map((id) => score.get(id)!));
    const leastDefect = Math.min(...flat.defect.map((id) => score.get(id)!));
    assert.ok(leastDefect > worstGood, `every defect image (lowest ${leastDefect}) scores above every good one (highest ${worstGood})`);
    for (const id of flat.defect) assert.equal(jsonl.find((r) => r.image === id).anomalous, true, `${id} is anomalous at the threshold`);

    assert.equal(summary.images, 6);
    assert.equal(summary.anomalous, jsonl.filter((r) => r.anomalous).length);
    assert.equal(summary.histogram.reduce((s: number, b: { count: number }) => s + b.count, 0), 6);
    assert.deepEqual(summary.top.map((t: { image: string }) => t.image), [...ids].sort((a, b) => score.get(b)! - score.get(a)!));
    assert.ok(flat.defect.includes(summary.top[0].image));
    assert.equal(summary.score_stats.max, Math.max(...score.values()));
    // Where the run's time went: the 3 score jobs and the report job.
    assert.equal(typeof summary.timings_ms['score compute (3 jobs)'], 'number');
    assert.equal(typeof summary.timings_ms['report compute (1 job)'], 'number');
    assert.equal(typeof summary.timings_ms['report queue wait'], 'number');
    for (const t of summary.top) assert.ok(await store.exists(t.gallery), t.gallery);
    const html = (await store.getObject(reportKey(runId, 'index.html'))).toString();
    assert.match(html, /<svg/);
    assert.match(html, /gallery\/0001\.png/);
    assert.ok(await store.exists(reportKey(runId, 'plots/score-histogram.svg')));

    // A model without held-out good images: the scores are there, "anomalous" is empty and the report says why.
    const plain = await submitScoring(ctx, { images: 'datasets/line-photos/line-2/', category: 'bottle', version: 'v-no-threshold', limit: 5 });
    assert.equal(plain.images, 1);
    const done = await waitForRun(connection, plain.runId, 'evaluation', redisConfig.prefix, { timeoutMs: 240_000 });
    assert.equal(done.state, 'completed', JSON.stringify(done.failures));
    const plainCsv = csvRows((await store.getObject(reportKey(plain.runId, 'results.csv'))).toString());
    assert.deepEqual(plainCsv.slice(1).map((r) => [r[0], r[2]]), [['line-2/frame-9.png', '']]);
    assert.equal(Number(plainCsv[1][1]).toPrecision(9), score.get('line-2/frame-9.png')!.toPrecision(9), 'the same image, the same bank: the same score');
    const plainSummary = JSON.parse((await store.getObject(reportKey(plain.runId, 'summary.json'))).toString());
    assert.equal(plainSummary.threshold, null);
    assert.equal(plainSummary.anomalous, null);
    assert.match(plainSummary.threshold_note, /model bottle\/v-no-threshold has no held-out good images .*--validation-split/);
  } finally {
    await flows.close();
    await connection.quit();
    store.destroy();
  }
});

test('bad input to ingest and submit score is refused with an error naming it, before anything is queued; a limit takes the first images', { timeout: 120_000 }, async () => {
  const store = new ObjectStore(storageConfigFromEnv(env));
  const redisConfig = redisConfigFromEnv(env);
  const connection = createRedisConnection(redisConfig, { mode: 'fail-fast' });
  const flows = createFlowProducer(connection, redisConfig.prefix);
  const ctx = { store, flows, log };
  try {
    await store.ensureBucket();
    const empty = mkdtempSync(join(work, 'no-images-'));
    writeFileSync(join(empty, 'readme.md'), '# nothing\n');
    await assert.rejects(ingestDataset(store, empty, 'nothing'), (err: Error) =>
      err instanceof UserError && err.message.startsWith(`folder "${empty}" has no images to ingest (1 files; images are .png`));
    assert.equal(await store.exists('datasets/nothing/readme.md'), false, 'nothing uploaded');
    // A prefix with no image under it, one with only other files, one naming no data set.
    await assert.rejects(submitScoring(ctx, { images: 'datasets/empty-prefix/', category: 'bottle', version: 'v-held-out' }),
      (err: Error) => err instanceof UserError && /^no images under "datasets\/empty-prefix\/" in the bucket/.test(err.message));
    await store.putObject('datasets/docs-only/a.txt', 'x');
    await assert.rejects(submitScoring(ctx, { images: 'docs-only', category: 'bottle', version: 'v-held-out' }),
      { message: /^no images under "datasets\/docs-only\/" in the bucket \(1 other files; images are \.png/ });
    const firstTwo = await submitScoring(ctx, { images: 'line-photos', category: 'bottle', limit: 2, runId: 'score-first-two' });
    assert.equal(firstTwo.images, 2);
    assert.deepEqual((await flows.getFlow({ queueName: 'patchcore-report', id: 'score-first-two~report' }))!.children!.map((c) => c.job.data.imageKeys).flat(),
      ['datasets/line-photos/frame-0a.png', 'datasets/line-photos/frame-0b.png']);
    await cancelRun(connection, 'score-first-two', 'evaluation', { prefix: redisConfig.prefix });
    await assert.rejects(submitScoring(ctx, { images: 'line-photos', category: 'bottle', limit: 0 }), { message: 'image limit 0 is not a positive integer' });
    await assert.rejects(submitScoring(ctx, { images: 'datasets/', category: 'bottle' }),
      { message: /^--images "datasets\/" is not a prefix of images in the bucket: it names no data set/ });
    await assert.rejects(submitScoring(ctx, { images: 'a/../../runs', category: 'bottle' }),
      { message: /^--images "a\/..\/..\/runs" is not a prefix of images in the bucket: .*contains "\.\."/ });
    // A model version that does not exist, and a category without any.
    await assert.rejects(submitScoring(ctx, { images: 'line-photos', category: 'bottle', version: 'v-unknown' }),
      (err: Error) => err instanceof UserError && err.message.startsWith('model version bottle/v-unknown does not exist'));
    await assert.rejects(submitScoring(ctx, { images: 'line-photos', category: 'no-such-category' }),
      { message: /category "no-such-category" has no model yet/ });
    // The CLI prints the message, without a stack.
    const r = await cli(['submit', 'score', '--images', 'line-photos', '--category', 'bottle', '--model-version', 'v-unknown']);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /model version bottle\/v-unknown does not exist/);
    assert.doesNotMatch(r.stderr, /\n\s+at /);
  } finally {
    await flows.close();
    await connection.quit();
    store.destroy();
  }
});
