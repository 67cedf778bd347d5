// Init container of the pods that need the ResNet-50 weights (feature worker, scorer, retraining job). The
// weights are not in the image (their licence), so they live in the bucket: this copies the object
// $WEIGHTS_OBJECT_KEY to $PATCHCORE_WEIGHTS (an emptyDir shared with the main container), with the workers' own
// S3_* settings and storage client, and refuses a file whose sha256 is not $WEIGHTS_SHA256 (required: a bucket
// writable by mistake must not be able to swap the backbone of every worker).
// Runs in the patchcore image from its working directory (/app), mounted from the ConfigMap patchcore-scripts:
//   node --import tsx /opt/patchcore/fetch-weights.mjs
import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, rename, rm, stat } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { pathToFileURL } from 'node:url';

const app = (path) => import(pathToFileURL(join(process.cwd(), path)).href);
const log = (msg, fields = {}) => process.stderr.write(JSON.stringify({ name: 'fetch-weights', msg, ...fields }) + '\n');

async function main() {
  const key = process.env.WEIGHTS_OBJECT_KEY?.trim();
  const target = process.env.PATCHCORE_WEIGHTS?.trim();
  const expected = process.env.WEIGHTS_SHA256?.trim().toLowerCase();
  if (!key) throw new Error('WEIGHTS_OBJECT_KEY is not set: the object key of the weights file in the bucket');
  if (!target) throw new Error('PATCHCORE_WEIGHTS is not set: where the weights file goes');
  if (!expected) throw new Error('WEIGHTS_SHA256 is not set: the sha256 the weights file must have (sha256sum <file>)');
  if (!/^[0-9a-f]{64}$/.test(expected)) throw new Error(`WEIGHTS_SHA256 "${expected}" is not a sha256 (64 hex digits)`);
  const { storageConfigFromEnv } = await app('shared/storage/config.ts');
  const { ObjectStore } = await app('shared/storage/object-store.ts');
  const config = storageConfigFromEnv(process.env);
  const store = new ObjectStore(config);
  const file = resolve(target);
  const partial = `${file}.partial`;
  try {
    await mkdir(dirname(file), { recursive: true });
    const hash = createHash('sha256');
    const started = performance.now();
    await pipeline(
      await store.getStream(key),
      async function* (source) {
        for await (const chunk of source) {
          hash.update(chunk);
          yield chunk;
        }
      },
      createWriteStream(partial),
    );
    const sha256 = hash.digest('hex');
    if (sha256 !== expected) {
      throw new Error(`s3://${config.bucket}/${key} has sha256 ${sha256}, but WEIGHTS_SHA256 is ${expected}`);
    }
    await rename(partial, file);
    const { size } = await stat(file);
    log('weights ready', { bucket: config.bucket, key, file, bytes: size, sha256, seconds: Math.round(performance.now() - started) / 1000 });
  } catch (err) {
    await rm(partial, { force: true });
    throw err;
  } finally {
    store.destroy();
  }
}

main().catch((err) => {
  log('cannot fetch the weights', { error: err instanceof Error ? err.message : String(err) });
  process.exitCode = 1;
});
