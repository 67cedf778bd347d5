// Every option of every `patchcore` command, declared once: flag, value placeholder, validation, default and help
// line. Commands take them from OPTIONS by name (cli/commands/*), whole groups at a time where several commands share
// them; a command may make an option required, give it its own default, or leave it undefined when the library
// applies the documented default, but never declares a flag again.
import { z } from 'zod';
import { AUTOENCODER_TRAINING_DEFAULTS } from '../shared/autoencoder/fit.js';
import { DEFAULT_AUTOENCODER_CONFIG } from '../shared/autoencoder/architecture.js';
import { ENGINE_NAMES, PRECISIONS } from '../shared/backbone/engine.js';
import { RECIPE_NAMES, getRecipe } from '../shared/features/recipes.js';
import { DEFAULT_TILE_OVERLAP, FRAME_PRESETS, type FramePreset, type FrameSpec } from '../shared/image/index.js';
import { defaultDatasetDir, defaultWeightsPath } from '../shared/paths.js';
import { CliOption, UsageError, choice, intFlag, numberFlag, option, optionTable, positiveInt, ratio, sizeOrNone, toggle } from './args.js';

const FRAME_PRESET_NAMES = Object.keys(FRAME_PRESETS) as [FramePreset, ...FramePreset[]];
const fraction = numberFlag.refine((r) => r >= 0 && r < 1, { message: 'expected a fraction in [0, 1)' });
const recipeCoresetRatios = RECIPE_NAMES.map((n) => `${getRecipe(n).defaultCoresetRatio} for ${n}`).join(', ');

export const OPTIONS = optionTable([
  // Data, models and reports
  option('data', '<dir>', z.string(), 'MVTec AD style category folder (train/good/, test/<type>/, ground_truth/<type>/)')
    .default(() => defaultDatasetDir(), '$PATCHCORE_DATA or the shared bottle set'),
  option('model', '<dir>', z.string(), 'a model folder written by "patchcore fit", of either method (PatchCore or autoencoder)').required(),
  option('out', '<dir>', z.string(), 'folder for the report (index.html, metrics.json, scores.csv)'),
  choice('method', ['patchcore', 'autoencoder'], 'what to train; the model folder records it').default('patchcore'),
  option('seed', '<n>', intFlag, 'PatchCore: coreset projection and start points; autoencoder: initial weights and image order')
    .default(0),
  option('limit', '<n>', positiveInt, 'use only the first n training images'),
  option('limit-per-type', '<n>', positiveInt, 'use only the first n test images of each type'),

  // The backbone
  option('weights', '<h5>', z.string(), 'Keras ResNet-50 weights; a PatchCore model is scored with the weights it was trained with')
    .default(() => defaultWeightsPath(), '$PATCHCORE_WEIGHTS or the shared file'),
  choice('engine', ENGINE_NAMES, 'backbone engine; auto: TF.js on a GPU, else ONNX Runtime').default('auto'),
  option('batch-size', '<n>', positiveInt, 'images per backbone / training batch').default(8),
  choice('precision', PRECISIONS, 'backbone arithmetic. int8: ONNX Runtime on CPU, activations calibrated on the first training images and recorded in the model, which evaluate then reuses (may cost some AUROC); bf16: refused, no bfloat16 Conv on the CPU provider')
    .default('fp32'),

  // The frame every image is brought to
  choice('frame', FRAME_PRESET_NAMES, 'how images are framed. whole: the whole image, aspect ratio kept (the shorter side to --resize, no crop); paper: the MVTec AD paper protocol (shorter side 256, centre crop 224). --resize and --crop override the preset\'s values')
    .default('whole'),
  option('resize', '<n|none>', sizeOrNone, 'shorter side before cropping (none: the original size); the uncropped image is then brought to the nearest multiple of 16 per side, as the backbone needs')
    .shownDefault('256'),
  option('crop', '<n|none>', sizeOrNone, 'centre crop').shownDefault('none; 224 with --frame paper'),
  option('tile', '<px>', positiveInt.refine((n) => n % 16 === 0, { message: 'expected a multiple of 16' }),
    'PatchCore: cut the (resized) image into overlapping <px> x <px> tiles, each run through the backbone at that size; the bank holds every tile\'s patches and scoring stitches the tiles\' maps (overlaps averaged). Recorded in the model; needs the whole image (no crop) and the paper recipe'),
  option('tile-overlap', '<px>', intFlag.refine((n) => n >= 0, { message: 'expected 0 or more' }), 'pixels shared by neighbouring tiles, at least')
    .shownDefault(String(DEFAULT_TILE_OVERLAP)),

  // What a PatchCore model is made of
  choice('recipe', RECIPE_NAMES, 'patch feature recipe').default('paper'),
  option('coreset-ratio', '<r>', ratio, 'fraction of training patches kept in the bank').shownDefault(recipeCoresetRatios),
  option('coreset-size', '<n>', positiveInt, 'exact bank size instead of a ratio (submit train: the cap of the bank and of every reduce step)'),
  option('per-shard-coreset', '<r>', ratio, 'merge-and-reduce: reduce each shard with its own coreset first (default for runs reduced as a tree: the coreset ratio)'),
  option('fan-in', '<n>', intFlag.refine((n) => n >= 2 && n <= 64, { message: 'expected an integer from 2 to 64' }),
    'inputs merged by one reduce step; a run of more shards is reduced as a tree of such steps').shownDefault('8'),
  option('validation-split', '<r>', fraction, 'PatchCore: hold out this fraction of the good training images and record their scores, so evaluate can set a target-FPR threshold')
    .shownDefault('0'),

  // The autoencoder baseline
  option('epochs', '<n>', positiveInt, 'training epochs').shownDefault(String(AUTOENCODER_TRAINING_DEFAULTS.epochs)),
  option('learning-rate', '<r>', numberFlag.refine((r) => r > 0 && r < 1, { message: 'expected a rate in (0, 1)' }), 'Adam learning rate')
    .shownDefault(String(AUTOENCODER_TRAINING_DEFAULTS.learningRate)),
  option('input-size', '<n>', positiveInt.refine((n) => n % 16 === 0, { message: 'expected a multiple of 16' }), 'side of the square input, a multiple of 16')
    .shownDefault(String(DEFAULT_AUTOENCODER_CONFIG.inputSize)),

  // Evaluation
  option('recall-sample', '<n>', intFlag.refine((n) => n >= 0, { message: 'expected 0 or more' }), 'PatchCore models: test patches used to measure HNSW recall@1 (0 = skip)')
    .default(2000),
  choice('threshold', ['f1-max', 'target-fpr'], 'how the good/defect threshold is chosen. f1-max: on the labelled test set; target-fpr: on the good images held out by fit --validation-split (used automatically when the test set lacks labelled defects)')
    .default('f1-max'),
  option('target-fpr', '<r>', numberFlag.refine((r) => r >= 0 && r < 1, { message: 'expected a rate in [0, 1)' }), 'the false-positive rate allowed on those held-out images')
    .shownDefault('0.01'),

  // Runs of the distributed pipeline
  option('dataset', '<name>', z.string(), 'data set name in the bucket (datasets/<name>/)').required(),
  option('category', '<name>', z.string(), 'model category').shownDefault('the dataset name'),
  option('shard-size', '<n>', positiveInt, 'images per shard').default(32),
  option('run-id', '<id>', z.string(), 'the run\'s id; the same id given again does not start a second run').shownDefault('a new one'),
  option('version', '<id>', z.string(), 'model version the run writes').shownDefault('derived from the run id'),
  option('model-version', '<v>|latest', z.string(), 'model version to evaluate').default('latest'),
  option('images', '<prefix>', z.string(), 'every image under this prefix of the bucket, any layout: datasets/<name>/[<folder>/] or <name>[/<folder>] (train: all good images; score: the images to score)'),
  option('from-version', '<v>|latest', z.string(), 'incremental retraining: reduce the new images together with this version\'s bank into a new version (old images are not read again)'),
  toggle('wait', 'wait for the run and show its progress'),
  toggle('watch', 'follow the run to the end with a progress bar'),
  option('feature-workers', '<n>', intFlag.refine((n) => n >= 1 && n <= 16, { message: 'expected 1 to 16' }), 'feature worker processes').default(1),
  option('cron', '"<expr>"', z.string(), 'when to retrain: a cron expression').required(),
  option('tz', '<zone>', z.string(), 'time zone of the cron expression'),

  // Retention (patchcore gc); undefined unless given, so the GC_* environment settings apply
  toggle('dry-run', 'only list what would be deleted'),
  option('keep-versions', '<n>', positiveInt, 'model versions kept per category, newest first').shownDefault('GC_KEEP_VERSIONS or 5'),
  option('keep-reports', '<n>', positiveInt, 'evaluation reports kept per category, newest first').shownDefault('GC_KEEP_REPORTS or 20'),
  option('grace-hours', '<h>', intFlag.refine((n) => n >= 0, { message: 'expected an integer of at least 0' }),
    'hours a run\'s intermediates are kept when its output was never published').shownDefault('GC_GRACE_MS or 24 h'),

  // The benchmark over categories (patchcore benchmark)
  option('categories', '<a,b>', z.string().transform((s) => s.split(',').map((n) => n.trim()).filter((n) => n !== '')),
    'only these categories (folder names), in this order').shownDefault('every category found'),
  toggle('compare', 'also run the PyTorch reference (../shared/bench/ref_patchcore.py, /usr/bin/python3) on each category and add its figures and the ratios'),
  toggle('distributed', 'fit and evaluate each category through the queues, as "patchcore demo" does, instead of in this process'),
]);

const O = OPTIONS;

/** The same options, each undefined when not given: for commands that must know what the user typed. */
export function allOptional<const G extends readonly CliOption[]>(group: G): { [K in keyof G]: ReturnType<G[K]['optional']> } {
  return group.map((o) => o.optional()) as { [K in keyof G]: ReturnType<G[K]['optional']> };
}

/** The image frame: a preset, then resize and centre crop overriding it. */
export const FRAME_OPTIONS = [O.frame, O.resize, O.crop] as const;
/** Tiling of the frame (local fit; evaluate takes it from the model). */
export const TILE_OPTIONS = [O.tile, O['tile-overlap']] as const;

/** The FrameSpec the frame options describe: the preset, with --resize and --crop (and tiling, where given) over it. */
export function frameSpecFromOptions(o: {
  frame: FramePreset; resize?: number | null; crop?: number | null; tile?: number; 'tile-overlap'?: number;
}): FrameSpec {
  const preset = FRAME_PRESETS[o.frame];
  const spec: FrameSpec = { resize: o.resize !== undefined ? o.resize : preset.resize, crop: o.crop !== undefined ? o.crop : preset.crop };
  if (o['tile-overlap'] !== undefined && o.tile === undefined) throw new UsageError('--tile-overlap needs --tile');
  if (o.tile === undefined) return spec;
  if (spec.crop !== null) throw new UsageError(`--tile needs the whole image, but the frame crops to ${spec.crop}: leave --frame at whole and --crop unset (or none)`);
  const tileOverlap = o['tile-overlap'] ?? DEFAULT_TILE_OVERLAP;
  if (tileOverlap >= o.tile) throw new UsageError(`--tile-overlap ${tileOverlap} must be smaller than --tile ${o.tile}`);
  return { ...spec, tile: o.tile, tileOverlap };
}
/** The backbone that makes the features. */
export const BACKBONE_OPTIONS = [O.weights, O.engine] as const;
/** What a PatchCore model is made of: the feature recipe and how much of the training patches the bank keeps. */
export const MODEL_OPTIONS = [O.recipe, O['coreset-ratio']] as const;
/** A run submitted to the queues: which data set, as which category, in shards of what size, under which id. */
export const QUEUE_OPTIONS = [O.dataset, O.category, O['shard-size'], O['run-id'], O.wait] as const;
