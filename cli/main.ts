// The `patchcore` command: one entry point for the local commands, the distributed pipeline and the workers.
import { UsageError } from './args.js';
import { BENCHMARK_USAGE, benchmarkCommand } from './commands/benchmark.js';
import { DEMO_USAGE, demoCommand } from './commands/demo.js';
import { EVALUATE_USAGE, FIT_USAGE, evaluateCommand, fitCommand } from './commands/local.js';
import {
  INGEST_USAGE, REPORT_USAGE, SCHEDULE_USAGE, STATUS_USAGE, SUBMIT_USAGE, WORKER_USAGE,
  ingestCommand, reportCommand, scheduleCommand, statusCommand, submitCommand, workerCommand,
} from './commands/pipeline.js';
import { CANCEL_USAGE, GC_USAGE, RETRY_USAGE, cancelCommand, gcCommand, retryCommand } from './commands/ops.js';

const COMMANDS: Record<string, { run: (argv: string[]) => Promise<void>; usage: string; summary: string }> = {
  fit: { run: fitCommand, usage: FIT_USAGE, summary: 'train a model folder from a category folder (in-process)' },
  evaluate: { run: evaluateCommand, usage: EVALUATE_USAGE, summary: 'score a category\'s test set and write metrics.json and the report' },
  demo: { run: demoCommand, usage: DEMO_USAGE, summary: 'the distributed pipeline end to end on this machine (train, evaluate, report)' },
  benchmark: { run: benchmarkCommand, usage: BENCHMARK_USAGE, summary: 'fit and evaluate every category under a folder; one results table (--compare: with the reference)' },
  ingest: { run: ingestCommand, usage: INGEST_USAGE, summary: 'upload a local category folder to the bucket' },
  submit: { run: submitCommand, usage: SUBMIT_USAGE, summary: 'submit a training, evaluation or unlabelled scoring run to the queues' },
  status: { run: statusCommand, usage: STATUS_USAGE, summary: 'show (or --watch) a run\'s progress' },
  worker: { run: workerCommand, usage: WORKER_USAGE, summary: 'run a pipeline worker: features, index, score or scheduler' },
  schedule: { run: scheduleCommand, usage: SCHEDULE_USAGE, summary: 'scheduled retraining: set, list or remove a cron schedule' },
  report: { run: reportCommand, usage: REPORT_USAGE, summary: 'download a run\'s report from the bucket' },
  retry: { run: retryCommand, usage: RETRY_USAGE, summary: 'put a run\'s failed jobs back in the queue' },
  cancel: { run: cancelCommand, usage: CANCEL_USAGE, summary: 'remove a run\'s jobs from the queues' },
  gc: { run: gcCommand, usage: GC_USAGE, summary: 'delete what retention no longer needs from the bucket (--dry-run lists)' },
};

function usage(): string {
  const lines = Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(10)} ${c.summary}`);
  return `usage: patchcore <command> [options]\n\ncommands:\n${lines.join('\n')}\n\n"patchcore <command> --help" shows a command's options.`;
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(usage() + '\n');
    return name ? 0 : 2;
  }
  const command = COMMANDS[name];
  if (!command) {
    process.stderr.write(`patchcore: unknown command "${name}"\n\n${usage()}\n`);
    return 2;
  }
  if (rest.includes('--help') || rest.includes('-h')) {
    process.stdout.write(command.usage + '\n');
    return 0;
  }
  try {
    await command.run(rest);
    return 0;
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`${err.message}\n\n${command.usage}\n`);
      return 2;
    }
    process.stderr.write(`patchcore ${name}: ${(err as Error).message}\n`);
    if (process.env.PATCHCORE_DEBUG) process.stderr.write(`${(err as Error).stack}\n`);
    return 1;
  }
}

process.exitCode = await main(process.argv.slice(2));
