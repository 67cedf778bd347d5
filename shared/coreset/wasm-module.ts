// A minimal WebAssembly binary writer: enough to assemble small SIMD kernels at run time without a
// toolchain (no wat2wasm, no build step). A module imports one linear memory ("env", "memory") and
// exports functions; bodies are byte arrays built from the opcode helpers below.

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
  validate(bytes: Uint8Array): boolean;
}
export const wasm: WasmApi = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;

/** Compiles `bytes` and instantiates it over `memory`; returns the exports. */
export function instantiate<T>(module: WasmModule, memory: WasmMemory): T {
  return new wasm.Instance(module, { env: { memory } }).exports as T;
}

export const I32 = 0x7f;
export const I64 = 0x7e;
export const F32 = 0x7d;
export const F64 = 0x7c;
export const V128 = 0x7b;
/** One of I32, I64, F32, F64, V128. */
export type ValType = number;

export type Code = number[];

export function uleb(value: number): Code {
  const out: Code = [];
  let v = value >>> 0;
  do {
    let byte = v & 0x7f;
    v >>>= 7;
    if (v !== 0) byte |= 0x80;
    out.push(byte);
  } while (v !== 0);
  return out;
}

export function sleb(value: number): Code {
  const out: Code = [];
  let v = value | 0;
  for (;;) {
    const byte = v & 0x7f;
    v >>= 7;
    const done = (v === 0 && (byte & 0x40) === 0) || (v === -1 && (byte & 0x40) !== 0);
    out.push(done ? byte : byte | 0x80);
    if (done) return out;
  }
}

const EMPTY_BLOCK = 0x40;
/** Memory access immediates: alignment exponent and byte offset. */
const memarg = (align: number, offset: number): Code => [...uleb(align), ...uleb(offset)];
const simd = (op: number, ...imm: number[]): Code => [0xfd, ...uleb(op), ...imm];

/** Opcode helpers; each returns the instruction's bytes. Offsets are static byte offsets. */
export const op = {
  block: (...body: Code[]): Code => [0x02, EMPTY_BLOCK, ...body.flat(), 0x0b],
  loop: (...body: Code[]): Code => [0x03, EMPTY_BLOCK, ...body.flat(), 0x0b],
  if: (...body: Code[]): Code => [0x04, EMPTY_BLOCK, ...body.flat(), 0x0b],
  br: (depth: number): Code => [0x0c, ...uleb(depth)],
  brIf: (depth: number): Code => [0x0d, ...uleb(depth)],
  ret: [0x0f] as Code,
  call: (fn: number): Code => [0x10, ...uleb(fn)],
  drop: [0x1a] as Code,
  /** (a, b, cond) -> cond ? a : b */
  select: [0x1b] as Code,
  get: (i: number): Code => [0x20, ...uleb(i)],
  set: (i: number): Code => [0x21, ...uleb(i)],
  tee: (i: number): Code => [0x22, ...uleb(i)],

  i32Load: (offset = 0): Code => [0x28, ...memarg(2, offset)],
  f32Load: (offset = 0): Code => [0x2a, ...memarg(2, offset)],
  f64Load: (offset = 0): Code => [0x2b, ...memarg(3, offset)],
  i32Store: (offset = 0): Code => [0x36, ...memarg(2, offset)],
  f32Store: (offset = 0): Code => [0x38, ...memarg(2, offset)],
  f64Store: (offset = 0): Code => [0x39, ...memarg(3, offset)],

  i32Const: (v: number): Code => [0x41, ...sleb(v)],
  f32Const: (v: number): Code => {
    const b = new Uint8Array(new Float32Array([v]).buffer);
    return [0x43, ...b];
  },
  f64Const: (v: number): Code => {
    const b = new Uint8Array(new Float64Array([v]).buffer);
    return [0x44, ...b];
  },

  i32Eqz: [0x45] as Code,
  i32Ne: [0x47] as Code,
  i32LtS: [0x48] as Code,
  i32GtS: [0x4a] as Code,
  i32GeS: [0x4e] as Code,
  f32Lt: [0x5d] as Code,
  f32Gt: [0x5e] as Code,
  f32Le: [0x5f] as Code,
  f32Eq: [0x5b] as Code,
  f64Le: [0x65] as Code,
  f64Lt: [0x63] as Code,
  f64Gt: [0x64] as Code,
  i32Add: [0x6a] as Code,
  i32Sub: [0x6b] as Code,
  i32Mul: [0x6c] as Code,
  i32And: [0x71] as Code,
  i32Shl: [0x74] as Code,
  i32ShrU: [0x76] as Code,
  f32Min: [0x96] as Code,
  f32Add: [0x92] as Code,
  f32Sub: [0x93] as Code,
  f32Mul: [0x94] as Code,
  f64Add: [0xa0] as Code,
  f64Sub: [0xa1] as Code,
  f64Mul: [0xa2] as Code,
  f64Div: [0xa3] as Code,
  f64Sqrt: [0x9f] as Code,
  f32DemoteF64: [0xb6] as Code,
  f64PromoteF32: [0xbb] as Code,

  v128Load: (offset = 0): Code => simd(0x00, ...memarg(4, offset)),
  /** Loads two floats (8 bytes) into the low half, zeroing the rest. */
  v128Load64Zero: (offset = 0): Code => simd(0x5d, ...memarg(3, offset)),
  v128Store: (offset = 0): Code => simd(0x0b, ...memarg(4, offset)),
  f32x4Splat: simd(0x13),
  f64x2Splat: simd(0x14),
  f32x4ExtractLane: (lane: number): Code => simd(0x1f, lane),
  f64x2ExtractLane: (lane: number): Code => simd(0x21, lane),
  f32x4Add: simd(0xe4),
  f32x4Sub: simd(0xe5),
  f32x4Mul: simd(0xe6),
  f32x4Min: simd(0xe8),
  f32x4Le: simd(0x45),
  v128AnyTrue: simd(0x53),
  f64x2Add: simd(0xf0),
  f64x2Sub: simd(0xf1),
  f64x2Mul: simd(0xf2),
  f64x2PromoteLowF32x4: simd(0x5f),
};

export interface FunctionDef {
  name: string;
  params: ValType[];
  results: ValType[];
  /** Extra locals, numbered after the params. */
  locals: ValType[];
  body: Code[];
}

export interface MemoryImport {
  /** Minimum size in 64 KiB pages. */
  initialPages: number;
  /** Needed for shared memory. */
  maximumPages?: number;
  shared?: boolean;
}

function section(id: number, payload: Code): Code {
  return [id, ...uleb(payload.length), ...payload];
}

function vector(items: Code[]): Code {
  return [...uleb(items.length), ...items.flat()];
}

function name(s: string): Code {
  const b = [...new TextEncoder().encode(s)];
  return [...uleb(b.length), ...b];
}

/** The binary of a module importing `env.memory` and exporting `functions` by name. */
export function assembleModule(functions: FunctionDef[], memory: MemoryImport): Uint8Array {
  const types = functions.map((f) => [0x60, ...vector(f.params.map((t) => [t])), ...vector(f.results.map((t) => [t]))]);
  const hasMax = memory.maximumPages !== undefined;
  if (memory.shared && !hasMax) throw new Error('assembleModule: a shared memory needs maximumPages');
  const limitsFlag = (memory.shared ? 0x02 : 0) | (hasMax ? 0x01 : 0);
  const limits = [limitsFlag, ...uleb(memory.initialPages), ...(hasMax ? uleb(memory.maximumPages!) : [])];
  const imports = vector([[...name('env'), ...name('memory'), 0x02, ...limits]]);
  const funcIndices = vector(functions.map((_, i) => uleb(i)));
  const exports = vector(functions.map((f, i) => [...name(f.name), 0x00, ...uleb(i)]));
  const bodies = functions.map((f) => {
    // Locals are declared in runs of one type each.
    const runs: Code[] = [];
    for (let i = 0; i < f.locals.length; ) {
      let j = i;
      while (j < f.locals.length && f.locals[j] === f.locals[i]) j++;
      runs.push([...uleb(j - i), f.locals[i]]);
      i = j;
    }
    const code = [...vector(runs), ...f.body.flat(), 0x0b];
    return [...uleb(code.length), ...code];
  });
  const bytes = [
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
    ...section(1, vector(types)),
    ...section(2, imports),
    ...section(3, funcIndices),
    ...section(7, exports),
    ...section(10, vector(bodies)),
  ];
  return Uint8Array.from(bytes);
}

/** Whether this runtime validates SIMD modules (false on runtimes built without it). */
export function simdSupported(): boolean {
  const probe = assembleModule(
    [{ name: 'f', params: [], results: [V128], locals: [], body: [op.f32Const(0), op.f32x4Splat] }],
    { initialPages: 1 },
  );
  try {
    return wasm?.validate(probe) ?? false;
  } catch {
    return false;
  }
}
