export { argsortDescending } from './sort.js';
export { rocAuc, rocCurve, type RocCurve } from './roc.js';
export { aupro, auproOfImages, connectedComponents, type Components } from './aupro.js';
export { exactPixelMetrics, type PixelImage } from './pixel-exact.js';
export { PixelHistogram, PixelHistogramSchema, SCORE_GRID, scoreBin, binLowerEdge, type PixelHistogramJson } from './score-histogram.js';
export {
  f1Max, confusionAt, thresholdAtFpr, chooseThreshold, decideThreshold, describeThresholdRule,
  type F1Max, type Confusion, type ThresholdChoice, type ThresholdRule, type ThresholdSetting, type ChooseThresholdInput,
} from './threshold.js';
export { scoreStats, type ScoreSummary } from './stats.js';
