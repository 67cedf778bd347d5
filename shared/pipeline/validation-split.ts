// The good training images a fit holds out to calibrate a target-FPR threshold (`--validation-split`): chosen the
// same way by the local fit and by `submit train`, so one list of images gives the same held-out set either way.

/** Every 1/split-th image, evenly spread over the list in its order: the held-out good images. */
export function validationIds(ids: readonly string[], split: number): Set<string> {
  if (!(split >= 0 && split < 1)) throw new Error(`validation split must be in [0, 1), got ${split}`);
  const out = new Set<string>();
  ids.forEach((id, i) => {
    if (Math.floor((i + 1) * split) > Math.floor(i * split)) out.add(id);
  });
  return out;
}
