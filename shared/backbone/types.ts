// What every backbone backend implements and takes. Kept apart from the factory (engine.ts), which
// imports the backends: a backend importing the factory's file would close an import cycle.
import type { Logger } from '../log.js';
import type { NhwcTensor } from '../tensor.js';
import type { ActivationRanges, CalibrationMethod } from './quantize.js';
import { BACKBONE_OUTPUTS, type BackboneLayer } from './resnet50.js';

export const ENGINE_NAMES = ['auto', 'tfjs', 'onnx'] as const;
export type EngineName = (typeof ENGINE_NAMES)[number];

/** Arithmetic of the backbone's convolutions. 'int8': ONNX Runtime, weights int8 per output channel,
 * activations uint8 calibrated on sample images. 'bf16' is named so the choice can be refused with a
 * reason: ONNX Runtime's CPU provider has no bfloat16 Conv. */
export const PRECISIONS = ['fp32', 'int8', 'bf16'] as const;
export type Precision = (typeof PRECISIONS)[number];

export interface BackboneEngine {
  /** Which engine, e.g. 'tfjs'. */
  readonly name: string;
  /** The backend actually running, e.g. 'tensorflow', 'wasm', 'cpu'. */
  readonly backend: string;
  /** `input`: a batch of caffe-preprocessed images (NHWC, BGR, mean-subtracted), H and W divisible by 16.
   * Returns one NHWC tensor per requested layer, keyed by layer name. */
  run(input: NhwcTensor, layers: BackboneLayer[]): Promise<Record<string, NhwcTensor>>;
  dispose(): void;
  /** The arithmetic it runs (absent: 'fp32'). */
  readonly precision?: Precision;
  /** int8: the activation ranges in use; record them with a model (manifest) so that scoring
   * quantises exactly as training did: createBackbone({ precision: 'int8', calibration: { ranges } }). */
  readonly activationRanges?: ActivationRanges;
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
  /** Default 'fp32'. 'int8' needs the onnx engine (on CPU) and `calibration`. */
  precision?: Precision;
  /** int8 only: what the activation ranges come from (see BackboneCalibration). */
  calibration?: BackboneCalibration;
}

/** int8: the images to measure activation ranges on (caffe-preprocessed NHWC batches of the frame
 * the engine will run, e.g. the first training images), or the ranges a model recorded, so scoring
 * quantises exactly as training did. */
export type BackboneCalibration =
  | { images: NhwcTensor[]; method?: CalibrationMethod; percentile?: number }
  | { ranges: ActivationRanges };

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
