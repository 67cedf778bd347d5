import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import sharp from 'sharp';
import { defaultDatasetDir } from '../shared/paths.js';
import { ARCHIVE_SIDE, MAX_SHIFT, archiveImageName, loadSources, renderVariant, variantOf } from './scale-archive.js';
import { UNLABELLED_MAX, archiveTargets, backboneMacs, parseScaleArgs } from './scale.js';

test('image i of the archive depends only on the seed and i, and the draws vary', () => {
  assert.deepEqual(variantOf(7, 123, 209), variantOf(7, 123, 209));
  assert.notDeepEqual(variantOf(7, 123, 209), variantOf(8, 123, 209));
  const vs = Array.from({ length: 400 }, (_, i) => variantOf(1, i, 209));
  assert.equal(new Set(vs.map((v) => v.turns)).size, 4);
  assert.ok(vs.some((v) => v.flip) && vs.some((v) => !v.flip) && vs.some((v) => v.flop) && vs.some((v) => !v.flop));
  assert.ok(new Set(vs.map((v) => v.source)).size > 150, 'most of the 209 sources are used');
  for (const v of vs) {
    assert.ok(Math.abs(v.dx) <= MAX_SHIFT && Math.abs(v.dy) <= MAX_SHIFT);
    assert.ok(v.contrast >= 0.85 && v.contrast <= 1.15 && Math.abs(v.brightness) <= 20);
  }
  assert.ok(vs.some((v) => v.dx !== 0) && vs.some((v) => v.brightness !== 0));
  assert.throws(() => variantOf(1, 0, 0), /at least one source image/);
  assert.equal(archiveImageName(42), '0000042.jpg');
});

test('a variant is a compact square JPEG of the source, different from its neighbours', async () => {
  const sources = loadSources(join(defaultDatasetDir('bottle'), 'train', 'good'));
  assert.equal(sources.count, 209);
  const [a, b, again] = await Promise.all([
    renderVariant(sources, variantOf(1, 0, sources.count)),
    renderVariant(sources, variantOf(1, 1, sources.count)),
    renderVariant(sources, variantOf(1, 0, sources.count)),
  ]);
  const meta = await sharp(a).metadata();
  assert.equal(meta.format, 'jpeg');
  assert.equal(meta.width, ARCHIVE_SIDE);
  assert.equal(meta.height, ARCHIVE_SIDE);
  assert.ok(a.length < 40_000, `compact: ${a.length} bytes`);
  assert.deepEqual(a, again, 'the same image twice');
  assert.notDeepEqual(a, b);
  assert.throws(() => loadSources(defaultDatasetDir('bottle')), /no PNG or JPEG images/);
});

test('archive targets nest: a prefix per training size and per unlabelled set of at most 4,000 images', () => {
  assert.deepEqual(archiveTargets([1000, 16000]), [
    { prefix: 'datasets/scale-1000/train/good/', count: 1000 },
    { prefix: 'datasets/scale-16000/train/good/', count: 16000 },
    { prefix: 'datasets/scale-unlabelled-1000/test/good/', count: 1000 },
    { prefix: `datasets/scale-unlabelled-${UNLABELLED_MAX}/test/good/`, count: UNLABELLED_MAX },
  ]);
});

test('scale flags: sizes sorted and deduplicated, bad values named', () => {
  const o = parseScaleArgs(['--images', '4000,1000,4000', '--fan-in', '8', '--bank-rows', '5000']);
  assert.deepEqual(o.sizes, [1000, 4000]);
  assert.equal(o.fanIn, 8);
  assert.equal(o.bankRows, 5000);
  assert.equal(parseScaleArgs([]).fanIn, null);
  assert.throws(() => parseScaleArgs(['--images', '10,x']), /--images: expected an integer >= 1, got "x"/);
  assert.throws(() => parseScaleArgs(['--fan-in', '1']), /--fan-in: expected an integer >= 2/);
  assert.throws(() => parseScaleArgs(['--per-shard-coreset', '2']), /--per-shard-coreset: expected a ratio/);
  assert.throws(() => parseScaleArgs(['--bogus']), /bogus/);
});

test('the backbone part PatchCore runs costs 3.12 GMAC per 224 image, counted from the op list', () => {
  // By hand: conv1 7x7x3x64 on 112x112 is 118.0M; conv2 x3 blocks 668.0M; conv3 x4 950.5M; conv4 x6 1387.3M.
  const conv1 = 112 * 112 * 7 * 7 * 3 * 64;
  const conv2 = 56 * 56 * (64 * 64 + 9 * 64 * 64 + 64 * 256 + 64 * 256 + 2 * (256 * 64 + 9 * 64 * 64 + 64 * 256));
  const conv3 = 28 * 28 * (256 * 128 + 9 * 128 * 128 + 128 * 512 + 256 * 512 + 3 * (512 * 128 + 9 * 128 * 128 + 128 * 512));
  const conv4 = 14 * 14 * (512 * 256 + 9 * 256 * 256 + 256 * 1024 + 512 * 1024 + 5 * (1024 * 256 + 9 * 256 * 256 + 256 * 1024));
  assert.equal(backboneMacs(224), conv1 + conv2 + conv3 + conv4);
  assert.equal(backboneMacs(224), 3_123_757_056);
  // Convolution cost grows with the area.
  assert.ok(Math.abs(backboneMacs(448) / backboneMacs(224) - 4) < 0.01);
});
