#!/usr/bin/env node
// Runs every *.test.ts under the source folders with node's built-in test runner (through tsx).
// Extra arguments are passed to `node --test` (for example --test-name-pattern=aupro).
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';

const roots = ['shared', 'services', 'cli', 'test', 'scripts'];
const files = [];
const walk = (dir) => {
  for (const name of readdirSync(dir)) {
    if (name === 'node_modules') continue;
    const p = join(dir, name);
    if (statSync(p).isDirectory()) walk(p);
    else if (name.endsWith('.test.ts')) files.push(p);
  }
};
for (const r of roots) {
  try { walk(r); } catch { /* folder absent */ }
}
const filter = process.env.TEST_FILTER;
const selected = filter ? files.filter((f) => f.includes(filter)) : files;
const args = ['--import', 'tsx', '--test', '--test-concurrency=1', ...process.argv.slice(2), ...selected.sort()];
const r = spawnSync(process.execPath, args, { stdio: 'inherit' });
process.exit(r.status ?? 1);
