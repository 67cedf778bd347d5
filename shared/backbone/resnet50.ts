// Keras ResNet-50 v1 up to stage conv4, described as data so every engine (TF.js now, an ONNX graph
// generated from the same list later) runs exactly the same network. BatchNorm never appears as an
// op: each conv carries its BN layer's name and the BN is folded into the conv's weights.
import type { KerasWeights } from '../weights/keras-h5.js';

export const BACKBONE_LAYERS = ['conv2_block3_out', 'conv3_block4_out', 'conv4_block6_out'] as const;
export type BackboneLayer = (typeof BACKBONE_LAYERS)[number];

/** Channels and spatial downsampling of each exposed output (224 input -> 56, 28, 14). */
export const BACKBONE_OUTPUTS: Record<BackboneLayer, { channels: number; stride: number }> = {
  conv2_block3_out: { channels: 256, stride: 4 },
  conv3_block4_out: { channels: 512, stride: 8 },
  conv4_block6_out: { channels: 1024, stride: 16 },
};

/** Keras BatchNormalization epsilon used by ResNet50. */
export const BN_EPSILON = 1.001e-5;

/** Name of the network's input tensor in the op list. */
export const INPUT_NAME = 'input';

/** Conv (+ folded BN, + optional ReLU). `pad` is symmetric zero padding on every side, in pixels;
 * it reproduces both Keras `same` for 3x3/1 and the stem's explicit ZeroPadding2D(3). */
export interface ConvOp {
  kind: 'conv';
  name: string;
  bn: string;
  inputs: [string];
  output: string;
  kernel: number;
  stride: number;
  pad: number;
  inChannels: number;
  outChannels: number;
  relu: boolean;
}

/** Max-pool. Padding cells are ignored (-inf); equal to Keras' zero padding because the input is a ReLU output. */
export interface MaxPoolOp {
  kind: 'maxpool';
  name: string;
  inputs: [string];
  output: string;
  kernel: number;
  stride: number;
  pad: number;
}

/** Element-wise sum of the residual branch and the shortcut, then ReLU. */
export interface AddOp {
  kind: 'add';
  name: string;
  inputs: [string, string];
  output: string;
  relu: boolean;
}

export type BackboneOp = ConvOp | MaxPoolOp | AddOp;

const STAGES = [
  { stage: 2, blocks: 3, width: 64, stride: 1 },
  { stage: 3, blocks: 4, width: 128, stride: 2 },
  { stage: 4, blocks: 6, width: 256, stride: 2 },
] as const;

function conv(
  name: string,
  input: string,
  output: string,
  kernel: number,
  stride: number,
  inChannels: number,
  outChannels: number,
  relu: boolean,
): ConvOp {
  const bn = name.replace(/_conv$/, '_bn');
  const pad = kernel === 1 ? 0 : (kernel - 1) / 2;
  return { kind: 'conv', name, bn, inputs: [input], output, kernel, stride, pad, inChannels, outChannels, relu };
}

function buildOps(): BackboneOp[] {
  const ops: BackboneOp[] = [
    conv('conv1_conv', INPUT_NAME, 'conv1_relu', 7, 2, 3, 64, true),
    { kind: 'maxpool', name: 'pool1_pool', inputs: ['conv1_relu'], output: 'pool1_pool', kernel: 3, stride: 2, pad: 1 },
  ];
  let x = 'pool1_pool';
  let channels = 64;
  for (const { stage, blocks, width, stride } of STAGES) {
    const outChannels = width * 4;
    for (let b = 1; b <= blocks; b++) {
      const p = `conv${stage}_block${b}`;
      const s = b === 1 ? stride : 1;
      let shortcut = x;
      if (b === 1) {
        ops.push(conv(`${p}_0_conv`, x, `${p}_0_bn`, 1, s, channels, outChannels, false));
        shortcut = `${p}_0_bn`;
      }
      ops.push(conv(`${p}_1_conv`, x, `${p}_1_relu`, 1, s, channels, width, true));
      ops.push(conv(`${p}_2_conv`, `${p}_1_relu`, `${p}_2_relu`, 3, 1, width, width, true));
      ops.push(conv(`${p}_3_conv`, `${p}_2_relu`, `${p}_3_bn`, 1, 1, width, outChannels, false));
      ops.push({ kind: 'add', name: `${p}_add`, inputs: [shortcut, `${p}_3_bn`], output: `${p}_out`, relu: true });
      x = `${p}_out`;
      channels = outChannels;
    }
  }
  return ops;
}

/** The whole network through conv4_block6_out, in execution order. */
export const RESNET50_OPS: readonly BackboneOp[] = Object.freeze(buildOps());

export function assertBackboneLayers(layers: readonly string[]): asserts layers is BackboneLayer[] {
  if (layers.length === 0) throw new Error(`no backbone layers requested; choose from ${BACKBONE_LAYERS.join(', ')}`);
  for (const layer of layers) {
    if (!(BACKBONE_LAYERS as readonly string[]).includes(layer)) {
      throw new Error(`unknown backbone layer "${layer}"; choose from ${BACKBONE_LAYERS.join(', ')}`);
    }
  }
}

/** The ops needed for `layers`: the prefix of the network ending at the deepest one requested. */
export function opsUpTo(layers: readonly BackboneLayer[]): BackboneOp[] {
  assertBackboneLayers(layers);
  let last = -1;
  for (const layer of layers) last = Math.max(last, RESNET50_OPS.findIndex((op) => op.output === layer));
  return RESNET50_OPS.slice(0, last + 1);
}

/** For each tensor, how many later ops read it: lets an engine free intermediates early. */
export function consumerCounts(ops: readonly BackboneOp[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const op of ops) for (const input of op.inputs) counts.set(input, (counts.get(input) ?? 0) + 1);
  return counts;
}

export interface FoldedConv {
  name: string;
  /** HWIO [kernel, kernel, inChannels, outChannels], row-major. */
  kernel: Float32Array;
  bias: Float32Array;
  shape: [number, number, number, number];
}

/** Conv weights with the following BN folded in: w' = w*g/sqrt(v+eps), b' = (b-m)*g/sqrt(v+eps) + beta. */
export function foldConvBn(weights: KerasWeights, op: ConvOp): FoldedConv {
  const shape: [number, number, number, number] = [op.kernel, op.kernel, op.inChannels, op.outChannels];
  const out = op.outChannels;
  const kernel = weights.get(op.name, 'kernel', shape); // a fresh copy: scaled in place below
  const bias = weights.get(op.name, 'bias', [out]);
  const gamma = weights.get(op.bn, 'gamma', [out]);
  const beta = weights.get(op.bn, 'beta', [out]);
  const mean = weights.get(op.bn, 'moving_mean', [out]);
  const variance = weights.get(op.bn, 'moving_variance', [out]);
  const scale = new Float64Array(out);
  const foldedBias = new Float32Array(out);
  for (let o = 0; o < out; o++) {
    scale[o] = gamma[o] / Math.sqrt(variance[o] + BN_EPSILON);
    foldedBias[o] = (bias[o] - mean[o]) * scale[o] + beta[o];
  }
  // HWIO: the output channel is the fastest-varying index.
  for (let i = 0; i < kernel.length; i += out) {
    for (let o = 0; o < out; o++) kernel[i + o] *= scale[o];
  }
  return { name: op.name, kernel, bias: foldedBias, shape };
}

/** Folded weights of every conv in `ops` (default: the whole network), keyed by conv layer name. */
export function foldedConvWeights(
  weights: KerasWeights,
  ops: readonly BackboneOp[] = RESNET50_OPS,
): Map<string, FoldedConv> {
  const folded = new Map<string, FoldedConv>();
  for (const op of ops) if (op.kind === 'conv') folded.set(op.name, foldConvBn(weights, op));
  return folded;
}
