// Static int8 quantisation of the backbone, as ONNX Runtime's CPU provider runs it fastest: weights
// int8, symmetric, one scale per output channel; activations uint8 with one scale and zero point per
// tensor, from ranges measured on calibration images (min/max). ORT fuses the QuantizeLinear /
// DequantizeLinear pairs around each Conv and Add of the generated graph into QLinearConv/QLinearAdd
// (u8s8, the VNNI kernels where the CPU has them).
import { INPUT_NAME, type BackboneOp } from './resnet50.js';

/** Measured value range of each activation tensor, keyed by its name in the op list ('input',
 * 'conv1_relu', ...). Plain JSON: it goes in a model's manifest, so scoring quantises exactly as
 * training did. */
export type ActivationRanges = Record<string, [min: number, max: number]>;

/** Every activation tensor the int8 graph quantises: the input and each op's output, in order. */
export function activationTensors(ops: readonly BackboneOp[]): string[] {
  return [INPUT_NAME, ...ops.map((op) => op.output)];
}

export type CalibrationMethod = 'minmax' | 'percentile';

/** Collects each activation tensor's values over the calibration batches and turns them into
 * ranges: 'minmax' (the extremes seen) or 'percentile' (clips the rarest values, `percentile` on
 * each side, from a strided sample of each batch: finer steps for the common values). */
export class RangeCollector {
  private readonly extremes = new Map<string, [number, number]>();
  private readonly samples = new Map<string, Float32Array[]>();

  constructor(
    readonly method: CalibrationMethod = 'minmax',
    readonly percentile = 99.99,
    private readonly samplesPerBatch = 1 << 15,
  ) {
    if (method !== 'minmax' && method !== 'percentile') {
      throw new Error(`calibration method "${String(method)}" is unknown; choose minmax or percentile`);
    }
    if (!(percentile > 50 && percentile <= 100)) throw new Error(`calibration percentile must be in (50, 100], got ${percentile}`);
  }

  add(name: string, values: Float32Array): void {
    let min = Infinity;
    let max = -Infinity;
    for (let i = 0; i < values.length; i++) {
      const v = values[i];
      if (v < min) min = v;
      if (v > max) max = v;
    }
    if (!Number.isFinite(min) || !Number.isFinite(max)) {
      throw new Error(`calibration: activation "${name}" has no finite values`);
    }
    const seen = this.extremes.get(name);
    this.extremes.set(name, seen ? [Math.min(seen[0], min), Math.max(seen[1], max)] : [min, max]);
    if (this.method === 'percentile') {
      // An odd stride, so the sample does not line up with rows or channels.
      const stride = Math.max(1, Math.floor(values.length / this.samplesPerBatch)) | 1;
      const sample = new Float32Array(Math.ceil(values.length / stride));
      for (let i = 0, k = 0; i < values.length; i += stride, k++) sample[k] = values[i];
      const list = this.samples.get(name) ?? [];
      list.push(sample);
      this.samples.set(name, list);
    }
  }

  ranges(): ActivationRanges {
    const out: ActivationRanges = {};
    for (const [name, [min, max]] of this.extremes) {
      if (this.method === 'minmax') {
        out[name] = [min, max];
        continue;
      }
      const parts = this.samples.get(name)!;
      const all = new Float32Array(parts.reduce((s, p) => s + p.length, 0));
      let offset = 0;
      for (const p of parts) {
        all.set(p, offset);
        offset += p.length;
      }
      all.sort();
      const tail = (1 - this.percentile / 100) * (all.length - 1);
      // Never narrower than [0, x]: ReLU outputs keep their exact zero.
      out[name] = [Math.max(min, all[Math.floor(tail)]), Math.min(max, all[Math.ceil(all.length - 1 - tail)])];
    }
    return out;
  }
}

/** Checks that `ranges` covers every tensor of `ops` with finite, ordered bounds. */
export function assertActivationRanges(ranges: ActivationRanges, ops: readonly BackboneOp[]): void {
  if (typeof ranges !== 'object' || ranges === null) throw new Error('activation ranges must be an object');
  for (const name of activationTensors(ops)) {
    const r = ranges[name];
    if (!Array.isArray(r) || r.length !== 2 || !Number.isFinite(r[0]) || !Number.isFinite(r[1]) || r[0] > r[1]) {
      throw new Error(`activation ranges: "${name}" is ${JSON.stringify(r)}, expected [min, max] with min <= max`);
    }
  }
}

export interface Uint8Params {
  scale: number;
  zeroPoint: number;
}

/** Asymmetric uint8 parameters covering [min, max] (widened to contain 0, so 0 is exact: zero
 * padding and ReLU). A range starting at 0 gets zero point 0, so the QuantizeLinear itself clamps
 * negatives: that is how the int8 graph applies ReLU. */
export function uint8Params([min, max]: [number, number]): Uint8Params {
  const lo = Math.min(min, 0);
  const hi = Math.max(max, 0);
  const scale = hi > lo ? (hi - lo) / 255 : 1;
  const zeroPoint = Math.min(255, Math.max(0, Math.round(-lo / scale)));
  return { scale, zeroPoint };
}

/** Symmetric int8 per output channel of an OIHW (output-major) weight: q = round(w / scale), in
 * [-127, 127]. */
export function quantizeWeightsPerChannel(
  oihw: Float32Array,
  outChannels: number,
): { values: Int8Array; scales: Float32Array } {
  if (oihw.length % outChannels !== 0) {
    throw new Error(`weight of ${oihw.length} values does not split into ${outChannels} output channels`);
  }
  const per = oihw.length / outChannels;
  const values = new Int8Array(oihw.length);
  const scales = new Float32Array(outChannels);
  for (let o = 0; o < outChannels; o++) {
    let absMax = 0;
    for (let i = o * per; i < (o + 1) * per; i++) absMax = Math.max(absMax, Math.abs(oihw[i]));
    // The float32 value ORT dequantises with.
    const scale = absMax > 0 ? Math.fround(absMax / 127) : 1;
    scales[o] = scale;
    for (let i = o * per; i < (o + 1) * per; i++) {
      values[i] = Math.max(-127, Math.min(127, Math.round(oihw[i] / scale)));
    }
  }
  return { values, scales };
}

/** Bias as int32 in units of inputScale * weightScale[o], as QLinearConv adds it to its accumulator. */
export function quantizeBias(
  bias: Float32Array,
  inputScale: number,
  weightScales: Float32Array,
): { values: Int32Array; scales: Float32Array } {
  const values = new Int32Array(bias.length);
  const scales = new Float32Array(bias.length);
  for (let o = 0; o < bias.length; o++) {
    const scale = inputScale * weightScales[o];
    scales[o] = scale;
    values[o] = Math.max(-2147483647, Math.min(2147483647, Math.round(bias[o] / scale)));
  }
  return { values, scales };
}
