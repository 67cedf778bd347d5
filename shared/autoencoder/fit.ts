// In-process training of the autoencoder baseline: normal images -> inputs at the autoencoder's size -> seeded
// model trained on the MSE loss -> model folder (autoencoder.f32 + manifest.json with method 'autoencoder').
import { mkdir } from 'node:fs/promises';
import { loadTfRuntime } from '../backbone/tfjs-engine.js';
import { listMvtecDataset } from '../dataset/mvtec.js';
import { DEFAULT_FRAME_SPEC, type FrameSpec } from '../image/index.js';
import type { Logger } from '../log.js';
import { MODEL_FORMAT, MODEL_FORMAT_VERSION } from '../model/manifest.js';
import { localSources } from '../run/sources.js';
import { startProgress } from '../run/progress.js';
import { StageTimer, peakRssMiB } from '../run/timings.js';
import { DEFAULT_AUTOENCODER_CONFIG, checkConfig, parameterCount, type AutoencoderConfig } from './architecture.js';
import { inputBatches } from './inputs.js';
import { writeAutoencoderManifest, writeAutoencoderWeights, type AutoencoderManifest } from './manifest.js';
import { ConvAutoencoder } from './model.js';

/** Training defaults: 3.6 minutes of training on the 209 bottle images on 2 shared cores (WASM backend, threaded SIMD). */
export const AUTOENCODER_TRAINING_DEFAULTS = Object.freeze({ epochs: 15, batchSize: 8, learningRate: 1e-3, sigma: 4 });

export interface AutoencoderFitOptions {
  dataDir: string;
  modelDir: string;
  frame?: FrameSpec;
  config?: Partial<AutoencoderConfig>;
  epochs?: number;
  batchSize?: number;
  learningRate?: number;
  /** Seeds the initial parameters and the order of the images in each epoch. */
  seed?: number;
  /** Use only the first N training images (quick runs and tests). */
  limit?: number;
  /** Gaussian sigma of the anomaly maps at the 224-pixel scale. */
  sigma?: number;
  logger: Logger;
}

export async function fitAutoencoder(opts: AutoencoderFitOptions): Promise<AutoencoderManifest> {
  const log = opts.logger;
  const d = AUTOENCODER_TRAINING_DEFAULTS;
  const config: AutoencoderConfig = { ...DEFAULT_AUTOENCODER_CONFIG, ...opts.config };
  checkConfig(config);
  const frame = opts.frame ?? DEFAULT_FRAME_SPEC;
  const epochs = opts.epochs ?? d.epochs;
  const batchSize = opts.batchSize ?? d.batchSize;
  const learningRate = opts.learningRate ?? d.learningRate;
  const seed = opts.seed ?? 0;
  const timer = new StageTimer();
  const t0 = performance.now();

  const dataset = listMvtecDataset(opts.dataDir, { train: true });
  const train = opts.limit ? dataset.train.slice(0, opts.limit) : dataset.train;
  await mkdir(opts.modelDir, { recursive: true });
  const rt = await loadTfRuntime(log);

  log.info({ images: train.length, inputSize: config.inputSize }, 'fit autoencoder: reading training images');
  const per = config.inputSize * config.inputSize * 3;
  const images = new Float32Array(train.length * per);
  let count = 0;
  const skipped: { id: string; error: string }[] = [];
  for await (const batch of inputBatches(localSources(dataset.root, train), { frame, size: config.inputSize, batchSize: 8, timer })) {
    for (const r of batch) {
      if (r.ok) images.set(r.input, count++ * per);
      else {
        skipped.push({ id: r.id, error: r.error });
        log.warn({ image: r.id, error: r.error }, 'fit autoencoder: image skipped');
      }
    }
  }
  if (count === 0) {
    throw new Error(`no training image of "${opts.dataDir}" could be read (${skipped.length} failed; first: ${skipped[0]?.error})`);
  }

  const model = ConvAutoencoder.create(rt.tf, config, seed);
  let loss: number[];
  let parameters: Float32Array[];
  const progress = startProgress('autoencoder epochs', epochs, log);
  try {
    log.info({ epochs, batchSize, learningRate, seed, backend: rt.backend, parameters: parameterCount(config) }, 'fit autoencoder: training');
    loss = await timer.time('train', () =>
      model.train(images.subarray(0, count * per), count, {
        epochs, batchSize, learningRate, seed,
        onEpoch: (epoch, l) => {
          progress.tick();
          log.debug({ epoch, loss: l }, 'fit autoencoder: epoch done');
        },
      }),
    );
    parameters = await model.parameters();
  } finally {
    progress.stop();
    model.dispose();
  }
  const weights = writeAutoencoderWeights(opts.modelDir, parameters);

  const manifest: AutoencoderManifest = {
    format: MODEL_FORMAT,
    version: MODEL_FORMAT_VERSION,
    method: 'autoencoder',
    createdAt: new Date().toISOString(),
    category: dataset.category,
    frame: { resize: frame.resize, crop: frame.crop },
    architecture: { ...config, encoderChannels: [...config.encoderChannels], parameters: parameterCount(config) },
    weights,
    scoring: { sigma: opts.sigma ?? d.sigma, imageScore: 'max' },
    training: {
      images: count,
      skipped,
      epochs,
      batchSize,
      learningRate,
      seed,
      loss,
      backend: rt.wasmBuild ? `${rt.backend} (${rt.wasmBuild}, ${rt.threads} threads)` : rt.backend,
      timings_ms: { ...timer.toJSON(), total: Math.round(performance.now() - t0) },
      peak_rss_mib: peakRssMiB(),
    },
  };
  writeAutoencoderManifest(opts.modelDir, manifest);
  log.info({ modelDir: opts.modelDir, loss: loss.at(-1), timings_ms: manifest.training.timings_ms }, 'fit autoencoder: model written');
  return manifest;
}
