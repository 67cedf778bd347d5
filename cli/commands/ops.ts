// Operations commands: garbage collection of the bucket and steering of runs (retry, cancel).
// Redis and S3 come from the environment (REDIS_URL, QUEUE_PREFIX, S3_*; see the README).
import { createLogger } from '../../shared/log.js';
import { createRedisConnection, redisConfigFromEnv } from '../../shared/queue/config.js';
import { cancelRun, retryRun } from '../../shared/queue/flows.js';
import { bucketUsage, collectGarbage, inUseFromQueues, retentionSettingsFromEnv } from '../../shared/retention/gc.js';
import { ObjectStore } from '../../shared/storage/object-store.js';
import { runKindOf } from '../../services/producer/submit.js';
import { defineCommand, positional } from '../args.js';
import { OPTIONS as O } from '../options.js';

export const GC = defineCommand({
  name: 'gc',
  synopsis: '[--dry-run] [--keep-versions <n>] [--keep-reports <n>] [--grace-hours <h>]',
  about: `Deletes what retention no longer needs: a run's intermediates (embeddings, scores, maps) once its model or
report is published or after the grace period; model versions beyond the newest N per category (never the one
latest names, nor one an unfinished evaluation uses); reports beyond the newest N per category.`,
  options: [O['dry-run'], O['keep-versions'], O['keep-reports'], O['grace-hours']],
});
export const GC_USAGE = GC.usage;

export async function gcCommand(argv: string[]): Promise<void> {
  const env = retentionSettingsFromEnv();
  const o = GC.parse(argv);
  const settings = {
    keepVersions: o['keep-versions'] ?? env.keepVersions,
    keepReports: o['keep-reports'] ?? env.keepReports,
    graceMs: o['grace-hours'] !== undefined ? o['grace-hours'] * 3600_000 : env.graceMs,
  };
  const store = ObjectStore.fromEnv();
  const redisConfig = redisConfigFromEnv();
  const connection = createRedisConnection(redisConfig, { mode: 'fail-fast', connectionName: 'gc', logger: createLogger('gc') });
  try {
    // What the queues still work on is never touched; without Redis gc would have to guess, so it stops.
    const inUse = await inUseFromQueues(connection, redisConfig.prefix);
    const report = await collectGarbage(store, settings, { dryRun: o['dry-run'], inUse });
    const usage = await bucketUsage(store);
    process.stdout.write(JSON.stringify({ ...report, settings, bucket: usage }, null, 2) + '\n');
  } finally {
    await connection.quit().catch(() => connection.disconnect());
    store.destroy();
  }
}

export const RETRY = defineCommand({
  name: 'retry',
  synopsis: '<run id>',
  about: 'Puts the failed jobs of a run back in the queue with fresh attempts; the run then goes on where it failed.',
  positionals: [positional('run')],
});
export const RETRY_USAGE = RETRY.usage;
export const CANCEL = defineCommand({
  name: 'cancel',
  synopsis: '<run id>',
  about: 'Removes every job of a run that no worker is running; running jobs finish on their own and nothing follows them.',
  positionals: [positional('run')],
});
export const CANCEL_USAGE = CANCEL.usage;

async function steer(command: 'retry' | 'cancel', argv: string[]): Promise<void> {
  const o = (command === 'retry' ? RETRY : CANCEL).parse(argv);
  const redisConfig = redisConfigFromEnv();
  const connection = createRedisConnection(redisConfig, { mode: 'fail-fast', connectionName: command, logger: createLogger(command) });
  try {
    const kind = await runKindOf(connection, o.run, redisConfig.prefix);
    if (!kind) throw new Error(`no run "${o.run}" in the queues (QUEUE_PREFIX "${redisConfig.prefix}")`);
    const r = command === 'retry'
      ? await retryRun(connection, o.run, kind, { prefix: redisConfig.prefix })
      : await cancelRun(connection, o.run, kind, { prefix: redisConfig.prefix });
    process.stdout.write(JSON.stringify(r) + '\n');
  } finally {
    await connection.quit().catch(() => connection.disconnect());
  }
}

export const retryCommand = (argv: string[]) => steer('retry', argv);
export const cancelCommand = (argv: string[]) => steer('cancel', argv);
