// A 'valid' 2-D convolution whose gradient needs only kernels that the TF.js WASM backend has. tfjs-backend-wasm
// 4.x registers Conv2D and Conv2DBackpropInput but not Conv2DBackpropFilter, so tf.grad of tf.conv2d fails there
// ("Kernel 'Conv2DBackpropFilter' not registered for backend 'wasm'"). The filter gradient is itself a convolution:
//   dW[kh, kw, ci, co] = sum_{b, y, x} X[b, s*y + kh, s*x + kw, ci] * dY[b, y, x, co]
// i.e. X with batch and channels swapped ([ci, H, W, b]) convolved with dY as the filter ([H', W', b, co]) at
// dilation s; the result is [ci, kh, kw, co] (sliced to the kernel size when the last rows do not fit a stride).
// The input gradient is not taken from Conv2DBackpropInput either: on WASM that kernel is a plain loop, ~10x slower
// than XNNPACK's Conv2D (measured: 570 ms vs 30-60 ms for a 3x3 64->128 layer at 32x32, batch 8). It is the
// 'full' convolution of dY (zero-dilated by the stride) with the kernel rotated by 180 degrees, ci and co swapped.
// Padding is left to the caller (tf.pad, whose gradient is a slice), so only 'valid' is needed here.
type Tf = typeof import('@tensorflow/tfjs');
type Tensor = import('@tensorflow/tfjs').Tensor;
type Tensor4D = import('@tensorflow/tfjs').Tensor4D;
type GradSaveFunc = import('@tensorflow/tfjs').GradSaveFunc;

export type ConvOp = (x: Tensor4D, kernel: Tensor4D) => Tensor4D;

/** dLoss/dKernel of a valid convolution with this stride, from its input and the gradient of its output. */
export function convFilterGradient(tf: Tf, x: Tensor4D, dy: Tensor4D, kernelShape: readonly number[], stride: number): Tensor4D {
  const [kh, kw, ci, co] = kernelShape;
  return tf.tidy(() => {
    const xt = tf.transpose(x, [3, 1, 2, 0]);
    const dyt = tf.transpose(dy, [1, 2, 0, 3]);
    let g = tf.conv2d(xt, dyt, 1, 'valid', 'NHWC', stride);
    if (g.shape[1] !== kh || g.shape[2] !== kw) g = tf.slice(g, [0, 0, 0, 0], [ci, kh, kw, co]);
    return tf.transpose(g, [1, 2, 0, 3]);
  });
}

/** dY [b, h, w, c] with stride-1 zeros between rows and columns: [b, s(h-1)+1, s(w-1)+1, c]. */
function dilate(tf: Tf, dy: Tensor4D, stride: number): Tensor4D {
  if (stride === 1) return dy;
  const [b, h, w, c] = dy.shape;
  const zeros = Array.from({ length: stride - 1 }, () => tf.zerosLike(dy));
  // Interleave along columns, then along rows; the zeros after the last column and row are cut.
  let t = tf.reshape(tf.stack([dy, ...zeros], 3), [b, h, w * stride, c]);
  t = tf.slice(t, [0, 0, 0, 0], [b, h, stride * (w - 1) + 1, c]);
  const w2 = stride * (w - 1) + 1;
  const rowZeros = Array.from({ length: stride - 1 }, () => tf.zerosLike(t));
  t = tf.reshape(tf.stack([t, ...rowZeros], 2), [b, h * stride, w2, c]);
  return tf.slice(t, [0, 0, 0, 0], [b, stride * (h - 1) + 1, w2, c]) as Tensor4D;
}

/** dLoss/dX of a valid convolution with this stride, for an input of xShape. */
export function convInputGradient(tf: Tf, dy: Tensor4D, kernel: Tensor4D, xShape: readonly number[], stride: number): Tensor4D {
  const [kh, kw] = kernel.shape;
  return tf.tidy(() => {
    const d = dilate(tf, dy, stride);
    // Rows and columns of X that no output window reaches (when H - kh is not a multiple of the stride) get zeros.
    const extraH = xShape[1] - (d.shape[1] + kh - 1);
    const extraW = xShape[2] - (d.shape[2] + kw - 1);
    const padded = tf.pad(d, [[0, 0], [kh - 1, kh - 1 + extraH], [kw - 1, kw - 1 + extraW], [0, 0]]);
    const rotated = tf.transpose(tf.reverse(kernel, [0, 1]), [0, 1, 3, 2]) as Tensor4D;
    return tf.conv2d(padded, rotated, 1, 'valid');
  });
}

/** A valid, square-stride convolution with a gradient for both the input and the kernel on any backend. */
export function convWithGradient(tf: Tf, stride: number): ConvOp {
  if (!Number.isInteger(stride) || stride < 1) throw new Error(`convolution stride must be a positive integer, got ${stride}`);
  const op = tf.customGrad((...args: (Tensor | GradSaveFunc)[]) => {
    const [x4, k4, save] = args as [Tensor4D, Tensor4D, GradSaveFunc];
    save([x4, k4]);
    return {
      value: tf.conv2d(x4, k4, stride, 'valid'),
      gradFunc: (dy: Tensor4D, saved: Tensor[]) => {
        const [sx, sk] = saved as Tensor4D[];
        return [convInputGradient(tf, dy, sk, sx.shape, stride), convFilterGradient(tf, sx, dy, sk.shape, stride)];
      },
    };
  });
  return (x, kernel) => op(x, kernel) as Tensor4D;
}

/**
 * Nearest-neighbour x2 upsampling whose gradient (the sum over each 2x2 block) is an average pool times 4: WASM's
 * ResizeNearestNeighborGrad and the Unpack behind a stack-based upsampling are plain loops, 10-50x slower.
 */
export function upsample2WithGradient(tf: Tf): (x: Tensor4D) => Tensor4D {
  const op = tf.customGrad((...args: (Tensor | GradSaveFunc)[]) => {
    const x4 = args[0] as Tensor4D;
    return {
      value: tf.image.resizeNearestNeighbor(x4, [x4.shape[1] * 2, x4.shape[2] * 2]),
      gradFunc: (dy: Tensor4D) => tf.mul(tf.avgPool(dy, 2, 2, 'valid'), 4),
    };
  });
  return (x) => op(x) as Tensor4D;
}
