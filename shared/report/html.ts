// HTML of the evaluation report: pure string rendering, no I/O. Pages are self-contained (inline CSS and
// SVG, system fonts, no scripts); gallery thumbnails are relative files next to the page.
import type { EvaluationMetrics } from '../evaluation/types.js';
import { colormapCssGradient } from './heatmap.js';
import { formatNumber } from './plots.js';
import { describeThresholdRule, type ThresholdChoice } from '../metrics/threshold.js';

/** What the report says about the run (all but runId optional). */
export interface RunInfo {
  runId: string;
  modelVersion?: string;
  recipe?: string;
  backbone?: string;
  coresetSize?: number;
  dataset?: string;
  createdAt?: string;
  /** Stage wall times in milliseconds. */
  timings?: Record<string, number>;
}

export interface GalleryItem {
  /** Thumbnail path relative to the page, or null when the image has neither pixels nor a map. */
  src: string | null;
  width: number;
  height: number;
  id: string;
  defectType: string;
  label: 0 | 1;
  score: number;
  predicted: 0 | 1 | null;
  note?: string;
}

export interface PlotView {
  name: string;
  svg: string;
  /** Path of the standalone SVG file, relative to index.html. */
  href: string;
}

export interface MethodView {
  name: string;
  /** HTML id prefix; unique per page. */
  anchor: string;
  metrics: EvaluationMetrics;
  threshold: ThresholdChoice | null;
  plots: PlotView[];
  /** Why a plot is missing (e.g. a single class), shown instead of it. */
  plotNotes: string[];
  gallery: GalleryItem[];
  /** Links to gallery pages 2.. (relative to index.html). */
  galleryPages: string[];
  galleryShown: number;
  imageCount: number;
  heatmapRange: readonly [number, number] | null;
  metricsHref: string;
  scoresHref: string;
}

const CSS = `
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:0 auto;max-width:1500px;padding:16px 24px;color:#1d1d1f;background:#fafafa}
h1{font-size:1.5em;margin:.2em 0}h2{font-size:1.25em;border-bottom:2px solid #ddd;padding-bottom:4px;margin-top:1.6em}h3{font-size:1.05em;margin:1.2em 0 .4em}
table{border-collapse:collapse;margin:.4em 0;background:#fff}td,th{border:1px solid #ddd;padding:3px 10px;text-align:left;font-variant-numeric:tabular-nums}th{background:#f0f0f0}
td.num{text-align:right}td.best{font-weight:bold;background:#e8f4e8}
.plots{display:flex;flex-wrap:wrap;gap:12px}.plot{margin:0;background:#fff;border:1px solid #e3e3e3;padding:6px}.plot figcaption{font-size:.8em}
.gallery{display:flex;flex-wrap:wrap;gap:10px}.card{margin:0;width:232px;background:#fff;border:1px solid #ddd;padding:4px;font-size:.78em}
.card img{display:block;max-width:224px;height:auto}.card code{word-break:break-all;font-size:.95em}
.card.err{border-color:#d62728;border-width:2px}.noimg{width:224px;height:60px;display:flex;align-items:center;justify-content:center;background:#eee;color:#666}
.verdict{font-weight:bold}.verdict.FP,.verdict.FN{color:#d62728}.verdict.TP,.verdict.TN{color:#2a7d2a}
.colourbar{display:inline-block;width:200px;height:12px;vertical-align:middle;border:1px solid #999;margin:0 6px}
.note{color:#555;font-size:.9em}nav a{margin-right:8px}
`;

export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => (c === '&' ? '&amp;' : c === '<' ? '&lt;' : c === '>' ? '&gt;' : c === '"' ? '&quot;' : '&#39;'));
}

/** Prefixes ids (and references to them) so several inline SVGs can share one document. */
export function namespaceSvgIds(svg: string, prefix: string): string {
  return svg
    .replace(/^<\?xml[^>]*>\s*/, '')
    .replace(/\bid="([^"]+)"/g, `id="${prefix}-$1"`)
    .replace(/url\(#([^)]+)\)/g, `url(#${prefix}-$1)`)
    .replace(/href="#([^"]+)"/g, `href="#${prefix}-$1"`);
}

export function page(title: string, body: string): string {
  return `<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">` +
    `<title>${escapeHtml(title)}</title><style>${CSS}</style></head><body>\n${body}\n</body></html>\n`;
}

const num = (x: number | null | undefined, digits = 4) => formatNumber(x, digits);

function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;
}

function runTable(run: RunInfo): string {
  const rows: [string, string][] = [['run id', run.runId]];
  if (run.modelVersion !== undefined) rows.push(['model version', run.modelVersion]);
  if (run.recipe !== undefined) rows.push(['recipe', run.recipe]);
  if (run.backbone !== undefined) rows.push(['backbone', run.backbone]);
  if (run.coresetSize !== undefined) rows.push(['coreset size', String(run.coresetSize)]);
  if (run.dataset !== undefined) rows.push(['data set', run.dataset]);
  if (run.createdAt !== undefined) rows.push(['created', run.createdAt]);
  const info = `<table class="run">${rows.map(([k, v]) => `<tr><th>${escapeHtml(k)}</th><td>${escapeHtml(v)}</td></tr>`).join('')}</table>`;
  const timings = Object.entries(run.timings ?? {});
  if (timings.length === 0) return info;
  const t = timings.map(([k, v]) => `<tr><td>${escapeHtml(k)}</td><td class="num">${seconds(v)}</td></tr>`).join('');
  return `${info}<h3>Timings</h3><table class="timings"><tr><th>stage</th><th>wall time</th></tr>${t}</table>`;
}

function thresholdText(choice: ThresholdChoice | null): string {
  return choice ? `${num(choice.threshold, 6)} (${describeThresholdRule(choice)})` : 'n/a';
}

function metricTable(m: EvaluationMetrics, choice: ThresholdChoice | null): string {
  const rows: [string, string][] = [
    ['image AUROC', num(m.image_auroc)],
    ['pixel AUROC', num(m.pixel_auroc)],
    ['AUPRO (FPR <= 0.3)', num(m.aupro)],
    ['F1-max', num(m.f1_max)],
    ['precision at F1-max', num(m.precision)],
    ['recall at F1-max', num(m.recall)],
    ['report threshold', thresholdText(choice)],
    ['images', String(m.images)],
    ['images with pixel ground truth', String(m.pixel_images)],
  ];
  if (m.hnsw_recall_at_1 !== undefined) rows.push(['HNSW recall@1', num(m.hnsw_recall_at_1)]);
  if (m.failed_images !== undefined) rows.push(['failed images', String(m.failed_images.length)]);
  if (m.peak_rss_mib !== undefined) rows.push(['peak RSS', `${m.peak_rss_mib} MiB`]);
  return `<table class="metrics">${rows.map(([k, v]) => `<tr><th>${escapeHtml(k)}</th><td class="num">${escapeHtml(v)}</td></tr>`).join('')}</table>`;
}

function perTypeTable(m: EvaluationMetrics): string {
  const types = Object.keys(m.images_by_type).sort((a, b) => (a === 'good' ? -1 : b === 'good' ? 1 : a.localeCompare(b)));
  const head = '<tr><th>type</th><th>images</th><th>image AUROC vs good</th><th>mean score</th><th>median</th><th>min</th><th>max</th></tr>';
  const body = types.map((t) => {
    const s = m.score_stats[t];
    const auroc = t === 'good' ? '' : num(m.per_defect_type[t]?.image_auroc);
    const cells = [String(m.images_by_type[t]), auroc, num(s?.mean), num(s?.median), num(s?.min), num(s?.max)];
    return `<tr><td>${escapeHtml(t)}</td>${cells.map((c) => `<td class="num">${escapeHtml(c)}</td>`).join('')}</tr>`;
  });
  return `<table class="per-type">${head}${body.join('')}</table>`;
}

function verdict(item: GalleryItem): string {
  if (item.predicted === null) return '';
  const v = item.label === 1 ? (item.predicted === 1 ? 'TP' : 'FN') : item.predicted === 1 ? 'FP' : 'TN';
  return `<span class="verdict ${v}">${v}</span>`;
}

export function galleryCard(item: GalleryItem): string {
  const alt = `${item.id} (${item.defectType}, score ${num(item.score, 6)})`;
  const picture = item.src
    ? `<img src="${escapeHtml(item.src)}" width="${item.width}" height="${item.height}" alt="${escapeHtml(alt)}">`
    : '<div class="noimg">no image or map</div>';
  const predicted = item.predicted === null ? 'no threshold' : `predicted ${item.predicted === 1 ? 'defect' : 'good'}`;
  const wrong = item.predicted !== null && item.predicted !== item.label;
  const note = item.note ? `<br><span class="note">${escapeHtml(item.note)}</span>` : '';
  return `<figure class="card${wrong ? ' err' : ''}">${picture}<figcaption><code>${escapeHtml(item.id)}</code><br>` +
    `${escapeHtml(item.defectType)} · score ${escapeHtml(num(item.score, 6))}<br>${predicted} ${verdict(item)}${note}</figcaption></figure>`;
}

function heatmapLegend(range: readonly [number, number] | null): string {
  if (!range) return '';
  return `<p class="note">Heatmap colours: map value ${escapeHtml(num(range[0]))}<span class="colourbar" style="background:${colormapCssGradient()}"></span>` +
    `${escapeHtml(num(range[1]))} (one range for every image); cyan outline = ground-truth defect region.</p>`;
}

function galleryNote(v: MethodView): string {
  const pages = v.galleryPages.length > 0
    ? ` More: ${v.galleryPages.map((href, i) => `<a href="${escapeHtml(href)}">page ${i + 2}</a>`).join(' ')}.`
    : '';
  const capped = v.galleryShown < v.imageCount ? ` The gallery is capped at ${v.galleryShown} of ${v.imageCount} images; every score is in <a href="${escapeHtml(v.scoresHref)}">scores.csv</a>.` : '';
  return `<p class="note">Least certain first: defects with the lowest scores and good images with the highest, ` +
    `with every type on this page. Showing ${v.gallery.length} here.${pages}${capped}</p>`;
}

export function methodSection(v: MethodView, heading: string): string {
  const a = escapeHtml(v.anchor);
  const plots = v.plots
    .map((p) => `<figure class="plot" data-plot="${escapeHtml(p.name)}">${namespaceSvgIds(p.svg, `${v.anchor}-${p.name}`)}` +
      `<figcaption><a href="${escapeHtml(p.href)}">${escapeHtml(p.href)}</a></figcaption></figure>`)
    .join('\n');
  const notes = v.plotNotes.map((n) => `<p class="note">${escapeHtml(n)}</p>`).join('');
  return `<section class="method" id="${a}" data-method="${escapeHtml(v.name)}">
<h2>${escapeHtml(heading)}</h2>
<p class="note">Data: <a href="${escapeHtml(v.metricsHref)}">metrics.json</a> · <a href="${escapeHtml(v.scoresHref)}">scores.csv</a></p>
<h3>Metrics</h3>${metricTable(v.metrics, v.threshold)}
<h3>Per type</h3>${perTypeTable(v.metrics)}
<h3>Plots</h3>${notes}<div class="plots">${plots}</div>
<h3 id="${a}-gallery">Gallery</h3>${heatmapLegend(v.heatmapRange)}${galleryNote(v)}
<div class="gallery">${v.gallery.map(galleryCard).join('\n')}</div>
</section>`;
}

export interface SummaryColumn {
  name: string;
  anchor: string;
  metrics: EvaluationMetrics;
  threshold: ThresholdChoice | null;
  fp: number | null;
  fn: number | null;
}

/** Side-by-side table of the methods; the best value of each row is bold. */
export function summaryTable(columns: SummaryColumn[]): string {
  type Row = { label: string; values: (number | null)[]; better: 'high' | 'low' | null; digits?: number };
  const rows: Row[] = [
    { label: 'image AUROC', values: columns.map((c) => c.metrics.image_auroc), better: 'high' },
    { label: 'pixel AUROC', values: columns.map((c) => c.metrics.pixel_auroc), better: 'high' },
    { label: 'AUPRO', values: columns.map((c) => c.metrics.aupro), better: 'high' },
    { label: 'F1-max', values: columns.map((c) => c.metrics.f1_max), better: 'high' },
    { label: 'precision at F1-max', values: columns.map((c) => c.metrics.precision), better: 'high' },
    { label: 'recall at F1-max', values: columns.map((c) => c.metrics.recall), better: 'high' },
    { label: 'threshold', values: columns.map((c) => c.threshold?.threshold ?? null), better: null, digits: 6 },
    { label: 'false positives at threshold', values: columns.map((c) => c.fp), better: 'low' },
    { label: 'false negatives at threshold', values: columns.map((c) => c.fn), better: 'low' },
    { label: 'images', values: columns.map((c) => c.metrics.images), better: null },
  ];
  const head = `<tr><th>metric</th>${columns.map((c) => `<th><a href="#${escapeHtml(c.anchor)}">${escapeHtml(c.name)}</a></th>`).join('')}</tr>`;
  const body = rows.map((r) => {
    const finite = r.values.filter((v): v is number => v !== null && Number.isFinite(v));
    const best = r.better === null || finite.length < 2 ? null : r.better === 'high' ? Math.max(...finite) : Math.min(...finite);
    const cells = r.values.map((v) => `<td class="num${v !== null && v === best ? ' best' : ''}">${escapeHtml(num(v, r.digits ?? 4))}</td>`);
    return `<tr><th>${escapeHtml(r.label)}</th>${cells.join('')}</tr>`;
  });
  const rules = columns.map((c) => `${escapeHtml(c.name)}: ${escapeHtml(c.threshold ? describeThresholdRule(c.threshold) : 'no threshold')}`).join('; ');
  return `<table class="summary">${head}${body.join('')}</table><p class="note">Threshold rules: ${rules}.</p>`;
}

export interface IndexPage {
  title: string;
  run: RunInfo;
  /** Comparison only: summary table and plots above the sections. */
  summary?: { table: string; plots: PlotView[] };
  sections: { view: MethodView; heading: string }[];
}

export function renderIndexPage(p: IndexPage): string {
  const nav = p.sections.length > 1
    ? `<nav>${p.sections.map((s) => `<a href="#${escapeHtml(s.view.anchor)}">${escapeHtml(s.view.name)}</a>`).join('')}</nav>`
    : '';
  const summary = p.summary
    ? `<h2>Comparison</h2>${p.summary.table}<div class="plots">${p.summary.plots
        .map((pl) => `<figure class="plot" data-plot="${escapeHtml(pl.name)}">${namespaceSvgIds(pl.svg, `summary-${pl.name}`)}` +
          `<figcaption><a href="${escapeHtml(pl.href)}">${escapeHtml(pl.href)}</a></figcaption></figure>`)
        .join('')}</div>`
    : '';
  const body = `<header><h1>${escapeHtml(p.title)}</h1>${nav}</header>
<h2>Run</h2>${runTable(p.run)}
${summary}
${p.sections.map((s) => methodSection(s.view, s.heading)).join('\n')}
<footer class="note"><p>Generated ${escapeHtml(new Date().toISOString())}. Scores: higher = more anomalous; an image is predicted defective when score &gt;= threshold.</p></footer>`;
  return page(p.title, body);
}

export interface GalleryPage {
  title: string;
  methodName: string;
  /** 2-based page number. */
  page: number;
  pageCount: number;
  items: GalleryItem[];
  /** Link back to index.html, relative to this page. */
  homeHref: string;
  /** href of page k (k >= 2), relative to this page. */
  pageHref: (k: number) => string;
  heatmapRange: readonly [number, number] | null;
}

export function renderGalleryPage(p: GalleryPage): string {
  const links: string[] = [`<a href="${escapeHtml(p.homeHref)}">page 1 (report)</a>`];
  for (let k = 2; k <= p.pageCount; k++) {
    links.push(k === p.page ? `<b>page ${k}</b>` : `<a href="${escapeHtml(p.pageHref(k))}">page ${k}</a>`);
  }
  const body = `<h1>${escapeHtml(p.title)}: ${escapeHtml(p.methodName)} gallery, page ${p.page} of ${p.pageCount}</h1>
<nav>${links.join(' ')}</nav>${heatmapLegend(p.heatmapRange)}
<div class="gallery">${p.items.map(galleryCard).join('\n')}</div>
<nav>${links.join(' ')}</nav>`;
  return page(`${p.title}: gallery page ${p.page}`, body);
}
