// The results of `patchcore benchmark`: one entry per category (our figures, the reference's with --compare, and
// their ratios, or the error that stopped the category), written as results.json, results.md (one table) and an
// index.html linking each category's report.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/** What one run (ours or the reference's) measured on one category. */
export interface CategoryFigures {
  image_auroc: number | null;
  pixel_auroc: number | null;
  aupro: number | null;
  f1_max: number | null;
  /** Rows of the memory bank. */
  bank: number;
  train_images: number;
  test_images: number;
  /** Wall seconds of training (features, coreset, index) and of evaluation (scoring, metrics, report). */
  fit_s: number;
  evaluate_s: number;
  /** (train_images + test_images) / (fit_s + evaluate_s): the whole pipeline's throughput. */
  images_per_s: number;
}

export const FIGURES = ['image_auroc', 'pixel_auroc', 'aupro', 'f1_max', 'bank', 'train_images', 'test_images', 'fit_s', 'evaluate_s', 'images_per_s'] as const;

/** Ours against the reference, every ratio above 1 where ours is better: times reference / ours, the rest ours / reference. */
export interface FigureRatios {
  image_auroc: number | null;
  pixel_auroc: number | null;
  aupro: number | null;
  f1_max: number | null;
  fit_s: number | null;
  evaluate_s: number | null;
  images_per_s: number | null;
}

export type ReferenceOutcome = ({ status: 'ok' } & CategoryFigures) | { status: 'failed'; error: string };

export type CategoryResult = {
  category: string;
  /** The category folder. */
  data: string;
  /** The category's report (index.html), relative to the benchmark's folder; absent when no report was written. */
  report?: string;
  reference?: ReferenceOutcome;
  ratio?: FigureRatios;
} & (({ status: 'ok' } & CategoryFigures) | { status: 'failed'; error: string });

export interface BenchmarkResults {
  created_at: string;
  /** local: fit and evaluate in this process; distributed: through the queues (patchcore demo) per category. */
  mode: 'local' | 'distributed';
  /** The root the categories were found under. */
  data: string;
  /** The model settings used for every category (recipe, coreset ratio, frame, engine, ...). */
  settings: Record<string, unknown>;
  /** With --compare: how the reference ran (its variant, coreset ratio and frame). */
  reference: { variant: string; coreset: number; frame: string } | null;
  categories: CategoryResult[];
}

const RESULT_FILES = { json: 'results.json', markdown: 'results.md', html: 'index.html' } as const;

export function figureRatios(ours: CategoryFigures, ref: CategoryFigures): FigureRatios {
  const div = (a: number | null, b: number | null) => (a === null || b === null || b === 0 ? null : round(a / b, 3));
  return {
    image_auroc: div(ours.image_auroc, ref.image_auroc),
    pixel_auroc: div(ours.pixel_auroc, ref.pixel_auroc),
    aupro: div(ours.aupro, ref.aupro),
    f1_max: div(ours.f1_max, ref.f1_max),
    fit_s: div(ref.fit_s, ours.fit_s),
    evaluate_s: div(ref.evaluate_s, ours.evaluate_s),
    images_per_s: div(ours.images_per_s, ref.images_per_s),
  };
}

/** Figures with the throughput derived from the counts and the times. */
export function withThroughput(f: Omit<CategoryFigures, 'images_per_s'>): CategoryFigures {
  const seconds = f.fit_s + f.evaluate_s;
  return { ...f, fit_s: round(f.fit_s, 2), evaluate_s: round(f.evaluate_s, 2), images_per_s: seconds > 0 ? round((f.train_images + f.test_images) / seconds, 2) : 0 };
}

function round(x: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

const metric = (x: number | null | undefined) => (x === null || x === undefined ? 'n/a' : x.toFixed(3));
const seconds = (x: number) => x.toFixed(1);
const times = (x: number | null) => (x === null ? 'n/a' : `${x.toFixed(2)}x`);
/** One line of text that cannot break a table cell. */
const oneLine = (s: string) => s.replace(/\s+/g, ' ').trim();

const HEAD = ['category', 'run', 'image AUROC', 'pixel AUROC', 'AUPRO', 'F1-max', 'bank', 'fit s', 'evaluate s', 'images/s', 'report'];

interface Row {
  cells: string[];
  /** The report's relative path, linked in the last cell; or an error shown there. */
  link?: string;
  error?: string;
}

function figureCells(f: CategoryFigures): string[] {
  return [metric(f.image_auroc), metric(f.pixel_auroc), metric(f.aupro), metric(f.f1_max), String(f.bank),
    seconds(f.fit_s), seconds(f.evaluate_s), f.images_per_s.toFixed(2)];
}

/** The table's rows: per category ours, then with --compare the reference's and the ratios. */
function tableRows(results: BenchmarkResults): Row[] {
  const rows: Row[] = [];
  const blank = Array<string>(8).fill('');
  for (const c of results.categories) {
    const ours = c.status === 'ok' ? figureCells(c) : blank;
    rows.push({ cells: [c.category, 'ours', ...ours], link: c.report, error: c.status === 'failed' ? c.error : undefined });
    if (!c.reference) continue;
    const r = c.reference;
    rows.push({ cells: [c.category, 'reference', ...(r.status === 'ok' ? figureCells(r) : blank)], error: r.status === 'failed' ? r.error : undefined });
    if (c.ratio) {
      const q = c.ratio;
      rows.push({ cells: [c.category, 'ours vs reference', times(q.image_auroc), times(q.pixel_auroc), times(q.aupro), times(q.f1_max), '',
        times(q.fit_s), times(q.evaluate_s), times(q.images_per_s)] });
    }
  }
  return rows;
}

function settingsLine(results: BenchmarkResults): string {
  return Object.entries(results.settings).map(([k, v]) => `${k} ${typeof v === 'object' ? JSON.stringify(v) : String(v)}`).join(', ');
}

function notes(results: BenchmarkResults): string[] {
  const out = [
    `Figures: image AUROC, pixel AUROC and AUPRO (to FPR 0.3) on each category's test set, F1-max at the best threshold; `
      + 'bank = memory-bank rows; fit s and evaluate s are wall seconds; images/s = (training + test images) / (fit s + evaluate s).',
  ];
  if (results.reference) {
    out.push(`Reference: ${REFERENCE_NAME}, variant ${results.reference.variant}, coreset ${results.reference.coreset}; `
      + `its frame: ${results.reference.frame}. Its fit s and evaluate s are its train and test totals (without start-up).`);
    out.push('Ratios: above 1 where ours is better (times: reference / ours; the rest: ours / reference).');
  }
  return out;
}

const counted = (r: BenchmarkResults) => `${r.categories.length} ${r.categories.length === 1 ? 'category' : 'categories'}`;

const REFERENCE_NAME = 'the PyTorch reference (../shared/bench/ref_patchcore.py)';

export function renderMarkdown(results: BenchmarkResults): string {
  const cell = (s: string) => s.replace(/\|/g, '\\|');
  const line = (cells: string[]) => `| ${cells.map(cell).join(' | ')} |`;
  const rows = tableRows(results).map((r) => {
    const last = r.error !== undefined ? `failed: ${oneLine(r.error)}` : r.link ? `[${r.link}](${r.link})` : '';
    return line([...r.cells, last]);
  });
  const failed = results.categories.filter((c) => c.status === 'failed').length;
  return [
    `# patchcore benchmark`,
    '',
    `${counted(results)} under \`${results.data}\`, ${results.mode}, ${results.created_at}` + (failed ? `; ${failed} failed` : '') + '.',
    `Settings: ${settingsLine(results)}.`,
    '',
    line(HEAD),
    line(HEAD.map((_, i) => (i < 2 ? '---' : i === HEAD.length - 1 ? '---' : '---:'))),
    ...rows,
    '',
    ...notes(results).flatMap((n) => [n, '']),
  ].join('\n');
}

const escapeHtml = (s: string) => s.replace(/[&<>"']/g, (ch) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[ch]!);

export function renderHtml(results: BenchmarkResults): string {
  const th = HEAD.map((h) => `<th>${escapeHtml(h)}</th>`).join('');
  const body = tableRows(results).map((r) => {
    const last = r.error !== undefined
      ? `<td class="error">failed: ${escapeHtml(oneLine(r.error))}</td>`
      : r.link ? `<td><a href="${escapeHtml(r.link)}">report</a></td>` : '<td></td>';
    const cells = r.cells.map((c, i) => `<td${i >= 2 ? ' class="num"' : ''}>${escapeHtml(c)}</td>`).join('');
    return `<tr class="${escapeHtml(r.cells[1].replace(/\s+/g, '-'))}">${cells}${last}</tr>`;
  }).join('\n');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>patchcore benchmark</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse}th,td{padding:4px 10px;border-bottom:1px solid #ddd;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums}tr.reference td{color:#555}tr.ours-vs-reference td{color:#555;font-style:italic}
td.error{color:#b00020}
</style></head><body>
<h1>patchcore benchmark</h1>
<p>${counted(results)} under <code>${escapeHtml(results.data)}</code>, ${escapeHtml(results.mode)}, ${escapeHtml(results.created_at)}.<br>
Settings: ${escapeHtml(settingsLine(results))}.</p>
<table><thead><tr>${th}</tr></thead><tbody>
${body}
</tbody></table>
${notes(results).map((n) => `<p>${escapeHtml(n)}</p>`).join('\n')}
<p><a href="results.json">results.json</a> · <a href="results.md">results.md</a></p>
</body></html>
`;
}

/** Writes results.json, results.md and index.html in `outDir`; returns their paths. */
export async function writeResults(outDir: string, results: BenchmarkResults): Promise<{ json: string; markdown: string; html: string }> {
  const paths = { json: join(outDir, RESULT_FILES.json), markdown: join(outDir, RESULT_FILES.markdown), html: join(outDir, RESULT_FILES.html) };
  await writeFile(paths.json, `${JSON.stringify(results, null, 2)}\n`);
  await writeFile(paths.markdown, renderMarkdown(results));
  await writeFile(paths.html, renderHtml(results));
  return paths;
}
