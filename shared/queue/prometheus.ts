// Prometheus text exposition (format 0.0.4) of what a worker process counts. Pure: the health server gathers
// the numbers at scrape time (worker-runtime.ts) and this module only turns them into text.
//
// Series (every one labelled with the BullMQ queue name):
//   patchcore_worker_jobs_processed_total / _failed_total / _handed_back_total   counters of job attempts
//   patchcore_worker_jobs_running                                                gauge
//   patchcore_worker_job_duration_seconds                                        histogram of handler time
//   patchcore_worker_images_processed_total   images reported by finished jobs (rate() of it is images/s)
//   patchcore_worker_ready                    1 while the worker takes jobs (the /readyz view)
//   patchcore_queue_jobs{state="waiting|active|delayed"}   the queue's backlog, read from Redis per scrape
//   patchcore_queue_scrape_success            0 when that read failed or timed out (the backlog is then absent)
// plus the conventional process_* series (memory, CPU, start time).
import type { QueueName } from './jobs.js';
import type { WorkerMetrics } from './worker-runtime.js';

export const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

export type MetricType = 'counter' | 'gauge' | 'histogram';

export interface MetricSample {
  /** Appended to the family name: '_bucket', '_sum' and '_count' for histograms, '' otherwise. */
  suffix?: '' | '_bucket' | '_sum' | '_count';
  labels?: Readonly<Record<string, string>>;
  value: number;
}

export interface MetricFamily {
  name: string;
  help: string;
  type: MetricType;
  samples: readonly MetricSample[];
}

const METRIC_NAME_RE = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME_RE = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

/** A sample value as Prometheus writes it: +Inf, -Inf, NaN, else the shortest round-trip decimal. */
export function formatValue(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return String(v);
}

const escapeLabelValue = (v: string): string => v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
const escapeHelp = (v: string): string => v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');

function labelText(family: string, labels: Readonly<Record<string, string>> | undefined): string {
  if (!labels) return '';
  const names = Object.keys(labels);
  if (names.length === 0) return '';
  const parts = names.map((n) => {
    if (!LABEL_NAME_RE.test(n) || n.startsWith('__')) throw new Error(`metric ${family}: invalid label name ${JSON.stringify(n)}`);
    return `${n}="${escapeLabelValue(labels[n])}"`;
  });
  return `{${parts.join(',')}}`;
}

/**
 * Renders families as exposition text: HELP and TYPE, then the samples of each family. Throws on an invalid
 * metric or label name, a suffix that does not fit the type, or the same series twice (which scrapers reject).
 */
export function renderMetrics(families: readonly MetricFamily[]): string {
  const lines: string[] = [];
  const seenFamilies = new Set<string>();
  for (const f of families) {
    if (!METRIC_NAME_RE.test(f.name)) throw new Error(`invalid metric name ${JSON.stringify(f.name)}`);
    if (seenFamilies.has(f.name)) throw new Error(`metric ${f.name} is listed twice`);
    seenFamilies.add(f.name);
    lines.push(`# HELP ${f.name} ${escapeHelp(f.help)}`, `# TYPE ${f.name} ${f.type}`);
    const seenSeries = new Set<string>();
    for (const s of f.samples) {
      const suffix = s.suffix ?? '';
      if ((suffix === '') === (f.type === 'histogram')) {
        throw new Error(`metric ${f.name}: a ${f.type} cannot have a sample with suffix "${suffix}"`);
      }
      const series = `${f.name}${suffix}${labelText(f.name, s.labels)}`;
      if (seenSeries.has(series)) throw new Error(`metric ${f.name}: series ${series} appears twice`);
      seenSeries.add(series);
      lines.push(`${series} ${formatValue(s.value)}`);
    }
  }
  return lines.join('\n') + '\n';
}

/**
 * The samples of one histogram: cumulative `_bucket`s with `le` labels (the last is +Inf), `_sum` and `_count`.
 * `counts` holds one count per bound plus the overflow above the last bound (not cumulative), as WorkerMetrics keeps them.
 */
export function histogramSamples(
  name: string,
  bounds: readonly number[],
  counts: readonly number[],
  sum: number,
  labels: Readonly<Record<string, string>> = {},
): MetricSample[] {
  if (counts.length !== bounds.length + 1) {
    throw new Error(`histogram ${name}: ${counts.length} bucket counts for ${bounds.length} bounds (expected bounds + 1)`);
  }
  for (let i = 1; i < bounds.length; i++) {
    if (!(bounds[i] > bounds[i - 1])) throw new Error(`histogram ${name}: bounds must increase, got ${bounds[i - 1]} then ${bounds[i]}`);
  }
  const samples: MetricSample[] = [];
  let cumulative = 0;
  for (let i = 0; i <= bounds.length; i++) {
    cumulative += counts[i];
    const le = i < bounds.length ? formatValue(bounds[i]) : '+Inf';
    samples.push({ suffix: '_bucket', labels: { ...labels, le }, value: cumulative });
  }
  samples.push({ suffix: '_sum', labels, value: sum }, { suffix: '_count', labels, value: cumulative });
  return samples;
}

/** Jobs of one queue by state, as BullMQ's Queue.getJobCounts reports them. */
export interface QueueJobCounts {
  waiting: number;
  active: number;
  delayed: number;
}

export interface WorkerExposition {
  metrics: WorkerMetrics;
  /** Whether the worker takes jobs now (the /readyz answer). */
  ready: boolean;
  /** The queue's backlog read at this scrape; null when Redis did not answer in time. */
  queueCounts: QueueJobCounts | null;
}

export interface ProcessStats {
  residentMemoryBytes: number;
  cpuSeconds: number;
  startTimeSeconds: number;
}

/** The metric families of the workers of one process (each worker is one `queue` label value). */
export function workerMetricFamilies(
  workers: readonly WorkerExposition[],
  durationBounds: readonly number[],
  proc?: ProcessStats,
): MetricFamily[] {
  const byQueue = (pick: (w: WorkerExposition) => number): MetricSample[] =>
    workers.map((w) => ({ labels: { queue: w.metrics.queue }, value: pick(w) }));
  const backlog: MetricSample[] = [];
  for (const w of workers) {
    const c = w.queueCounts;
    if (!c) continue;
    const queue: QueueName = w.metrics.queue;
    backlog.push(
      { labels: { queue, state: 'waiting' }, value: c.waiting },
      { labels: { queue, state: 'active' }, value: c.active },
      { labels: { queue, state: 'delayed' }, value: c.delayed },
    );
  }
  const families: MetricFamily[] = [
    {
      name: 'patchcore_worker_jobs_processed_total',
      help: 'Job attempts whose handler returned.',
      type: 'counter',
      samples: byQueue((w) => w.metrics.processed),
    },
    {
      name: 'patchcore_worker_jobs_failed_total',
      help: 'Job attempts whose handler threw (each retry counts).',
      type: 'counter',
      samples: byQueue((w) => w.metrics.failed),
    },
    {
      name: 'patchcore_worker_jobs_handed_back_total',
      help: 'Jobs handed back to the queue unfinished at shutdown.',
      type: 'counter',
      samples: byQueue((w) => w.metrics.handedBack),
    },
    {
      name: 'patchcore_worker_jobs_running',
      help: 'Jobs running now.',
      type: 'gauge',
      samples: byQueue((w) => w.metrics.running),
    },
    {
      name: 'patchcore_worker_job_duration_seconds',
      help: 'Handler duration of processed and failed job attempts.',
      type: 'histogram',
      samples: workers.flatMap((w) =>
        histogramSamples('patchcore_worker_job_duration_seconds', durationBounds, w.metrics.durationCounts, w.metrics.durationSumSeconds, {
          queue: w.metrics.queue,
        }),
      ),
    },
    {
      name: 'patchcore_worker_images_processed_total',
      help: 'Images reported by processed jobs (the numeric "images" of their results); rate() gives images per second.',
      type: 'counter',
      samples: byQueue((w) => w.metrics.images),
    },
    {
      name: 'patchcore_worker_ready',
      help: '1 while the worker takes jobs (Redis connected, not shutting down), else 0.',
      type: 'gauge',
      samples: byQueue((w) => (w.ready ? 1 : 0)),
    },
    {
      name: 'patchcore_queue_jobs',
      help: 'Jobs in the queue by state, read from Redis at scrape time.',
      type: 'gauge',
      samples: backlog,
    },
    {
      name: 'patchcore_queue_scrape_success',
      help: '1 when the queue counts were read at this scrape, 0 when Redis failed or timed out.',
      type: 'gauge',
      samples: byQueue((w) => (w.queueCounts ? 1 : 0)),
    },
  ];
  if (proc) {
    families.push(
      { name: 'process_resident_memory_bytes', help: 'Resident memory size in bytes.', type: 'gauge', samples: [{ value: proc.residentMemoryBytes }] },
      { name: 'process_cpu_seconds_total', help: 'User and system CPU time spent in seconds.', type: 'counter', samples: [{ value: proc.cpuSeconds }] },
      { name: 'process_start_time_seconds', help: 'Start time of the process since the Unix epoch in seconds.', type: 'gauge', samples: [{ value: proc.startTimeSeconds }] },
    );
  }
  return families;
}
