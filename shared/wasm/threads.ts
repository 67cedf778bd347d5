// Kernel threads: worker threads that run the kernels of one module over the same shared memory,
// so a long kernel call can be split into chunks that the calling thread and the workers take in
// turn. The caller never waits for a worker to start or to wake: it claims chunks itself until
// none is left and then waits only for the chunks a worker has already claimed, so a slow or
// sleeping worker costs nothing but its share. Each chunk writes only its own part of the memory,
// so results do not depend on which thread ran which chunk.
//
// One 32-bit control word says everything about the current job: generation (11 bits), chunk
// count (10 bits) and the next chunk to claim (11 bits). A thread claims a chunk with
// compare-and-swap on the whole word, so a worker that woke late for an earlier job can never take
// a chunk of the next one, and the job's function and arguments, written before the word, stay
// unchanged until every claimed chunk is done.

import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import type { WasmMemory, WasmModule } from './runtime.js';

/** Most chunks in one job (the control word's field). */
export const MAX_CHUNKS = 1023;
/** Most arguments of a kernel. */
const MAX_ARGS = 32;

// Int32 slots of the control buffer.
const WORD = 0; // generation << 21 | chunks << 11 | next
const DONE = 1; // chunks finished in the current job
const FN = 2; // index into names of the current job's kernel
const EXIT = 3; // 1: workers leave

const WORKER_SOURCE = `
import { workerData } from 'node:worker_threads';
const { module, memory, control, args, results, names } = workerData;
const instance = new WebAssembly.Instance(module, { env: { memory } });
const kernels = names.map((n) => instance.exports[n]);
const c = new Int32Array(control);
const a = new Float64Array(args);
const r = new Float64Array(results);
for (;;) {
  const word = Atomics.load(c, ${WORD});
  if (Atomics.load(c, ${EXIT})) break;
  const chunks = (word >>> 11) & 0x3ff;
  const next = word & 0x7ff;
  if (next < chunks) {
    if (Atomics.compareExchange(c, ${WORD}, word, word + 1) !== word) continue;
    const fn = kernels[c[${FN}]];
    r[next] = fn(...a.subarray(next * ${MAX_ARGS}, next * ${MAX_ARGS} + fn.length));
    Atomics.add(c, ${DONE}, 1);
    Atomics.notify(c, ${DONE});
    continue;
  }
  Atomics.wait(c, ${WORD}, word);
}
`;

/** Default thread count cap: the kernels split here are bound by memory traffic well before it. */
export const MAX_DEFAULT_THREADS = 8;
/** Most threads of one pool (every thread takes at least one of at most MAX_CHUNKS chunks). */
export const MAX_THREADS = 64;

/** Threads to use by default: every core the process may use, at most MAX_DEFAULT_THREADS. */
export function defaultThreads(): number {
  return Math.min(MAX_DEFAULT_THREADS, availableParallelism());
}

export interface KernelThreads {
  /** Threads taking chunks, the caller included. */
  readonly threads: number;
  /**
   * Runs kernel `name` once per entry of `chunkArgs` (its argument list), spread over the threads;
   * returns each chunk's result, in chunk order. Chunks must write disjoint memory.
   */
  run(name: string, chunkArgs: readonly (readonly number[])[]): Float64Array;
  /** Stops the workers (they leave once their current chunk is done). */
  close(): void;
}

/**
 * Kernel threads for `module` (compiled for a shared memory) over `memory` (createMemory(bytes,
 * true)): the caller plus threads - 1 workers. Kernels are called by name from `names`.
 */
export function startKernelThreads(
  module: WasmModule, memory: WasmMemory, names: readonly string[], threads: number,
  instance: Record<string, unknown>,
): KernelThreads {
  if (!Number.isInteger(threads) || threads < 1 || threads > MAX_THREADS) {
    throw new Error(`kernel threads: threads must be an integer from 1 to ${MAX_THREADS}, got ${threads}`);
  }
  const control = new SharedArrayBuffer(16);
  const args = new SharedArrayBuffer(MAX_CHUNKS * MAX_ARGS * 8);
  const results = new SharedArrayBuffer(MAX_CHUNKS * 8);
  const c = new Int32Array(control);
  const a = new Float64Array(args);
  const r = new Float64Array(results);
  const workers: Worker[] = [];
  for (let i = 1; i < threads; i++) {
    const worker = new Worker(new URL(`data:text/javascript,${encodeURIComponent(WORKER_SOURCE)}`), {
      workerData: { module, memory, control, args, results, names },
    });
    // Nothing waits on a worker's exit; a worker that fails only leaves its share to the others.
    worker.unref();
    worker.on('error', () => {});
    workers.push(worker);
  }
  const kernels = names.map((n) => {
    const fn = instance[n];
    if (typeof fn !== 'function') throw new Error(`kernel threads: the module has no kernel named "${n}"`);
    return fn as (...a: number[]) => number;
  });
  let generation = 0;
  return {
    threads,
    run(name: string, chunkArgs: readonly (readonly number[])[]): Float64Array {
      const fnIndex = names.indexOf(name);
      if (fnIndex < 0) throw new Error(`kernel threads: no kernel named "${name}" (known: ${names.join(', ')})`);
      const chunks = chunkArgs.length;
      if (chunks < 1 || chunks > MAX_CHUNKS) throw new Error(`kernel threads: ${chunks} chunks, expected 1 to ${MAX_CHUNKS}`);
      const fn = kernels[fnIndex];
      for (let k = 0; k < chunks; k++) {
        if (chunkArgs[k].length !== fn.length) throw new Error(`kernel threads: ${name} takes ${fn.length} arguments, chunk ${k} has ${chunkArgs[k].length}`);
        a.set(chunkArgs[k], k * MAX_ARGS);
      }
      c[FN] = fnIndex;
      Atomics.store(c, DONE, 0);
      generation = (generation + 1) & 0x7ff;
      // Publishing the word makes the job visible (Atomics.store orders the writes above before it).
      Atomics.store(c, WORD, (generation << 21) | (chunks << 11));
      if (workers.length > 0) Atomics.notify(c, WORD);
      for (;;) {
        const word = Atomics.load(c, WORD);
        const next = word & 0x7ff;
        if (next >= chunks) break;
        if (Atomics.compareExchange(c, WORD, word, word + 1) !== word) continue;
        r[next] = fn(...a.subarray(next * MAX_ARGS, next * MAX_ARGS + fn.length));
        Atomics.add(c, DONE, 1);
      }
      for (let done = Atomics.load(c, DONE); done < chunks; done = Atomics.load(c, DONE)) Atomics.wait(c, DONE, done);
      return r.slice(0, chunks);
    },
    close(): void {
      Atomics.store(c, EXIT, 1);
      Atomics.notify(c, WORD);
    },
  };
}
