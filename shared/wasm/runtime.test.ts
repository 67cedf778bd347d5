import { test } from 'node:test';
import assert from 'node:assert/strict';
import { kernelModule } from './kernels.js';
import { assembleWat, compileModule, createMemory, instantiate } from './runtime.js';

test('the kernel module assembles, validates and exports every kernel', () => {
  const module = kernelModule();
  assert.ok(module, 'Node 20 has WebAssembly SIMD');
  const k = instantiate<Record<string, unknown>>(module, createMemory(65536)!);
  for (const name of ['dist2Many', 'screened', 'near', 'project', 'scanHead', 'findFirst', 'exact', 'sketch32', 'refine']) {
    assert.equal(typeof k[name], 'function', name);
  }
});

test('a small SIMD kernel runs as written', () => {
  const bytes = assembleWat('sum4.wat', `(module (import "env" "memory" (memory 1))
    (func (export "sum4") (param $at i32) (result f32)
      (local $v v128) (local.set $v (v128.load (local.get $at)))
      (f32.add (f32.add (f32x4.extract_lane 0 (local.get $v)) (f32x4.extract_lane 1 (local.get $v)))
               (f32.add (f32x4.extract_lane 2 (local.get $v)) (f32x4.extract_lane 3 (local.get $v))))))`);
  const memory = createMemory(65536)!;
  new Float32Array(memory.buffer, 16, 4).set([1, 2, 3, 4.5]);
  const k = instantiate<{ sum4(at: number): number }>(compileModule(bytes)!, memory);
  assert.equal(k.sum4(16), 10.5);
});

test('malformed WAT is refused with an error naming the text', () => {
  assert.throws(() => assembleWat('broken.wat', '(module (func (result i32) (f32.const 1)))'), /broken\.wat/);
  assert.throws(() => assembleWat('typo.wat', '(module (func (i32.nope)))'), /typo\.wat/);
});
