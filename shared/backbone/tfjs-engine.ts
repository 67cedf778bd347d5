// The ResNet-50 backbone on TF.js. Backend preference: native TensorFlow with CUDA
// (@tensorflow/tfjs-node-gpu), native TensorFlow on CPU (@tensorflow/tfjs-node), then the WASM
// backend (always installed), then plain JS. The native packages are optional dependencies, so they
// are imported by a computed name: the typecheck must pass where they are not installed.
import { availableParallelism } from 'node:os';
import { createLogger, type Logger } from '../log.js';
import { nhwc, type NhwcTensor } from '../tensor.js';
import { KerasWeights } from '../weights/keras-h5.js';
import { assertBackboneInput, type BackboneEngine, type CreateBackboneOptions } from './types.js';
import {
  INPUT_NAME,
  RESNET50_OPS,
  assertBackboneLayers,
  consumerCounts,
  foldedConvWeights,
  opsUpTo,
  type BackboneLayer,
  type BackboneOp,
} from './resnet50.js';
import { startWasmBackend, type WasmBuild } from './wasm-threads.js';

type Tf = typeof import('@tensorflow/tfjs');
type Tensor4D = import('@tensorflow/tfjs').Tensor4D;
type Tensor1D = import('@tensorflow/tfjs').Tensor1D;

export interface TfRuntime {
  tf: Tf;
  backend: string;
  /** Which WASM binary runs, when backend is 'wasm'. */
  wasmBuild?: WasmBuild;
  threads?: number;
}

const NATIVE_PACKAGES = ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node'] as const;

// TF.js keeps one global engine per process, so the backend is chosen once and shared.
let runtime: Promise<TfRuntime> | null = null;

/** Loads TF.js with the best available backend (once per process). */
export function loadTfRuntime(logger: Logger, threads = defaultThreads()): Promise<TfRuntime> {
  runtime ??= chooseBackend(logger, threads).then(
    (rt) => {
      logger.info({ backend: rt.backend, wasmBuild: rt.wasmBuild, threads: rt.threads }, 'tfjs backend ready');
      return rt;
    },
    (err: unknown) => {
      runtime = null;
      throw err;
    },
  );
  return runtime;
}

/** WASM threads: $PATCHCORE_TFJS_THREADS, else one per core. */
function defaultThreads(): number {
  const fromEnv = Number(process.env.PATCHCORE_TFJS_THREADS);
  return Number.isInteger(fromEnv) && fromEnv > 0 ? fromEnv : availableParallelism();
}

async function importOptional(name: string): Promise<unknown> {
  return import(name);
}

async function chooseBackend(logger: Logger, threads: number): Promise<TfRuntime> {
  for (const pkg of NATIVE_PACKAGES) {
    try {
      const mod = (await importOptional(pkg)) as { default?: Tf } & Tf;
      const tf = mod.default ?? mod;
      if (await tf.setBackend('tensorflow')) {
        await tf.ready();
        return { tf, backend: tf.getBackend() };
      }
    } catch (err) {
      logger.debug({ pkg, err: (err as Error).message }, 'tfjs native backend unavailable');
    }
  }
  const tf = await import('@tensorflow/tfjs');
  try {
    const wasm = await import('@tensorflow/tfjs-backend-wasm');
    const started = await startWasmBackend(tf, wasm, threads, logger);
    if (started) return { tf, backend: 'wasm', wasmBuild: started.build, threads: started.threads };
  } catch (err) {
    logger.warn({ err: (err as Error).message }, 'tfjs wasm backend unavailable, falling back to cpu');
  }
  await tf.setBackend('cpu');
  await tf.ready();
  return { tf, backend: 'cpu' };
}

export async function createTfjsBackbone(opts: CreateBackboneOptions): Promise<TfjsBackbone> {
  const logger = opts.logger ?? createLogger('backbone');
  const rt = await loadTfRuntime(logger, opts.threads);
  const weights = await KerasWeights.open(opts.weightsPath);
  try {
    const folded = foldedConvWeights(weights, RESNET50_OPS);
    const { tf } = rt;
    const convs = new Map<string, { kernel: Tensor4D; bias: Tensor1D }>();
    for (const [name, f] of folded) {
      convs.set(name, { kernel: tf.tensor4d(f.kernel, f.shape), bias: tf.tensor1d(f.bias) });
    }
    logger.info({ weights: opts.weightsPath, sha256: weights.sha256, convs: convs.size }, 'backbone weights loaded');
    return new TfjsBackbone(rt, convs, weights.sha256);
  } finally {
    weights.close();
  }
}

export class TfjsBackbone implements BackboneEngine {
  readonly name = 'tfjs';
  readonly precision = 'fp32';
  readonly backend: string;
  readonly wasmBuild: TfRuntime['wasmBuild'];
  readonly weightsSha256: string;
  private readonly tf: Tf;
  private convs: Map<string, { kernel: Tensor4D; bias: Tensor1D }> | null;

  constructor(rt: TfRuntime, convs: Map<string, { kernel: Tensor4D; bias: Tensor1D }>, weightsSha256: string) {
    this.tf = rt.tf;
    this.backend = rt.backend;
    this.wasmBuild = rt.wasmBuild;
    this.convs = convs;
    this.weightsSha256 = weightsSha256;
  }

  async run(input: NhwcTensor, layers: BackboneLayer[]): Promise<Record<string, NhwcTensor>> {
    if (!this.convs) throw new Error('tfjs backbone has been disposed');
    assertBackboneInput(input);
    assertBackboneLayers(layers);
    const { tf } = this;
    const ops = opsUpTo(layers);
    const wanted = new Set<string>(layers);
    const remaining = consumerCounts(ops);
    // Intermediates are freed as soon as their last reader has run: a whole-network tidy() would
    // hold every activation of the batch at once.
    const live = new Map<string, Tensor4D>();
    try {
      live.set(INPUT_NAME, tf.tensor4d(input.data, [input.n, input.h, input.w, input.c]));
      for (const op of ops) {
        live.set(op.output, tf.tidy(() => this.apply(op, live)));
        for (const name of op.inputs) {
          const left = (remaining.get(name) ?? 0) - 1;
          remaining.set(name, left);
          if (left === 0 && !wanted.has(name)) {
            live.get(name)?.dispose();
            live.delete(name);
          }
        }
      }
      const out: Record<string, NhwcTensor> = {};
      for (const layer of layers) {
        const t = live.get(layer)!;
        const [n, h, w, c] = t.shape;
        out[layer] = nhwc((await t.data()) as Float32Array, n, h, w, c);
      }
      return out;
    } finally {
      for (const t of live.values()) t.dispose();
    }
  }

  private apply(op: BackboneOp, live: Map<string, Tensor4D>): Tensor4D {
    const { tf } = this;
    const x = live.get(op.inputs[0])!;
    switch (op.kind) {
      case 'conv': {
        const { kernel, bias } = this.convs!.get(op.name)!;
        return tf.fused.conv2d({
          x,
          filter: kernel,
          strides: op.stride,
          pad: op.pad,
          bias,
          activation: op.relu ? 'relu' : 'linear',
        });
      }
      case 'maxpool':
        return tf.maxPool(x, op.kernel, op.stride, op.pad);
      case 'add': {
        const sum = tf.add<Tensor4D>(x, live.get(op.inputs[1])!);
        return op.relu ? tf.relu(sum) : sum;
      }
    }
  }

  dispose(): void {
    if (!this.convs) return;
    for (const { kernel, bias } of this.convs.values()) {
      kernel.dispose();
      bias.dispose();
    }
    this.convs = null;
  }
}
