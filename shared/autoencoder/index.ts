// The convolutional autoencoder baseline: architecture, TF.js model and training, preprocessing, scoring, model
// folder (manifest + weights), fitting and scoring pipelines.
export {
  DEFAULT_AUTOENCODER_CONFIG, checkConfig, layerSpecs, parameterSpecs, parameterCount, initialParameters,
  type AutoencoderConfig, type LayerSpec, type ParameterSpec,
} from './architecture.js';
export { convWithGradient, convFilterGradient, convInputGradient, upsample2WithGradient, type ConvOp } from './conv.js';
export { ConvAutoencoder, type TrainOptions } from './model.js';
export { toAutoencoderInput, type AutoencoderInput } from './preprocess.js';
export { inputBatches, type PreparedInput, type InputOptions } from './inputs.js';
export { reconstructionError, errorToAnomalyMap, mapMax } from './score.js';
export {
  AUTOENCODER_WEIGHTS_FILE, AutoencoderManifestSchema, configOf, readAutoencoderManifest, writeAutoencoderManifest,
  readAutoencoderWeights, writeAutoencoderWeights, type AutoencoderManifest,
} from './manifest.js';
export { fitAutoencoder, AUTOENCODER_TRAINING_DEFAULTS, type AutoencoderFitOptions } from './fit.js';
export { loadAutoencoder, scoreWithAutoencoder, type LoadedAutoencoder } from './evaluate.js';
