// WebAssembly plumbing shared by every kernel module: WAT text is assembled with wabt (the
// WebAssembly Binary Toolkit, compiled to JS) when first needed, and instantiated over a memory the
// caller sizes. No build step: the text in the repository is what runs.

import initWabt from 'wabt';

// The project's TypeScript libs (ES2023, no DOM) do not declare the WebAssembly global: the few
// members used here, typed locally.
export interface WasmMemory {
  readonly buffer: ArrayBuffer | SharedArrayBuffer;
}
export interface WasmModule {
  readonly __wasmModule?: never;
}
interface WasmApi {
  Module: new (bytes: Uint8Array) => WasmModule;
  Instance: new (module: WasmModule, imports: Record<string, Record<string, unknown>>) => { exports: Record<string, unknown> };
  Memory: new (descriptor: { initial: number; maximum?: number; shared?: boolean }) => WasmMemory;
}
const wasm: WasmApi | undefined = (globalThis as unknown as { WebAssembly?: WasmApi }).WebAssembly;

// wabt's initialisation is asynchronous (about 30 ms); done once at import so assembling stays synchronous.
const wabt = await initWabt();

/** The binary of WAT `text` (SIMD and shared memories enabled); throws with wabt's message, naming `filename`, on a syntax or type error. */
export function assembleWat(filename: string, text: string): Uint8Array {
  const features = { simd: true, threads: true };
  const parsed = wabt.parseWat(filename, text, features);
  try {
    parsed.resolveNames();
    // validate's typing says no argument, but wabt reads the features from it as parseWat does.
    (parsed.validate as (f?: typeof features) => void)(features);
    // Function names travel in the name section, so profiles show kernels by name.
    return parsed.toBinary({ write_debug_names: true }).buffer;
  } finally {
    parsed.destroy();
  }
}

/**
 * Compiles `bytes`, or returns null where this runtime cannot (no WebAssembly, or built without
 * SIMD): callers then fall back to plain loops.
 */
export function compileModule(bytes: Uint8Array): WasmModule | null {
  if (!wasm) return null;
  try {
    return new wasm.Module(bytes);
  } catch {
    return null;
  }
}

/**
 * A fresh linear memory of at least `bytes` bytes, or null when the runtime cannot reserve it.
 * `shared`: backed by a SharedArrayBuffer, for modules that import a shared memory (kernel threads).
 */
export function createMemory(bytes: number, shared = false): WasmMemory | null {
  if (!wasm) return null;
  const pages = Math.max(1, Math.ceil(bytes / 65536));
  try {
    return new wasm.Memory(shared ? { initial: pages, maximum: pages, shared } : { initial: pages });
  } catch {
    return null;
  }
}

/** Instantiates `module` over `memory` (imported as env.memory); returns its exports. */
export function instantiate<T>(module: WasmModule, memory: WasmMemory): T {
  return new wasm!.Instance(module, { env: { memory } }).exports as T;
}
