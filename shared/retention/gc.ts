// Retention: what may leave the bucket, decided from the bucket itself plus (optionally) the queues' view of
// which runs are still going. Without it the bucket only grows: 3.2 MB of embeddings per training image per run,
// score maps, every model version and report.
//
// Rules (RetentionSettings):
// - A run's intermediates (runs/<run>/embeddings/, reduce/, scores/, maps/) go once its output is published (the model
//   version's manifest; the report's index.html, written last), or once nothing of the run changed for graceMs.
// - Per category the newest keepVersions complete model versions stay (ordered by manifest createdAt, then
//   version id); never the one `latest` names, nor one an unfinished evaluation uses. A version without a
//   manifest (a crashed publication) goes after graceMs.
// - Per category the newest keepReports evaluation reports stay; an older report goes with its run's folder.
//   A training run's folder goes once its version is gone.
// - Nothing of a run the queues still hold (waiting, active, delayed) is touched.
// A model version is deleted manifest first, so a reader sees it as absent, never as half there.
import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { z } from 'zod';
import { latestKey, LatestSchema } from '../distributed/model-store.js';
import { INDEX_QUEUE, REPORT_QUEUE, SCORE_QUEUE } from '../queue/jobs.js';
import { datasetsRoot, modelsRoot, modelVersionPrefix, reportPrefix, reportsRoot, runPrefix, runsRoot } from '../storage/keys.js';
import type { ListedObject, ObjectStore } from '../storage/object-store.js';

export interface RetentionSettings {
  /** Complete model versions kept per category (besides latest and versions in use). */
  keepVersions: number;
  /** Evaluation reports kept per category. */
  keepReports: number;
  /** How long an unfinished run's intermediates, or an unpublished version, may sit unchanged. */
  graceMs: number;
}

export const DEFAULT_RETENTION: Readonly<RetentionSettings> = Object.freeze({ keepVersions: 5, keepReports: 20, graceMs: 24 * 3600_000 });

const positiveInt = (name: string, v: string, min: number) => {
  const n = Number(v);
  if (!/^\d+$/.test(v.trim()) || n < min) throw new Error(`${name} must be an integer of at least ${min}, got "${v}"`);
  return n;
};

/**
 * GC_KEEP_VERSIONS, GC_KEEP_REPORTS, GC_GRACE_MS and GC_INTERVAL_MS (0 or unset: no periodic gc in the worker).
 * Blank counts as unset; a bad value throws naming the variable.
 */
export function retentionSettingsFromEnv(env: Record<string, string | undefined> = process.env): RetentionSettings & { intervalMs: number } {
  const get = (k: string) => (env[k]?.trim() ? env[k]!.trim() : undefined);
  return {
    keepVersions: get('GC_KEEP_VERSIONS') ? positiveInt('GC_KEEP_VERSIONS', get('GC_KEEP_VERSIONS')!, 1) : DEFAULT_RETENTION.keepVersions,
    keepReports: get('GC_KEEP_REPORTS') ? positiveInt('GC_KEEP_REPORTS', get('GC_KEEP_REPORTS')!, 1) : DEFAULT_RETENTION.keepReports,
    graceMs: get('GC_GRACE_MS') ? positiveInt('GC_GRACE_MS', get('GC_GRACE_MS')!, 0) : DEFAULT_RETENTION.graceMs,
    intervalMs: get('GC_INTERVAL_MS') ? positiveInt('GC_INTERVAL_MS', get('GC_INTERVAL_MS')!, 0) : 0,
  };
}

/** What the queues still work on: run ids, and "category/version" of models unfinished evaluations use. */
export interface InUse {
  runs: Set<string>;
  models: Set<string>;
}

const UNFINISHED = ['waiting', 'active', 'delayed', 'prioritized', 'waiting-children'] as const;

/** Reads the unfinished training and evaluation jobs from the queues. */
export async function inUseFromQueues(connection: Redis, prefix: string): Promise<InUse> {
  const runs = new Set<string>();
  const models = new Set<string>();
  for (const name of [INDEX_QUEUE, REPORT_QUEUE, SCORE_QUEUE]) {
    const q = new Queue(name, { connection, prefix, skipMetasUpdate: true });
    q.on('error', () => {});
    try {
      for (const job of await q.getJobs([...UNFINISHED])) {
        const d = job?.data as { runId?: string; model?: { category?: string; version?: string }; category?: string; version?: string } | undefined;
        if (!d?.runId) continue;
        runs.add(d.runId);
        if (d.model?.category && d.model.version) models.add(`${d.model.category}/${d.model.version}`);
      }
    } finally {
      await q.close();
    }
  }
  return { runs, models };
}

export interface GcAction {
  /** The folder (or key) deleted. */
  target: string;
  reason: string;
  objects: number;
  bytes: number;
}

export interface GcReport {
  dryRun: boolean;
  deleted: GcAction[];
  deletedBytes: number;
  /** Versions kept only because they are latest or in use. */
  protected: string[];
}

const RunSchema = z.object({
  kind: z.enum(['training', 'evaluation']),
  category: z.string(),
  version: z.string().optional(),
  createdAt: z.string(),
}).passthrough();
const ManifestHead = z.object({ createdAt: z.string() }).passthrough();

interface Group {
  objects: ListedObject[];
  bytes: number;
  newest: number;
}

async function groupBy(store: ObjectStore, root: string, depth: number): Promise<Map<string, Group>> {
  const groups = new Map<string, Group>();
  for await (const o of store.list(root)) {
    const parts = o.key.slice(root.length).split('/');
    if (parts.length <= depth) continue; // e.g. models/<category>/latest
    const id = parts.slice(0, depth).join('/');
    let g = groups.get(id);
    if (!g) groups.set(id, (g = { objects: [], bytes: 0, newest: 0 }));
    g.objects.push(o);
    g.bytes += o.size;
    g.newest = Math.max(g.newest, o.lastModified?.getTime() ?? Date.now());
  }
  return groups;
}

const sum = (objects: ListedObject[]) => objects.reduce((s, o) => s + o.size, 0);

/** Applies the retention rules once; with dryRun, only says what it would delete. */
export async function collectGarbage(
  store: ObjectStore, settings: RetentionSettings,
  opts: { dryRun?: boolean; inUse?: InUse; now?: number } = {},
): Promise<GcReport> {
  const now = opts.now ?? Date.now();
  const inUse = opts.inUse ?? { runs: new Set<string>(), models: new Set<string>() };
  const dryRun = opts.dryRun ?? false;
  const report: GcReport = { dryRun, deleted: [], deletedBytes: 0, protected: [] };
  const stale = (g: Group) => now - g.newest > settings.graceMs;
  const remove = async (target: string, reason: string, objects: ListedObject[], firstKey?: string) => {
    report.deleted.push({ target, reason, objects: objects.length, bytes: sum(objects) });
    report.deletedBytes += sum(objects);
    if (dryRun) return;
    if (firstKey) await store.delete(firstKey);
    await store.deletePrefix(target);
  };

  const runs = await groupBy(store, runsRoot, 1);
  const versions = await groupBy(store, modelsRoot, 2);
  const reports = await groupBy(store, reportsRoot, 1);
  const runInfo = new Map<string, z.infer<typeof RunSchema>>();
  for (const runId of runs.keys()) {
    const info = await store.getManifest(`${runPrefix(runId)}run.json`, RunSchema).catch(() => null);
    if (info) runInfo.set(runId, info);
  }

  const trainingRunOfVersion = new Map<string, string>();
  for (const [runId, info] of runInfo) if (info.kind === 'training' && info.version) trainingRunOfVersion.set(`${info.category}/${info.version}`, runId);

  // Model versions, per category, ordered as `latest` orders them: by their run's creation, else the manifest's.
  const byCategory = new Map<string, { version: string; group: Group; createdAt: string | null }[]>();
  for (const [id, group] of versions) {
    const [category, version] = id.split('/');
    const hasManifest = group.objects.some((o) => o.key.endsWith('/manifest.json'));
    let createdAt: string | null = null;
    if (hasManifest) {
      const run = trainingRunOfVersion.get(id);
      createdAt = (run ? runInfo.get(run)?.createdAt : undefined)
        ?? (await store.getManifest(`${modelVersionPrefix(category, version)}manifest.json`, ManifestHead).catch(() => null))?.createdAt
        ?? null;
    }
    if (!byCategory.has(category)) byCategory.set(category, []);
    byCategory.get(category)!.push({ version, group, createdAt });
  }
  // Models an evaluation still needs: from the queues, and (without them) evaluations with no report yet that are
  // within the grace period.
  const modelsInUse = new Set(inUse.models);
  for (const [runId, info] of runInfo) {
    if (info.kind !== 'evaluation' || !info.version) continue;
    const hasReport = reports.get(runId)?.objects.some((o) => o.key.endsWith('/index.html')) ?? false;
    if (inUse.runs.has(runId) || (!hasReport && !stale(runs.get(runId)!))) modelsInUse.add(`${info.category}/${info.version}`);
  }
  const goneVersions = new Set<string>();
  for (const [category, list] of byCategory) {
    const latest = await store.getManifest(latestKey(category), LatestSchema).catch(() => null);
    const complete = list.filter((v) => v.createdAt !== null); // a manifest without a readable createdAt is left alone
    complete.sort((a, b) => (Date.parse(b.createdAt!) - Date.parse(a.createdAt!)) || (a.version < b.version ? 1 : a.version > b.version ? -1 : 0));
    for (const [i, v] of complete.entries()) {
      if (i < settings.keepVersions) continue;
      const id = `${category}/${v.version}`;
      if (v.version === latest?.version || modelsInUse.has(id)) {
        report.protected.push(id);
        continue;
      }
      goneVersions.add(id);
      await remove(modelVersionPrefix(category, v.version), `beyond the newest ${settings.keepVersions} versions of ${category}`, v.group.objects,
        `${modelVersionPrefix(category, v.version)}manifest.json`);
    }
    for (const v of list.filter((x) => !x.group.objects.some((o) => o.key.endsWith('/manifest.json')))) {
      const id = `${category}/${v.version}`;
      const run = trainingRunOfVersion.get(id);
      if (!stale(v.group) || (run && inUse.runs.has(run)) || v.version === latest?.version) continue;
      goneVersions.add(id);
      await remove(modelVersionPrefix(category, v.version), `unpublished (no manifest) for longer than ${settings.graceMs} ms`, v.group.objects);
    }
  }

  // Reports, per category: the newest keepReports stay.
  const reportsByCategory = new Map<string, { runId: string; at: number }[]>();
  for (const [runId, group] of reports) {
    const info = runInfo.get(runId);
    const category = info?.category ?? '(unknown)';
    if (!reportsByCategory.has(category)) reportsByCategory.set(category, []);
    reportsByCategory.get(category)!.push({ runId, at: info ? Date.parse(info.createdAt) : group.newest });
  }
  const goneRuns = new Set<string>();
  for (const [category, list] of reportsByCategory) {
    list.sort((a, b) => b.at - a.at || (a.runId < b.runId ? 1 : -1));
    for (const r of list.slice(settings.keepReports)) {
      if (inUse.runs.has(r.runId)) continue;
      await remove(reportPrefix(r.runId), `beyond the newest ${settings.keepReports} reports of ${category}`, reports.get(r.runId)!.objects);
      goneRuns.add(r.runId);
    }
  }

  // Runs: intermediates once published (or stale); the whole folder once its output is gone.
  for (const [runId, group] of runs) {
    if (inUse.runs.has(runId)) continue;
    const info = runInfo.get(runId);
    const prefix = runPrefix(runId);
    const versionId = info?.version ? `${info.category}/${info.version}` : null;
    const versionGroup = versionId ? versions.get(versionId) : undefined;
    const published = info?.kind === 'training'
      ? (versionGroup?.objects.some((o) => o.key.endsWith('/manifest.json')) ?? false) && !goneVersions.has(versionId!)
      : reports.get(runId)?.objects.some((o) => o.key.endsWith('/index.html')) ?? false;
    // An evaluation without a report past the grace period failed or was abandoned: nothing will come of it.
    const outputGone = info?.kind === 'training'
      ? versionId !== null && (goneVersions.has(versionId) || !versionGroup)
      : goneRuns.has(runId) || !reports.has(runId);
    if (outputGone && (goneRuns.has(runId) || goneVersions.has(versionId ?? '') || stale(group))) {
      const why = info?.kind === 'training' ? 'its model version is gone' : reports.has(runId) ? 'its report is gone' : 'no report came of it within the grace period';
      await remove(prefix, why, group.objects);
      continue;
    }
    if (!info && stale(group)) {
      await remove(prefix, 'a run without run.json, unchanged beyond the grace period', group.objects);
      continue;
    }
    const intermediates = group.objects.filter((o) => /^runs\/[^/]+\/(embeddings|reduce|scores|maps)\//.test(o.key));
    if (intermediates.length === 0) continue;
    if (published || stale(group)) {
      for (const sub of ['embeddings/', 'reduce/', 'scores/', 'maps/']) {
        const objs = intermediates.filter((o) => o.key.startsWith(prefix + sub));
        if (objs.length) await remove(prefix + sub, published ? 'the run\'s output is published' : `unfinished, unchanged for longer than ${settings.graceMs} ms`, objs);
      }
    }
  }
  return report;
}

/** Bytes in the bucket, in total and per top-level folder (datasets, runs, models, reports, other): the usage gauge. */
export async function bucketUsage(store: ObjectStore): Promise<{ total: number; objects: number; byRoot: Record<string, number> }> {
  const byRoot: Record<string, number> = { datasets: 0, runs: 0, models: 0, reports: 0, other: 0 };
  let total = 0;
  let objects = 0;
  const roots = [datasetsRoot, runsRoot, modelsRoot, reportsRoot];
  for await (const o of store.list('')) {
    const root = roots.find((r) => o.key.startsWith(r));
    byRoot[root ? root.slice(0, -1) : 'other'] += o.size;
    total += o.size;
    objects++;
  }
  return { total, objects, byRoot };
}

/**
 * The worker setting: runs collectGarbage every `intervalMs` (with the queues' view of what is in use) and reports
 * bucket usage after each pass. Returns stop(). Errors are logged and the next pass tries again.
 */
export function startRetentionLoop(opts: {
  store: ObjectStore; connection: Redis; prefix: string; settings: RetentionSettings; intervalMs: number;
  log: { info(o: object, m: string): void; warn(o: object, m: string): void };
  onUsage?: (usage: Awaited<ReturnType<typeof bucketUsage>>) => void;
}): { stop(): Promise<void> } {
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> = Promise.resolve();
  const pass = async () => {
    try {
      const inUse = await inUseFromQueues(opts.connection, opts.prefix);
      const r = await collectGarbage(opts.store, opts.settings, { inUse });
      if (r.deleted.length) opts.log.info({ deleted: r.deleted.length, bytes: r.deletedBytes }, 'gc pass');
      opts.onUsage?.(await bucketUsage(opts.store));
    } catch (err) {
      opts.log.warn({ err }, 'gc pass failed; retrying at the next interval');
    }
  };
  const schedule = () => {
    if (stopped) return;
    timer = setTimeout(() => {
      running = pass().finally(schedule);
    }, opts.intervalMs);
    timer.unref();
  };
  schedule();
  return {
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await running;
    },
  };
}
