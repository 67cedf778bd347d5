// Kept only for test/faults/harness.ts, which imports sha256File from here: the local fit is shared/local/fit.ts
// and the weights helpers are in ./weights.ts. Remove once that import points at ./weights.js.
export { sha256File } from './weights.js';
