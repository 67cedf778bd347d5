// Peak RSS and time of the unlabelled report job (`submit score --images`) at several run sizes, to show that its
// memory does not grow with the number of images. Not part of the tests. For each size it writes synthetic score
// shards (scores and 224x224 maps, as score-shard writes them) to an embedded s3rver, then runs the report job in a
// fresh process and reads that process's peak RSS. The images themselves are not scored (the report never reads
// them but for the top ones, which are a real bottle image).
//   node --import tsx scripts/bench-unlabelled-report.ts [--images 250,1000] [--shard-size 32] [--json <file>]
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs, promisify } from 'node:util';
import { pino } from 'pino';
import { ModelCache, setLatest, uploadModel } from '../shared/distributed/model-store.js';
import { buildUnlabelledReport } from '../shared/distributed/unlabelled-report.js';
import { startS3rver } from '../shared/embedded/s3-server.js';
import { defaultDatasetDir, repoRoot } from '../shared/paths.js';
import type { ReportPayload, UnlabelledReport } from '../shared/queue/jobs.js';
import { storageConfigFromEnv } from '../shared/storage/config.js';
import { mapsKey, scoresKey, shardName } from '../shared/storage/keys.js';
import { ObjectStore } from '../shared/storage/object-store.js';
import { encodeTensorFile } from '../shared/storage/tensor-file.js';
import { makeBankDir, makeManifest } from '../test/ops/fixtures.js';

const SIDE = 224;
const TOP = 24;
const FRAME = { sourceWidth: 900, sourceHeight: 900, resizedWidth: 256, resizedHeight: 256, cropLeft: 16, cropTop: 16, width: SIDE, height: SIDE };

type Payload = ReportPayload & { unlabelled: UnlabelledReport };

/** The child: runs one report job and prints its result with the process's peak RSS. */
async function child(payloadJson: string): Promise<void> {
  const payload = JSON.parse(payloadJson) as Payload;
  const store = ObjectStore.fromEnv();
  const t0 = performance.now();
  const r = await buildUnlabelledReport(payload, { store, models: new ModelCache(store, join(process.env.MODEL_CACHE_DIR!)), log: pino({ level: 'warn' }) });
  process.stdout.write(JSON.stringify({ ...r, wall_s: (performance.now() - t0) / 1000, peak_rss_mib: Math.round(process.resourceUsage().maxRSS / 1024) }) + '\n');
  store.destroy();
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { images: { type: 'string', default: '250,1000' }, 'shard-size': { type: 'string', default: '32' }, json: { type: 'string' }, child: { type: 'string' } } });
  if (values.child) return child(values.child);
  const sizes = values.images.split(',').map(Number);
  const shardSize = Number(values['shard-size']);
  const s3 = await startS3rver('patchcore-bench-unlabelled');
  const env = { ...process.env, ...s3.env, LOG_LEVEL: 'warn', MODEL_CACHE_DIR: mkdtempSync(join(tmpdir(), 'patchcore-bench-models-')) };
  const store = new ObjectStore(storageConfigFromEnv(env));
  const out: Record<string, unknown>[] = [];
  try {
    await store.ensureBucket();
    const manifest = { ...makeManifest('bench'), validation: { images: ['a.png', 'b.png'], scores: [0.6, 0.7] } };
    await uploadModel(store, 'bench', 'v1', await makeBankDir(1), manifest);
    await setLatest(store, 'bench', 'v1');
    const image = readFileSync(join(defaultDatasetDir('bottle'), 'test/good/000.png'));
    for (const n of sizes) {
      const runId = `bench-${n}`;
      const prefix = `datasets/bench-${n}/`;
      const shards: string[] = [];
      let seed = n;
      const random = () => ((seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) / 2 ** 32);
      for (let start = 0, s = 0; start < n; start += shardSize, s++) {
        const shardId = shardName(s);
        const count = Math.min(shardSize, n - start);
        const images = Array.from({ length: count }, (_, j) => {
          const i = start + j;
          const id = `img-${String(i).padStart(7, '0')}.png`;
          // The first TOP images score highest: they are the gallery, whose pictures the report downloads.
          return { id, key: prefix + id, score: i < TOP ? 2 - i / 100 : 0.5 + random(), frame: FRAME };
        });
        const data = new Float32Array(count * SIDE * SIDE);
        for (let k = 0; k < data.length; k++) data[k] = random();
        await store.putObject(mapsKey(runId, shardId), encodeTensorFile(
          { dtype: 'float32', dim: SIDE * SIDE, count, grid: [SIDE, SIDE], images: images.map((im, j) => ({ key: im.key, offset: j, patches: 1 })) }, data));
        await store.putJson(scoresKey(runId, shardId), { runId, shardId, model: { category: 'bench', version: 'v1' }, images, failed: [] });
        for (const im of images) if (im.score >= 1.5) await store.putObject(im.key, image);
        shards.push(shardId);
      }
      const payload: Payload = {
        runId, model: { category: 'bench', version: 'v1' }, shards, datasetPrefix: prefix, category: 'bench',
        unlabelled: { kind: 'unlabelled', imagesPrefix: prefix },
      };
      const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', join(repoRoot, 'scripts', 'bench-unlabelled-report.ts'), '--child', JSON.stringify(payload)],
        { env, maxBuffer: 16 * 1024 * 1024 });
      const r = JSON.parse(stdout.trim().split('\n').pop()!);
      const row = { images: n, shards: shards.length, wall_s: Number(r.wall_s.toFixed(2)), images_per_s: Number((n / r.wall_s).toFixed(1)), peak_rss_mib: r.peak_rss_mib, anomalous: r.anomalous, timings_ms: r.timings_ms };
      out.push(row);
      process.stderr.write(`${JSON.stringify(row)}\n`);
    }
  } finally {
    store.destroy();
    await s3.stop();
    rmSync(env.MODEL_CACHE_DIR, { recursive: true, force: true });
  }
  const first = out[0] as { peak_rss_mib: number; images: number };
  const last = out[out.length - 1] as { peak_rss_mib: number; images: number };
  const result = { sizes: out, rss_ratio_last_to_first: Number((last.peak_rss_mib / first.peak_rss_mib).toFixed(3)) };
  process.stdout.write(JSON.stringify(result, null, 2) + '\n');
  if (values.json) writeFileSync(values.json, JSON.stringify(result, null, 2) + '\n');
}

await main();
