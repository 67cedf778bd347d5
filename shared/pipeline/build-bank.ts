// Training patch features -> coreset -> memory bank with its HNSW index. Shared by the local `fit` and the
// distributed index worker, so the same features with the same settings give the same bank.
import { MemoryBank, type HnswParams } from '../bank/index.js';
import { greedyCoreset } from '../coreset/greedy.js';
import type { RowSource } from '../coreset/row-source.js';
import type { Logger } from '../log.js';
import { startProgress } from '../run/progress.js';
import type { StageTimer } from '../run/timings.js';

export interface BankSettings {
  /** Coreset size: `ratio` of `trainPatches` (the patches of all training images, before any per-shard reduction). */
  ratio: number | null;
  target?: number;
  projectionDim: number;
  seed: number;
  hnsw: HnswParams;
}

/** The bank size for `trainPatches` training patches, never more than the rows available. */
export function bankTarget(settings: Pick<BankSettings, 'ratio' | 'target'>, trainPatches: number, rows: number): number {
  const wanted = settings.target ?? Math.max(1, Math.round((settings.ratio ?? 0.1) * trainPatches));
  return Math.min(wanted, rows);
}

/** `features`: the rows to select from, in memory (local fit) or spooled to a local file (the index worker). */
export function buildBank(
  features: RowSource, trainPatches: number, settings: BankSettings, timer: StageTimer, log: Logger,
): MemoryBank {
  const { count: rows, dim } = features;
  const target = bankTarget(settings, trainPatches, rows);
  log.info({ rows, trainPatches, target, projectionDim: settings.projectionDim }, 'selecting coreset');
  const progress = startProgress('coreset', target, log);
  let reported = 0;
  const selected = timer.timeSync('coreset', () =>
    greedyCoreset(features, rows, dim, {
      target, projectionDim: settings.projectionDim, seed: settings.seed,
      onProgress: (done) => {
        progress.tick(done - reported);
        reported = done;
      },
    }),
  );
  progress.stop();
  const bank = new MemoryBank(dim, selected.length, features.readRows(selected));
  timer.timeSync('index', () => bank.buildHnsw(settings.hnsw));
  return bank;
}
