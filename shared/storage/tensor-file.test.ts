import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeTensorFile, encodeTensorFile, imageGrid, imageRows, TENSOR_FORMAT_VERSION, type TensorFileHeader } from './tensor-file.js';

const NAME = 'runs/x/embeddings/0003.bin';

// One 28x28 grid of 1024-d patch vectors per image: the size of a real PatchCore shard entry.
function sample(images = 2): { header: TensorFileHeader; data: Float32Array } {
  const dim = 1024;
  const patches = 28 * 28;
  const count = images * patches;
  const data = new Float32Array(count * dim);
  let s = 12345;
  for (let i = 0; i < data.length; i++) {
    s = (s * 1103515245 + 12345) >>> 0;
    data[i] = (s / 2 ** 32 - 0.5) * 1e3;
  }
  data[7] = Number.NaN; // special values survive bit-exact
  data[8] = -0;
  data[9] = Number.POSITIVE_INFINITY;
  const header: TensorFileHeader = {
    dtype: 'float32',
    dim,
    count,
    grid: [28, 28],
    images: Array.from({ length: images }, (_, i) => ({ key: `datasets/bottle/test/good/00${i}.png`, offset: i * patches, patches })),
    backbone: 'resnet50/layer2+layer3',
    run: 'x',
  };
  return { header, data };
}

function decodeError(buf: Buffer): string {
  try {
    decodeTensorFile(buf, NAME);
  } catch (e) {
    return (e as Error).message;
  }
  assert.fail('expected the file to be rejected');
}

test('round trip keeps header (extra fields included) and every float bit-exact', () => {
  const { header, data } = sample();
  const buf = encodeTensorFile(header, data);
  const decoded = decodeTensorFile(buf, NAME);
  assert.deepEqual(decoded.header, header);
  assert.equal(decoded.data.length, data.length);
  assert.ok(Buffer.from(decoded.data.buffer, decoded.data.byteOffset, decoded.data.byteLength).equals(Buffer.from(data.buffer)));
  assert.ok(Object.is(decoded.data[8], -0));
  assert.deepEqual(imageRows(decoded, 1), data.subarray(784 * 1024, 2 * 784 * 1024));
  assert.equal((buf.length - data.byteLength) % 16, 0, 'data starts on a 16-byte boundary');

  // A buffer at an odd offset (a slice of a bigger download) takes the copying path.
  const shifted = Buffer.alloc(buf.length + 1);
  buf.copy(shifted, 1);
  const unaligned = decodeTensorFile(shifted.subarray(1), NAME);
  assert.ok(Buffer.from(unaligned.data.buffer, unaligned.data.byteOffset, unaligned.data.byteLength).equals(Buffer.from(data.buffer)));

  const empty = encodeTensorFile({ dtype: 'float32', dim: 4, count: 0, grid: [1, 1], images: [] }, new Float32Array(0));
  assert.equal(decodeTensorFile(empty, 'e').data.length, 0);
});

test('rejects a foreign file (bad magic)', () => {
  const png = Buffer.from('89504e470d0a1a0a0000000d49484452', 'hex');
  assert.equal(decodeError(png), `embeddings file "${NAME}" is not a patchcore tensor file (bad magic)`);
  assert.equal(decodeError(Buffer.from('{"dtype":"float32"}')), `embeddings file "${NAME}" is not a patchcore tensor file (bad magic)`);
  assert.throws(() => decodeTensorFile(png, 'runs/x/maps/0001.bin', 'maps'), {
    message: 'maps file "runs/x/maps/0001.bin" is not a patchcore tensor file (bad magic)',
  });
});

test('rejects a newer format version', () => {
  const buf = encodeTensorFile(sample(1).header, sample(1).data);
  buf[5] = 7;
  assert.equal(decodeError(buf), `embeddings file "${NAME}" has format version 7; this build reads version ${TENSOR_FORMAT_VERSION}`);
});

test('rejects truncated files at every stage', () => {
  const { header, data } = sample(1);
  const buf = encodeTensorFile(header, data);
  const dataOffset = buf.length - data.byteLength;
  assert.equal(data.byteLength, 3211264);
  assert.equal(
    decodeError(buf.subarray(0, dataOffset + 1000)),
    `embeddings file "${NAME}" is truncated: expected 3211264 data bytes, found 1000`,
  );
  assert.equal(
    decodeError(buf.subarray(0, 40)),
    `embeddings file "${NAME}" is truncated: expected ${dataOffset - 12} header bytes, found 28`,
  );
  assert.equal(decodeError(buf.subarray(0, 7)), `embeddings file "${NAME}" is truncated: expected at least 12 preamble bytes, found 7`);
  assert.equal(decodeError(Buffer.alloc(0)), `embeddings file "${NAME}" is truncated: expected at least 12 preamble bytes, found 0`);
});

test('rejects header/data size mismatches and invalid headers', () => {
  const { header, data } = sample(1);
  const buf = encodeTensorFile(header, data);
  assert.equal(
    decodeError(Buffer.concat([buf, Buffer.alloc(8)])),
    `embeddings file "${NAME}" has 3211272 data bytes but its header (count 784 x dim 1024) describes 3211264: header and data do not match`,
  );
  assert.throws(() => encodeTensorFile(header, data.subarray(1)), {
    message: 'encodeTensorFile: header/data size mismatch: header says count 784 x dim 1024 = 802816 values, data has 802815',
  });
  assert.throws(() => encodeTensorFile({ ...header, images: [{ key: 'a.png', offset: 700, patches: 100 }] }, data), {
    message: 'encodeTensorFile: invalid header: images.0 (key "a.png") covers rows 700..799 but count is 784',
  });
  assert.throws(() => encodeTensorFile({ ...header, dtype: 'float16' as 'float32' }, data), /encodeTensorFile: invalid header: dtype: /);

  // A header rewritten by hand: same length, but it claims float16 and a count that does not fit.
  const forged = Buffer.from(buf);
  const headerText = forged.toString('utf8', 12, buf.length - data.byteLength);
  forged.write(headerText.replace('"float32"', '"float16"'), 12, 'utf8');
  assert.match(decodeError(forged), /^embeddings file "runs\/x\/embeddings\/0003\.bin" has an invalid header: dtype: /);
  const corrupt = Buffer.from(buf);
  corrupt[12] = 0x7b + 1; // first "{" of the JSON
  assert.match(decodeError(corrupt), /^embeddings file "runs\/x\/embeddings\/0003\.bin" has a corrupt header \(not valid JSON: /);
  const huge = Buffer.from(buf);
  huge.writeUInt32LE(0xffffffff, 8);
  assert.equal(decodeError(huge), `embeddings file "${NAME}" has an implausible header length 4294967295 (corrupt file?)`);
});

test('images of different sizes keep their own patch grid; older files without one read as the header grid', () => {
  const dim = 2;
  const header: TensorFileHeader = {
    dtype: 'float32', dim, count: 6 + 4, grid: [2, 3],
    images: [{ key: 'a.png', offset: 0, patches: 6, grid: [2, 3] }, { key: 'b.png', offset: 6, patches: 4, grid: [2, 2] }],
  };
  const file = decodeTensorFile(encodeTensorFile(header, new Float32Array(10 * dim)), NAME);
  assert.deepEqual([imageGrid(file, 0), imageGrid(file, 1)], [[2, 3], [2, 2]]);
  assert.equal(imageRows(file, 1).length, 4 * dim);
  const old = decodeTensorFile(encodeTensorFile(sample(2).header, sample(2).data), NAME);
  assert.deepEqual(imageGrid(old, 1), [28, 28]);
  assert.throws(() => imageGrid(old, 2), { message: 'image index 2 is out of range (the file has 2 images)' });
  const bad = { ...header, images: [{ key: 'a.png', offset: 0, patches: 6, grid: [0, 3] as [number, number] }] };
  assert.throws(() => encodeTensorFile(bad, new Float32Array(10 * dim)), /images\.0\.grid\.0: /);
});
