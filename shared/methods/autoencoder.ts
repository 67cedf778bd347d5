// The convolutional autoencoder baseline as a method: reconstruction error as the anomaly map.
import { loadAutoencoder, scoreWithAutoencoder } from '../autoencoder/evaluate.js';
import { readAutoencoderManifest } from '../autoencoder/manifest.js';
import type { Method } from './method.js';

export const autoencoder: Method = {
  name: 'autoencoder',
  async check(modelDir) {
    readAutoencoderManifest(modelDir);
  },
  async open(modelDir, opts, timer) {
    const loaded = await timer.time('load_model', () => loadAutoencoder(modelDir, opts.logger));
    const { manifest } = loaded;
    const a = manifest.architecture;
    return {
      score: (sources) => scoreWithAutoencoder(loaded, sources, { batchSize: opts.batchSize, timer }),
      model: {
        method: 'autoencoder', category: manifest.category, input_size: a.inputSize,
        encoder_channels: a.encoderChannels, latent_channels: a.latentChannels, parameters: a.parameters,
        epochs: manifest.training.epochs, final_train_loss: manifest.training.loss.at(-1) ?? null, backend: loaded.backend,
      },
      describe: {
        recipe: `autoencoder ${a.inputSize}x${a.inputSize}, channels ${a.encoderChannels.join('/')}, latent ${a.latentChannels}, ${manifest.training.epochs} epochs`,
        backbone: `none (convolutional autoencoder, ${a.parameters} parameters, TF.js ${loaded.backend})`,
      },
      dispose: () => loaded.model.dispose(),
    };
  },
};
