// The autoencoder model folder: manifest.json (method 'autoencoder') and autoencoder.f32, every parameter in
// parameterSpecs order as little-endian float32. The manifest holds the architecture, so the folder alone rebuilds
// the model, and the weights' sha256, so a damaged or swapped file is refused.
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import {
  MODEL_FORMAT, MODEL_FORMAT_VERSION, manifestMethod, parseManifest, readManifestJson, withArticle, writeManifest,
} from '../model/manifest.js';
import { parameterCount, parameterSpecs, type AutoencoderConfig } from './architecture.js';

export const AUTOENCODER_WEIGHTS_FILE = 'autoencoder.f32';

const positiveInt = z.number().int().positive();

export const AutoencoderManifestSchema = z.object({
  format: z.literal(MODEL_FORMAT),
  version: z.literal(MODEL_FORMAT_VERSION),
  method: z.literal('autoencoder'),
  createdAt: z.string(),
  category: z.string(),
  frame: z.object({ resize: positiveInt.nullable(), crop: positiveInt.nullable() }),
  architecture: z.object({
    inputSize: positiveInt,
    encoderChannels: z.array(positiveInt).min(1),
    latentChannels: positiveInt,
    parameters: positiveInt,
  }),
  weights: z.object({ file: z.string(), sha256: z.string().regex(/^[0-9a-f]{64}$/), bytes: positiveInt }),
  scoring: z.object({ sigma: z.number().positive(), imageScore: z.literal('max') }),
  training: z.object({
    images: z.number().int().nonnegative(),
    skipped: z.array(z.object({ id: z.string(), error: z.string() })),
    epochs: positiveInt,
    batchSize: positiveInt,
    learningRate: z.number().positive(),
    seed: z.number().int(),
    /** Mean training loss (MSE) of each epoch. */
    loss: z.array(z.number()),
    /** The TF.js backend that trained the model. */
    backend: z.string(),
    timings_ms: z.record(z.string(), z.number()),
    peak_rss_mib: z.number(),
  }),
});

export type AutoencoderManifest = z.infer<typeof AutoencoderManifestSchema>;

export function configOf(manifest: AutoencoderManifest): AutoencoderConfig {
  const a = manifest.architecture;
  return { inputSize: a.inputSize, encoderChannels: [...a.encoderChannels], latentChannels: a.latentChannels };
}

export function readAutoencoderManifest(modelDir: string): AutoencoderManifest {
  const { file, raw } = readManifestJson(modelDir);
  const method = manifestMethod(raw, file);
  if (method !== 'autoencoder') {
    throw new Error(`model folder "${modelDir}" holds ${withArticle(method)} model (manifest method "${method}"), not an autoencoder model`);
  }
  return parseManifest(AutoencoderManifestSchema, raw, file);
}

/** Writes the parameters as one float32 file; returns what the manifest records about it. */
export function writeAutoencoderWeights(modelDir: string, parameters: Float32Array[]): AutoencoderManifest['weights'] {
  const total = parameters.reduce((s, p) => s + p.length, 0);
  const all = new Float32Array(total);
  let at = 0;
  for (const p of parameters) {
    all.set(p, at);
    at += p.length;
  }
  const bytes = Buffer.from(all.buffer, all.byteOffset, all.byteLength);
  const file = join(modelDir, AUTOENCODER_WEIGHTS_FILE);
  writeFileSync(`${file}.tmp`, bytes);
  renameSync(`${file}.tmp`, file);
  return { file: AUTOENCODER_WEIGHTS_FILE, sha256: createHash('sha256').update(bytes).digest('hex'), bytes: bytes.length };
}

/** Reads and checks the weights file against the manifest; returns the parameters in parameterSpecs order. */
export function readAutoencoderWeights(modelDir: string, manifest: AutoencoderManifest): Float32Array[] {
  const cfg = configOf(manifest);
  const expected = parameterCount(cfg);
  if (manifest.architecture.parameters !== expected) {
    throw new Error(`model "${modelDir}": manifest says ${manifest.architecture.parameters} parameters, its architecture has ${expected}`);
  }
  const file = join(modelDir, manifest.weights.file);
  let buf: Buffer;
  try {
    buf = readFileSync(file);
  } catch (err) {
    throw new Error(`autoencoder weights "${file}" cannot be read: ${(err as Error).message}`);
  }
  if (buf.length !== expected * 4) {
    throw new Error(`autoencoder weights "${file}" has ${buf.length} bytes, expected ${expected * 4} (${expected} float32 parameters)`);
  }
  const sha = createHash('sha256').update(buf).digest('hex');
  if (sha !== manifest.weights.sha256) {
    throw new Error(`autoencoder weights "${file}" (sha256 ${sha.slice(0, 12)}...) are not the ones the manifest names (${manifest.weights.sha256.slice(0, 12)}...)`);
  }
  const all = new Float32Array(expected);
  new Uint8Array(all.buffer).set(buf);
  const out: Float32Array[] = [];
  let at = 0;
  for (const s of parameterSpecs(cfg)) {
    const n = s.shape.reduce((a, b) => a * b, 1);
    out.push(all.slice(at, at + n));
    at += n;
  }
  return out;
}

export function writeAutoencoderManifest(modelDir: string, manifest: AutoencoderManifest): void {
  writeManifest(modelDir, manifest);
}
