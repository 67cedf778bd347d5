// What every backbone backend implements, and the one place that picks a backend.
import type { Logger } from '../log.js';
import type { NhwcTensor } from '../tensor.js';
import { BACKBONE_OUTPUTS, type BackboneLayer } from './resnet50.js';

export type { BackboneLayer };
export { BACKBONE_LAYERS } from './resnet50.js';

export const ENGINE_NAMES = ['auto', 'tfjs', 'onnx'] as const;
export type EngineName = (typeof ENGINE_NAMES)[number];

export interface BackboneEngine {
  /** Which engine, e.g. 'tfjs'. */
  readonly name: string;
  /** The backend actually running, e.g. 'tensorflow', 'wasm', 'cpu'. */
  readonly backend: string;
  /** `input`: a batch of caffe-preprocessed images (NHWC, BGR, mean-subtracted), H and W divisible by 16.
   * Returns one NHWC tensor per requested layer, keyed by layer name. */
  run(input: NhwcTensor, layers: BackboneLayer[]): Promise<Record<string, NhwcTensor>>;
  dispose(): void;
}

export interface CreateBackboneOptions {
  /** 'auto' (default): TF.js on a GPU (tfjs-node-gpu installed), otherwise ONNX Runtime, the fastest on CPU. */
  engine?: EngineName;
  /** ONNX Runtime execution providers, e.g. ['cuda', 'cpu'] (default ['cpu']). */
  executionProviders?: string[];
  weightsPath: string;
  logger?: Logger;
  /** CPU threads for the WASM backend (default: $PATCHCORE_TFJS_THREADS, else one per core). The
   * backend is process-wide: the first engine created decides. */
  threads?: number;
}

/** True where @tensorflow/tfjs-node-gpu can be loaded (an optional dependency, present on GPU images). */
async function tfjsGpuAvailable(): Promise<boolean> {
  try {
    await import(/* optional */ '@tensorflow/tfjs-node-gpu' as string);
    return true;
  } catch {
    return false;
  }
}

export async function createBackbone(opts: CreateBackboneOptions): Promise<BackboneEngine> {
  const requested = opts.engine ?? 'auto';
  const engine = requested === 'auto' ? ((await tfjsGpuAvailable()) ? 'tfjs' : 'onnx') : requested;
  switch (engine) {
    case 'tfjs': {
      const { createTfjsBackbone } = await import('./tfjs-engine.js');
      return createTfjsBackbone(opts);
    }
    case 'onnx': {
      const { createOnnxBackbone } = await import('./onnx-engine.js');
      return createOnnxBackbone({
        weightsPath: opts.weightsPath,
        logger: opts.logger,
        intraOpThreads: opts.threads,
        executionProviders: opts.executionProviders,
      });
    }
    default:
      throw new Error(`unknown backbone engine "${String(engine)}"; choose from ${ENGINE_NAMES.join(', ')}`);
  }
}

/** Checks an input batch against what the network accepts; shared by every engine. */
export function assertBackboneInput(input: NhwcTensor): void {
  const { n, h, w, c, data } = input;
  const deepest = BACKBONE_OUTPUTS.conv4_block6_out.stride;
  if (c !== 3) throw new Error(`backbone input has ${c} channels, expected 3 (BGR)`);
  if (!(n >= 1)) throw new Error(`backbone input has batch size ${n}, expected at least 1`);
  if (!(h > 0 && w > 0) || h % deepest !== 0 || w % deepest !== 0) {
    throw new Error(`backbone input is ${h}x${w}; height and width must be positive multiples of ${deepest}`);
  }
  if (data.length !== n * h * w * c) {
    throw new Error(`backbone input has ${data.length} values, expected ${n}x${h}x${w}x${c}`);
  }
}
