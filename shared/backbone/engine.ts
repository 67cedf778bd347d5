// The one place that picks a backbone backend. The interface and options live in types.ts (which the
// backends import); they are re-exported here so callers need one import.
import { UserError } from '../errors.js';
import { ENGINE_NAMES, PRECISIONS, type BackboneEngine, type CreateBackboneOptions } from './types.js';

export type { BackboneLayer } from './resnet50.js';
export type { ActivationRanges } from './quantize.js';
export { BACKBONE_LAYERS } from './resnet50.js';
export { DEFAULT_CALIBRATION_IMAGES, calibrationBatches } from './calibration.js';
export {
  ENGINE_NAMES,
  PRECISIONS,
  assertBackboneInput,
  type BackboneCalibration,
  type BackboneEngine,
  type CreateBackboneOptions,
  type EngineName,
  type Precision,
} from './types.js';

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
  const precision = opts.precision ?? 'fp32';
  if (!(PRECISIONS as readonly string[]).includes(precision)) {
    throw new UserError(`backbone precision "${String(precision)}" is unknown; choose from ${PRECISIONS.join(', ')}`);
  }
  const requested = opts.engine ?? 'auto';
  // Lower precisions exist only as ONNX graphs, so 'auto' means onnx for them.
  const engine =
    requested === 'auto' ? (precision === 'fp32' && (await tfjsGpuAvailable()) ? 'tfjs' : 'onnx') : requested;
  switch (engine) {
    case 'tfjs': {
      if (precision !== 'fp32') {
        throw new UserError(`backbone precision "${precision}" needs the onnx engine, not tfjs`);
      }
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
        precision,
        calibration: opts.calibration,
      });
    }
    default:
      throw new Error(`unknown backbone engine "${String(engine)}"; choose from ${ENGINE_NAMES.join(', ')}`);
  }
}
