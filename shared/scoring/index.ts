export { imageScore, patchScores, type ReweightOptions } from './patch-scores.js';
export { anomalyMap, gaussianBlur, gaussianKernel, reflectIndex, resizeBilinear } from './anomaly-map.js';
export { projectToImage, type ImageFrame } from './project.js';
export { stitchTiles } from './tiles.js';
