// The convolutional autoencoder on TF.js: forward pass, reconstruction of a batch, and MSE training with Adam.
// Inputs are NHWC RGB in 0..1 at config.inputSize; the output is the reconstruction in the same layout (sigmoid).
import { SeededRandom } from '../coreset/random.js';
import { initialParameters, layerSpecs, parameterSpecs, type AutoencoderConfig, type LayerSpec } from './architecture.js';
import { convWithGradient, upsample2WithGradient, type ConvOp } from './conv.js';

type Tf = typeof import('@tensorflow/tfjs');
type Tensor4D = import('@tensorflow/tfjs').Tensor4D;
type Variable = import('@tensorflow/tfjs').Variable;
type Scalar = import('@tensorflow/tfjs').Scalar;

export interface TrainOptions {
  epochs: number;
  batchSize: number;
  learningRate: number;
  /** Seeds the order of the training images in each epoch. */
  seed: number;
  /** Called after each epoch with its mean loss. */
  onEpoch?: (epoch: number, loss: number) => void;
}

export class ConvAutoencoder {
  readonly config: AutoencoderConfig;
  private readonly tf: Tf;
  private readonly layers: LayerSpec[];
  private readonly kernels: Variable[];
  private readonly biases: Variable[];
  private readonly conv1: ConvOp;
  private readonly conv2: ConvOp;
  private readonly up2: (x: Tensor4D) => Tensor4D;
  private disposed = false;

  private constructor(tf: Tf, config: AutoencoderConfig, parameters: Float32Array[]) {
    this.tf = tf;
    this.config = { ...config, encoderChannels: [...config.encoderChannels] };
    this.layers = layerSpecs(config);
    const specs = parameterSpecs(config);
    if (parameters.length !== specs.length) {
      throw new Error(`autoencoder parameters: got ${parameters.length} arrays, the architecture has ${specs.length}`);
    }
    specs.forEach((s, i) => {
      const n = s.shape.reduce((a, b) => a * b, 1);
      if (parameters[i].length !== n) {
        throw new Error(`autoencoder parameter "${s.name}" has ${parameters[i].length} values, expected ${s.shape.join('x')} = ${n}`);
      }
    });
    // Unnamed variables: TF.js names must be unique per process and two models may be loaded at once.
    const variable = (k: number) => {
      const init = tf.tensor(parameters[k], specs[k].shape);
      const v = tf.variable(init, true);
      init.dispose();
      return v;
    };
    this.kernels = this.layers.map((_, i) => variable(2 * i));
    this.biases = this.layers.map((_, i) => variable(2 * i + 1));
    this.conv1 = convWithGradient(tf, 1);
    this.conv2 = convWithGradient(tf, 2);
    this.up2 = upsample2WithGradient(tf);
  }

  /** A fresh model with seeded initial parameters. */
  static create(tf: Tf, config: AutoencoderConfig, seed: number): ConvAutoencoder {
    return new ConvAutoencoder(tf, config, initialParameters(config, seed));
  }

  /** A model from saved parameters (in parameterSpecs order). */
  static fromParameters(tf: Tf, config: AutoencoderConfig, parameters: Float32Array[]): ConvAutoencoder {
    return new ConvAutoencoder(tf, config, parameters);
  }

  /** The reconstruction of x ([n, size, size, 3], 0..1). Caller owns the result; use inside tf.tidy when training. */
  forward(x: Tensor4D): Tensor4D {
    this.checkAlive();
    const tf = this.tf;
    const size = this.config.inputSize;
    if (x.rank !== 4 || x.shape[1] !== size || x.shape[2] !== size || x.shape[3] !== 3) {
      throw new Error(`autoencoder input must be [n, ${size}, ${size}, 3], got [${x.shape.join(', ')}]`);
    }
    const pad1 = (h: Tensor4D) => tf.pad(h, [[0, 0], [1, 1], [1, 1], [0, 0]]);
    const up2 = this.up2;
    let h = x;
    this.layers.forEach((l, i) => {
      const k = this.kernels[i] as unknown as Tensor4D;
      const b = this.biases[i];
      switch (l.kind) {
        case 'encoder':
          h = tf.relu(tf.add(this.conv2(pad1(h), k), b));
          break;
        case 'bottleneck-in':
          h = tf.add(this.conv1(h, k), b);
          break;
        case 'bottleneck-out':
          h = tf.relu(tf.add(this.conv1(h, k), b));
          break;
        case 'decoder':
          h = tf.relu(tf.add(this.conv1(pad1(up2(h)), k), b));
          break;
        case 'output':
          h = tf.sigmoid(tf.add(this.conv1(pad1(up2(h)), k), b));
          break;
      }
    });
    return h;
  }

  /** Reconstructs n images given as one NHWC Float32Array. */
  async reconstruct(images: Float32Array, n: number): Promise<Float32Array> {
    const tf = this.tf;
    const size = this.config.inputSize;
    if (images.length !== n * size * size * 3) {
      throw new Error(`autoencoder reconstruct: got ${images.length} values, expected ${n}x${size}x${size}x3`);
    }
    const y = tf.tidy(() => this.forward(tf.tensor4d(images, [n, size, size, 3])));
    try {
      return (await y.data()) as Float32Array;
    } finally {
      y.dispose();
    }
  }

  /** Mean squared reconstruction error over every value of the batch. */
  loss(x: Tensor4D): Scalar {
    const tf = this.tf;
    return tf.tidy(() => tf.mean(tf.squaredDifference(this.forward(x), x)) as Scalar);
  }

  /**
   * Trains on `images` (count x size x size x 3, 0..1) with Adam on the MSE loss; returns each epoch's mean loss
   * (weighted by batch size). The image order of each epoch comes from the seed.
   */
  async train(images: Float32Array, count: number, opts: TrainOptions): Promise<number[]> {
    this.checkAlive();
    const tf = this.tf;
    const size = this.config.inputSize;
    const per = size * size * 3;
    if (count < 1 || images.length !== count * per) {
      throw new Error(`autoencoder train: got ${images.length} values for ${count} images of ${size}x${size}x3`);
    }
    if (!Number.isInteger(opts.epochs) || opts.epochs < 1) throw new Error(`autoencoder epochs must be a positive integer, got ${opts.epochs}`);
    if (!Number.isInteger(opts.batchSize) || opts.batchSize < 1) throw new Error(`autoencoder batch size must be a positive integer, got ${opts.batchSize}`);
    if (!(opts.learningRate > 0)) throw new Error(`autoencoder learning rate must be positive, got ${opts.learningRate}`);
    const rng = new SeededRandom(opts.seed);
    const optimizer = tf.train.adam(opts.learningRate);
    const vars = [...this.kernels, ...this.biases];
    const order = new Uint32Array(count);
    const batch = new Float32Array(Math.min(opts.batchSize, count) * per);
    const history: number[] = [];
    try {
      for (let epoch = 0; epoch < opts.epochs; epoch++) {
        for (let i = 0; i < count; i++) order[i] = i;
        for (let i = count - 1; i > 0; i--) {
          const j = rng.int(i + 1);
          const t = order[i];
          order[i] = order[j];
          order[j] = t;
        }
        let sum = 0;
        for (let start = 0; start < count; start += opts.batchSize) {
          const n = Math.min(opts.batchSize, count - start);
          for (let i = 0; i < n; i++) batch.set(images.subarray(order[start + i] * per, (order[start + i] + 1) * per), i * per);
          const x = tf.tensor4d(batch.subarray(0, n * per), [n, size, size, 3]);
          const loss = optimizer.minimize(() => this.loss(x), true, vars);
          sum += (await loss!.data())[0] * n;
          loss!.dispose();
          x.dispose();
        }
        history.push(sum / count);
        opts.onEpoch?.(epoch + 1, sum / count);
      }
    } finally {
      optimizer.dispose();
    }
    return history;
  }

  /** Copies of the current parameters, in parameterSpecs order. */
  async parameters(): Promise<Float32Array[]> {
    this.checkAlive();
    const out: Float32Array[] = [];
    for (let i = 0; i < this.layers.length; i++) {
      out.push(Float32Array.from(await this.kernels[i].data()), Float32Array.from(await this.biases[i].data()));
    }
    return out;
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const v of [...this.kernels, ...this.biases]) v.dispose();
  }

  private checkAlive(): void {
    if (this.disposed) throw new Error('autoencoder model was disposed');
  }
}
