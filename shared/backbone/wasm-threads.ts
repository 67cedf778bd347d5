// Starts @tensorflow/tfjs-backend-wasm in Node, with its threaded-SIMD build where possible.
//
// Out of the box tfjs never runs the threaded build in Node (WASM_HAS_MULTITHREAD_SUPPORT is
// hard-wired to false there, tfjs issue #3830), and forcing the flag alone fails:
//  - emscripten's pthread workers are created from blob: URLs (worker script and main script),
//    which node's worker_threads cannot load;
//  - the XNNPACK pool is capped at os.cpus().length / 2 threads (one on a 2-core machine).
// While the backend initialises we therefore (1) write those two scripts to a temp folder and hand
// out file paths instead of blob URLs, (2) report twice the cores so the pool gets one thread per
// core. Both shims check the text they rewrite and do nothing when it is not what tfjs-backend-wasm
// 4.x produces; if the threaded start fails for any reason we start the SIMD build instead.
// Measured on 2 cores: a 3x3x256 conv at 56x56 takes ~44 ms threaded vs ~85 ms SIMD.
import os from 'node:os';
import { createRequire } from 'node:module';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { Logger } from '../log.js';

type Tf = typeof import('@tensorflow/tfjs');
type TfWasm = typeof import('@tensorflow/tfjs-backend-wasm');

export type WasmBuild = 'threaded-simd' | 'simd' | 'plain';

export interface WasmStart {
  build: WasmBuild;
  threads: number;
}

const MAIN_SCRIPT_PREFIX = 'var WasmBackendModuleThreadedSimd';
const WORKER_SCRIPT_MARKER = 'e.data.urlOrBlob';
const INIT_TIMEOUT_MS = 60_000;

/** Registers and starts the 'wasm' backend. `threads` <= 1 skips the threaded build. */
export async function startWasmBackend(tf: Tf, wasm: TfWasm, threads: number, logger: Logger): Promise<WasmStart | null> {
  const require = createRequire(import.meta.url);
  // Point at the package's own dist folder so the .wasm files are found however this code is bundled.
  wasm.setWasmPaths(`${dirname(require.resolve('@tensorflow/tfjs-backend-wasm'))}/`);
  const simd = (await tf.env().getAsync('WASM_HAS_SIMD_SUPPORT')) as boolean;

  if (simd && threads > 1) {
    let why = 'tf.setBackend failed';
    try {
      const started = await startThreaded(tf, wasm, threads);
      if (started) return started;
    } catch (err) {
      why = (err as Error).message;
    }
    logger.warn({ err: why }, 'tfjs wasm threaded-SIMD build did not start; using the SIMD build');
  }
  tf.env().set('WASM_HAS_MULTITHREAD_SUPPORT', false);
  if (!(await tf.setBackend('wasm'))) return null;
  await tf.ready();
  return { build: simd ? 'simd' : 'plain', threads: wasm.getThreadsCount() };
}

async function startThreaded(tf: Tf, wasm: TfWasm, threads: number): Promise<WasmStart | null> {
  const dir = mkdtempSync(join(os.tmpdir(), 'patchcore-tfjs-wasm-'));
  const restore = installShims(dir, threads);
  let ok: boolean;
  try {
    tf.env().set('WASM_HAS_MULTITHREAD_SUPPORT', true);
    wasm.setThreadsCount(threads);
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer within ${INIT_TIMEOUT_MS} ms`)), INIT_TIMEOUT_MS);
    });
    try {
      ok = await Promise.race([tf.setBackend('wasm'), timeout]);
    } finally {
      clearTimeout(timer);
    }
  } finally {
    restore();
    // Every pooled worker has read the scripts once the backend is up.
    rmSync(dir, { recursive: true, force: true });
  }
  if (!ok) return null;
  const module = (tf.backend() as unknown as { wasm?: { PThread?: PThreadState } }).wasm;
  // Pool workers would otherwise keep the process alive after the work is done.
  for (const worker of [...(module?.PThread?.unusedWorkers ?? []), ...(module?.PThread?.runningWorkers ?? [])]) {
    worker.unref?.();
  }
  return { build: 'threaded-simd', threads: wasm.getThreadsCount() };
}

interface PThreadState {
  unusedWorkers?: Array<{ unref?: () => void }>;
  runningWorkers?: Array<{ unref?: () => void }>;
}

/** Replaces the blob: URLs of the pthread scripts by files in `dir` and fakes the core count. */
function installShims(dir: string, threads: number): () => void {
  const RealBlob = globalThis.Blob;
  const realCreateObjectURL = URL.createObjectURL;
  const realCpus = os.cpus;
  const mainPath = join(dir, 'tfjs-backend-wasm-threaded-simd.js');
  const texts = new WeakMap<object, string>();

  class ScriptRecordingBlob extends RealBlob {
    constructor(...args: ConstructorParameters<typeof Blob>) {
      super(...args);
      const parts: unknown[] | undefined = args[0];
      if (parts && parts.length > 0 && parts.every((p) => typeof p === 'string')) {
        const text = parts.join('');
        texts.set(this, text);
        if (text.startsWith(MAIN_SCRIPT_PREFIX)) writeFileSync(mainPath, text);
      }
    }
  }

  globalThis.Blob = ScriptRecordingBlob;
  URL.createObjectURL = (obj: Blob) => {
    const text = texts.get(obj);
    if (text === undefined || !text.includes(WORKER_SCRIPT_MARKER)) return realCreateObjectURL(obj);
    const workerPath = join(dir, 'tfjs-backend-wasm-threaded-simd.worker.js');
    writeFileSync(workerPath, workerScript(text, mainPath));
    return workerPath;
  };
  // The pool size is min(requested, cores / 2): report 2x the cores wanted.
  os.cpus = () => {
    const cpus = realCpus();
    const one = cpus[0];
    return Array.from({ length: Math.max(cpus.length, threads) * 2 }, (_, i) => cpus[i % cpus.length] ?? one);
  };
  return () => {
    globalThis.Blob = RealBlob;
    URL.createObjectURL = realCreateObjectURL;
    os.cpus = realCpus;
  };
}

/** The emscripten worker script, made loadable by worker_threads: the main script it evaluates
 * refers to the rollup bundle's module variables (require$$N, commonjsGlobal, _scriptDir), which
 * are defined as globals here, and its blob is swapped for the file written beside it. */
function workerScript(workerText: string, mainPath: string): string {
  const prelude = [
    `globalThis.require$$0 = require('fs');`,
    `globalThis.require$$1 = require('path');`,
    `globalThis.require$$3 = require('perf_hooks');`,
    `globalThis.require$$4 = require('os');`,
    `globalThis.commonjsGlobal = globalThis;`,
    `globalThis._scriptDir = ${JSON.stringify(mainPath)};`,
  ].join('\n');
  const postlude = `
;(() => {
  const handle = self.onmessage;
  self.onmessage = (e) => {
    if (e.data && e.data.cmd === 'load' && typeof e.data.urlOrBlob !== 'string') e.data.urlOrBlob = ${JSON.stringify(mainPath)};
    return handle(e);
  };
})();
`;
  return `${prelude}\n${workerText}\n${postlude}`;
}
