export { coresetTarget, greedyCoreset, randomProjection, type GreedyCoresetOptions, type GreedyCoresetStats } from './greedy.js';
export { SeededRandom } from './random.js';
