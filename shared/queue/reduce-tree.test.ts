// The reduce tree's shape and seeds (pure functions of flows.ts) and the bounds of a reduce job's payload.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { inputJobId, jobIds, nodeSeed, planReduceTree } from './flows.js';
import { PAYLOAD_LIMITS, validatePayload } from './jobs.js';
import { reduceTarget } from '../distributed/reduce.js';

const shards = (n: number) => Array.from({ length: n }, (_, i) => String(i).padStart(4, '0'));

test('6 shards at fan-in 2: three levels, every node of at most 2 inputs, a group of one passed up as it is', () => {
  const plan = planReduceTree(shards(6), 2);
  assert.equal(plan.depth, 3);
  assert.deepEqual(plan.nodes, [
    { node: '1-0', inputs: [{ kind: 'shard', id: '0000' }, { kind: 'shard', id: '0001' }] },
    { node: '1-1', inputs: [{ kind: 'shard', id: '0002' }, { kind: 'shard', id: '0003' }] },
    { node: '1-2', inputs: [{ kind: 'shard', id: '0004' }, { kind: 'shard', id: '0005' }] },
    { node: '2-0', inputs: [{ kind: 'reduce', id: '1-0' }, { kind: 'reduce', id: '1-1' }] },
  ]);
  assert.deepEqual(plan.rootInputs, [{ kind: 'reduce', id: '2-0' }, { kind: 'reduce', id: '1-2' }]);
});

test('depth is ceil(log_F(shards)); every shard is below the root exactly once; at most F inputs anywhere', () => {
  for (const [n, f] of [[1, 2], [2, 2], [3, 2], [8, 8], [9, 8], [64, 8], [65, 8], [100, 3], [1000, 4], [10_000, 8]]) {
    const plan = planReduceTree(shards(n), f);
    assert.equal(plan.depth, Math.max(1, Math.ceil(Math.log(n) / Math.log(f) - 1e-9)), `${n} shards, fan-in ${f}`);
    const inputsOf = new Map(plan.nodes.map((x) => [x.node, x.inputs]));
    const leaves: string[] = [];
    const walk = (i: { kind: string; id: string }) => (i.kind === 'shard' ? leaves.push(i.id) : inputsOf.get(i.id)!.forEach(walk));
    plan.rootInputs.forEach(walk);
    assert.deepEqual(leaves, shards(n), `${n} shards, fan-in ${f}: leaves in order`);
    assert.ok(plan.rootInputs.length <= f && plan.nodes.every((x) => x.inputs.length >= 2 && x.inputs.length <= f));
  }
  assert.equal(planReduceTree(shards(8), 8).nodes.length, 0, 'a run of at most F shards needs no reduce step');
});

test('a fan-in below 2 or above the limit is refused naming it', () => {
  assert.throws(() => planReduceTree(shards(4), 1), /^Error: fan-in 1 is invalid: expected an integer from 2 to 64$/);
  assert.throws(() => planReduceTree(shards(4), PAYLOAD_LIMITS.fanIn + 1), /fan-in 65 is invalid/);
});

test('node seeds: the same for the same run seed and node, different across nodes and seeds', () => {
  assert.equal(nodeSeed(0, '1-0'), nodeSeed(0, '1-0'));
  assert.notEqual(nodeSeed(0, '1-0'), nodeSeed(0, '1-1'));
  assert.notEqual(nodeSeed(0, '1-0'), nodeSeed(1, '1-0'));
  assert.ok(Number.isInteger(nodeSeed(7, '3-12')));
});

test('job ids of a tree: "<run>~reduce~<level>-<index>", and an input names its job', () => {
  assert.equal(jobIds.reduce('train-a', '2-0'), 'train-a~reduce~2-0');
  assert.equal(inputJobId('train-a', { kind: 'reduce', id: '1-3' }), 'train-a~reduce~1-3');
  assert.equal(inputJobId('train-a', { kind: 'shard', id: '0007' }), 'train-a~features~0007');
});

test('a reduce payload of more inputs than the fan-in limit is refused', () => {
  const payload = (n: number) => ({
    runId: 'r', node: '1-0', recipe: 'paper', coreset: { ratio: 0.1, seed: 1, projectionDim: 128, size: 500 },
    inputs: shards(n).map((id) => ({ kind: 'shard', id })),
  });
  assert.equal(validatePayload('reduce', payload(PAYLOAD_LIMITS.fanIn), 'j').inputs.length, PAYLOAD_LIMITS.fanIn);
  assert.throws(() => validatePayload('reduce', payload(PAYLOAD_LIMITS.fanIn + 1), 'j'), /invalid reduce payload in job j: inputs: /);
  assert.throws(() => validatePayload('reduce', { ...payload(2), coreset: { ratio: 0.1, seed: 1, projectionDim: 128, size: 0 } }, 'j'), /coreset\.size/);
});

test('a step keeps the cap, else its ratio of the patches below, never more than its rows', () => {
  assert.equal(reduceTarget({ ratio: 0.1, size: 400 }, 10_000, 2000), 400);
  assert.equal(reduceTarget({ ratio: 0.1, size: 400 }, 10_000, 300), 300);
  assert.equal(reduceTarget({ ratio: 0.1 }, 10_000, 5000), 1000);
  assert.equal(reduceTarget({ ratio: 0.1 }, 10_000, 900), 900);
});
