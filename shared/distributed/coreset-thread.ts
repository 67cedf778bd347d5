// A reduce step's coreset selection in a worker thread (like pipeline/bank-thread.ts for the bank): seconds to
// minutes of synchronous CPU work, during which the queue worker must keep renewing its job lock.
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { greedyCoreset } from '../coreset/greedy.js';
import { rowsInFile } from '../coreset/row-source.js';

interface ThreadInput {
  coresetThreadInput: true;
  /** A RowSpool's file: `rows` rows of `dim` float32 values. */
  rowsFile: string;
  rows: number;
  dim: number;
  target: number;
  projectionDim: number;
  seed: number;
}

export interface SelectedRows {
  /** The selected rows, in their original order. */
  rows: Float32Array;
  count: number;
}

/**
 * Selects `target` of the `rows` rows (dim floats each) in `rowsFile` by the seeded greedy coreset and returns them
 * in their original order (so the inputs' order is kept through the tree). The thread reads the file chunk by chunk:
 * it holds the projected rows and the selected ones, not the whole input.
 */
export function selectRowsInThread(rowsFile: string, rows: number, dim: number, opts: { target: number; projectionDim: number; seed: number }): Promise<SelectedRows> {
  return new Promise((resolve, reject) => {
    // Sources are TypeScript run through tsx, whose loader a worker thread does not inherit: register it first.
    const entry =
      `import { register } from ${JSON.stringify(import.meta.resolve('tsx/esm/api'))};\n` +
      `register();\nawait import(${JSON.stringify(import.meta.url)});\n`;
    const input: ThreadInput = { coresetThreadInput: true, rowsFile, rows, dim, ...opts };
    const worker = new Worker(new URL(`data:text/javascript,${encodeURIComponent(entry)}`), { workerData: input });
    let result: SelectedRows | null = null;
    worker.on('message', (m: SelectedRows) => (result = m));
    worker.on('error', reject);
    worker.on('exit', (code) => {
      if (result) resolve(result);
      else reject(new Error(`coreset thread exited with code ${code} before finishing`));
    });
  });
}

if (!isMainThread && parentPort && (workerData as ThreadInput | undefined)?.coresetThreadInput) {
  const { rowsFile, rows, dim, target, projectionDim, seed } = workerData as ThreadInput;
  const source = rowsInFile(rowsFile, rows, dim);
  const order = Uint32Array.from(greedyCoreset(source, rows, dim, { target, projectionDim, seed })).sort();
  const out = source.readRows(order);
  parentPort.postMessage({ rows: out, count: order.length } satisfies SelectedRows, [out.buffer as ArrayBuffer]);
}
