import { test } from 'node:test';
import assert from 'node:assert/strict';
import { assembleWat, compileModule, createMemory, instantiate } from './runtime.js';
import { startKernelThreads } from './threads.js';

// A kernel that writes its chunk's values, slowly enough that several threads take chunks.
const WAT = `(module (import "env" "memory" (memory 1 65536 shared))
  (func (export "fill") (param $at i32) (param $n i32) (param $value f64) (result f64)
    (local $i i32) (local $s f64)
    (loop $spin (local.set $s (f64.add (local.get $s) (f64.const 1)))
      (br_if $spin (f64.lt (local.get $s) (f64.const 20000))))
    (block $done (loop $row
      (br_if $done (i32.ge_s (local.get $i) (local.get $n)))
      (f64.store (i32.add (local.get $at) (i32.shl (local.get $i) (i32.const 3))) (local.get $value))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $row)))
    (f64.mul (local.get $value) (f64.const 2))))`;

test('kernel threads run every chunk once, over one shared memory, results in chunk order', () => {
  const module = compileModule(assembleWat('fill.wat', WAT))!;
  const memory = createMemory(1 << 20, true)!;
  assert.ok(memory.buffer instanceof SharedArrayBuffer);
  const k = instantiate<Record<string, unknown>>(module, memory);
  for (const threads of [1, 3]) {
    const pool = startKernelThreads(module, memory, ['fill'], threads, k);
    try {
      const out: Float64Array = new Float64Array(memory.buffer, 0, 64 * 100);
      for (let job = 1; job <= 20; job++) {
        const args = Array.from({ length: 100 }, (_, c) => [c * 64 * 8, 64, job * 1000 + c]);
        const results = pool.run('fill', args);
        assert.deepEqual(Array.from(results), args.map((a) => a[2] * 2), `threads ${threads} job ${job}`);
        for (let c = 0; c < 100; c++) {
          for (let i = 0; i < 64; i++) assert.equal(out[c * 64 + i], job * 1000 + c, `threads ${threads} job ${job} chunk ${c}`);
        }
      }
    } finally {
      pool.close();
    }
  }
});

test('kernel threads refuse unknown kernels, wrong argument counts and bad thread counts by name', () => {
  const module = compileModule(assembleWat('fill.wat', WAT))!;
  const memory = createMemory(65536, true)!;
  const k = instantiate<Record<string, unknown>>(module, memory);
  assert.throws(() => startKernelThreads(module, memory, ['nope'], 1, k), /no kernel named "nope"/);
  assert.throws(() => startKernelThreads(module, memory, ['fill'], 0, k), /threads must be an integer from 1 to 64, got 0/);
  const pool = startKernelThreads(module, memory, ['fill'], 2, k);
  try {
    assert.throws(() => pool.run('other', [[0, 1, 1]]), /no kernel named "other"/);
    assert.throws(() => pool.run('fill', [[0, 1]]), /fill takes 3 arguments, chunk 0 has 2/);
    assert.throws(() => pool.run('fill', []), /0 chunks/);
  } finally {
    pool.close();
  }
});
