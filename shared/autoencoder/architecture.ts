// The convolutional autoencoder's shape: an encoder of 4x4 stride-2 convolutions (each halves the resolution), a
// 1x1 bottleneck, and a decoder of nearest-neighbour x2 upsampling + 3x3 convolution per level back to RGB.
// Parameters are plain Float32Arrays in a fixed order, initialised from a seed, so that a model is reproducible and
// its weights file is one concatenation in that order.
import { SeededRandom } from '../coreset/random.js';

export interface AutoencoderConfig {
  /** Side of the square RGB input (pixels); must be divisible by 2^encoderChannels.length. */
  inputSize: number;
  /** Output channels of each encoder level; the decoder mirrors them. */
  encoderChannels: number[];
  /** Channels of the bottleneck (the code is latentChannels x (inputSize / 2^levels)^2 values). */
  latentChannels: number;
}

export const DEFAULT_AUTOENCODER_CONFIG: Readonly<AutoencoderConfig> = Object.freeze({
  inputSize: 128,
  encoderChannels: [32, 64, 128, 128],
  latentChannels: 16,
});

export const ENCODER_KERNEL = 4;
export const DECODER_KERNEL = 3;

export type LayerKind = 'encoder' | 'bottleneck-in' | 'bottleneck-out' | 'decoder' | 'output';

export interface LayerSpec {
  name: string;
  kind: LayerKind;
  kernel: number;
  inChannels: number;
  outChannels: number;
}

export interface ParameterSpec {
  name: string;
  shape: number[];
}

export function checkConfig(cfg: AutoencoderConfig): void {
  const levels = cfg.encoderChannels.length;
  if (!Number.isInteger(cfg.inputSize) || cfg.inputSize < 8) {
    throw new Error(`autoencoder inputSize must be an integer >= 8, got ${cfg.inputSize}`);
  }
  if (levels < 1 || levels > 6) throw new Error(`autoencoder encoderChannels must have 1 to 6 levels, got ${levels}`);
  for (const c of [...cfg.encoderChannels, cfg.latentChannels]) {
    if (!Number.isInteger(c) || c < 1 || c > 1024) throw new Error(`autoencoder channel counts must be integers in 1..1024, got ${c}`);
  }
  if (cfg.inputSize % 2 ** levels !== 0) {
    throw new Error(`autoencoder inputSize ${cfg.inputSize} is not divisible by 2^${levels} (one halving per encoder level)`);
  }
}

/** The layers in forward order. */
export function layerSpecs(cfg: AutoencoderConfig): LayerSpec[] {
  checkConfig(cfg);
  const enc = cfg.encoderChannels;
  const layers: LayerSpec[] = [];
  let c = 3;
  enc.forEach((out, i) => {
    layers.push({ name: `enc${i + 1}`, kind: 'encoder', kernel: ENCODER_KERNEL, inChannels: c, outChannels: out });
    c = out;
  });
  layers.push({ name: 'code', kind: 'bottleneck-in', kernel: 1, inChannels: c, outChannels: cfg.latentChannels });
  layers.push({ name: 'uncode', kind: 'bottleneck-out', kernel: 1, inChannels: cfg.latentChannels, outChannels: c });
  for (let i = enc.length - 2; i >= 0; i--) {
    layers.push({ name: `dec${enc.length - 1 - i}`, kind: 'decoder', kernel: DECODER_KERNEL, inChannels: c, outChannels: enc[i] });
    c = enc[i];
  }
  layers.push({ name: 'out', kind: 'output', kernel: DECODER_KERNEL, inChannels: c, outChannels: 3 });
  return layers;
}

/** Kernel (HWIO) then bias of every layer, in forward order: the order of the weights file. */
export function parameterSpecs(cfg: AutoencoderConfig): ParameterSpec[] {
  return layerSpecs(cfg).flatMap((l) => [
    { name: `${l.name}/kernel`, shape: [l.kernel, l.kernel, l.inChannels, l.outChannels] },
    { name: `${l.name}/bias`, shape: [l.outChannels] },
  ]);
}

export function parameterCount(cfg: AutoencoderConfig): number {
  return parameterSpecs(cfg).reduce((s, p) => s + p.shape.reduce((a, b) => a * b, 1), 0);
}

/**
 * Seeded initial parameters: He-uniform kernels for the ReLU layers, Glorot-uniform for the sigmoid output and the
 * linear code layer, zero biases.
 */
export function initialParameters(cfg: AutoencoderConfig, seed: number): Float32Array[] {
  const rng = new SeededRandom(seed);
  const out: Float32Array[] = [];
  for (const l of layerSpecs(cfg)) {
    const fanIn = l.kernel * l.kernel * l.inChannels;
    const fanOut = l.kernel * l.kernel * l.outChannels;
    const linear = l.kind === 'output' || l.kind === 'bottleneck-in';
    const limit = linear ? Math.sqrt(6 / (fanIn + fanOut)) : Math.sqrt(6 / fanIn);
    const kernel = new Float32Array(fanIn * l.outChannels);
    for (let i = 0; i < kernel.length; i++) kernel[i] = (2 * rng.float() - 1) * limit;
    out.push(kernel, new Float32Array(l.outChannels));
  }
  return out;
}
