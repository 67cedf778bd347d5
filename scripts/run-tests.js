#!/usr/bin/env node
// Runs every *.test.ts under the source folders with node's built-in test runner (through tsx), in two lanes:
//   unit        pure modules, files in parallel (one per core);
//   integration everything under test/ and files marked `// test-lane: integration` in their first lines (real
//               redis-server, s3rver, worker processes, Chromium): one file at a time, so that timing-sensitive
//               fault tests never share the machine with each other.
// Prints node's TAP for each lane, then one closing line over both: "tests: N passed, N failed".
// TEST_FILTER=<substring> runs the matching files only; TEST_LANE=unit|integration runs one lane; extra arguments go
// to `node --test` (for example --test-name-pattern=aupro).
import { availableParallelism } from 'node:os';
import { openSync, readSync, closeSync, readdirSync, statSync } from 'node:fs';
import { join, sep } from 'node:path';
import { spawn } from 'node:child_process';

const ROOTS = ['shared', 'services', 'cli', 'test', 'scripts'];
const MARKER = /^\s*\/\/\s*test-lane:\s*integration\b/m;

function testFiles() {
  const files = [];
  const walk = (dir) => {
    for (const name of readdirSync(dir)) {
      if (name === 'node_modules') continue;
      const p = join(dir, name);
      if (statSync(p).isDirectory()) walk(p);
      else if (name.endsWith('.test.ts')) files.push(p);
    }
  };
  for (const r of ROOTS) {
    try { walk(r); } catch { /* folder absent */ }
  }
  return files.sort();
}

/** The first 2 KB of a file: where the lane marker must stand. */
function head(path) {
  const fd = openSync(path, 'r');
  try {
    const buf = Buffer.alloc(2048);
    return buf.subarray(0, readSync(fd, buf, 0, buf.length, 0)).toString('utf8');
  } finally {
    closeSync(fd);
  }
}

export function laneOf(path) {
  return path.startsWith(`test${sep}`) || MARKER.test(head(path)) ? 'integration' : 'unit';
}

/** Runs one lane, passing its output through, and returns the counts of its TAP summary. */
function runLane(name, files, concurrency) {
  return new Promise((resolve) => {
    if (files.length === 0) return resolve({ pass: 0, fail: 0, code: 0 });
    console.log(`# lane ${name}: ${files.length} files, ${concurrency} at a time`);
    const args = ['--import', 'tsx', '--test', '--test-reporter=tap', `--test-concurrency=${concurrency}`, ...process.argv.slice(2), ...files];
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'] });
    const counts = { pass: 0, fail: 0 };
    let tail = '';
    child.stdout.on('data', (chunk) => {
      process.stdout.write(chunk);
      const text = tail + chunk.toString('utf8');
      const lines = text.split('\n');
      tail = lines.pop() ?? '';
      for (const line of lines) {
        const m = /^# (pass|fail) (\d+)$/.exec(line);
        if (m) counts[m[1]] = Number(m[2]);
      }
    });
    child.on('close', (code) => resolve({ ...counts, code: code ?? 1 }));
  });
}

const filter = process.env.TEST_FILTER;
const onlyLane = process.env.TEST_LANE;
const selected = testFiles().filter((f) => !filter || f.includes(filter));
const lanes = { unit: [], integration: [] };
for (const f of selected) lanes[laneOf(f)].push(f);

const t0 = Date.now();
const results = [];
if (!onlyLane || onlyLane === 'unit') results.push(await runLane('unit', lanes.unit, Math.max(1, availableParallelism())));
if (!onlyLane || onlyLane === 'integration') results.push(await runLane('integration', lanes.integration, 1));
const pass = results.reduce((s, r) => s + r.pass, 0);
const fail = results.reduce((s, r) => s + r.fail, 0);
const failedLane = results.some((r) => r.code !== 0);
console.log(`# both lanes: ${Math.round((Date.now() - t0) / 1000)} s`);
console.log(`tests: ${pass} passed, ${fail} failed`);
process.exit(failedLane || fail > 0 ? 1 : 0);
