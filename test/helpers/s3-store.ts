// For test files that need object storage: a real S3-compatible server (the embedded s3rver) with one bucket and
// an ObjectStore on it, started before the file's tests and stopped after them.
import { after, before } from 'node:test';
import { startS3rver, type S3Server } from '../../shared/embedded/s3-server.js';
import { storageConfigFromEnv } from '../../shared/storage/config.js';
import { ObjectStore } from '../../shared/storage/object-store.js';

/**
 * Registers the file's before/after hooks; `started` receives the server and the store once the bucket exists, and
 * is where a file sets up what needs them (node:test does not order a file's own `before` hooks after this one).
 */
export function useS3Store(bucket: string, started: (s3: S3Server, store: ObjectStore) => void | Promise<void>): void {
  let s3: S3Server | undefined;
  let store: ObjectStore | undefined;
  before(async () => {
    s3 = await startS3rver(bucket);
    store = new ObjectStore(storageConfigFromEnv(s3.env));
    await store.ensureBucket();
    await started(s3, store);
  });
  after(async () => {
    store?.destroy();
    await s3?.stop();
  });
}
