export {
  BANK_FILES,
  DEFAULT_HNSW,
  EXACT_SEARCH_MAX_ROWS,
  HNSW_QUANTIZATION,
  MemoryBank,
  type BankMeta,
  type HnswParams,
  type NeighbourResult,
} from './memory-bank.js';
export { exactKnn, squaredNorms } from './exact-search.js';
export { SketchSearch } from './sketch-search.js';
