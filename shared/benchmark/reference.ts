// The PyTorch reference PatchCore (../shared/bench/ref_patchcore.py, run with Debian's /usr/bin/python3): how it
// is started, and its JSON read back. Used by `patchcore benchmark --compare` and by `npm run bench -- --compare`.
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { RecipeName } from '../features/recipes.js';
import { sharedDir } from '../paths.js';
import { UserError } from '../errors.js';

/** The interpreter the reference's Debian packages are installed for. */
export const REFERENCE_PYTHON = '/usr/bin/python3';

export function referenceScript(): string {
  return join(sharedDir(), 'bench', 'ref_patchcore.py');
}

/** The frame the reference always uses, whatever ours is: recorded beside its figures. */
export const REFERENCE_FRAME = 'the whole image squashed to 256x256 (aspect ratio not kept), then a centre crop of 224x224; '
  + 'pixel metrics inside that crop';

/** The reference's variant computing the same features as our recipe. */
export function referenceVariant(recipe: RecipeName): 'official' | 'seed' {
  return recipe === 'paper' ? 'official' : 'seed';
}

/** Refuses to start when the interpreter or the script is missing, saying how to get them. */
export function checkReference(python = REFERENCE_PYTHON): void {
  const readme = join(sharedDir(), 'bench', 'README.md');
  if (!existsSync(python)) throw new UserError(`the reference needs ${python} with its Debian packages (see ${readme})`);
  if (!existsSync(referenceScript())) throw new UserError(`the reference script ${referenceScript()} is missing ($PATCHCORE_SHARED_DIR)`);
}

export interface ReferenceRequest {
  data: string;
  weights: string;
  /** Where the reference writes its JSON. */
  out: string;
  recipe: RecipeName;
  coreset: number;
}

/** The reference's command line (after the interpreter). */
export function referenceArgs(r: ReferenceRequest): string[] {
  return [referenceScript(), '--data', r.data, '--weights', r.weights, '--out', r.out,
    '--variant', referenceVariant(r.recipe), '--coreset', String(r.coreset)];
}

/** One run of the reference's JSON (`runs.<variant>_c<coreset>`), the parts read here. */
export interface ReferenceRun {
  timings_s: Record<string, number>;
  metrics: { image_auroc: number; pixel_auroc: number | null; 'aupro_0.3': number | null; f1_max: { f1: number } };
  counts: { train_images: number; test_images: number; memory_bank: number } & Record<string, number>;
}

/** The run of `variant` and `coreset` in the reference's JSON file (the file may collect several runs). */
export function readReferenceRun(file: string, variant: string, coreset: number): ReferenceRun {
  const doc = JSON.parse(readFileSync(file, 'utf8')) as { runs?: Record<string, ReferenceRun> };
  const run = doc.runs?.[`${variant}_c${coreset}`] ?? Object.values(doc.runs ?? {})[0];
  if (!run) throw new Error(`reference JSON ${file} holds no run`);
  return run;
}

/** Runs the reference with its output streamed to our stderr; returns its peak RSS in KiB when /usr/bin/time is there. */
export function runReference(python: string, args: string[]): Promise<number | null> {
  const timeBin = '/usr/bin/time';
  const useTime = existsSync(timeBin);
  const [cmd, argv] = useTime ? [timeBin, ['-f', 'bench-maxrss-kib=%M', python, ...args]] : [python, args];
  return new Promise((resolvePromise, reject) => {
    const child = spawn(cmd, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderrTail = '';
    child.stdout.on('data', (d: Buffer) => process.stderr.write(`[reference] ${d}`));
    // GNU time writes its line a few bytes at a time: it is parsed from the tail once the child is done.
    child.stderr.on('data', (d: Buffer) => {
      stderrTail = (stderrTail + d.toString()).slice(-4000);
      process.stderr.write(d);
    });
    child.on('error', (e) => reject(new Error(`cannot start the reference (${python}): ${e.message}`)));
    child.on('close', (code) => {
      const m = /bench-maxrss-kib=(\d+)/.exec(stderrTail);
      if (code === 0) resolvePromise(m ? Number(m[1]) : null);
      else reject(new Error(`the reference exited with code ${code}:\n${stderrTail}`));
    });
  });
}
