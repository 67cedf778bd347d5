// One logger factory for every command and service: JSON lines on stderr (stdout stays free for
// results), with secrets redacted wherever they might appear in a logged object.
import { pino, type Logger } from 'pino';

export type { Logger };

const REDACT = [
  '*.password',
  '*.secretAccessKey',
  '*.accessKeyId',
  '*.sessionToken',
  '*.credentials',
  '*.token',
  'password',
  'secretAccessKey',
  'accessKeyId',
  'credentials',
];

export function createLogger(name: string, bindings: Record<string, unknown> = {}): Logger {
  return pino(
    {
      name,
      level: process.env.LOG_LEVEL ?? 'info',
      redact: { paths: REDACT, censor: '[redacted]' },
      base: { pid: process.pid, ...bindings },
    },
    pino.destination(2),
  );
}
