export { argsortDescending } from './sort.js';
export { rocAuc, rocCurve, type RocCurve } from './roc.js';
export { aupro, connectedComponents, type Components } from './aupro.js';
export { f1Max, confusionAt, type F1Max, type Confusion } from './threshold.js';
export { scoreStats, type ScoreSummary } from './stats.js';
