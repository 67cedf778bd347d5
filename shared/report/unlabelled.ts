// The report of an unlabelled scoring run, in pieces whose memory does not grow with the number of images: a score
// histogram over a fixed grid, the N highest scores, streaming score statistics, the rows of results.csv and
// results.jsonl, the histogram plot and the self-contained index.html. Pure: no I/O.
import type { TopLevelSpec } from 'vega-lite';
import { describeThresholdRule, type ThresholdChoice } from '../metrics/threshold.js';
import { colormapCssGradient } from './heatmap.js';
import { escapeHtml, namespaceSvgIds, page } from './html.js';
import { formatNumber, renderSvg } from './plots.js';

/** Counts of scores in `bins` equal bins over [lo, hi]; scores outside are counted in the first or last bin. */
export class ScoreHistogram {
  readonly counts: Float64Array;
  readonly lo: number;
  readonly hi: number;

  constructor(lo: number, hi: number, readonly bins = 40) {
    if (!Number.isFinite(lo) || !Number.isFinite(hi) || !(hi >= lo)) throw new Error(`ScoreHistogram: range [${lo}, ${hi}] is not a finite range`);
    if (!Number.isInteger(bins) || bins < 1) throw new Error(`ScoreHistogram: bins must be a positive integer, got ${bins}`);
    this.lo = lo;
    // A single score value still gets a bin of positive width.
    this.hi = hi > lo ? hi : lo + Math.max(Math.abs(lo) * 1e-6, 1e-6);
    this.counts = new Float64Array(bins);
  }

  add(score: number): void {
    const k = Math.floor(((score - this.lo) / (this.hi - this.lo)) * this.bins);
    this.counts[Math.min(this.bins - 1, Math.max(0, k))]++;
  }

  toJSON(): { start: number; end: number; count: number }[] {
    const w = (this.hi - this.lo) / this.bins;
    return Array.from(this.counts, (count, i) => ({ start: this.lo + i * w, end: i === this.bins - 1 ? this.hi : this.lo + (i + 1) * w, count }));
  }
}

/** Count, mean, population std, min and max of a stream of scores (Welford). */
export class RunningStats {
  count = 0;
  mean = 0;
  #m2 = 0;
  min = Infinity;
  max = -Infinity;

  add(x: number): void {
    this.count++;
    const d = x - this.mean;
    this.mean += d / this.count;
    this.#m2 += d * (x - this.mean);
    if (x < this.min) this.min = x;
    if (x > this.max) this.max = x;
  }

  toJSON(): { count: number; mean: number | null; std: number | null; min: number | null; max: number | null } {
    if (this.count === 0) return { count: 0, mean: null, std: null, min: null, max: null };
    return { count: this.count, mean: this.mean, std: Math.sqrt(this.#m2 / this.count), min: this.min, max: this.max };
  }
}

/** The `n` entries with the highest scores seen (ties: the smaller id first), holding at most 2n at a time. */
export class TopScores<T extends { id: string; score: number }> {
  #items: T[] = [];

  constructor(readonly n: number) {
    if (!Number.isInteger(n) || n < 1) throw new Error(`TopScores: n must be a positive integer, got ${n}`);
  }

  add(item: T): void {
    this.#items.push(item);
    if (this.#items.length >= 2 * this.n) this.#trim();
  }

  #trim(): void {
    this.#items.sort((a, b) => b.score - a.score || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    this.#items.length = Math.min(this.#items.length, this.n);
  }

  /** Highest first. */
  sorted(): T[] {
    this.#trim();
    return [...this.#items];
  }
}

export interface ResultRow {
  /** The image's path relative to its data set. */
  image: string;
  /** Its object key. */
  key: string;
  score: number | null;
  /** score >= threshold; null without a threshold or a score. */
  anomalous: boolean | null;
  /** Object key of the anomaly map's heatmap PNG; null when the image failed. */
  map: string | null;
  /** Why the image has no score. */
  error?: string;
}

export const RESULTS_CSV_HEADER = 'image,score,anomalous,map\n';

function csvField(s: string): string {
  return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

/** One results.csv line: anomalous is 1/0 (as `predicted` in scores.csv), empty when unknown. */
export function resultCsvLine(r: ResultRow): string {
  const anomalous = r.anomalous === null ? '' : r.anomalous ? '1' : '0';
  return `${csvField(r.image)},${r.score === null ? '' : r.score.toPrecision(9)},${anomalous},${r.map === null ? '' : csvField(r.map)}\n`;
}

export function resultJsonLine(r: ResultRow): string {
  return JSON.stringify(r) + '\n';
}

/** Bars of a pre-binned histogram with the threshold as a dashed rule. */
export async function binnedHistogramPlot(bins: { start: number; end: number; count: number }[], threshold: number | null): Promise<string> {
  const layers: TopLevelSpec[] = [
    {
      data: { values: bins },
      mark: { type: 'bar', color: '#4c78a8', binSpacing: 0 },
      encoding: {
        x: { field: 'start', type: 'quantitative', bin: { binned: true }, title: 'image score' },
        x2: { field: 'end' },
        y: { field: 'count', type: 'quantitative', title: 'images', axis: { tickMinStep: 1 } },
      },
    } as TopLevelSpec,
  ];
  if (threshold !== null && Number.isFinite(threshold)) {
    layers.push({
      data: { values: [{ t: threshold }] },
      mark: { type: 'rule', color: '#d62728', strokeDash: [6, 3], strokeWidth: 2 },
      encoding: { x: { field: 't', type: 'quantitative' } },
    } as TopLevelSpec);
  }
  return renderSvg({ title: 'Image score distribution', width: 480, height: 240, layer: layers } as TopLevelSpec);
}

export interface TopImageView {
  rank: number;
  image: string;
  score: number;
  anomalous: boolean | null;
  /** Overlay thumbnail, relative to index.html. */
  gallery: string;
  /** The heatmap PNG, relative to index.html. */
  mapHref: string;
  width: number;
  height: number;
}

export interface UnlabelledPage {
  runId: string;
  modelVersion: string;
  imagesPrefix: string;
  createdAt: string;
  images: number;
  failed: number;
  anomalous: number | null;
  threshold: ThresholdChoice | null;
  /** Why there is no threshold. */
  thresholdNote: string | null;
  stats: ReturnType<RunningStats['toJSON']>;
  histogramSvg: string;
  heatmapRange: readonly [number, number];
  top: TopImageView[];
}

const num = (x: number | null | undefined, digits = 4) => formatNumber(x, digits);

export function renderUnlabelledPage(p: UnlabelledPage): string {
  const rows: [string, string][] = [
    ['run id', p.runId], ['model version', p.modelVersion], ['images', p.imagesPrefix], ['created', p.createdAt],
    ['scored', String(p.images)], ['failed', String(p.failed)],
    ['threshold', p.threshold ? `${num(p.threshold.threshold, 6)} (${describeThresholdRule(p.threshold)})` : `none: ${p.thresholdNote ?? ''}`],
    ['anomalous at the threshold', p.anomalous === null ? 'n/a' : `${p.anomalous} of ${p.images}`],
    ['score mean ± std', `${num(p.stats.mean)} ± ${num(p.stats.std)}`], ['score min / max', `${num(p.stats.min)} / ${num(p.stats.max)}`],
  ];
  const table = `<table class="run">${rows.map(([k, v]) => `<tr><th>${escapeHtml(k)}</th><td>${escapeHtml(v)}</td></tr>`).join('')}</table>`;
  const cards = p.top.map((t) => {
    const verdict = t.anomalous === null ? 'no threshold' : t.anomalous ? '<span class="verdict FP">anomalous</span>' : 'normal';
    return `<figure class="card" data-rank="${t.rank}"><a href="${escapeHtml(t.mapHref)}"><img src="${escapeHtml(t.gallery)}" width="${t.width}" height="${t.height}" ` +
      `alt="${escapeHtml(`${t.image} (score ${num(t.score, 6)})`)}"></a><figcaption>#${t.rank} <code>${escapeHtml(t.image)}</code><br>` +
      `score ${escapeHtml(num(t.score, 6))} · ${verdict}</figcaption></figure>`;
  }).join('\n');
  const [lo, hi] = p.heatmapRange;
  const body = `<header><h1>Unlabelled scoring: ${escapeHtml(p.imagesPrefix)}</h1></header>
<h2>Run</h2>${table}
<p class="note">Data: <a href="results.csv">results.csv</a> · <a href="results.jsonl">results.jsonl</a> · <a href="summary.json">summary.json</a>; every image's heatmap is under maps/.</p>
<h2>Score distribution</h2><figure class="plot" data-plot="score-histogram">${namespaceSvgIds(p.histogramSvg, 'hist')}<figcaption><a href="plots/score-histogram.svg">plots/score-histogram.svg</a>${p.threshold ? ' · dashed: the threshold' : ''}</figcaption></figure>
<h2>Most anomalous images</h2>
<p class="note">Heatmap colours: map value ${escapeHtml(num(lo))}<span class="colourbar" style="background:${colormapCssGradient()}"></span>${escapeHtml(num(hi))} (one range for every image of the run). The ${p.top.length} highest scores, highest first; each links to its heatmap.</p>
<div class="gallery">${cards}</div>
<footer class="note"><p>Scores: higher = more anomalous; an image is anomalous when score &gt;= threshold.</p></footer>`;
  return page(`Unlabelled scoring ${p.runId}`, body);
}
