// Progress for long work: a bar on an interactive terminal, periodic pino lines otherwise (CI, containers).
import cliProgress from 'cli-progress';
import type { Logger } from '../log.js';

export interface Progress {
  tick(n?: number): void;
  stop(): void;
}

export function startProgress(label: string, total: number, logger: Logger, opts: { tty?: boolean } = {}): Progress {
  const tty = opts.tty ?? Boolean(process.stderr.isTTY);
  if (tty) {
    const bar = new cliProgress.SingleBar(
      { format: `${label.padEnd(18)} [{bar}] {value}/{total} {percentage}% eta {eta_formatted}`, stream: process.stderr },
      cliProgress.Presets.shades_classic,
    );
    bar.start(total, 0);
    return { tick: (n = 1) => bar.increment(n), stop: () => bar.stop() };
  }
  let done = 0;
  let lastLogged = 0;
  const t0 = Date.now();
  return {
    tick(n = 1) {
      done += n;
      // About ten lines per stage, never more than one every 2 seconds.
      if (done === total || (done - lastLogged >= Math.max(1, total / 10) && Date.now() - t0 > 2000)) {
        lastLogged = done;
        logger.info({ stage: label, done, total }, `${label}: ${done}/${total}`);
      }
    },
    stop() {},
  };
}
