/**
 * Bilinear resize of an HWC float map with half-pixel centres and no antialiasing: the semantics of PyTorch's
 * F.interpolate(mode='bilinear', align_corners=False), which the PatchCore reference code uses for feature maps
 * and anomaly maps.
 */
export function resizeBilinearHwc(
  src: Float32Array,
  h: number,
  w: number,
  c: number,
  outH: number,
  outW: number,
  out: Float32Array = new Float32Array(outH * outW * c),
): Float32Array {
  if (src.length !== h * w * c) throw new Error(`resizeBilinearHwc: source has ${src.length} values, expected ${h}x${w}x${c}`);
  if (out.length !== outH * outW * c) throw new Error(`resizeBilinearHwc: output has ${out.length} values, expected ${outH}x${outW}x${c}`);
  const xs = axisTaps(w, outW);
  const ys = axisTaps(h, outH);
  for (let oy = 0; oy < outH; oy++) {
    const y0 = ys.i0[oy], y1 = ys.i1[oy], ly = ys.l1[oy], hy = 1 - ly;
    const row0 = y0 * w * c, row1 = y1 * w * c;
    const orow = oy * outW * c;
    for (let ox = 0; ox < outW; ox++) {
      const x0c = xs.i0[ox] * c, x1c = xs.i1[ox] * c, lx = xs.l1[ox], hx = 1 - lx;
      const w00 = hy * hx, w01 = hy * lx, w10 = ly * hx, w11 = ly * lx;
      const a = row0 + x0c, b = row0 + x1c, d = row1 + x0c, e = row1 + x1c;
      const o = orow + ox * c;
      for (let k = 0; k < c; k++) {
        out[o + k] = w00 * src[a + k] + w01 * src[b + k] + w10 * src[d + k] + w11 * src[e + k];
      }
    }
  }
  return out;
}

/** Source indices and weight of the second tap for each output position along one axis. */
function axisTaps(inSize: number, outSize: number): { i0: Int32Array; i1: Int32Array; l1: Float32Array } {
  const i0 = new Int32Array(outSize);
  const i1 = new Int32Array(outSize);
  const l1 = new Float32Array(outSize);
  const scale = inSize / outSize;
  for (let o = 0; o < outSize; o++) {
    const real = Math.max(0, scale * (o + 0.5) - 0.5);
    const lo = Math.min(Math.floor(real), inSize - 1);
    i0[o] = lo;
    i1[o] = Math.min(lo + 1, inSize - 1);
    l1[o] = real - lo;
  }
  return { i0, i1, l1 };
}
