// test-lane: integration (real redis-server, s3rver or Chromium)
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { listMvtecDataset } from '../dataset/mvtec.js';
import { decodeMask, maskToFrame, planFrame } from '../image/index.js';
import { PixelHistogram } from '../metrics/index.js';
import { wholeImageFrame } from '../evaluation/whole-image.js';
import { defaultDatasetDir } from '../paths.js';
import { computeMetrics } from '../evaluation/metrics.js';
import type { EvaluationMetrics, ScoredImage } from '../evaluation/types.js';
import { buildComparisonReport, buildReport, galleryOrder, localFolderWriter, type ReportImage, type ReportWriter, type RunInfo } from './build.js';

const CHROMIUM = '/usr/bin/chromium';
const KEEP = process.env.REPORT_TEST_KEEP === '1';

/** Deterministic uniform [0, 1) values. */
function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32);
}

/** Separable box blur, applied twice (close to a Gaussian). */
function blur(src: Float32Array, w: number, h: number, r: number): Float32Array {
  let a = Float32Array.from(src);
  const tmp = new Float32Array(a.length);
  for (let pass = 0; pass < 2; pass++) {
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
      let s = 0;
      for (let k = -r; k <= r; k++) s += a[y * w + Math.min(w - 1, Math.max(0, x + k))];
      tmp[y * w + x] = s / (2 * r + 1);
    }
    const out = new Float32Array(a.length);
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
      let s = 0;
      for (let k = -r; k <= r; k++) s += tmp[Math.min(h - 1, Math.max(0, y + k)) * w + x];
      out[y * w + x] = s / (2 * r + 1);
    }
    a = out;
  }
  return a;
}

const run: RunInfo = {
  runId: 'run-2024-test-0001',
  modelVersion: 'bottle-patchcore-v3',
  recipe: 'layer2+layer3, 3x3 avg, 1024-d',
  backbone: 'ResNet-50 (Keras ImageNet, conv1-conv4)',
  coresetSize: 16384,
  dataset: 'mvtec_ad/bottle (20 test images)',
  timings: { extract: 12_345, scoring: 2_100, report: 900 },
};

/**
 * 20 real bottle test images (5 of each type) with synthetic maps: the ground-truth mask blurred and scaled by a
 * random strength (faint defects get missed), plus a random Gaussian blob (nuisance that causes false alarms) and
 * pixel noise. A larger `blobScale` makes a worse method.
 */
async function realImages(blobScale: number, seed: number): Promise<{ images: ReportImage[]; pixels: PixelHistogram }> {
  const ds = listMvtecDataset(defaultDatasetDir('bottle'), { test: true });
  const perType = new Map<string, number>();
  const picked = ds.test.filter((img) => {
    const n = perType.get(img.defectType) ?? 0;
    perType.set(img.defectType, n + 1);
    return n < 5;
  });
  const frame = wholeImageFrame(planFrame(900, 900));
  const { width: w, height: h } = frame;
  const rand = lcg(seed);
  const out: ReportImage[] = [];
  const pixels = new PixelHistogram();
  for (const img of picked) {
    const mask = img.maskPath ? maskToFrame(await decodeMask(await readFile(join(ds.root, img.maskPath)), img.maskPath), frame) : new Uint8Array(w * h);
    const strength = img.label === 1 ? 0.15 + 0.85 * rand() : 0;
    const blob = blobScale * rand();
    const cx = 30 + 196 * rand();
    const cy = 30 + 196 * rand();
    const blurred = blur(Float32Array.from(mask), w, h, 6);
    const map = new Float32Array(w * h);
    let score = -Infinity;
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
      const i = y * w + x;
      map[i] = 0.1 + strength * blurred[i] + blob * Math.exp(-((x - cx) ** 2 + (y - cy) ** 2) / 200) + 0.05 * rand();
      if (map[i] > score) score = map[i];
    }
    const path = join(ds.root, img.path);
    pixels.addImage(map, mask, h, w, img.path);
    out.push({
      id: img.path, defectType: img.defectType, label: img.label, score,
      image: () => readFile(path), heatmap: async () => ({ map, mask, height: h, width: w }),
    });
  }
  return { images: out, pixels };
}

function metricsOf(images: ReportImage[], pixels: PixelHistogram | null = null): EvaluationMetrics {
  const scored: ScoredImage[] = images.map((im) => ({ id: im.id, defectType: im.defectType, label: im.label, score: im.score }));
  return computeMetrics(scored, pixels);
}

let dir = '';
let realDir = '';
let cmpDir = '';
let events: string[] = [];
let patchcore: ReportImage[] = [];
let patchcorePixels: PixelHistogram;
let patchcoreMetrics: EvaluationMetrics;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'patchcore-report-'));
  realDir = join(dir, 'single');
  cmpDir = join(dir, 'comparison');
  ({ images: patchcore, pixels: patchcorePixels } = await realImages(0.4, 1));
  patchcoreMetrics = metricsOf(patchcore, patchcorePixels);
  // Log image reads and thumbnail writes to check that the builder streams.
  const folder = localFolderWriter(realDir);
  const logging: ReportWriter = {
    async put(relPath, body, type) {
      if (relPath.startsWith('gallery/')) events.push(`put ${relPath}`);
      await folder.put(relPath, body, type);
    },
  };
  const lazy = patchcore.map((im) => ({ ...im, image: async () => (events.push(`load ${im.id}`), im.image!()) }));
  await buildReport({ run, name: 'patchcore', images: lazy, metrics: patchcoreMetrics, pixels: patchcorePixels }, logging);
  const autoencoder = await realImages(1, 2);
  await buildComparisonReport(
    {
      run: { ...run, runId: 'run-2024-test-0001-compare' },
      methods: [
        { name: 'patchcore', images: patchcore, metrics: patchcoreMetrics, pixels: patchcorePixels },
        { name: 'autoencoder', images: autoencoder.images, metrics: metricsOf(autoencoder.images, autoencoder.pixels), pixels: autoencoder.pixels, threshold: { threshold: 0.6, rule: 'target-fpr', targetFpr: 0.01 } },
      ],
    },
    localFolderWriter(cmpDir),
  );
});

after(async () => {
  if (KEEP) console.log(`report test output kept in ${dir}`);
  else if (dir) await rm(dir, { recursive: true, force: true });
});

test('report from 20 real bottle images: files, data and streaming', async () => {
  for (const f of ['index.html', 'metrics.json', 'scores.csv', 'plots/roc.svg', 'plots/pixel-roc.svg', 'plots/histogram.svg',
    'plots/kde.svg', 'plots/boxplot.svg', 'plots/confusion.svg']) {
    assert.ok(existsSync(join(realDir, f)), `${f} missing`);
  }
  assert.deepEqual(JSON.parse(await readFile(join(realDir, 'metrics.json'), 'utf8')), JSON.parse(JSON.stringify(patchcoreMetrics)));
  const csv = (await readFile(join(realDir, 'scores.csv'), 'utf8')).trimEnd().split('\n');
  assert.equal(csv[0], 'image,defect_type,label,score,predicted');
  assert.equal(csv.length, 21);
  const t = patchcoreMetrics.threshold!;
  for (const [i, line] of csv.slice(1).entries()) {
    const [id, type, label, score, predicted] = line.split(',');
    assert.equal(id, patchcore[i].id);
    assert.equal(type, patchcore[i].defectType);
    assert.equal(Number(label), patchcore[i].label);
    assert.ok(Math.abs(Number(score) - patchcore[i].score) < 1e-6);
    assert.equal(Number(predicted), patchcore[i].score >= t ? 1 : 0);
  }
  const gallery = (await readdir(join(realDir, 'gallery'))).length;
  assert.equal(gallery, 20); // fewer than a page: all images
  // Streaming: every thumbnail is written before the next image is read.
  assert.equal(events.length, 40);
  for (let i = 0; i < events.length; i += 2) {
    assert.match(events[i], /^load /);
    assert.equal(events[i + 1], `put gallery/${i / 2 + 1}.png`);
  }
  const html = await readFile(join(realDir, 'index.html'), 'utf8');
  for (const s of ['run-2024-test-0001', 'bottle-patchcore-v3', 'layer2+layer3, 3x3 avg, 1024-d', 'ResNet-50', '16384',
    'mvtec_ad/bottle (20 test images)', '12.3 s', 'F1-max on labelled test set', 'broken_small', 'contamination']) {
    assert.ok(html.includes(s), `index.html lacks "${s}"`);
  }
  assert.doesNotMatch(html, /<script|<link|@import|https?:\/\/(?!www\.w3\.org)/, 'index.html must be self-contained');
});

test('comparison report: summary table, one section and folder per method', async () => {
  const html = await readFile(join(cmpDir, 'index.html'), 'utf8');
  assert.match(html, /<table class="summary">.*patchcore.*autoencoder/s);
  assert.equal((html.match(/<section class="method"/g) ?? []).length, 2);
  assert.ok(html.includes('target FPR 1% on good validation images'));
  for (const f of ['plots/roc-comparison.svg', 'methods/patchcore/plots/roc.svg', 'methods/autoencoder/plots/kde.svg',
    'methods/autoencoder/gallery/1.png', 'methods/patchcore/metrics.json', 'methods/autoencoder/scores.csv']) {
    assert.ok(existsSync(join(cmpDir, f)), `${f} missing`);
  }
  const metrics = JSON.parse(await readFile(join(cmpDir, 'metrics.json'), 'utf8'));
  assert.deepEqual(Object.keys(metrics.methods), ['patchcore', 'autoencoder']);
  assert.ok(metrics.methods.patchcore.image_auroc > metrics.methods.autoencoder.image_auroc, 'the noisier method should score lower');
  const csv = (await readFile(join(cmpDir, 'scores.csv'), 'utf8')).trimEnd().split('\n');
  assert.equal(csv[0], 'method,image,defect_type,label,score,predicted');
  assert.equal(csv.length, 41);
  // The better image AUROC is highlighted in the patchcore column.
  const aurocRow = html.match(/<tr><th>image AUROC<\/th>(.*?)<\/tr>/)![1];
  assert.match(aurocRow, /^<td class="num best">/);
});

test('2000-image report stays small: gallery capped and paged, every type on page 1', async () => {
  const rand = lcg(42);
  const types = ['good', 'crack', 'scratch', 'hole', 'rare'];
  const images: ReportImage[] = [];
  for (let i = 0; i < 2000; i++) {
    const type = i < 3 ? 'rare' : types[i % 4];
    const label = type === 'good' ? 0 : 1;
    const score = type === 'rare' ? 5 + rand() : label + 0.8 * rand();
    const map = new Float32Array(64).fill(score * 0.5); // tiny 8x8 maps keep the test fast
    images.push({
      id: `test/${type}/${String(i).padStart(4, '0')}.png`, defectType: type, label: label as 0 | 1, score,
      heatmap: async () => ({ map, height: 8, width: 8 }),
    });
  }
  const metrics = metricsOf(images);
  const files = new Map<string, number>();
  let index = '';
  const memory: ReportWriter = {
    async put(relPath, body) {
      files.set(relPath, Buffer.byteLength(body));
      if (relPath === 'index.html') index = String(body);
    },
  };
  const summary = await buildReport({ run, images, metrics, heatmapRange: [0, 3] }, memory);
  assert.ok(summary.indexBytes < 1_000_000, `index.html is ${summary.indexBytes} bytes`);
  if (KEEP) console.log(`2000-image report: index.html ${summary.indexBytes} bytes, ${files.size} files`);
  assert.equal(summary.indexBytes, files.get('index.html'));
  assert.equal(summary.galleryImages, 240);
  assert.equal(summary.galleryPages, 5);
  assert.equal((index.match(/<figure class="card/g) ?? []).length, 48);
  assert.ok(files.has('gallery/240.png') && !files.has('gallery/241.png'));
  assert.ok(files.has('gallery-5.html') && !files.has('gallery-6.html'));
  assert.ok(index.includes('capped at 240 of 2000 images'));
  for (const type of types) assert.ok(index.includes(`${type} · score`), `type ${type} not on page 1`);
  // The highest-scoring good image and the lowest-scoring defect lead the gallery.
  const goods = images.filter((im) => im.label === 0).sort((a, b) => b.score - a.score);
  const defects = images.filter((im) => im.label === 1).sort((a, b) => a.score - b.score);
  assert.ok(index.includes(goods[0].id) && index.includes(defects[0].id));
  const order = galleryOrder(images, metrics.threshold, 48, 240);
  assert.equal(new Set(order).size, 240);
  assert.ok([goods[0].id, defects[0].id].includes(images[order[0]].id));
  const page2 = files.get('gallery-2.html')!;
  assert.ok(page2 > 0 && page2 < 100_000);
  assert.equal(files.get('scores.csv')! > 2000 * 20, true);
});

test('bad input is refused with the image named', async () => {
  const sink: ReportWriter = { async put() {} };
  const metrics = patchcoreMetrics;
  await assert.rejects(buildReport({ run, images: [], metrics }, sink), /images is empty/);
  const bad = [{ id: 'test/x/1.png', defectType: 'x', label: 1 as const, score: NaN, height: 1, width: 1 }];
  await assert.rejects(buildReport({ run, images: bad, metrics }, sink), /"test\/x\/1.png"\): score is NaN/);
  await assert.rejects(localFolderWriter(dir).put('../escape.txt', 'x', 'text/plain'), /stay inside the report folder/);
  // An unreadable image file does not sink the report: the map is shown alone and the caption says why.
  let index = '';
  const pngs: string[] = [];
  const capture: ReportWriter = {
    async put(relPath, body) {
      if (relPath === 'index.html') index = String(body);
      if (relPath.endsWith('.png')) pngs.push(relPath);
    },
  };
  const map = new Float32Array(16);
  const heatmap = async () => ({ map, height: 4, width: 4 });
  const two: ReportImage[] = [
    { id: 'test/good/a.png', defectType: 'good', label: 0, score: 0.1, heatmap, image: async () => { throw new Error('ENOENT a.png'); } },
    { id: 'test/crack/b.png', defectType: 'crack', label: 1, score: 0.9, heatmap, image: async () => Buffer.from('garbage') },
  ];
  await buildReport({ run: { runId: 'r' }, images: two, metrics: metricsOf(two), heatmapRange: [0, 1] }, capture);
  assert.deepEqual(pngs.sort(), ['gallery/1.png', 'gallery/2.png']);
  assert.ok(index.includes('image unavailable: ENOENT a.png'));
  assert.ok(index.includes('&quot;test/crack/b.png&quot;: cannot read the image'));
});

test(
  'index.html in headless Chromium: plots and gallery load, no network, full-page screenshot',
  { skip: existsSync(CHROMIUM) ? false : `needs ${CHROMIUM} (Debian's chromium; CI installs it)`, timeout: 30_000 },
  async () => {
    const { chromium } = await import('playwright-core');
    const profile = await mkdtemp(join(tmpdir(), 'patchcore-chromium-'));
    const context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
        '--disable-component-update', '--disable-sync'],
    });
    const requests: string[] = [];
    context.on('request', (r) => requests.push(r.url()));
    try {
      const page = await context.newPage();
      for (const [folder, plots] of [
        [realDir, ['roc', 'pixel-roc', 'histogram', 'kde', 'boxplot', 'confusion']],
        [cmpDir, ['roc-comparison', 'roc', 'pixel-roc', 'histogram', 'kde', 'boxplot', 'confusion']],
      ] as const) {
        await page.goto(pathToFileURL(join(folder, 'index.html')).href, { waitUntil: 'load' });
        const state = (await page.evaluate(`(() => ({
          plots: [...document.querySelectorAll('figure.plot')].map((f) => {
            const svg = f.querySelector('svg');
            return { name: f.dataset.plot, width: svg ? svg.getBoundingClientRect().width : 0 };
          }),
          images: [...document.querySelectorAll('.gallery img')].map((i) => ({ src: i.getAttribute('src'), ok: i.complete && i.naturalWidth > 0 })),
        }))()`)) as { plots: { name: string; width: number }[]; images: { src: string; ok: boolean }[] };
        for (const name of plots) {
          const p = state.plots.find((x) => x.name === name);
          assert.ok(p && p.width > 100, `${folder}: plot ${name} missing or not rendered`);
        }
        assert.equal(state.images.length, folder === realDir ? 20 : 40);
        for (const img of state.images) assert.ok(img.ok, `${folder}: gallery image ${img.src} did not load`);
        const shot = join(folder, 'screenshot.png');
        await page.screenshot({ path: shot, fullPage: true });
        assert.ok((await stat(shot)).size > 50_000);
      }
      const external = requests.filter((u) => !u.startsWith('file:') && !u.startsWith('data:'));
      assert.deepEqual(external, [], 'the report must not reach the network');
      assert.ok(requests.length >= 2 * 21);
    } finally {
      await context.close();
      await rm(profile, { recursive: true, force: true });
    }
  },
);
