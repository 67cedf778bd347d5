import { test } from 'node:test';
import assert from 'node:assert/strict';
import onnxProto from 'onnx-proto';
import ort from 'onnxruntime-node';
import { defaultWeightsPath } from '../paths.js';
import { KerasWeights } from '../weights/keras-h5.js';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ONNX_OPSET, activationOutputName, buildResnetOnnx, buildResnetOnnxFromFolded } from './onnx-graph.js';
import { activationTensors, type ActivationRanges } from './quantize.js';
import { BACKBONE_OUTPUTS, RESNET50_OPS, foldedConvWeights, opsUpTo, type FoldedConv } from './resnet50.js';

const { onnx } = onnxProto;
type Onnx = typeof onnxProto.onnx;

/** Decoded messages are full classes, not the all-optional interfaces the typings give fields. */
interface DecodedGraph {
  input: InstanceType<Onnx['ValueInfoProto']>[];
  output: InstanceType<Onnx['ValueInfoProto']>[];
  node: { name: string; opType: string; domain: string; input: string[]; attribute: InstanceType<Onnx['AttributeProto']>[] }[];
  initializer: InstanceType<Onnx['TensorProto']>[];
}

function decodeGraph(bytes: Uint8Array): DecodedGraph {
  const graph = onnx.ModelProto.decode(bytes).graph;
  assert.ok(graph, 'model has a graph');
  return graph as unknown as DecodedGraph;
}

// One read of the real weights for the whole file.
const folded: Promise<Map<string, FoldedConv>> = (async () => {
  const weights = await KerasWeights.open(defaultWeightsPath());
  try {
    return foldedConvWeights(weights, RESNET50_OPS);
  } finally {
    weights.close();
  }
})();

test('the generated model has an NHWC input, one Conv per conv op, and NHWC outputs named by layer', async () => {
  const weights = await KerasWeights.open(defaultWeightsPath());
  let bytes: Uint8Array;
  try {
    bytes = buildResnetOnnx(weights, ['conv4_block6_out', 'conv2_block3_out']);
  } finally {
    weights.close();
  }
  const model = onnx.ModelProto.decode(bytes);
  assert.equal(Number(model.opsetImport[0].version), ONNX_OPSET);
  assert.ok(model.metadataProps.some((p) => p.key === 'weights_sha256' && /^[0-9a-f]{64}$/.test(p.value ?? '')));
  const graph = decodeGraph(bytes);
  assert.deepEqual(graph.input.map((i) => i.name), ['input']);
  const inputDims = graph.input[0].type?.tensorType?.shape?.dim?.map((d) => d.dimParam || Number(d.dimValue));
  assert.deepEqual(inputDims, ['batch', 'height', 'width', 3]);
  // Network order, whatever order was asked for.
  assert.deepEqual(graph.output.map((o) => o.name), ['conv2_block3_out', 'conv4_block6_out']);
  const ops = opsUpTo(['conv4_block6_out']);
  const convs = graph.node.filter((n) => n.opType === 'Conv');
  assert.equal(convs.length, ops.filter((op) => op.kind === 'conv').length);
  assert.equal(graph.node.filter((n) => n.opType === 'Add').length, ops.filter((op) => op.kind === 'add').length);
  assert.equal(graph.node.filter((n) => n.opType === 'Transpose').length, 3);
  // The stem's ZeroPadding(3) lives in the conv's pads; weights are OIHW.
  const stem = convs.find((n) => n.name === 'conv1_conv')!;
  const pads = stem.attribute.find((a) => a.name === 'pads')!.ints.map(Number);
  assert.deepEqual(pads, [3, 3, 3, 3]);
  const stemWeight = graph.initializer.find((t) => t.name === stem.input[1])!;
  assert.deepEqual(stemWeight.dims.map(Number), [64, 3, 7, 7]);
});

test('conv weights are transposed HWIO -> OIHW element for element', async () => {
  const f = await folded;
  const bytes = buildResnetOnnxFromFolded(f, ['conv2_block3_out']);
  const graph = decodeGraph(bytes);
  const src = f.get('conv2_block1_2_conv')!; // 3x3, 64 -> 64
  const t = graph.initializer.find((i) => i.name === 'conv2_block1_2_conv/W')!;
  const raw = t.rawData;
  const oihw = new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength));
  const [kh, kw, cin, cout] = src.shape;
  assert.equal(oihw.length, src.kernel.length);
  for (const [y, x, i, o] of [[0, 0, 0, 0], [2, 1, 5, 63], [1, 2, 63, 7], [2, 2, 31, 40]]) {
    assert.equal(oihw[((o * cin + i) * kh + y) * kw + x], src.kernel[((y * kw + x) * cin + i) * cout + o]);
  }
});

test('an NCHW-input model runs in ONNX Runtime with dynamic size and gives the right grid', async () => {
  const bytes = buildResnetOnnxFromFolded(await folded, ['conv3_block4_out'], { inputLayout: 'nchw' });
  const session = await ort.InferenceSession.create(bytes, { logSeverityLevel: 3 });
  try {
    const [h, w] = [64, 96];
    const result = await session.run({ input: new ort.Tensor('float32', new Float32Array(2 * 3 * h * w).fill(10), [2, 3, h, w]) });
    const { stride, channels } = BACKBONE_OUTPUTS.conv3_block4_out;
    assert.deepEqual(result.conv3_block4_out.dims, [2, h / stride, w / stride, channels]);
  } finally {
    await session.release();
  }
});

test('bad arguments are named in the error', async () => {
  const f = await folded;
  assert.throws(() => buildResnetOnnxFromFolded(f, ['conv9_block1_out' as never]), /conv9_block1_out/);
  assert.throws(() => buildResnetOnnxFromFolded(f, []), /no backbone layers/);
  assert.throws(() => buildResnetOnnxFromFolded(f, ['conv2_block3_out'], { inputLayout: 'hwcn' as never }), /inputLayout "hwcn"/);
  const partial = new Map(f);
  partial.delete('conv2_block2_1_conv');
  assert.throws(() => buildResnetOnnxFromFolded(partial, ['conv2_block3_out']), /conv2_block2_1_conv/);
});

/** Plausible ranges for every tensor: ReLU outputs from 0, the rest signed. */
function someRanges(layers: Parameters<typeof opsUpTo>[0]): ActivationRanges {
  const ops = opsUpTo(layers);
  const signed = new Set([...ops.filter((op) => op.kind === 'conv' && !op.relu).map((op) => op.output), 'input']);
  return Object.fromEntries(activationTensors(ops).map((t) => [t, signed.has(t) ? [-100, 100] : [0, 10]]));
}

test('the int8 graph is QDQ: int8 weights per channel, no Relu, and ORT fuses it into integer kernels only', async () => {
  const layers = ['conv3_block4_out'] as const;
  const ops = opsUpTo([...layers]);
  const bytes = buildResnetOnnxFromFolded(await folded, [...layers], { int8: { ranges: someRanges([...layers]) } });
  const graph = decodeGraph(bytes);
  const count = (type: string) => graph.node.filter((n) => n.opType === type).length;
  const convs = ops.filter((op) => op.kind === 'conv').length;
  const adds = ops.filter((op) => op.kind === 'add').length;
  assert.equal(count('Conv'), convs);
  assert.equal(count('Relu'), 0, 'ReLU is the zero point 0 of the next QuantizeLinear');
  assert.equal(count('QuantizeLinear'), activationTensors(ops).length);
  const w = graph.initializer.find((t) => t.name === 'conv2_block1_2_conv/W_q')!;
  assert.equal(w.dataType, onnx.TensorProto.DataType.INT8);
  assert.deepEqual(w.dims.map(Number), [64, 64, 3, 3]);
  assert.deepEqual(graph.initializer.find((t) => t.name === 'conv2_block1_2_conv/W_scale')!.dims.map(Number), [64]);

  // What ORT makes of it at the level the engine uses: every Conv a QLinearConv, every Add a
  // QLinearAdd, one QuantizeLinear at the input and one DequantizeLinear at the output, nothing in float.
  const dir = await mkdtemp(join(tmpdir(), 'int8-graph-'));
  try {
    const path = join(dir, 'optimized.onnx');
    const session = await ort.InferenceSession.create(bytes, { graphOptimizationLevel: 'all', optimizedModelFilePath: path, logSeverityLevel: 3 });
    await session.release();
    const optimized = decodeGraph(await readFile(path));
    const kinds = (type: string) => optimized.node.filter((n) => n.opType === type).length;
    assert.equal(kinds('QLinearConv'), convs);
    assert.equal(kinds('QLinearAdd'), adds);
    assert.equal(kinds('QuantizeLinear'), 1);
    assert.equal(kinds('DequantizeLinear'), 1);
    assert.equal(kinds('Conv') + kinds('FusedConv') + kinds('Add'), 0, 'no float conv or add left');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('int8 ranges are checked: every tensor present, ReLU outputs never below 0; calibration outputs expose each activation', async () => {
  const f = await folded;
  const ranges = someRanges(['conv2_block3_out']);
  assert.throws(
    () => buildResnetOnnxFromFolded(f, ['conv2_block3_out'], { int8: { ranges: { ...ranges, conv2_block2_1_relu: [-1, 5] } } }),
    /"conv2_block2_1_relu" follows a ReLU/,
  );
  const { pool1_pool: _, ...missing } = ranges;
  assert.throws(() => buildResnetOnnxFromFolded(f, ['conv2_block3_out'], { int8: { ranges: missing } }), /"pool1_pool"/);
  const exposed = decodeGraph(buildResnetOnnxFromFolded(f, ['conv2_block3_out'], { exposeActivations: true }));
  const names = activationTensors(opsUpTo(['conv2_block3_out']));
  assert.deepEqual(exposed.output.map((o) => o.name), ['conv2_block3_out', ...names.map(activationOutputName)]);
});
