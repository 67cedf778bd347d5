/** Wall time per pipeline stage, in milliseconds, summed over every call. */
export class StageTimer {
  private readonly totals = new Map<string, number>();

  add(stage: string, ms: number): void {
    this.totals.set(stage, (this.totals.get(stage) ?? 0) + ms);
  }

  async time<T>(stage: string, fn: () => Promise<T> | T): Promise<T> {
    const t0 = performance.now();
    try {
      return await fn();
    } finally {
      this.add(stage, performance.now() - t0);
    }
  }

  timeSync<T>(stage: string, fn: () => T): T {
    const t0 = performance.now();
    try {
      return fn();
    } finally {
      this.add(stage, performance.now() - t0);
    }
  }

  merge(other: StageTimer): void {
    for (const [k, v] of other.totals) this.add(k, v);
  }

  toJSON(): Record<string, number> {
    return Object.fromEntries([...this.totals].map(([k, v]) => [k, Math.round(v)]));
  }
}

/** Peak resident set size of this process so far, in MiB (from the kernel's high-water mark). */
export function peakRssMiB(): number {
  return Math.round(process.resourceUsage().maxRSS / 1024);
}

// Stages that move bytes to or from storage; the rest is compute, except waits already counted elsewhere.
const STORAGE_STAGES = new Set(['download', 'upload', 'list', 'load_model']);
const WAIT_STAGES = new Set(['decode_wait']);

/** Where the time of one kind of job went, summed over its jobs. */
export interface JobTimings {
  jobs: number;
  compute_ms: number;
  storage_ms: number;
  /** Time the jobs sat in the queue before a worker took them; null when unknown. */
  queue_wait_ms: number | null;
  by_stage_ms: Record<string, number>;
}

/** When a queued job was added and when a worker took it (BullMQ's timestamp and processedOn). */
export interface QueuedJob {
  timestamp: number;
  processedOn?: number;
}

/**
 * The queue wait of a job: from when it could start (added, or for a flow parent when its last child finished)
 * to when a worker took it. Null when unknown.
 */
export function queueWaitMs(job: QueuedJob | undefined, readySince?: number): number | null {
  if (!job?.processedOn) return null;
  return Math.max(0, job.processedOn - Math.max(job.timestamp, readySince ?? 0));
}

/** One job's stage timings split into compute and storage. */
export function jobTimings(timings: Record<string, number>, queueWait: number | null): JobTimings {
  let compute = 0;
  let storage = 0;
  const byStage: Record<string, number> = {};
  for (const [stage, ms] of Object.entries(timings)) {
    if (stage === 'total') continue;
    byStage[stage] = ms;
    if (STORAGE_STAGES.has(stage)) storage += ms;
    else if (!WAIT_STAGES.has(stage)) compute += ms;
  }
  return { jobs: 1, compute_ms: Math.round(compute), storage_ms: Math.round(storage), queue_wait_ms: queueWait, by_stage_ms: byStage };
}

/** The sum over jobs of one kind; the queue wait is null when any job's is unknown. */
export function sumJobTimings(all: readonly JobTimings[]): JobTimings {
  const byStage: Record<string, number> = {};
  for (const t of all) for (const [k, v] of Object.entries(t.by_stage_ms)) byStage[k] = (byStage[k] ?? 0) + v;
  const waits = all.map((t) => t.queue_wait_ms);
  return {
    jobs: all.reduce((s, t) => s + t.jobs, 0),
    compute_ms: all.reduce((s, t) => s + t.compute_ms, 0),
    storage_ms: all.reduce((s, t) => s + t.storage_ms, 0),
    queue_wait_ms: waits.some((w) => w === null) ? null : waits.reduce((s, w) => s! + w!, 0),
    by_stage_ms: byStage,
  };
}

/** Flat `<job> compute|storage|queue wait` rows for a timings table, jobs in the given order. */
export function jobTimingRows(byJob: Record<string, JobTimings>): Record<string, number> {
  const rows: Record<string, number> = {};
  for (const [job, t] of Object.entries(byJob)) {
    rows[`${job} compute (${t.jobs} job${t.jobs === 1 ? '' : 's'})`] = t.compute_ms;
    rows[`${job} storage`] = t.storage_ms;
    if (t.queue_wait_ms !== null) rows[`${job} queue wait`] = t.queue_wait_ms;
  }
  return rows;
}
