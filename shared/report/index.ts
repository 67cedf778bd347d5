// Evaluation report: plots, heatmap thumbnails and the HTML/CSV/JSON report builder (the threshold is chosen in
// shared/metrics/threshold.ts).
export {
  buildReport, buildComparisonReport, localFolderWriter, galleryOrder, scoresCsv,
  type ReportImage, type Heatmap, type ReportWriter, type MethodResult, type ReportInput, type ComparisonInput,
  type ReportOptions, type ReportSummary, type RunInfo,
} from './build.js';
export {
  renderSvg, imageRocPlot, pixelRocPlot, rocComparisonPlot, histogramPlot, kdePlot, boxPlot, confusionPlot,
  groupScores, kernelDensity, formatNumber, type CurvePoints, type ScoreGroup, type Density,
} from './plots.js';
export {
  renderOverlay, maskOutline, thumbnailSize, colormapCssGradient, INFERNO_LUT, DEFAULT_OUTLINE_COLOUR,
  DEFAULT_THUMBNAIL_SIZE, type OverlayInput, type OverlayOptions, type Overlay,
} from './heatmap.js';
