// Scoring with a saved autoencoder: load the model folder, reconstruct test images in batches, and turn each
// reconstruction error into an anomaly map in the model frame and an image score.
import { loadTfRuntime } from '../backbone/tfjs-engine.js';
import type { ImageResult } from '../evaluation/types.js';
import type { Logger } from '../log.js';
import type { ImageSource } from '../run/sources.js';
import type { StageTimer } from '../run/timings.js';
import { inputBatches } from './inputs.js';
import { configOf, readAutoencoderManifest, readAutoencoderWeights, type AutoencoderManifest } from './manifest.js';
import { ConvAutoencoder } from './model.js';
import { errorToAnomalyMap, mapMax, reconstructionError } from './score.js';

export interface LoadedAutoencoder {
  manifest: AutoencoderManifest;
  model: ConvAutoencoder;
  /** The TF.js backend it runs on. */
  backend: string;
}

export async function loadAutoencoder(modelDir: string, logger: Logger): Promise<LoadedAutoencoder> {
  const manifest = readAutoencoderManifest(modelDir);
  const parameters = readAutoencoderWeights(modelDir, manifest);
  const rt = await loadTfRuntime(logger);
  return { manifest, model: ConvAutoencoder.fromParameters(rt.tf, configOf(manifest), parameters), backend: rt.backend };
}

/** One result per source, in order. */
export async function* scoreWithAutoencoder(
  loaded: LoadedAutoencoder,
  sources: ImageSource[],
  opts: { batchSize: number; timer: StageTimer },
): AsyncGenerator<ImageResult> {
  const { manifest, model } = loaded;
  const size = manifest.architecture.inputSize;
  const per = size * size * 3;
  const frame = { resize: manifest.frame.resize, crop: manifest.frame.crop };
  for await (const batch of inputBatches(sources, { frame, size, batchSize: opts.batchSize, timer: opts.timer })) {
    const good = batch.filter((p) => p.ok);
    const input = new Float32Array(good.length * per);
    good.forEach((p, i) => input.set(p.input, i * per));
    const recon = good.length > 0 ? await opts.timer.time('reconstruct', () => model.reconstruct(input, good.length)) : input;
    const results = new Map<string, ImageResult>();
    good.forEach((p, i) => {
      const map = opts.timer.timeSync('maps', () => {
        const err = reconstructionError(p.input, recon.subarray(i * per, (i + 1) * per), size);
        return errorToAnomalyMap(err, size, p.frame, manifest.scoring.sigma);
      });
      results.set(p.id, { ok: true, id: p.id, frame: p.frame, score: mapMax(map), map });
    });
    for (const p of batch) yield p.ok ? results.get(p.id)! : p;
  }
}
