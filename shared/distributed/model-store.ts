// Model versions in object storage: models/<category>/<version>/{bank.f32, bank.usearch or bank.hnsw, bank.json,
// manifest.json}
// and the category's `latest` pointer.
//
// Publication rules (object-store.ts rule 5; S3 conditional writes):
// - A version is written once. Before any file, the publisher claims the version (claim.json, If-None-Match: *):
//   a second run naming the same version stops before it writes anything; the same run (a retried or duplicate
//   build job) may go on. The manifest, written last and also If-None-Match: *, is the commit point; it lists
//   every bank file with its size and sha256. A published version is never overwritten.
// - `latest` only moves forward: versions are ordered by their run's creation (run.json createdAt; the manifest's
//   createdAt when the run is unknown), then by version id. A publisher reads the pointer and its ETag, writes
//   only when its version is newer, conditional on that ETag, and on 412 reads again.
// - A scorer downloads exactly the files the manifest lists and refuses one whose size or sha256 differs.
// Two builds of the same run compute the same bank from the same embeddings and seed, so a duplicate build that
// races the first one rewrites identical bytes; if they ever differed, the sha256 check refuses the mix.
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { z } from 'zod';
import { MemoryBank } from '../bank/index.js';
import { PermanentError } from '../errors.js';
import { checkModelConsistency } from '../model/consistency.js';
import { MANIFEST_FILE, ModelManifestSchema, readManifest, writeManifest, type ModelManifest } from '../model/manifest.js';
import { modelCategoryPrefix, modelKey, modelVersionPrefix, runManifestKey } from '../storage/keys.js';
import { PreconditionFailedError, type ObjectStore } from '../storage/object-store.js';

/** Every file a bank folder may hold (MemoryBank.listFiles says which a given bank has). */
export const BANK_FILE_NAMES = ['bank.f32', 'bank.usearch', 'bank.hnsw', 'bank.json'] as const;

export const LatestSchema = z.object({
  version: z.string(),
  updatedAt: z.string(),
  runId: z.string().optional(),
  /** The ordering key of `version` (its run's creation time); absent in pointers written before it existed. */
  createdAt: z.string().optional(),
});
export type LatestPointer = z.infer<typeof LatestSchema>;
export const latestKey = (category: string) => `${modelCategoryPrefix(category)}latest`;
/** Who is publishing a version: written before any of its files, If-None-Match: *. */
export const claimKey = (category: string, version: string) => `${modelVersionPrefix(category, version)}claim.json`;
const ClaimSchema = z.object({ runId: z.string().nullable(), claimedAt: z.string() });
const RunCreatedSchema = z.object({ createdAt: z.string() }).passthrough();

export type ModelFileEntry = NonNullable<ModelManifest['files']>[number];

const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
const sameFiles = (a: ModelFileEntry[] | undefined, b: ModelFileEntry[]) =>
  a !== undefined && a.length === b.length && a.every((f, i) => f.name === b[i].name && f.size === b[i].size && f.sha256 === b[i].sha256);

export interface UploadResult {
  /** False when the same content was already published (a retried or duplicate build of the same run). */
  published: boolean;
  files: ModelFileEntry[];
}

/**
 * Publishes a saved bank folder as `version`: claim, bank files, then the manifest (with `files`) as the commit
 * point. Throws PermanentError when the version exists with other content or is claimed by another run.
 * `publisher.runId` identifies the build; without it, any build without one counts as the same publisher.
 */
export async function uploadModel(
  store: ObjectStore, category: string, version: string, bankDir: string, manifest: ModelManifest,
  publisher: { runId?: string } = {},
): Promise<UploadResult> {
  const manifestKey = modelKey(category, version, 'manifest.json');
  const bodies = new Map<string, Buffer>();
  const files: ModelFileEntry[] = [];
  const names = await MemoryBank.listFiles(bankDir);
  for (const name of names) {
    const body = await readFile(join(bankDir, name));
    bodies.set(name, body);
    files.push({ name, size: body.length, sha256: sha256(body) });
  }
  const existing = await store.getManifest(manifestKey, ModelManifestSchema);
  if (existing) {
    if (sameFiles(existing.files, files)) return { published: false, files };
    throw new PermanentError(`model version ${category}/${version} already exists (${manifestKey}); a version is never overwritten: choose another version`);
  }
  const runId = publisher.runId ?? null;
  try {
    await store.putJson(claimKey(category, version), { runId, claimedAt: new Date().toISOString() }, { ifNoneMatch: '*' });
  } catch (err) {
    if (!(err instanceof PreconditionFailedError)) throw err;
    const claim = await store.getManifest(claimKey(category, version), ClaimSchema);
    if (claim && claim.runId !== runId) {
      throw new PermanentError(`model version ${category}/${version} is being published by run ${claim.runId ?? '(unknown)'} (since ${claim.claimedAt}); this run (${runId ?? 'unknown'}) cannot write it`);
    }
  }
  for (const name of names) {
    await store.putObject(modelKey(category, version, name as (typeof BANK_FILE_NAMES)[number]), bodies.get(name)!);
  }
  try {
    await store.putJson(manifestKey, { ...manifest, files }, { ifNoneMatch: '*' });
  } catch (err) {
    if (!(err instanceof PreconditionFailedError)) throw err;
    const now = await store.getManifest(manifestKey, ModelManifestSchema);
    if (now && sameFiles(now.files, files)) return { published: false, files };
    throw new PermanentError(`model version ${category}/${version} was published by another build meanwhile; a version is never overwritten`);
  }
  return { published: true, files };
}

/** Whether anything (a claim or a manifest) already holds `version`: a new run must not name it. */
export async function versionTaken(store: ObjectStore, category: string, version: string): Promise<boolean> {
  return (await store.exists(modelKey(category, version, 'manifest.json'))) || (await store.exists(claimKey(category, version)));
}

/** The ordering key of a version: its run's creation, else the manifest's; null when the version has no manifest. */
export async function versionCreatedAt(store: ObjectStore, category: string, version: string, runId?: string): Promise<string | null> {
  if (runId) {
    const run = await store.getManifest(runManifestKey(runId), RunCreatedSchema).catch(() => null);
    if (run) return run.createdAt;
  }
  const manifest = await store.getManifest(modelKey(category, version, 'manifest.json'), ModelManifestSchema);
  return manifest?.createdAt ?? null;
}

/** Whether (createdAt, version) `a` comes after `b`: time first (as instants), the version id on a tie. */
export function isNewer(a: { createdAt: string; version: string }, b: { createdAt: string; version: string }): boolean {
  const ta = Date.parse(a.createdAt);
  const tb = Date.parse(b.createdAt);
  if (ta !== tb) return ta > tb;
  return a.version > b.version;
}

export interface SetLatestResult {
  /** Whether the pointer now names `version` because of this call. */
  moved: boolean;
  /** The version the pointer names afterwards. */
  latest: string;
}

/**
 * Moves `latest` to `version` if it is newer than what the pointer names (compare-and-swap on the pointer's
 * ETag; re-read on conflict). The version must be published (its manifest exists).
 */
export async function setLatest(store: ObjectStore, category: string, version: string, runId?: string): Promise<SetLatestResult> {
  const createdAt = await versionCreatedAt(store, category, version, runId);
  if (createdAt === null) throw new Error(`cannot point latest at ${category}/${version}: the version has no manifest`);
  const mine = { createdAt, version };
  const key = latestKey(category);
  for (let attempt = 1; ; attempt++) {
    const current = await store.getWithEtag(key);
    let conditions: { ifNoneMatch?: '*'; ifMatch?: string } = { ifNoneMatch: '*' };
    if (current) {
      const pointer = LatestSchema.parse(JSON.parse(current.body.toString('utf8')));
      if (pointer.version === version) return { moved: false, latest: version };
      const theirs = pointer.createdAt ?? (await versionCreatedAt(store, category, pointer.version, pointer.runId));
      if (theirs !== null && !isNewer(mine, { createdAt: theirs, version: pointer.version })) return { moved: false, latest: pointer.version };
      conditions = { ifMatch: current.etag };
    }
    try {
      await store.putJson(key, { version, updatedAt: new Date().toISOString(), runId, createdAt } satisfies LatestPointer, conditions);
      return { moved: true, latest: version };
    } catch (err) {
      if (!(err instanceof PreconditionFailedError) || attempt >= 50) throw err;
      await sleep(Math.random() * Math.min(1000, 20 * 2 ** Math.min(attempt, 6)));
    }
  }
}

/** The pointer of a category, or null when it has none. */
export async function readLatest(store: ObjectStore, category: string): Promise<LatestPointer | null> {
  return store.getManifest(latestKey(category), LatestSchema);
}

/** `version`, or the one `latest` points at; a clear error when the category has no model yet. */
export async function resolveVersion(store: ObjectStore, category: string, version: string): Promise<string> {
  if (version !== 'latest') return version;
  const latest = await readLatest(store, category);
  if (!latest) throw new Error(`category "${category}" has no model yet (no ${latestKey(category)}): train one first`);
  return latest.version;
}

export interface LoadedModel {
  category: string;
  version: string;
  manifest: ModelManifest;
  bank: MemoryBank;
}

function sizeMismatch(what: string, manifest: ModelManifest, name: string, got: number, want: number): Error {
  const expected = name === 'bank.f32' && manifest.bank.count * manifest.bank.dim * 4 === want
    ? `count x dim x 4 = ${manifest.bank.count} x ${manifest.bank.dim} x 4 = ${want}`
    : `${want} (the manifest's size)`;
  return new PermanentError(`${what}: ${name} has ${got} bytes, expected ${expected}`);
}

/** Downloads the files the manifest lists into `dir`, refusing any whose size or sha256 differs from it. */
async function downloadListedFiles(store: ObjectStore, category: string, version: string, manifest: ModelManifest, dir: string): Promise<void> {
  const what = `model ${category}/${version}`;
  for (const f of manifest.files!) {
    if (!(BANK_FILE_NAMES as readonly string[]).includes(f.name)) throw new PermanentError(`${what}: the manifest lists an unknown file ${JSON.stringify(f.name)}`);
    const key = modelKey(category, version, f.name as (typeof BANK_FILE_NAMES)[number]);
    // Size first (HEAD): a file of the wrong size is refused before it is downloaded.
    const info = await store.head(key);
    if (!info) throw new PermanentError(`${what}: ${key} is missing`);
    if (info.size !== f.size) throw sizeMismatch(what, manifest, f.name, info.size, f.size);
    const body = await store.getObject(key);
    if (body.length !== f.size) throw sizeMismatch(what, manifest, f.name, body.length, f.size);
    const digest = sha256(body);
    if (digest !== f.sha256) {
      throw new PermanentError(`${what}: ${f.name} in storage does not match the manifest (sha256 ${digest}, the manifest records ${f.sha256}): it was altered after publication`);
    }
    await writeFile(join(dir, f.name), body);
  }
}

/**
 * Downloads a model version into `cacheDir/<category>/<version>` (once: a completed download is renamed into
 * place, so a crash mid-download leaves nothing that looks complete) and loads it. Versions are immutable, so a
 * cached copy stays valid; its file sizes are checked against the manifest on every load.
 */
export async function loadStoredModel(store: ObjectStore, category: string, version: string, cacheDir: string): Promise<LoadedModel> {
  const dir = join(cacheDir, category, version);
  let complete = false;
  try {
    complete = (await readdir(dir)).includes(MANIFEST_FILE);
  } catch {
    complete = false;
  }
  if (complete) {
    // A cached copy damaged on the local disk is downloaded again.
    const cached = readManifest(dir);
    for (const f of cached.files ?? []) {
      const size = await stat(join(dir, f.name)).then((s) => s.size, () => -1);
      if (size !== f.size) complete = false;
    }
  }
  if (!complete) {
    const manifestKey = modelKey(category, version, 'manifest.json');
    const manifest = await store.getManifest(manifestKey, ModelManifestSchema);
    if (!manifest) throw new Error(`model ${category}/${version} does not exist or is incomplete (no ${manifestKey})`);
    await mkdir(join(cacheDir, category), { recursive: true });
    const tmp = await mkdtemp(join(cacheDir, category, `.${version}-${randomBytes(3).toString('hex')}-`));
    try {
      if (manifest.files) await downloadListedFiles(store, category, version, manifest, tmp);
      else await store.downloadPrefix(modelVersionPrefix(category, version), tmp); // published before `files` existed
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
