// Model versions in object storage: models/<category>/<version>/{bank.f32, bank.hnsw, bank.json, manifest.json}
// and the category's `latest` pointer. The manifest is uploaded after the bank files and the pointer moves only
// after the manifest, so a reader that finds either sees a complete model.
import { mkdir, mkdtemp, readdir, readFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { MemoryBank } from '../bank/index.js';
import { checkModelConsistency } from '../model/consistency.js';
import { MANIFEST_FILE, ModelManifestSchema, readManifest, writeManifest, type ModelManifest } from '../model/manifest.js';
import { modelCategoryPrefix, modelKey, modelVersionPrefix } from '../storage/keys.js';
import type { ObjectStore } from '../storage/object-store.js';

const LatestSchema = z.object({ version: z.string(), updatedAt: z.string(), runId: z.string().optional() });
export const latestKey = (category: string) => `${modelCategoryPrefix(category)}latest`;

/** Uploads a saved bank folder and the manifest: bank files first, manifest last. */
export async function uploadModel(
  store: ObjectStore, category: string, version: string, bankDir: string, manifest: ModelManifest,
): Promise<void> {
  for (const file of ['bank.f32', 'bank.hnsw', 'bank.json'] as const) {
    await store.putObject(modelKey(category, version, file), await readFile(join(bankDir, file)));
  }
  await store.putJson(modelKey(category, version, 'manifest.json'), manifest);
}

export async function setLatest(store: ObjectStore, category: string, version: string, runId?: string): Promise<void> {
  await store.putJson(latestKey(category), { version, updatedAt: new Date().toISOString(), runId });
}

/** `version`, or the one `latest` points at; a clear error when the category has no model yet. */
export async function resolveVersion(store: ObjectStore, category: string, version: string): Promise<string> {
  if (version !== 'latest') return version;
  const latest = await store.getManifest(latestKey(category), LatestSchema);
  if (!latest) throw new Error(`category "${category}" has no model yet (no ${latestKey(category)}): train one first`);
  return latest.version;
}

export interface LoadedModel {
  category: string;
  version: string;
  manifest: ModelManifest;
  bank: MemoryBank;
}

/**
 * Downloads a model version into `cacheDir/<category>/<version>` (once: a completed download is renamed into
 * place, so a crash mid-download leaves nothing that looks complete) and loads it.
 */
export async function loadStoredModel(store: ObjectStore, category: string, version: string, cacheDir: string): Promise<LoadedModel> {
  const dir = join(cacheDir, category, version);
  let complete = false;
  try {
    complete = (await readdir(dir)).includes(MANIFEST_FILE);
  } catch {
    complete = false;
  }
  if (!complete) {
    const manifestKey = modelKey(category, version, 'manifest.json');
    const manifest = await store.getManifest(manifestKey, ModelManifestSchema);
    if (!manifest) throw new Error(`model ${category}/${version} does not exist or is incomplete (no ${manifestKey})`);
    await mkdir(join(cacheDir, category), { recursive: true });
    const tmp = await mkdtemp(join(cacheDir, category, `.${version}-`));
    try {
      await store.downloadPrefix(modelVersionPrefix(category, version), tmp);
      writeManifest(tmp, manifest);
      await rm(dir, { recursive: true, force: true });
      try {
        await rename(tmp, dir);
      } catch (err) {
        // Another scorer sharing this cache put the same version in place first: use that one.
        const code = (err as NodeJS.ErrnoException).code;
        if (!((code === 'ENOTEMPTY' || code === 'EEXIST') && (await readdir(dir)).includes(MANIFEST_FILE))) throw err;
        await rm(tmp, { recursive: true, force: true });
      }
    } catch (err) {
      await rm(tmp, { recursive: true, force: true });
      throw err;
    }
  }
  const manifest = readManifest(dir);
  const bank = await MemoryBank.load(dir);
  checkModelConsistency(manifest, bank, `model ${category}/${version}`);
  return { category, version, manifest, bank };
}

/** One loaded model per category/version per process. */
export class ModelCache {
  private readonly models = new Map<string, Promise<LoadedModel>>();

  constructor(private readonly store: ObjectStore, private readonly cacheDir: string) {}

  get(category: string, version: string): Promise<LoadedModel> {
    const id = `${category}/${version}`;
    let m = this.models.get(id);
    if (!m) {
      m = loadStoredModel(this.store, category, version, this.cacheDir);
      m.catch(() => this.models.delete(id));
      this.models.set(id, m);
    }
    return m;
  }
}
