/** A dense float32 tensor in NHWC layout (batch, height, width, channels), row-major. */
export interface NhwcTensor {
  data: Float32Array;
  n: number;
  h: number;
  w: number;
  c: number;
}

export function nhwc(data: Float32Array, n: number, h: number, w: number, c: number): NhwcTensor {
  if (data.length !== n * h * w * c) {
    throw new Error(`tensor data has ${data.length} values, expected ${n}x${h}x${w}x${c} = ${n * h * w * c}`);
  }
  return { data, n, h, w, c };
}

/** The i-th item of a batch, sharing memory with the batch. */
export function batchItem(t: NhwcTensor, i: number): NhwcTensor {
  const size = t.h * t.w * t.c;
  return { data: t.data.subarray(i * size, (i + 1) * size), n: 1, h: t.h, w: t.w, c: t.c };
}
