// The ResNet-50 backbone on ONNX Runtime (onnxruntime-node). The model is generated in memory from
// the shared op list (onnx-graph.ts); one session per set of requested layers, so a caller asking
// only for conv3+conv4 never pays for exporting conv2. CPU by default; CUDA when asked for and its
// provider library is installed, else CPU with a log line saying why. Precision 'int8' runs the QDQ
// graph (quantize.ts) with activation ranges measured once, at creation, on calibration images.
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import { dirname, join } from 'node:path';
import ort from 'onnxruntime-node';
import { UserError } from '../errors.js';
import { createLogger, type Logger } from '../log.js';
import { nhwc, type NhwcTensor } from '../tensor.js';
import { KerasWeights } from '../weights/keras-h5.js';
import { activationOutputName, buildResnetOnnxFromFolded, type OnnxInputLayout } from './onnx-graph.js';
import { RangeCollector, activationTensors, assertActivationRanges, type ActivationRanges } from './quantize.js';
import {
  BACKBONE_LAYERS,
  BACKBONE_OUTPUTS,
  RESNET50_OPS,
  assertBackboneLayers,
  foldedConvWeights,
  type BackboneLayer,
  type FoldedConv,
} from './resnet50.js';
import {
  PRECISIONS,
  assertBackboneInput,
  type BackboneCalibration,
  type BackboneEngine,
  type Precision,
} from './types.js';

type InferenceSession = import('onnxruntime-node').InferenceSession;
type SessionOptions = import('onnxruntime-node').InferenceSession.SessionOptions;

export interface CreateOnnxBackboneOptions {
  weightsPath: string;
  logger?: Logger;
  /** ONNX Runtime execution providers in order of preference (default ['cpu']). Any GPU provider
   * ('cuda') is tried first and falls back to 'cpu' when it cannot start. */
  executionProviders?: string[];
  /** Threads inside each op (default: one per core). */
  intraOpThreads?: number;
  /** Default 'fp32'. 'int8' needs `calibration`; 'bf16' is refused (see BF16_UNSUPPORTED). */
  precision?: Precision;
  calibration?: BackboneCalibration;
}

/** Why there is no bf16 backbone: ONNX Runtime's CPU provider registers no bfloat16 kernel for Conv
 * (or any arithmetic op), so such a graph fails at session creation (scripts/bench-backbone.ts
 * --probe-bf16 shows ORT's own error), and this Node binding ships no provider that has one. */
export const BF16_UNSUPPORTED =
  'ONNX Runtime (onnxruntime-node CPU provider) has no bfloat16 Conv kernel, so a bf16 backbone cannot run; use fp32 or int8';

export type OnnxBackend = 'cpu' | 'cuda';

/** Fastest measured on a 2-core AVX-512 CPU (~16 ms/image at 224, batch 1 or 8): level 'all' matters
 * (its NCHWc conv layout; 'extended' is ~40% slower), 'parallel' mode is ~2x slower, and the arena,
 * thread spinning and an NCHW input change little. */
function sessionOptions(provider: OnnxBackend, intraOpThreads: number): SessionOptions {
  return {
    executionProviders: provider === 'cuda' ? ['cuda', 'cpu'] : ['cpu'],
    graphOptimizationLevel: 'all',
    executionMode: 'sequential',
    intraOpNumThreads: intraOpThreads,
    enableCpuMemArena: true,
    enableMemPattern: true,
    // ORT's own log goes to stderr unformatted; keep it to errors so the JSON log stays readable.
    logSeverityLevel: 3,
  };
}

// The graph takes NHWC directly: transposing in-graph costs no more than doing it here.
const INPUT_LAYOUT: OnnxInputLayout = 'nhwc';

export async function createOnnxBackbone(opts: CreateOnnxBackboneOptions): Promise<OnnxBackbone> {
  const logger = opts.logger ?? createLogger('backbone');
  const threads = opts.intraOpThreads ?? availableParallelism();
  if (!Number.isInteger(threads) || threads < 1) {
    throw new Error(`intraOpThreads must be a positive integer, got ${String(opts.intraOpThreads)}`);
  }
  const precision = opts.precision ?? 'fp32';
  if (!(PRECISIONS as readonly string[]).includes(precision)) {
    throw new UserError(`backbone precision "${String(precision)}" is unknown; choose from ${PRECISIONS.join(', ')}`);
  }
  if (precision === 'bf16') throw new UserError(BF16_UNSUPPORTED);
  if (precision === 'int8' && !opts.calibration) {
    throw new UserError('backbone precision int8 needs calibration images (or the activation ranges of a model)');
  }
  const requested = opts.executionProviders ?? ['cpu'];
  for (const ep of requested) {
    if (ep !== 'cpu' && ep !== 'cuda') {
      throw new Error(`executionProviders: unsupported provider "${ep}"; choose from cuda, cpu`);
    }
  }

  const weights = await KerasWeights.open(opts.weightsPath);
  let folded: Map<string, FoldedConv>;
  try {
    folded = foldedConvWeights(weights, RESNET50_OPS);
  } finally {
    weights.close();
  }
  logger.info({ weights: opts.weightsPath, sha256: weights.sha256, convs: folded.size }, 'backbone weights loaded');

  let ranges: ActivationRanges | undefined;
  if (precision === 'int8') {
    ranges = await activationRangesOf(folded, opts.calibration!, threads, logger);
  }

  let backend: OnnxBackend = 'cpu';
  let first: { layers: BackboneLayer[]; session: InferenceSession } | undefined;
  if (requested.includes('cuda')) {
    // The provider is decided now, so `backend` is true from the start: the full network is
    // built on CUDA once, and kept as the session for all three layers.
    const reason = missingCudaProvider();
    if (precision === 'int8') {
      // ORT's QLinearConv is a CPU kernel; on CUDA the QDQ graph would fall back node by node.
      logger.warn({ precision }, 'int8 backbone runs on the cpu provider only; not using cuda');
    } else if (reason) {
      logger.warn({ reason }, 'onnx cuda execution provider unavailable, using cpu');
    } else {
      const layers = [...BACKBONE_LAYERS];
      try {
        const model = buildResnetOnnxFromFolded(folded, layers, { inputLayout: INPUT_LAYOUT });
        first = { layers, session: await ort.InferenceSession.create(model, sessionOptions('cuda', threads)) };
        backend = 'cuda';
      } catch (err) {
        logger.warn({ err: (err as Error).message }, 'onnx cuda execution provider failed to start, using cpu');
      }
    }
  }
  logger.info({ provider: backend, precision, intraOpThreads: threads, ort: ort.env.versions.node }, 'onnx backbone ready');
  const engine = new OnnxBackbone(folded, backend, threads, weights.sha256, logger, ranges);
  if (first) engine.adoptSession(first.layers, first.session);
  return engine;
}

/** Why CUDA cannot start, when that is plain without trying: the optional provider library (fetched
 * by onnxruntime-node's install script) is not beside the binding. Undefined: worth a try. */
function missingCudaProvider(): string | undefined {
  if (process.platform !== 'linux' && process.platform !== 'win32') return `no CUDA build of onnxruntime for ${process.platform}`;
  try {
    const require = createRequire(import.meta.url);
    const binDir = join(dirname(require.resolve('onnxruntime-node')), '..', 'bin', 'napi-v6', process.platform, process.arch);
    const lib = process.platform === 'win32' ? 'onnxruntime_providers_cuda.dll' : 'libonnxruntime_providers_cuda.so';
    if (existsSync(join(binDir, 'onnxruntime_binding.node')) && !existsSync(join(binDir, lib))) {
      return `${lib} is not installed in ${binDir}`;
    }
  } catch {
    // Unknown package layout: let session creation decide.
  }
  return undefined;
}

export class OnnxBackbone implements BackboneEngine {
  readonly name = 'onnx';
  readonly backend: OnnxBackend;
  readonly intraOpThreads: number;
  readonly weightsSha256: string;
  readonly precision: 'fp32' | 'int8';
  readonly activationRanges: ActivationRanges | undefined;
  private folded: Map<string, FoldedConv> | null;
  /** Key: the requested layers in network order, comma-joined. */
  private readonly sessions = new Map<string, Promise<InferenceSession>>();
  private readonly logger: Logger;

  constructor(
    folded: Map<string, FoldedConv>,
    backend: OnnxBackend,
    intraOpThreads: number,
    weightsSha256: string,
    logger: Logger,
    activationRanges?: ActivationRanges,
  ) {
    this.folded = folded;
    this.precision = activationRanges ? 'int8' : 'fp32';
    this.activationRanges = activationRanges;
    this.backend = backend;
    this.intraOpThreads = intraOpThreads;
    this.weightsSha256 = weightsSha256;
    this.logger = logger;
  }

  /** @internal Registers a session built while choosing the provider. */
  adoptSession(layers: BackboneLayer[], session: InferenceSession): void {
    this.sessions.set(sessionKey(layers), Promise.resolve(session));
  }

  async run(input: NhwcTensor, layers: BackboneLayer[]): Promise<Record<string, NhwcTensor>> {
    if (!this.folded) throw new Error('onnx backbone has been disposed');
    assertBackboneInput(input);
    assertBackboneLayers(layers);
    const session = await this.session(layers);
    const feed = new ort.Tensor('float32', input.data, [input.n, input.h, input.w, input.c]);
    const results = await session.run({ input: feed });
    const out: Record<string, NhwcTensor> = {};
    for (const layer of layers) {
      const t = results[layer];
      if (!t) throw new Error(`onnx backbone returned no output for layer ${layer}`);
      const [n, h, w, c] = t.dims;
      const { stride, channels } = BACKBONE_OUTPUTS[layer];
      if (n !== input.n || h !== input.h / stride || w !== input.w / stride || c !== channels) {
        throw new Error(`onnx backbone output ${layer} is [${t.dims.join(',')}], expected [${input.n},${input.h / stride},${input.w / stride},${channels}]`);
      }
      out[layer] = nhwc(t.data as Float32Array, n, h, w, c);
    }
    return out;
  }

  private session(layers: BackboneLayer[]): Promise<InferenceSession> {
    const key = sessionKey(layers);
    let session = this.sessions.get(key);
    if (!session) {
      const started = performance.now();
      const model = buildResnetOnnxFromFolded(this.folded!, [...key.split(',')] as BackboneLayer[], {
        inputLayout: INPUT_LAYOUT,
        int8: this.activationRanges ? { ranges: this.activationRanges } : undefined,
      });
      session = ort.InferenceSession.create(model, sessionOptions(this.backend, this.intraOpThreads)).then(
        (s) => {
          this.logger.info(
            { layers: key, provider: this.backend, precision: this.precision, modelBytes: model.length, ms: Math.round(performance.now() - started) },
            'onnx session created',
          );
          return s;
        },
        (err: unknown) => {
          this.sessions.delete(key);
          throw new Error(`onnx backbone could not create a session for ${key}: ${(err as Error).message}`);
        },
      );
      this.sessions.set(key, session);
    }
    return session;
  }

  dispose(): void {
    if (!this.folded) return;
    this.folded = null;
    for (const session of this.sessions.values()) {
      session.then((s) => s.release()).catch(() => undefined);
    }
    this.sessions.clear();
  }
}

function sessionKey(layers: readonly BackboneLayer[]): string {
  return BACKBONE_LAYERS.filter((layer) => layers.includes(layer)).join(',');
}

/** The int8 activation ranges: given, or measured by running the fp32 network (all layers) on the
 * calibration images with every activation exposed, min/max over all of them. */
async function activationRangesOf(
  folded: ReadonlyMap<string, FoldedConv>,
  calibration: BackboneCalibration,
  threads: number,
  logger: Logger,
): Promise<ActivationRanges> {
  const ops = RESNET50_OPS;
  if ('ranges' in calibration) {
    assertActivationRanges(calibration.ranges, ops);
    return calibration.ranges;
  }
  const { images } = calibration;
  const collector = new RangeCollector(calibration.method ?? 'minmax', calibration.percentile);
  if (!Array.isArray(images) || images.length === 0) {
    throw new UserError('int8 calibration needs at least one image batch');
  }
  const started = performance.now();
  const model = buildResnetOnnxFromFolded(folded, [...BACKBONE_LAYERS], { inputLayout: INPUT_LAYOUT, exposeActivations: true });
  const session = await ort.InferenceSession.create(model, sessionOptions('cpu', threads));
  let count = 0;
  try {
    for (const batch of images) {
      assertBackboneInput(batch);
      const results = await session.run({ input: new ort.Tensor('float32', batch.data, [batch.n, batch.h, batch.w, batch.c]) });
      for (const name of activationTensors(ops)) {
        collector.add(name, results[activationOutputName(name)].data as Float32Array);
      }
      count += batch.n;
    }
  } finally {
    await session.release();
  }
  logger.info({ images: count, method: collector.method, ms: Math.round(performance.now() - started) }, 'int8 backbone calibrated');
  return collector.ranges();
}
