// test-lane: integration
// `npm run scale` end to end on a tiny archive: a real redis-server, s3rver and worker processes, real bottle images
// and weights. Speed is not asserted here (the benchmark prints it); the JSON contract and the run's bookkeeping are.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoRoot } from '../shared/paths.js';
import { makeBottleSubset } from '../test/helpers/subset.js';
import type { ScaleReport, SizeResult } from './scale.js';

function runScript(args: string[], timeoutMs: number): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', join(repoRoot, 'scripts', 'scale.ts'), ...args], {
      cwd: repoRoot, env: { ...process.env, LOG_LEVEL: 'warn' }, stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    // SIGINT: the script's own clean-up (workers, redis-server, the archive) runs.
    const timer = setTimeout(() => {
      child.kill('SIGINT');
      reject(new Error(`scale did not finish within ${timeoutMs} ms\n${stdout}\n${stderr.slice(-4000)}`));
    }, timeoutMs);
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

function checkSize(s: SizeResult, what: string, images: number): void {
  assert.equal(s.images, images, `${what}: images`);
  assert.equal(s.patches, images * 28 * 28, `${what}: patches`);
  assert.equal(s.bank_rows, 200, `${what}: one bank size`);
  assert.ok(s.wall_s > 0 && Math.abs(s.images_per_s - images / s.wall_s) < 0.05 * s.images_per_s, `${what}: images/s from wall time`);
  for (const kind of ['features', 'index', 'score', 'report'] as const) {
    // A worker process with the backbone loaded is well above 100 MiB; a missing reading would be 0.
    assert.ok(s.peak_rss_mib[kind] > 100 && s.peak_rss_mib[kind] < 16_384, `${what}: peak RSS of ${kind} ${s.peak_rss_mib[kind]}`);
  }
  for (const m of ['image_auroc', 'pixel_auroc', 'aupro'] as const) {
    assert.ok(s.metrics[m] > 0.5 && s.metrics[m] <= 1, `${what}: ${m} ${s.metrics[m]}`);
  }
  assert.ok(s.stages_s.backbone > 0 && s.stages_s.coreset > 0, `${what}: stage seconds ${JSON.stringify(s.stages_s)}`);
  assert.ok(s.bytes_written.training > 0 && s.bytes_written.model > 0 && s.bytes_written.evaluation > 0, `${what}: bytes written`);
  assert.equal(s.evaluation.images, 6, `${what}: the whole test set evaluated`);
}

test('npm run scale writes the per-size JSON with a single-pass baseline on a tiny archive', { timeout: 600_000 }, async (t) => {
  const data = makeBottleSubset({ train: 6, test: { good: 3, broken_large: 3 } });
  const out = mkdtempSync(join(tmpdir(), 'patchcore-scale-test-'));
  t.after(() => {
    rmSync(out, { recursive: true, force: true });
    rmSync(data, { recursive: true, force: true });
  });
  const json = join(out, 'scale.json');
  const r = await runScript(['--images', '16', '--shard-size', '8', '--bank-rows', '200', '--workers', '1', '--data', data, '--json', json], 540_000);
  assert.equal(r.code, 0, `exit code ${r.code}\n${r.stdout}\n${r.stderr.slice(-4000)}`);
  const report = JSON.parse(readFileSync(json, 'utf8')) as ScaleReport;
  assert.equal(report.sizes.length, 1);
  const [s] = report.sizes;
  checkSize(s, 'scalable flow', 16);
  assert.equal(s.shards, 2);
  assert.ok(s.bytes_written.unlabelled > 0);
  assert.equal(s.unlabelled?.images, 16, 'the whole (small) archive scored as the unlabelled run');
  assert.ok(s.unlabelled!.peak_rss_mib.report > 100);
  assert.ok(s.redis.jobs === 3 && s.redis.used_memory_end_bytes > 0);
  assert.ok(report.single_pass, 'the smallest size also as a single pass');
  checkSize(report.single_pass!, 'single pass', 16);
  assert.equal(report.single_pass!.flow, 'single-pass');
  assert.equal(report.single_pass!.unlabelled, null);
  assert.equal(report.archive.images, 16);
  assert.ok(report.redis_probe.bytes_per_job > report.redis_probe.payload_bytes, 'a queued job costs Redis at least its payload');
  assert.ok(s.root_job_s.coreset > 0, 'the root job\'s own coreset seconds');
  // The table on stdout names both flows.
  assert.match(r.stdout, new RegExp(`^\\s*${s.flow}\\s+16\\s+12544\\s`, 'm'));
  assert.match(r.stdout, /^\s*single-pass\s+16\s+12544\s/m);
});
