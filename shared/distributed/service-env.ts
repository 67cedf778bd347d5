// What every worker process reads from its environment, validated at start-up so a bad setting stops the
// process with a message naming the variable before it takes a job.
//
//   PATCHCORE_WEIGHTS     the Keras ResNet-50 weights file (default: the shared file beside the checkout)
//   PATCHCORE_ENGINE      auto | tfjs | onnx (default auto)
//   BATCH_SIZE            images per backbone batch in the scorer (default 8; training runs carry their own)
//   MODEL_CACHE_DIR       where scorers keep downloaded model versions (default <tmp>/patchcore-models)
// plus the queue variables (shared/queue/config.ts) and the storage variables (shared/storage/config.ts).
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { z } from 'zod';
import { ENGINE_NAMES, type EngineName } from '../backbone/engine.js';
import { UserError } from '../errors.js';
import { defaultWeightsPath } from '../paths.js';

export interface ServiceSettings {
  weightsPath: string;
  engine: EngineName;
  batchSize: number;
  modelCacheDir: string;
}

const Schema = z.object({
  PATCHCORE_ENGINE: z.enum(ENGINE_NAMES).optional(),
  BATCH_SIZE: z.string().regex(/^[1-9][0-9]{0,2}$/, 'must be an integer from 1 to 999').optional(),
});

export function serviceSettingsFromEnv(env: Record<string, string | undefined> = process.env): ServiceSettings {
  const clean = Object.fromEntries(Object.entries(env).filter(([, v]) => v !== ''));
  const parsed = Schema.safeParse(clean);
  if (!parsed.success) {
    const i = parsed.error.issues[0];
    throw new UserError(`${String(i.path[0])}: ${i.message}`);
  }
  return {
    weightsPath: resolve(clean.PATCHCORE_WEIGHTS ?? defaultWeightsPath()),
    engine: parsed.data.PATCHCORE_ENGINE ?? 'auto',
    batchSize: parsed.data.BATCH_SIZE ? Number(parsed.data.BATCH_SIZE) : 8,
    modelCacheDir: resolve(clean.MODEL_CACHE_DIR ?? join(tmpdir(), 'patchcore-models')),
  };
}
