// Runs buildBank (coreset selection and HNSW build: minutes of synchronous CPU work on large runs) in a worker
// thread and saves the bank into a folder, so the calling event loop stays free: a queue worker keeps renewing
// its job lock and answering health checks meanwhile. The rows come spooled in a local file (coreset/row-source.ts),
// so the thread holds the projected rows and the bank, never every input row at once.
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { rowsInFile } from '../coreset/row-source.js';
import { createLogger } from '../log.js';
import { buildBank, type BankSettings } from './build-bank.js';
import { StageTimer } from '../run/timings.js';

interface ThreadInput {
  /** A RowSpool's file: `rows` rows of `dim` float32 values. */
  rowsFile: string;
  rows: number;
  dim: number;
  trainPatches: number;
  settings: BankSettings;
  dir: string;
  logBindings: Record<string, unknown>;
}

export interface ThreadResult {
  count: number;
  timings_ms: Record<string, number>;
}

/** Builds and saves the bank in `dir` (bank.f32, bank.usearch when the bank is searched through an index, bank.json). */
export function buildBankInThread(input: ThreadInput): Promise<ThreadResult> {
  return new Promise((resolve, reject) => {
    // Sources are TypeScript run through tsx, whose loader a worker thread does not inherit: register it first.
    const entry =
      `import { register } from ${JSON.stringify(import.meta.resolve('tsx/esm/api'))};\n` +
      `register();\nawait import(${JSON.stringify(import.meta.url)});\n`;
    const worker = new Worker(new URL(`data:text/javascript,${encodeURIComponent(entry)}`), {
      workerData: input,
    });
    let result: ThreadResult | null = null;
    worker.on('message', (m: ThreadResult) => (result = m));
    worker.on('error', reject);
    worker.on('exit', (code) => {
      if (result) resolve(result);
      else reject(new Error(`bank building thread exited with code ${code} before finishing`));
    });
  });
}

if (!isMainThread && parentPort && (workerData as ThreadInput | undefined)?.rowsFile) {
  const input = workerData as ThreadInput;
  const log = createLogger('bank-thread', input.logBindings);
  const timer = new StageTimer();
  const bank = buildBank(rowsInFile(input.rowsFile, input.rows, input.dim), input.trainPatches, input.settings, timer, log);
  await timer.time('save', () => bank.save(input.dir));
  parentPort.postMessage({ count: bank.count, timings_ms: timer.toJSON() } satisfies ThreadResult);
}
