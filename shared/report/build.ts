// Builds the evaluation report through a writer (local folder or object store): index.html (inline CSS and
// SVG plots), plots/*.svg, metrics.json, scores.csv and a capped, paged gallery of heatmap thumbnails.
// Thumbnails are rendered one at a time and handed to the writer before the next image is read, so memory
// stays flat however many images there are; index.html is written last, once everything it links exists.
import { mkdir, writeFile } from 'node:fs/promises';
import sharp from 'sharp';
import { dirname, isAbsolute, join, normalize } from 'node:path';
import { confusionAt, rocAuc, rocCurve, type Confusion, type PixelHistogram } from '../metrics/index.js';
import type { EvaluationMetrics } from '../evaluation/types.js';
import { renderOverlay, DEFAULT_THUMBNAIL_SIZE } from './heatmap.js';
import {
  renderGalleryPage, renderIndexPage, summaryTable,
  type GalleryItem, type MethodView, type PlotView, type RunInfo, type SummaryColumn,
} from './html.js';
import {
  boxPlot, confusionPlot, groupScores, histogramPlot, imageRocPlot, kdePlot, pixelRocPlot, rocComparisonPlot,
  type CurvePoints,
} from './plots.js';
import type { ThresholdChoice } from '../metrics/threshold.js';

export type { RunInfo } from './html.js';

/** One scored test image as the pipeline hands it over. */
export interface ReportImage {
  id: string;
  defectType: string;
  label: 0 | 1;
  score: number;
  /** Reads the original image file; called only for gallery images, one at a time. */
  image?: () => Promise<Buffer>;
  /** Reads the image's anomaly map and ground truth; called only for gallery images, one at a time. */
  heatmap?: () => Promise<Heatmap | null>;
}

/** An anomaly map and its ground truth over the whole image (the frame's resized resolution), height x width. */
export interface Heatmap {
  /** Pixels the model did not see hold -Infinity. */
  map: Float32Array | null;
  /** 0/1 ground truth, or null when unknown. */
  mask?: Uint8Array | null;
  height: number;
  width: number;
}

export interface ReportWriter {
  put(relPath: string, body: Buffer | string, contentType: string): Promise<void>;
}

/** One method's results on the data set. */
export interface MethodResult {
  name: string;
  images: readonly ReportImage[];
  metrics: EvaluationMetrics;
  /** The decision threshold; default: metrics.threshold as F1-max. */
  threshold?: ThresholdChoice | null;
  /** The merged pixel summary: the pixel ROC and, by default, the heatmaps' colour range (its min and max). */
  pixels?: PixelHistogram | null;
  /** Shared colour range of the heatmaps; default: the pixel summary's value range. */
  heatmapRange?: readonly [number, number] | null;
}

export interface ReportOptions {
  title?: string;
  /** Gallery images per page (index.html holds page 1). Default 48. */
  galleryPageSize?: number;
  /** Gallery pages at most; further images are only in scores.csv. Default 5. */
  galleryMaxPages?: number;
  /** Longest side of a gallery thumbnail. Default 224. */
  thumbnailSize?: number;
}

export interface ReportInput extends Omit<MethodResult, 'name'> {
  run: RunInfo;
  /** Names the method in headings; default 'model'. */
  name?: string;
  options?: ReportOptions;
}

export interface ComparisonInput {
  run: RunInfo;
  methods: readonly MethodResult[];
  options?: ReportOptions;
}

export interface ReportSummary {
  /** Every path written, in order. */
  files: string[];
  indexBytes: number;
  galleryImages: number;
  galleryPages: number;
}

const HTML = 'text/html; charset=utf-8';
const ROC_POINTS = 200;

/** A writer into a local folder (created as needed). */
export function localFolderWriter(root: string): ReportWriter {
  return {
    async put(relPath, body) {
      const target = join(root, checkRelPath(relPath));
      await mkdir(dirname(target), { recursive: true });
      await writeFile(target, body);
    },
  };
}

function checkRelPath(relPath: string): string {
  const n = normalize(relPath);
  if (relPath === '' || isAbsolute(relPath) || n.startsWith('..') || relPath.includes('\\')) {
    throw new Error(`report path "${relPath}" must be relative and stay inside the report folder`);
  }
  return n;
}

/** Records what was written, for the summary. */
class TrackingWriter implements ReportWriter {
  readonly files: string[] = [];
  constructor(private readonly inner: ReportWriter) {}
  async put(relPath: string, body: Buffer | string, contentType: string): Promise<void> {
    checkRelPath(relPath);
    await this.inner.put(relPath, body, contentType);
    this.files.push(relPath);
  }
}

function checkImages(images: readonly ReportImage[], method: string): void {
  if (images.length === 0) throw new Error(`report for "${method}": images is empty`);
  images.forEach((img, i) => {
    const where = `report for "${method}": images[${i}] ("${img.id}")`;
    if (typeof img.id !== 'string' || img.id === '') throw new Error(`report for "${method}": images[${i}] has no id`);
    if (!Number.isFinite(img.score)) throw new Error(`${where}: score is ${img.score}, expected a finite number`);
    if (img.label !== 0 && img.label !== 1) throw new Error(`${where}: label is ${img.label}, expected 0 or 1`);
  });
}

function checkOptions(o: ReportOptions): Required<Omit<ReportOptions, 'title'>> {
  const r = {
    galleryPageSize: o.galleryPageSize ?? 48,
    galleryMaxPages: o.galleryMaxPages ?? 5,
    thumbnailSize: o.thumbnailSize ?? DEFAULT_THUMBNAIL_SIZE,
  };
  for (const [k, v] of Object.entries(r)) {
    if (!Number.isInteger(v) || v < 1) throw new Error(`report option ${k} must be a positive integer, got ${v}`);
  }
  return r;
}

function csvField(s: string): string {
  return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

/** scores.csv rows in input order; `predicted` is empty without a threshold. */
export function scoresCsv(images: readonly ReportImage[], threshold: number | null, method?: string): string {
  const lines = [`${method !== undefined ? 'method,' : ''}image,defect_type,label,score,predicted`];
  for (const s of images) {
    const predicted = threshold === null ? '' : s.score >= threshold ? '1' : '0';
    const row = [csvField(s.id), csvField(s.defectType), String(s.label), s.score.toPrecision(9), predicted];
    if (method !== undefined) row.unshift(csvField(method));
    lines.push(row.join(','));
  }
  return lines.join('\n') + '\n';
}

/**
 * Gallery order: every image ranked by how wrong or unsure it is, i.e. defects by score above the threshold
 * (lowest first) and good images by score below it (highest first). The first page reserves a share for
 * each type so all defect types and the highest-scoring good images appear there; later pages follow the
 * ranking. Returns indices into images, at most maxItems.
 */
export function galleryOrder(
  images: readonly Pick<ReportImage, 'id' | 'defectType' | 'label' | 'score'>[],
  threshold: number | null,
  pageSize: number,
  maxItems: number,
): number[] {
  const n = images.length;
  let t = threshold;
  if (t === null) {
    const sorted = Float64Array.from(images, (im) => im.score).sort();
    t = sorted[Math.floor(n / 2)];
  }
  const margin = new Float64Array(n);
  for (let i = 0; i < n; i++) margin[i] = images[i].label === 1 ? images[i].score - t : t - images[i].score;
  const ranked = Array.from({ length: n }, (_, i) => i).sort(
    (a, b) => margin[a] - margin[b] || (images[a].id < images[b].id ? -1 : images[a].id > images[b].id ? 1 : 0),
  );
  const byType = new Map<string, number[]>();
  for (const i of ranked) {
    let list = byType.get(images[i].defectType);
    if (!list) byType.set(images[i].defectType, (list = []));
    list.push(i);
  }
  const firstSize = Math.min(pageSize, maxItems, n);
  const quota = Math.max(1, Math.floor(firstSize / (2 * byType.size)));
  const chosen = new Uint8Array(n);
  const first: number[] = [];
  // Reserve per type in rounds, each round taking the types in order of their least certain image.
  const types = [...byType.values()].sort((a, b) => margin[a[0]] - margin[b[0]]);
  for (let round = 0; round < quota && first.length < firstSize; round++) {
    for (const list of types) {
      if (round < list.length && first.length < firstSize) {
        first.push(list[round]);
        chosen[list[round]] = 1;
      }
    }
  }
  for (const i of ranked) {
    if (first.length >= firstSize) break;
    if (!chosen[i]) {
      first.push(i);
      chosen[i] = 1;
    }
  }
  first.sort((a, b) => margin[a] - margin[b]);
  const order = first;
  for (const i of ranked) {
    if (order.length >= Math.min(maxItems, n)) break;
    if (!chosen[i]) order.push(i);
  }
  return order;
}

function resolveThreshold(r: MethodResult): ThresholdChoice | null {
  if (r.threshold !== undefined) return r.threshold;
  return r.metrics.threshold === null ? null : { threshold: r.metrics.threshold, rule: 'f1-max' };
}

function slug(name: string): string {
  const s = name.toLowerCase().replace(/[^a-z0-9_-]+/g, '-').replace(/^-+|-+$/g, '');
  if (s === '') throw new Error(`method name "${name}" has no letters or digits to name its folder`);
  return s;
}

interface MethodOutcome {
  view: MethodView;
  confusion: Confusion | null;
  rocCurve: CurvePoints | null;
  auroc: number | null;
}

/** Writes one method's files under `prefix` ('' or 'methods/<slug>/') and returns what index.html shows. */
async function buildMethod(
  r: MethodResult,
  anchor: string,
  prefix: string,
  options: Required<Omit<ReportOptions, 'title'>>,
  title: string,
  writer: ReportWriter,
): Promise<MethodOutcome> {
  checkImages(r.images, r.name);
  const images = r.images;
  const choice = resolveThreshold(r);
  const t = choice ? choice.threshold : null;
  const scores = Float32Array.from(images, (im) => im.score);
  const labels = Uint8Array.from(images, (im) => im.label);
  let positives = 0;
  for (let i = 0; i < labels.length; i++) positives += labels[i];
  const bothClasses = positives > 0 && positives < labels.length;

  const plots: PlotView[] = [];
  const plotNotes: string[] = [];
  const addPlot = async (name: string, svg: string) => {
    const path = `${prefix}plots/${name}.svg`;
    await writer.put(path, svg, 'image/svg+xml');
    plots.push({ name, svg, href: path });
  };

  let curve: CurvePoints | null = null;
  const auroc = r.metrics.image_auroc ?? (bothClasses ? rocAuc(scores, labels) : null);
  if (bothClasses) {
    curve = rocCurve(scores, labels, ROC_POINTS);
    await addPlot('roc', await imageRocPlot(scores, labels, auroc));
  } else {
    plotNotes.push(`No image-level ROC: the test images are all ${positives === 0 ? 'good' : 'defective'}.`);
  }
  const pixelRoc = r.pixels?.rocCurve(ROC_POINTS) ?? null;
  if (pixelRoc) {
    await addPlot('pixel-roc', await pixelRocPlot(pixelRoc, r.metrics.pixel_auroc ?? r.pixels!.auroc()));
  } else {
    plotNotes.push('No pixel-level ROC: no anomaly maps with ground-truth masks of both classes.');
  }
  const groups = groupScores(scores, images.map((im) => im.defectType));
  await addPlot('histogram', await histogramPlot(groups, t));
  await addPlot('kde', await kdePlot(groups, t));
  await addPlot('boxplot', await boxPlot(groups, t));
  let confusion: Confusion | null = null;
  if (choice) {
    confusion = confusionAt(scores, labels, choice.threshold);
    await addPlot('confusion', await confusionPlot(confusion, choice));
  } else {
    plotNotes.push('No confusion matrix: no decision threshold (no labelled test set and none given).');
  }

  await writer.put(`${prefix}metrics.json`, JSON.stringify(r.metrics, null, 2) + '\n', 'application/json');
  await writer.put(`${prefix}scores.csv`, scoresCsv(images, t), 'text/csv; charset=utf-8');

  // Gallery: one thumbnail at a time, written before the next image is read.
  const range = r.heatmapRange ?? r.pixels?.valueRange() ?? null;
  const order = galleryOrder(images, t, options.galleryPageSize, options.galleryPageSize * options.galleryMaxPages);
  const items: GalleryItem[] = [];
  for (let n = 1; n <= order.length; n++) {
    const im = images[order[n - 1]];
    items.push(await galleryThumbnail(im, n, prefix, range, t, options.thumbnailSize, writer));
  }
  const pageSize = options.galleryPageSize;
  const pageCount = Math.max(1, Math.ceil(items.length / pageSize));
  const homeHref = prefix === '' ? 'index.html' : '../'.repeat(prefix.split('/').length - 1) + 'index.html';
  for (let p = 2; p <= pageCount; p++) {
    const pageItems = items.slice((p - 1) * pageSize, p * pageSize).map((it) => ({ ...it, src: it.src && it.src.slice(prefix.length) }));
    const html = renderGalleryPage({
      title, methodName: r.name, page: p, pageCount, items: pageItems,
      homeHref: `${homeHref}#${anchor}-gallery`, pageHref: (k) => `gallery-${k}.html`, heatmapRange: range,
    });
    await writer.put(`${prefix}gallery-${p}.html`, html, HTML);
  }
  const view: MethodView = {
    name: r.name, anchor, metrics: r.metrics, threshold: choice, plots, plotNotes,
    gallery: items.slice(0, pageSize),
    galleryPages: Array.from({ length: pageCount - 1 }, (_, i) => `${prefix}gallery-${i + 2}.html`),
    galleryShown: items.length, imageCount: images.length, heatmapRange: range,
    metricsHref: `${prefix}metrics.json`, scoresHref: `${prefix}scores.csv`,
  };
  return { view, confusion, rocCurve: curve, auroc };
}

async function galleryThumbnail(
  im: ReportImage,
  n: number,
  prefix: string,
  range: readonly [number, number] | null,
  threshold: number | null,
  size: number,
  writer: ReportWriter,
): Promise<GalleryItem> {
  const item: GalleryItem = {
    src: null, width: 0, height: 0, id: im.id, defectType: im.defectType, label: im.label, score: im.score,
    predicted: threshold === null ? null : im.score >= threshold ? 1 : 0,
  };
  let image: Buffer | null = null;
  if (im.image) {
    try {
      image = await im.image();
    } catch (err) {
      item.note = `image unavailable: ${(err as Error).message}`;
    }
  }
  const heatmap = (await im.heatmap?.()) ?? null;
  const map = heatmap?.map && range ? heatmap.map : null;
  if (!map && !image) return item;
  // Without a heatmap the thumbnail takes the image's own shape (an unreadable image fails in renderOverlay).
  const meta = heatmap ? null : await sharp(image!).metadata().catch(() => null);
  const [height, width] = heatmap ? [heatmap.height, heatmap.width] : [meta?.height ?? 1, meta?.width ?? 1];
  const input = { id: im.id, map, mask: heatmap?.mask ?? null, height, width, image };
  const opts = { range: range ?? ([0, 1] as const), size };
  let overlay;
  try {
    overlay = await renderOverlay(input, opts);
  } catch (err) {
    if (!image) throw err;
    // An unreadable image file should not sink the report: show the map alone and say why.
    item.note = (err as Error).message;
    if (!map) return item;
    overlay = await renderOverlay({ ...input, image: null }, opts);
  }
  const path = `${prefix}gallery/${n}.png`;
  await writer.put(path, overlay.png, 'image/png');
  item.src = path;
  item.width = overlay.width;
  item.height = overlay.height;
  return item;
}

function indexSummary(w: TrackingWriter, index: string, outcomes: MethodOutcome[]): ReportSummary {
  return {
    files: w.files,
    indexBytes: Buffer.byteLength(index),
    galleryImages: outcomes.reduce((s, o) => s + o.view.galleryShown, 0),
    galleryPages: outcomes.reduce((s, o) => s + Math.max(1, o.view.galleryPages.length + 1), 0),
  };
}

/** Builds the report of one method's evaluation run. */
export async function buildReport(input: ReportInput, writer: ReportWriter): Promise<ReportSummary> {
  const options = checkOptions(input.options ?? {});
  const title = input.options?.title ?? `Evaluation report ${input.run.runId}`;
  const w = new TrackingWriter(writer);
  const name = input.name ?? 'model';
  const outcome = await buildMethod({ ...input, name }, 'm-' + slug(name), '', options, title, w);
  const runInfo = { ...input.run, timings: input.run.timings ?? input.metrics.timings_ms };
  const index = renderIndexPage({ title, run: runInfo, sections: [{ view: outcome.view, heading: `Results: ${name}` }] });
  await w.put('index.html', index, HTML);
  return indexSummary(w, index, [outcome]);
}

/**
 * Builds one report comparing several methods on the same data: a side-by-side summary table and ROC at
 * the top, then one full section per method. Each method's files sit under methods/<name>/; the top-level
 * metrics.json maps method name to metrics and scores.csv has a leading method column.
 */
export async function buildComparisonReport(input: ComparisonInput, writer: ReportWriter): Promise<ReportSummary> {
  if (input.methods.length === 0) throw new Error('buildComparisonReport: methods is empty');
  const slugs = input.methods.map((m) => slug(m.name));
  const dup = slugs.find((s, i) => slugs.indexOf(s) !== i);
  if (dup !== undefined) throw new Error(`buildComparisonReport: two methods map to the folder name "${dup}"; give them distinct names`);
  const options = checkOptions(input.options ?? {});
  const title = input.options?.title ?? `Method comparison ${input.run.runId}`;
  const w = new TrackingWriter(writer);
  const outcomes: MethodOutcome[] = [];
  for (let i = 0; i < input.methods.length; i++) {
    outcomes.push(await buildMethod(input.methods[i], `m-${slugs[i]}`, `methods/${slugs[i]}/`, options, title, w));
  }
  const summaryPlots: PlotView[] = [];
  const withRoc = outcomes.filter((o) => o.rocCurve);
  if (withRoc.length > 0) {
    const svg = await rocComparisonPlot(withRoc.map((o) => ({ name: o.view.name, curve: o.rocCurve!, auroc: o.auroc })));
    await w.put('plots/roc-comparison.svg', svg, 'image/svg+xml');
    summaryPlots.push({ name: 'roc-comparison', svg, href: 'plots/roc-comparison.svg' });
  }
  const metrics = Object.fromEntries(input.methods.map((m) => [m.name, m.metrics]));
  await w.put('metrics.json', JSON.stringify({ methods: metrics }, null, 2) + '\n', 'application/json');
  const csv = input.methods
    .map((m, i) => {
      const text = scoresCsv(m.images, outcomes[i].view.threshold?.threshold ?? null, m.name);
      return i === 0 ? text : text.slice(text.indexOf('\n') + 1);
    })
    .join('');
  await w.put('scores.csv', csv, 'text/csv; charset=utf-8');
  const columns: SummaryColumn[] = outcomes.map((o) => ({
    name: o.view.name, anchor: o.view.anchor, metrics: o.view.metrics, threshold: o.view.threshold,
    fp: o.confusion?.fp ?? null, fn: o.confusion?.fn ?? null,
  }));
  const index = renderIndexPage({
    title, run: input.run,
    summary: { table: summaryTable(columns), plots: summaryPlots },
    sections: outcomes.map((o) => ({ view: o.view, heading: `Method: ${o.view.name}` })),
  });
  await w.put('index.html', index, HTML);
  return indexSummary(w, index, outcomes);
}
