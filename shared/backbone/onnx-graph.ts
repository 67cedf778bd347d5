// Generates the ONNX model of the backbone from the same op list the TF.js engine runs, so both
// engines compute one network. Nothing is written to disk: the model exists only as bytes handed to
// ONNX Runtime. BN is folded into each conv; the graph works in NCHW (what ONNX convs take) behind
// one input transpose, and hands back NHWC outputs like every other engine. With `int8` it is the
// same network in QDQ form (quantize.ts says which).
import { endianness } from 'node:os';
import onnxProto from 'onnx-proto';
import type { KerasWeights } from '../weights/keras-h5.js';
import {
  BACKBONE_LAYERS,
  BACKBONE_OUTPUTS,
  INPUT_NAME,
  foldedConvWeights,
  opsUpTo,
  type BackboneLayer,
  type ConvOp,
  type FoldedConv,
} from './resnet50.js';
import {
  activationTensors,
  assertActivationRanges,
  quantizeBias,
  quantizeWeightsPerChannel,
  uint8Params,
  type ActivationRanges,
  type Uint8Params,
} from './quantize.js';

const { onnx } = onnxProto;
type INodeProto = onnxProto.onnx.INodeProto;
type ITensorProto = onnxProto.onnx.ITensorProto;
type IValueInfoProto = onnxProto.onnx.IValueInfoProto;
type IAttributeProto = onnxProto.onnx.IAttributeProto;
type IDimension = onnxProto.onnx.TensorShapeProto.IDimension;

/** Opset 17 (ONNX 1.12) pairs with IR version 8. Every op used here is unchanged since opset 13. */
export const ONNX_OPSET = 17;
const ONNX_IR_VERSION = 8;

export type OnnxInputLayout = 'nhwc' | 'nchw';

export interface BuildResnetOnnxOptions {
  /** Layout of the graph input 'input' (default 'nhwc', transposed to NCHW inside the graph).
   * 'nchw' drops that transpose: the caller then feeds [batch, 3, height, width]. */
  inputLayout?: OnnxInputLayout;
  /** Recorded in the model's metadata (e.g. the weights file's sha256). */
  metadata?: Record<string, string>;
  /** The int8 (QDQ) graph: every activation quantised to uint8 with these calibrated ranges, conv
   * weights to int8 per output channel. Absent: fp32. */
  int8?: { ranges: ActivationRanges };
  /** fp32 only: also output every activation tensor (NCHW, float) as `activation/<name>`, for
   * calibration. */
  exposeActivations?: boolean;
}

/** Output name of an exposed activation tensor (see exposeActivations). */
export function activationOutputName(name: string): string {
  return `activation/${name}`;
}

/** The ONNX model (serialized ModelProto) computing `layers` from a caffe-preprocessed image batch. */
export function buildResnetOnnx(
  weights: KerasWeights,
  layers: BackboneLayer[],
  opts: BuildResnetOnnxOptions = {},
): Uint8Array {
  const folded = foldedConvWeights(weights, opsUpTo(layers));
  return buildResnetOnnxFromFolded(folded, layers, {
    ...opts,
    metadata: { weights_sha256: weights.sha256, ...opts.metadata },
  });
}

/** As buildResnetOnnx, from already folded conv weights (lets an engine read the weights file once). */
export function buildResnetOnnxFromFolded(
  folded: ReadonlyMap<string, FoldedConv>,
  layers: BackboneLayer[],
  opts: BuildResnetOnnxOptions = {},
): Uint8Array {
  // ONNX raw_data is little-endian; the Float32Array bytes are copied as they sit in memory.
  if (endianness() !== 'LE') throw new Error('building the ONNX backbone needs a little-endian machine');
  const ops = opsUpTo(layers);
  const inputLayout = opts.inputLayout ?? 'nhwc';
  if (inputLayout !== 'nhwc' && inputLayout !== 'nchw') {
    throw new Error(`inputLayout "${String(inputLayout)}" is not supported; choose nhwc or nchw`);
  }
  // Outputs in the network's order, each once, whatever order the caller listed them in.
  const outputs = BACKBONE_LAYERS.filter((layer) => layers.includes(layer));

  const quant = opts.int8;
  if (quant) assertActivationRanges(quant.ranges, ops);
  if (quant && opts.exposeActivations) throw new Error('exposeActivations is for the fp32 graph only');

  // Every tensor inside the graph is NCHW and carries this prefix, which frees the plain layer
  // names for the NHWC graph outputs.
  const internal = (name: string): string => `nchw/${name}`;
  const nodes: INodeProto[] = [];
  const initializers: ITensorProto[] = [];

  if (inputLayout === 'nhwc') {
    nodes.push(node('Transpose', 'input_to_nchw', [INPUT_NAME], [internal(INPUT_NAME)], [ints('perm', [0, 3, 1, 2])]));
  }
  // Where an op writes its float result, and where consumers read it: in int8 they read the value
  // after a QuantizeLinear/DequantizeLinear pair, the pattern ORT fuses into integer kernels.
  const produced = (name: string): string => (name === INPUT_NAME && inputLayout === 'nchw' ? INPUT_NAME : internal(name));
  const source = (name: string): string => (quant ? `dq/${name}` : produced(name));
  const params = new Map<string, Uint8Params>();
  const quantizeActivation = (name: string, p: Uint8Params): void => {
    params.set(name, p);
    const scale = scalarInitializer(`q/${name}/scale`, onnx.TensorProto.DataType.FLOAT, new Float32Array([p.scale]));
    const zeroPoint = scalarInitializer(`q/${name}/zero_point`, onnx.TensorProto.DataType.UINT8, new Uint8Array([p.zeroPoint]));
    initializers.push(scale, zeroPoint);
    nodes.push(node('QuantizeLinear', `q/${name}`, [produced(name), scale.name!, zeroPoint.name!], [`q/${name}/u8`]));
    nodes.push(node('DequantizeLinear', `dq/${name}`, [`q/${name}/u8`, scale.name!, zeroPoint.name!], [`dq/${name}`]));
  };
  // ReLU in int8: the output's zero point is 0, so QuantizeLinear clamps negatives to 0 itself.
  const reluByQuantize = (name: string): void => {
    const p = uint8Params(quant!.ranges[name]);
    if (p.zeroPoint !== 0) {
      throw new Error(`activation ranges: "${name}" follows a ReLU but its range ${JSON.stringify(quant!.ranges[name])} is below 0`);
    }
    quantizeActivation(name, p);
  };
  if (quant) quantizeActivation(INPUT_NAME, uint8Params(quant.ranges[INPUT_NAME]));

  for (const op of ops) {
    switch (op.kind) {
      case 'conv': {
        const f = folded.get(op.name);
        if (!f) throw new Error(`folded weights have no conv layer "${op.name}"`);
        const { weight, bias } = convInitializers(op, f);
        let weightName = weight.name!;
        let biasName = bias.name!;
        if (quant) {
          const q = quantizedConvWeights(op, weight, f.bias, params.get(op.inputs[0])!.scale);
          initializers.push(...q.initializers);
          nodes.push(...q.nodes);
          weightName = q.weight;
          biasName = q.bias;
        } else {
          initializers.push(weight, bias);
        }
        const out = op.relu && !quant ? internal(`${op.output}/pre_relu`) : internal(op.output);
        nodes.push(
          node('Conv', op.name, [source(op.inputs[0]), weightName, biasName], [out], [
            ints('kernel_shape', [op.kernel, op.kernel]),
            ints('strides', [op.stride, op.stride]),
            ints('pads', [op.pad, op.pad, op.pad, op.pad]),
            ints('dilations', [1, 1]),
            int('group', 1),
          ]),
        );
        if (quant) {
          if (op.relu) reluByQuantize(op.output);
          else quantizeActivation(op.output, uint8Params(quant.ranges[op.output]));
        } else if (op.relu) {
          nodes.push(node('Relu', `${op.name}/relu`, [out], [internal(op.output)]));
        }
        break;
      }
      case 'maxpool':
        nodes.push(
          node('MaxPool', op.name, [source(op.inputs[0])], [internal(op.output)], [
            ints('kernel_shape', [op.kernel, op.kernel]),
            ints('strides', [op.stride, op.stride]),
            ints('pads', [op.pad, op.pad, op.pad, op.pad]),
          ]),
        );
        // Max-pooling only picks values, so its output keeps its input's parameters: ORT then
        // runs it on the uint8 values directly.
        if (quant) quantizeActivation(op.output, params.get(op.inputs[0])!);
        break;
      case 'add': {
        const out = op.relu && !quant ? internal(`${op.output}/pre_relu`) : internal(op.output);
        nodes.push(node('Add', op.name, [source(op.inputs[0]), source(op.inputs[1])], [out]));
        if (quant) {
          if (op.relu) reluByQuantize(op.output);
          else quantizeActivation(op.output, uint8Params(quant.ranges[op.output]));
        } else if (op.relu) {
          nodes.push(node('Relu', `${op.name}/relu`, [out], [internal(op.output)]));
        }
        break;
      }
    }
  }
  for (const layer of outputs) {
    nodes.push(node('Transpose', `${layer}/to_nhwc`, [source(layer)], [layer], [ints('perm', [0, 2, 3, 1])]));
  }
  const exposed = opts.exposeActivations ? activationTensors(ops) : [];
  for (const name of exposed) {
    nodes.push(node('Identity', `expose/${name}`, [produced(name)], [activationOutputName(name)]));
  }

  const batch: IDimension = { dimParam: 'batch' };
  const inputShape: IDimension[] =
    inputLayout === 'nhwc'
      ? [batch, { dimParam: 'height' }, { dimParam: 'width' }, { dimValue: 3 }]
      : [batch, { dimValue: 3 }, { dimParam: 'height' }, { dimParam: 'width' }];
  const model = onnx.ModelProto.create({
    irVersion: ONNX_IR_VERSION,
    opsetImport: [{ domain: '', version: ONNX_OPSET }],
    producerName: 'patchcore',
    docString: `${quant ? 'int8 (QDQ) ' : ''}Keras ImageNet ResNet-50 (BN folded) up to ${outputs[outputs.length - 1]}; caffe-preprocessed ${inputLayout.toUpperCase()} BGR input`,
    metadataProps: Object.entries(opts.metadata ?? {}).map(([key, value]) => ({ key, value })),
    graph: {
      name: 'resnet50_backbone',
      node: nodes,
      initializer: initializers,
      input: [floatTensorInfo(INPUT_NAME, inputShape)],
      // Spatial output sizes follow from the input's; left unnamed rather than guessed.
      output: [
        ...outputs.map((layer) => floatTensorInfo(layer, [batch, {}, {}, { dimValue: BACKBONE_OUTPUTS[layer].channels }])),
        ...exposed.map((name) => floatTensorInfo(activationOutputName(name), [batch, {}, {}, {}])),
      ],
    },
  });
  return onnx.ModelProto.encode(model).finish();
}

/** Folded HWIO kernel -> ONNX OIHW weight initializer, plus the bias. */
function convInitializers(op: ConvOp, f: FoldedConv): { weight: ITensorProto; bias: ITensorProto } {
  const [kh, kw, cin, cout] = f.shape;
  if (kh !== op.kernel || kw !== op.kernel || cin !== op.inChannels || cout !== op.outChannels) {
    throw new Error(
      `folded weights of conv layer "${op.name}" have shape [${f.shape.join(',')}], ` +
        `expected [${op.kernel},${op.kernel},${op.inChannels},${op.outChannels}]`,
    );
  }
  const oihw = new Float32Array(f.kernel.length);
  for (let y = 0; y < kh; y++) {
    for (let x = 0; x < kw; x++) {
      for (let i = 0; i < cin; i++) {
        const src = ((y * kw + x) * cin + i) * cout;
        let dst = (i * kh + y) * kw + x;
        const step = cin * kh * kw;
        for (let o = 0; o < cout; o++, dst += step) oihw[dst] = f.kernel[src + o];
      }
    }
  }
  return {
    weight: floatInitializer(`${op.name}/W`, [cout, cin, kh, kw], oihw),
    bias: floatInitializer(`${op.name}/B`, [cout], f.bias),
  };
}

/** The int8 weight and int32 bias of a conv, each behind a per-output-channel DequantizeLinear. */
function quantizedConvWeights(
  op: ConvOp,
  weight: ITensorProto,
  bias: Float32Array,
  inputScale: number,
): { initializers: ITensorProto[]; nodes: INodeProto[]; weight: string; bias: string } {
  const raw = weight.rawData!;
  const oihw = new Float32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4);
  const w = quantizeWeightsPerChannel(oihw, op.outChannels);
  const b = quantizeBias(bias, inputScale, w.scales);
  const { DataType } = onnx.TensorProto;
  const initializers = [
    typedInitializer(`${op.name}/W_q`, weight.dims as number[], DataType.INT8, w.values),
    typedInitializer(`${op.name}/W_scale`, [op.outChannels], DataType.FLOAT, w.scales),
    typedInitializer(`${op.name}/W_zero_point`, [op.outChannels], DataType.INT8, new Int8Array(op.outChannels)),
    typedInitializer(`${op.name}/B_q`, [op.outChannels], DataType.INT32, b.values),
    typedInitializer(`${op.name}/B_scale`, [op.outChannels], DataType.FLOAT, b.scales),
    typedInitializer(`${op.name}/B_zero_point`, [op.outChannels], DataType.INT32, new Int32Array(op.outChannels)),
  ];
  const names = initializers.map((t) => t.name!);
  const nodes = [
    node('DequantizeLinear', `${op.name}/W_dq`, names.slice(0, 3), [`${op.name}/W`], [int('axis', 0)]),
    node('DequantizeLinear', `${op.name}/B_dq`, names.slice(3, 6), [`${op.name}/B`], [int('axis', 0)]),
  ];
  return { initializers, nodes, weight: `${op.name}/W`, bias: `${op.name}/B` };
}

function typedInitializer(name: string, dims: number[], dataType: number, values: ArrayBufferView): ITensorProto {
  return { name, dims, dataType, rawData: new Uint8Array(values.buffer, values.byteOffset, values.byteLength) };
}

function scalarInitializer(name: string, dataType: number, values: ArrayBufferView): ITensorProto {
  return typedInitializer(name, [], dataType, values);
}

function floatInitializer(name: string, dims: number[], values: Float32Array): ITensorProto {
  return {
    name,
    dims,
    dataType: onnx.TensorProto.DataType.FLOAT,
    rawData: new Uint8Array(values.buffer, values.byteOffset, values.byteLength),
  };
}

function floatTensorInfo(name: string, dim: IDimension[]): IValueInfoProto {
  return { name, type: { tensorType: { elemType: onnx.TensorProto.DataType.FLOAT, shape: { dim } } } };
}

function node(opType: string, name: string, input: string[], output: string[], attribute: IAttributeProto[] = []): INodeProto {
  return { opType, name, input, output, attribute };
}

function ints(name: string, values: number[]): IAttributeProto {
  return { name, type: onnx.AttributeProto.AttributeType.INTS, ints: values };
}

function int(name: string, value: number): IAttributeProto {
  return { name, type: onnx.AttributeProto.AttributeType.INT, i: value };
}
