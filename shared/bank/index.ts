export {
  BANK_FILES,
  DEFAULT_HNSW,
  MemoryBank,
  type BankMeta,
  type HnswParams,
  type NeighbourResult,
} from './memory-bank.js';
export { exactKnn, squaredNorms } from './exact-search.js';
