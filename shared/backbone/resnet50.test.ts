import { test } from 'node:test';
import assert from 'node:assert/strict';
import { defaultWeightsPath } from '../paths.js';
import { KerasWeights } from '../weights/keras-h5.js';
import {
  BN_EPSILON,
  RESNET50_OPS,
  consumerCounts,
  foldConvBn,
  opsUpTo,
  type ConvOp,
} from './resnet50.js';

const convs = RESNET50_OPS.filter((op): op is ConvOp => op.kind === 'conv');
const conv = (name: string): ConvOp => {
  const op = convs.find((c) => c.name === name);
  assert.ok(op, `no conv ${name}`);
  return op;
};

test('topology: Keras ResNet-50 v1 through conv4', () => {
  assert.equal(convs.length, 1 + 3 + (3 + 4 + 6) * 3);
  assert.deepEqual(
    RESNET50_OPS.filter((op) => op.kind === 'add').map((op) => op.output).slice(-1),
    ['conv4_block6_out'],
  );
  assert.deepEqual(conv('conv1_conv'), {
    kind: 'conv', name: 'conv1_conv', bn: 'conv1_bn', inputs: ['input'], output: 'conv1_relu',
    kernel: 7, stride: 2, pad: 3, inChannels: 3, outChannels: 64, relu: true,
  });
  assert.deepEqual(RESNET50_OPS[1], {
    kind: 'maxpool', name: 'pool1_pool', inputs: ['conv1_relu'], output: 'pool1_pool', kernel: 3, stride: 2, pad: 1,
  });
  // Stride sits on the 1x1 convs of block1 (conv3, conv4), never on the 3x3.
  for (const stage of [3, 4]) {
    assert.equal(conv(`conv${stage}_block1_0_conv`).stride, 2);
    assert.equal(conv(`conv${stage}_block1_1_conv`).stride, 2);
    assert.equal(conv(`conv${stage}_block1_2_conv`).stride, 1);
    assert.equal(conv(`conv${stage}_block2_1_conv`).stride, 1);
  }
  assert.equal(conv('conv2_block1_0_conv').stride, 1);
  for (const op of convs) {
    if (op.kernel === 3) assert.equal(op.pad, 1, op.name);
    if (op.kernel === 1) assert.equal(op.pad, 0, op.name);
    assert.equal(op.relu, /_[12]_conv$|^conv1_conv$/.test(op.name), op.name);
  }
  assert.deepEqual(conv('conv4_block6_3_conv'), {
    kind: 'conv', name: 'conv4_block6_3_conv', bn: 'conv4_block6_3_bn', inputs: ['conv4_block6_2_relu'],
    output: 'conv4_block6_3_bn', kernel: 1, stride: 1, pad: 0, inChannels: 256, outChannels: 1024, relu: false,
  });
  const add = RESNET50_OPS.find((op) => op.name === 'conv3_block1_add');
  assert.deepEqual(add?.inputs, ['conv3_block1_0_bn', 'conv3_block1_3_bn']);
  const add2 = RESNET50_OPS.find((op) => op.name === 'conv3_block2_add');
  assert.deepEqual(add2?.inputs, ['conv3_block1_out', 'conv3_block2_3_bn']);
});

test('every op reads tensors produced earlier; channels chain', () => {
  const channels = new Map<string, number>([['input', 3]]);
  for (const op of RESNET50_OPS) {
    for (const input of op.inputs) assert.ok(channels.has(input), `${op.name} reads ${input} before it exists`);
    const c = channels.get(op.inputs[0])!;
    if (op.kind === 'conv') {
      assert.equal(op.inChannels, c, op.name);
      channels.set(op.output, op.outChannels);
    } else {
      if (op.kind === 'add') assert.equal(channels.get(op.inputs[1]), c, op.name);
      channels.set(op.output, c);
    }
  }
  assert.equal(channels.get('conv2_block3_out'), 256);
  assert.equal(channels.get('conv3_block4_out'), 512);
  assert.equal(channels.get('conv4_block6_out'), 1024);
});

test('opsUpTo stops at the deepest requested output', () => {
  assert.equal(opsUpTo(['conv2_block3_out']).at(-1)?.output, 'conv2_block3_out');
  assert.equal(opsUpTo(['conv3_block4_out', 'conv2_block3_out']).at(-1)?.output, 'conv3_block4_out');
  assert.equal(opsUpTo(['conv4_block6_out']).length, RESNET50_OPS.length);
  assert.throws(() => opsUpTo(['conv5_block3_out' as never]), { message: /unknown backbone layer "conv5_block3_out"/ });
  assert.throws(() => opsUpTo([]), { message: /no backbone layers requested/ });
  const counts = consumerCounts(RESNET50_OPS);
  assert.equal(counts.get('pool1_pool'), 2); // conv2_block1_0_conv and conv2_block1_1_conv
  assert.equal(counts.get('conv2_block1_out'), 2); // shortcut and conv2_block2_1_conv
  assert.equal(counts.get('conv4_block6_out'), undefined);
});

test('folded conv equals conv followed by BatchNorm (real weights, 1x1 and 3x3)', async () => {
  const weights = await KerasWeights.open(defaultWeightsPath());
  try {
    for (const name of ['conv2_block1_1_conv', 'conv3_block2_2_conv', 'conv1_conv']) {
      const op = conv(name);
      const folded = foldConvBn(weights, op);
      const kernel = weights.get(op.name, 'kernel');
      const bias = weights.get(op.name, 'bias');
      const [gamma, beta, mean, variance] = (['gamma', 'beta', 'moving_mean', 'moving_variance'] as const).map((n) =>
        weights.get(op.bn, n),
      );
      // One receptive field of random values, HWI order like the kernel's leading axes.
      const patch = Float64Array.from({ length: op.kernel * op.kernel * op.inChannels }, () => Math.random() * 4 - 2);
      let maxErr = 0;
      let maxRef = 0;
      for (let o = 0; o < op.outChannels; o++) {
        let raw = bias[o];
        let fused = folded.bias[o];
        for (let k = 0; k < patch.length; k++) {
          raw += patch[k] * kernel[k * op.outChannels + o];
          fused += patch[k] * folded.kernel[k * op.outChannels + o];
        }
        const bn = ((raw - mean[o]) / Math.sqrt(variance[o] + BN_EPSILON)) * gamma[o] + beta[o];
        maxErr = Math.max(maxErr, Math.abs(bn - fused));
        maxRef = Math.max(maxRef, Math.abs(bn));
      }
      assert.ok(maxRef > 0);
      assert.ok(maxErr / maxRef < 1e-5, `${name}: folded vs conv+BN relative error ${maxErr / maxRef}`);
    }
  } finally {
    weights.close();
  }
});
