export { coresetTarget, greedyCoreset, randomProjection, type GreedyCoresetOptions } from './greedy.js';
export { SeededRandom } from './random.js';
