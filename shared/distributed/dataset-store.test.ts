import { test } from 'node:test';
import assert from 'node:assert/strict';
import { UnrecoverableError } from 'bullmq';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createBackbone } from '../backbone/engine.js';
import { getRecipe } from '../features/recipes.js';
import { defaultDatasetDir, defaultWeightsPath } from '../paths.js';
import { extractFeatures } from '../pipeline/extract.js';
import { StageTimer } from '../run/timings.js';
import { NotFoundError, type ObjectStore } from '../storage/object-store.js';
import { UserError } from '../errors.js';
import { checkDatasetKeys, ImageReadError, isImagePath, parseImagesPrefix, storeSources } from './dataset-store.js';

test('checkDatasetKeys: a datasets/<name>/ prefix and normalised keys under it, else unrecoverable', () => {
  assert.doesNotThrow(() => checkDatasetKeys('datasets/bottle/', ['datasets/bottle/train/good/000.png', 'datasets/bottle/test/x y/1.png']));
  const refused: [string, string[], string][] = [
    ['runs/', ['runs/r/embeddings/0000.bin'], 'dataset prefix "runs/": expected "datasets/<name>/"'],
    ['datasets/', ['datasets/a.png'], 'dataset prefix "datasets/": dataset name "" is not a valid key segment: it is empty'],
    ['datasets/../', [], 'dataset prefix "datasets/../": dataset name ".." is not a valid key segment: it must not start with "."'],
    ['datasets/b/', ['datasets/c/train/good/0.png'], 'dataset prefix "datasets/b/": image key "datasets/c/train/good/0.png" is not under it'],
    ['datasets/b/', ['datasets/b/train/../../../runs/x'], 'dataset prefix "datasets/b/": image key "train/../../../runs/x" is not a safe relative path: it contains ".."'],
    ['datasets/b/', ['datasets/b//etc/passwd'], 'dataset prefix "datasets/b/": image key "/etc/passwd" is not a safe relative path: it is absolute'],
    ['datasets/b/', ['datasets/b/./train/good/0.png'], 'dataset prefix "datasets/b/": image key "datasets/b/./train/good/0.png" is not in normal form (expected "datasets/b/train/good/0.png")'],
  ];
  for (const [prefix, keys, message] of refused) {
    assert.throws(() => checkDatasetKeys(prefix, keys), (err: Error) => err instanceof UnrecoverableError && err.message === message, message);
  }
});

test('storeSources: a failed read is remembered as a storage fault; an undecodable image is not', { timeout: 60_000 }, async () => {
  const real = await readFile(join(defaultDatasetDir('bottle'), 'train/good/000.png'));
  const objects = new Map<string, Buffer>([
    ['datasets/b/train/good/000.png', real],
    ['datasets/b/train/good/bad.png', Buffer.from('not an image')],
  ]);
  const store = {
    getObject: async (key: string) => {
      const o = objects.get(key);
      if (!o) throw new NotFoundError('bucket', key);
      return o;
    },
  } as unknown as ObjectStore;
  const keys = ['datasets/b/train/good/000.png', 'datasets/b/train/good/bad.png', 'datasets/b/train/good/gone.png'];
  const src = storeSources(store, 'datasets/b/', keys);
  const backbone = await createBackbone({ engine: 'onnx', weightsPath: defaultWeightsPath() });
  try {
    const results = [];
    for await (const r of extractFeatures(src.sources, { backbone, recipe: getRecipe('paper'), frame: { resize: 256, crop: 224 }, batchSize: 3, timer: new StageTimer() })) {
      results.push(r);
    }
    assert.deepEqual(results.map((r) => r.ok), [true, false, false]);
    assert.doesNotThrow(() => src.throwIfReadFailed('train/good/000.png'));
    assert.doesNotThrow(() => src.throwIfReadFailed('train/good/bad.png'));
    assert.throws(() => src.throwIfReadFailed('train/good/gone.png'), (err: Error) =>
      err instanceof ImageReadError &&
      err.message === 'image "datasets/b/train/good/gone.png" could not be read from the bucket: object "datasets/b/train/good/gone.png" not found in bucket "bucket" (s3://bucket/datasets/b/train/good/gone.png)');
  } finally {
    backbone.dispose();
  }
});

test('parseImagesPrefix: datasets/<name>/[<folder>/] with or without "datasets/", normalised; anything else refused by name', () => {
  assert.deepEqual(parseImagesPrefix('archive'), { datasetPrefix: 'datasets/archive/', prefix: 'datasets/archive/' });
  assert.deepEqual(parseImagesPrefix('datasets/archive/'), { datasetPrefix: 'datasets/archive/', prefix: 'datasets/archive/' });
  assert.deepEqual(parseImagesPrefix('archive/2026-06//line 2'), { datasetPrefix: 'datasets/archive/', prefix: 'datasets/archive/2026-06/line 2/' });
  assert.deepEqual(parseImagesPrefix('datasets/archive/test\\good/'), { datasetPrefix: 'datasets/archive/', prefix: 'datasets/archive/test/good/' });
  const refused: [string, RegExp][] = [
    ['', /^--images "" is not a prefix of images in the bucket: it names no data set \(expected datasets\/<name>\/\[<folder>\/\] or <name>\[\/<folder>\]\)$/],
    ['datasets/', /^--images "datasets\/" is not a prefix of images in the bucket: it names no data set/],
    ['/etc', /^--images "\/etc" is not a prefix of images in the bucket: images prefix "\/etc" is not a safe relative path: it is absolute/],
    ['a/../b', /^--images "a\/..\/b" is not a prefix of images in the bucket: .*it contains "\.\."/],
    ['bad name!/x', /^--images "bad name!\/x" is not a prefix of images in the bucket: dataset name "bad name!" is not a valid key segment/],
  ];
  for (const [arg, message] of refused) {
    assert.throws(() => parseImagesPrefix(arg), (err: Error) => err instanceof UserError && message.test(err.message), arg);
  }
});

test('isImagePath: image extensions in any case, hidden files and folders excluded', () => {
  for (const p of ['a.png', 'x/y/z.JPG', 'scan.jpeg', 'b.tif', 'b.TIFF', 'c.bmp', 'd.webp', 'e.gif']) assert.equal(isImagePath(p), true, p);
  for (const p of ['notes.txt', 'a.png.txt', '.hidden.png', 'x/.cache/a.png', 'png', 'mask_png']) assert.equal(isImagePath(p), false, p);
});
