// Report plots: Vega-Lite specs rendered on the server to standalone SVG strings (no browser, no network).
// Text uses vega's default sans-serif font, so the SVG needs no web font.
import * as vega from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';
import { rocCurve, type Confusion } from '../metrics/index.js';
import { describeThresholdRule, type ThresholdChoice } from '../metrics/threshold.js';

/** A ROC curve as plotted: any (possibly decimated) sequence of points from (0,0) to (1,1). */
export interface CurvePoints {
  fpr: ArrayLike<number>;
  tpr: ArrayLike<number>;
}

/** The scores of one class ('good' or a defect type). */
export interface ScoreGroup {
  name: string;
  scores: Float64Array;
}

const WIDTH = 360;
const HEIGHT = 240;
const GOOD_COLOUR = '#4c78a8';
const DEFECT_COLOURS = ['#e45756', '#f58518', '#54a24b', '#b279a2', '#eeca3b', '#9d755d', '#ff9da6', '#72b7b2', '#bab0ac'];
const ROC_POINTS = 200;

/** A loader that refuses every URL: plots carry their data inline and must never reach the network. */
function offlineLoader(): vega.Loader {
  const base = vega.loader();
  const refuse = async (uri: string): Promise<never> => {
    throw new Error(`report plots load no external data, refused "${uri}"`);
  };
  return { ...base, load: refuse, sanitize: refuse, http: refuse, file: refuse };
}

/** Compiles a Vega-Lite spec and renders it headless to an SVG document string. */
export async function renderSvg(spec: TopLevelSpec): Promise<string> {
  const { spec: vgSpec } = compile(spec);
  const view = new vega.View(vega.parse(vgSpec), { renderer: 'none', loader: offlineLoader() });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

function formatAuroc(x: number | null | undefined): string {
  return x === null || x === undefined || !Number.isFinite(x) ? 'n/a' : x.toFixed(4);
}

/** Formats a number for titles: 4 significant digits, plain notation for ordinary magnitudes. */
export function formatNumber(x: number | null | undefined, digits = 4): string {
  if (x === null || x === undefined || Number.isNaN(x)) return 'n/a';
  if (!Number.isFinite(x)) return x > 0 ? '+inf' : '-inf';
  const a = Math.abs(x);
  if (a !== 0 && (a >= 1e6 || a < 1e-3)) return x.toExponential(digits - 1);
  return String(Number(x.toPrecision(digits)));
}

function colourScale(names: string[]): { domain: string[]; range: string[] } {
  let k = 0;
  return { domain: names, range: names.map((n) => (n === 'good' ? GOOD_COLOUR : DEFECT_COLOURS[k++ % DEFECT_COLOURS.length])) };
}

/** Groups scores by class: 'good' first, then the defect types in alphabetical order. */
export function groupScores(scores: ArrayLike<number>, types: readonly string[]): ScoreGroup[] {
  if (scores.length !== types.length) {
    throw new Error(`groupScores: scores has ${scores.length} values but types has ${types.length}`);
  }
  const members = new Map<string, number[]>();
  for (let i = 0; i < scores.length; i++) {
    const s = scores[i];
    if (!Number.isFinite(s)) throw new Error(`groupScores: scores[${i}] (${types[i]}) is ${s}, expected a finite number`);
    let list = members.get(types[i]);
    if (!list) members.set(types[i], (list = []));
    list.push(s);
  }
  const names = [...members.keys()].sort((a, b) => (a === 'good' ? -1 : b === 'good' ? 1 : a < b ? -1 : a > b ? 1 : 0));
  return names.map((name) => ({ name, scores: Float64Array.from(members.get(name)!) }));
}

function checkCurve(curve: CurvePoints, name: string): void {
  if (curve.fpr.length !== curve.tpr.length || curve.fpr.length < 2) {
    throw new Error(`${name}: fpr and tpr must have the same length >= 2, got ${curve.fpr.length} and ${curve.tpr.length}`);
  }
}

function rocSpec(title: string, lines: { name: string; curve: CurvePoints }[]): TopLevelSpec {
  const values: { method: string; fpr: number; tpr: number; i: number }[] = [];
  for (const { name, curve } of lines) {
    for (let i = 0; i < curve.fpr.length; i++) values.push({ method: name, fpr: curve.fpr[i], tpr: curve.tpr[i], i });
  }
  const several = lines.length > 1;
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title,
    width: WIDTH,
    height: HEIGHT,
    layer: [
      {
        data: { values: [{ x: 0, y: 0 }, { x: 1, y: 1 }] },
        mark: { type: 'line', strokeDash: [4, 4], color: '#999' },
        encoding: { x: { field: 'x', type: 'quantitative' }, y: { field: 'y', type: 'quantitative' } },
      },
      {
        data: { values },
        mark: { type: 'line', strokeWidth: 2, ...(several ? {} : { color: '#e45756' }) },
        encoding: {
          x: { field: 'fpr', type: 'quantitative', title: 'false positive rate', scale: { domain: [0, 1] } },
          y: { field: 'tpr', type: 'quantitative', title: 'true positive rate', scale: { domain: [0, 1] } },
          order: { field: 'i', type: 'quantitative' },
          ...(several
            ? { color: { field: 'method', type: 'nominal', title: 'method', sort: lines.map((l) => l.name), legend: { labelLimit: 400 } } }
            : {}),
        },
      },
    ],
  };
}

/** Image-level ROC curve of labelled scores (label 1 = anomalous), with the AUROC in the title. */
export async function imageRocPlot(scores: Float32Array, labels: Uint8Array, auroc: number | null): Promise<string> {
  const curve = rocCurve(scores, labels, ROC_POINTS);
  return renderSvg(rocSpec(`Image-level ROC (AUROC ${formatAuroc(auroc)})`, [{ name: 'image', curve }]));
}

/** Pixel-level ROC from a (decimated) curve; `note` is appended to the title (e.g. pixel subsampling). */
export async function pixelRocPlot(curve: CurvePoints, auroc: number | null, note = ''): Promise<string> {
  checkCurve(curve, 'pixelRocPlot');
  const title = `Pixel-level ROC (AUROC ${formatAuroc(auroc)})${note ? ` ${note}` : ''}`;
  return renderSvg(rocSpec(title, [{ name: 'pixel', curve }]));
}

/** Several methods' image-level ROC curves on one plot, each named with its AUROC. */
export async function rocComparisonPlot(methods: { name: string; curve: CurvePoints; auroc: number | null }[]): Promise<string> {
  if (methods.length === 0) throw new Error('rocComparisonPlot: methods is empty');
  for (const m of methods) checkCurve(m.curve, `rocComparisonPlot (method "${m.name}")`);
  const lines = methods.map((m) => ({ name: `${m.name} (AUROC ${formatAuroc(m.auroc)})`, curve: m.curve }));
  return renderSvg(rocSpec('Image-level ROC by method', lines));
}

function thresholdLayer(threshold: number | null | undefined): TopLevelSpec[] {
  if (threshold === null || threshold === undefined || !Number.isFinite(threshold)) return [];
  return [
    {
      data: { values: [{ t: threshold }] },
      mark: { type: 'rule', color: '#222', strokeDash: [6, 3] },
      encoding: { x: { field: 't', type: 'quantitative' } },
    } as TopLevelSpec,
  ];
}

function scoreRows(groups: ScoreGroup[]): { type: string; score: number }[] {
  const rows: { type: string; score: number }[] = [];
  for (const g of groups) for (let i = 0; i < g.scores.length; i++) rows.push({ type: g.name, score: g.scores[i] });
  return rows;
}

function checkGroups(groups: ScoreGroup[], caller: string): void {
  if (groups.length === 0 || groups.every((g) => g.scores.length === 0)) throw new Error(`${caller}: no scores to plot`);
}

/** Overlaid histograms of image scores, one colour per class, with the threshold as a dashed rule. */
export async function histogramPlot(groups: ScoreGroup[], threshold?: number | null): Promise<string> {
  checkGroups(groups, 'histogramPlot');
  const colours = colourScale(groups.map((g) => g.name));
  return renderSvg({
    title: 'Image score histogram by type',
    width: WIDTH,
    height: HEIGHT,
    layer: [
      {
        data: { values: scoreRows(groups) },
        mark: { type: 'bar', opacity: 0.55, binSpacing: 0 },
        encoding: {
          x: { field: 'score', type: 'quantitative', bin: { maxbins: 30 }, title: 'image score' },
          y: { aggregate: 'count', type: 'quantitative', stack: null, title: 'images', axis: { tickMinStep: 1 } },
          color: { field: 'type', type: 'nominal', title: 'type', scale: colours },
        },
      },
      ...thresholdLayer(threshold),
    ],
  } as TopLevelSpec);
}

/** Silverman's rule of thumb; a small positive width when the scores do not spread. */
function silvermanBandwidth(sorted: Float64Array, span: number): number {
  const n = sorted.length;
  let mean = 0;
  for (let i = 0; i < n; i++) mean += sorted[i];
  mean /= n;
  let sq = 0;
  for (let i = 0; i < n; i++) sq += (sorted[i] - mean) ** 2;
  const std = n > 1 ? Math.sqrt(sq / (n - 1)) : 0;
  const q = (p: number) => {
    const pos = p * (n - 1);
    const lo = Math.floor(pos);
    const hi = Math.min(lo + 1, n - 1);
    return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
  };
  const iqr = (q(0.75) - q(0.25)) / 1.34;
  const spread = iqr > 0 ? Math.min(std, iqr) : std;
  const h = 0.9 * spread * n ** -0.2;
  return h > 0 ? h : Math.max(span * 0.02, Math.abs(mean) * 1e-3, 1e-6);
}

export interface Density {
  grid: Float64Array;
  /** densities[g][k]: density of group g at grid[k]; each integrates to about 1. */
  densities: Float64Array[];
  bandwidths: number[];
}

/** Gaussian kernel density of each group on one shared grid of `points` values. */
export function kernelDensity(groups: ScoreGroup[], points = 120): Density {
  let lo = Infinity;
  let hi = -Infinity;
  for (const g of groups) for (let i = 0; i < g.scores.length; i++) {
    lo = Math.min(lo, g.scores[i]);
    hi = Math.max(hi, g.scores[i]);
  }
  if (!Number.isFinite(lo)) throw new Error('kernelDensity: no scores');
  const sortedGroups = groups.map((g) => Float64Array.from(g.scores).sort());
  const bandwidths = sortedGroups.map((s) => (s.length > 0 ? silvermanBandwidth(s, hi - lo) : 0));
  const pad = 3 * Math.max(...bandwidths);
  const grid = new Float64Array(points);
  for (let k = 0; k < points; k++) grid[k] = lo - pad + ((hi - lo + 2 * pad) * k) / (points - 1);
  const densities = sortedGroups.map((s, g) => {
    const d = new Float64Array(points);
    const h = bandwidths[g];
    if (s.length === 0) return d;
    const norm = 1 / (s.length * h * Math.sqrt(2 * Math.PI));
    for (let k = 0; k < points; k++) {
      let sum = 0;
      for (let i = 0; i < s.length; i++) {
        const z = (grid[k] - s[i]) / h;
        sum += Math.exp(-0.5 * z * z);
      }
      d[k] = sum * norm;
    }
    return d;
  });
  return { grid, densities, bandwidths };
}

/** Kernel density estimate of the image scores per class, with the threshold as a dashed rule. */
export async function kdePlot(groups: ScoreGroup[], threshold?: number | null): Promise<string> {
  checkGroups(groups, 'kdePlot');
  const present = groups.filter((g) => g.scores.length > 0);
  const { grid, densities } = kernelDensity(present);
  const values: { type: string; score: number; density: number }[] = [];
  present.forEach((g, j) => {
    for (let k = 0; k < grid.length; k++) values.push({ type: g.name, score: grid[k], density: densities[j][k] });
  });
  return renderSvg({
    title: 'Image score density (Gaussian KDE) by type',
    width: WIDTH,
    height: HEIGHT,
    layer: [
      {
        data: { values },
        mark: { type: 'line', strokeWidth: 2 },
        encoding: {
          x: { field: 'score', type: 'quantitative', title: 'image score', scale: { zero: false } },
          y: { field: 'density', type: 'quantitative', title: 'density' },
          color: { field: 'type', type: 'nominal', title: 'type', scale: colourScale(present.map((g) => g.name)) },
        },
      },
      ...thresholdLayer(threshold),
    ],
  } as TopLevelSpec);
}

/** Box plot (whiskers at 1.5 IQR, outliers as points) of the image scores per class. */
export async function boxPlot(groups: ScoreGroup[], threshold?: number | null): Promise<string> {
  checkGroups(groups, 'boxPlot');
  const names = groups.map((g) => g.name);
  return renderSvg({
    title: 'Image score box plot by type',
    width: WIDTH,
    height: Math.max(120, 36 * groups.length),
    layer: [
      {
        data: { values: scoreRows(groups) },
        mark: { type: 'boxplot', extent: 1.5, size: 18 },
        encoding: {
          y: { field: 'type', type: 'nominal', title: null, sort: names },
          x: { field: 'score', type: 'quantitative', title: 'image score', scale: { zero: false } },
          color: { field: 'type', type: 'nominal', legend: null, scale: colourScale(names) },
        },
      },
      ...thresholdLayer(threshold),
    ],
  } as TopLevelSpec);
}

/** The confusion matrix as a heatmap with counts, titled with the threshold and the rule that chose it. */
export async function confusionPlot(confusion: Confusion, choice: ThresholdChoice): Promise<string> {
  const cells = [
    { actual: 'good', predicted: 'good', count: confusion.tn, name: 'TN' },
    { actual: 'good', predicted: 'defect', count: confusion.fp, name: 'FP' },
    { actual: 'defect', predicted: 'good', count: confusion.fn, name: 'FN' },
    { actual: 'defect', predicted: 'defect', count: confusion.tp, name: 'TP' },
  ].map((c) => ({ ...c, text: `${c.name} ${c.count}` }));
  const max = Math.max(1, ...cells.map((c) => c.count));
  const order = ['good', 'defect'];
  return renderSvg({
    title: {
      text: `Confusion matrix at threshold ${formatNumber(choice.threshold, 6)}`,
      subtitle: `threshold rule: ${describeThresholdRule(choice)}`,
    },
    data: { values: cells },
    width: 220,
    height: 220,
    encoding: {
      x: { field: 'predicted', type: 'nominal', sort: order, title: 'predicted', axis: { labelAngle: 0 } },
      y: { field: 'actual', type: 'nominal', sort: order, title: 'actual' },
    },
    layer: [
      {
        mark: 'rect',
        encoding: {
          color: { field: 'count', type: 'quantitative', scale: { scheme: 'blues', domain: [0, max] }, legend: null },
        },
      },
      {
        mark: { type: 'text', fontSize: 16, fontWeight: 'bold' },
        encoding: {
          text: { field: 'text', type: 'nominal' },
          color: { condition: { test: `datum.count > ${max / 2}`, value: 'white' }, value: 'black' },
        },
      },
    ],
  } as TopLevelSpec);
}
