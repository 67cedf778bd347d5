// Object-storage settings from the environment, validated once at start-up so that a worker with a
// bad setting stops with a message naming the variable instead of failing on its first request.
//
//   S3_ENDPOINT           optional http(s) URL of an S3-compatible server (MinIO, s3rver); absent = AWS S3
//   S3_REGION             default 'us-east-1'
//   S3_BUCKET             required; must follow the S3 bucket-naming rules
//   S3_ACCESS_KEY_ID      optional, together with S3_SECRET_ACCESS_KEY; absent = the AWS SDK default
//   S3_SECRET_ACCESS_KEY  credential chain (env, profile, IRSA / instance role, ...)
//   S3_FORCE_PATH_STYLE   true/false (also 1/0, yes/no); default true when S3_ENDPOINT is set
//   S3_MAX_ATTEMPTS       attempts per request, transient errors retried with backoff; default 5
//
// An empty variable counts as unset (compose files and k8s manifests often write `S3_ENDPOINT=`).
// Secrets never reach an error message, JSON.stringify, util.inspect or a logger: the credentials
// live in a private field and are handed only to the S3 client.
import { inspect } from 'node:util';
import { z } from 'zod';
import { placeholderSecretProblems } from '../secret-placeholders.js';

export interface StorageCredentials {
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
}

/** What a logger may print: everything but the credentials, which are described, not shown. */
export interface RedactedStorageConfig {
  endpoint: string | null;
  region: string;
  bucket: string;
  forcePathStyle: boolean;
  maxAttempts: number;
  credentials: 'static (S3_ACCESS_KEY_ID)' | 'AWS default chain';
}

export interface StorageConfigInit {
  endpoint?: string;
  region: string;
  bucket: string;
  forcePathStyle: boolean;
  maxAttempts: number;
  credentials?: StorageCredentials;
}

export class StorageConfig {
  readonly endpoint: string | undefined;
  readonly region: string;
  readonly bucket: string;
  readonly forcePathStyle: boolean;
  readonly maxAttempts: number;
  readonly #credentials: StorageCredentials | undefined;

  constructor(init: StorageConfigInit) {
    this.endpoint = init.endpoint;
    this.region = init.region;
    this.bucket = init.bucket;
    this.forcePathStyle = init.forcePathStyle;
    this.maxAttempts = init.maxAttempts;
    this.#credentials = init.credentials ? { ...init.credentials } : undefined;
  }

  /** Static credentials for the S3 client, or undefined to use the SDK default chain. */
  credentials(): StorageCredentials | undefined {
    return this.#credentials;
  }

  toJSON(): RedactedStorageConfig {
    return {
      endpoint: this.endpoint ?? null,
      region: this.region,
      bucket: this.bucket,
      forcePathStyle: this.forcePathStyle,
      maxAttempts: this.maxAttempts,
      credentials: this.#credentials ? 'static (S3_ACCESS_KEY_ID)' : 'AWS default chain',
    };
  }

  [inspect.custom](): string {
    return `StorageConfig ${inspect(this.toJSON())}`;
  }

  toString(): string {
    return `StorageConfig ${JSON.stringify(this.toJSON())}`;
  }
}

export const DEFAULT_REGION = 'us-east-1';
export const DEFAULT_MAX_ATTEMPTS = 5;

const blankToUndefined = (v: unknown): unknown => (typeof v === 'string' && v.trim() === '' ? undefined : v);

/** Why `name` is not a valid S3 bucket name, or null when it is (rules of AWS "general purpose" buckets). */
export function bucketNameProblem(name: string): string | null {
  if (name.length < 3 || name.length > 63) return `must be 3 to 63 characters long (it has ${name.length})`;
  if (!/^[a-z0-9.-]+$/.test(name)) return 'may contain only lowercase letters, digits, "." and "-"';
  if (!/^[a-z0-9].*[a-z0-9]$/.test(name)) return 'must begin and end with a lowercase letter or digit';
  if (name.includes('..')) return 'must not contain two adjacent periods';
  if (/^\d{1,3}(\.\d{1,3}){3}$/.test(name)) return 'must not be formatted as an IP address';
  for (const p of ['xn--', 'sthree-', 'amzn-s3-demo-']) {
    if (name.startsWith(p)) return `must not start with the reserved prefix "${p}"`;
  }
  for (const s of ['-s3alias', '--ol-s3', '.mrap', '--x-s3', '--table-s3']) {
    if (name.endsWith(s)) return `must not end with the reserved suffix "${s}"`;
  }
  return null;
}

function parseBoolean(v: string): boolean | undefined {
  const s = v.trim().toLowerCase();
  if (s === 'true' || s === '1' || s === 'yes') return true;
  if (s === 'false' || s === '0' || s === 'no') return false;
  return undefined;
}

const optionalString = z.preprocess(blankToUndefined, z.string().optional());

// Every message starts with the variable name; values are echoed only for non-secret variables.
const EnvSchema = z
  .object({
    S3_ENDPOINT: optionalString.superRefine((v, ctx) => {
      if (v === undefined) return;
      let url: URL;
      try {
        url = new URL(v);
      } catch {
        // The value might be a mistyped secret; an endpoint is never worth echoing when malformed.
        ctx.addIssue({ code: 'custom', message: 'S3_ENDPOINT is not a valid URL (expected e.g. http://minio:9000)' });
        return;
      }
      if (url.username !== '' || url.password !== '') {
        ctx.addIssue({
          code: 'custom',
          message: 'S3_ENDPOINT must not contain credentials; set S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY instead',
        });
      } else if (url.protocol !== 'http:' && url.protocol !== 'https:') {
        ctx.addIssue({ code: 'custom', message: `S3_ENDPOINT "${v}" must be an http:// or https:// URL` });
      } else if ((url.pathname !== '/' && url.pathname !== '') || url.search !== '' || url.hash !== '') {
        ctx.addIssue({ code: 'custom', message: `S3_ENDPOINT "${v}" must be a bare server URL without a path or query` });
      }
    }),
    S3_REGION: optionalString.superRefine((v, ctx) => {
      if (v !== undefined && !/^[a-z0-9][a-z0-9-]{0,62}$/.test(v)) {
        ctx.addIssue({
          code: 'custom',
          message: `S3_REGION "${v}" is not a region name (lowercase letters, digits and "-", e.g. us-east-1)`,
        });
      }
    }),
    S3_BUCKET: optionalString.superRefine((v, ctx) => {
      if (v === undefined) {
        ctx.addIssue({ code: 'custom', message: 'S3_BUCKET is required (the bucket that holds datasets, runs and models)' });
        return;
      }
      const problem = bucketNameProblem(v);
      if (problem) ctx.addIssue({ code: 'custom', message: `S3_BUCKET "${v}" is not a valid S3 bucket name: ${problem}` });
    }),
    S3_ACCESS_KEY_ID: optionalString,
    S3_SECRET_ACCESS_KEY: optionalString,
    S3_FORCE_PATH_STYLE: optionalString.superRefine((v, ctx) => {
      if (v !== undefined && parseBoolean(v) === undefined) {
        ctx.addIssue({ code: 'custom', message: `S3_FORCE_PATH_STYLE must be true or false, got "${v}"` });
      }
    }),
    S3_MAX_ATTEMPTS: optionalString.superRefine((v, ctx) => {
      if (v !== undefined && !(/^\d+$/.test(v.trim()) && Number(v) >= 1 && Number(v) <= 20)) {
        ctx.addIssue({ code: 'custom', message: `S3_MAX_ATTEMPTS must be an integer from 1 to 20, got "${v}"` });
      }
    }),
  })
  .superRefine((env, ctx) => {
    const hasId = env.S3_ACCESS_KEY_ID !== undefined;
    const hasSecret = env.S3_SECRET_ACCESS_KEY !== undefined;
    if (hasId && !hasSecret) {
      ctx.addIssue({
        code: 'custom',
        message: 'S3_ACCESS_KEY_ID is set but S3_SECRET_ACCESS_KEY is not; set both, or neither to use the AWS default credential chain',
      });
    } else if (hasSecret && !hasId) {
      ctx.addIssue({
        code: 'custom',
        message: 'S3_SECRET_ACCESS_KEY is set but S3_ACCESS_KEY_ID is not; set both, or neither to use the AWS default credential chain',
      });
    }
  });

/** Refuses credentials still set to the Secret template's placeholder (shared/secret-placeholders.ts). */
function refusePlaceholderCredentials(env: Record<string, string | undefined>): void {
  const problems = placeholderSecretProblems(env, ['S3_ACCESS_KEY_ID', 'S3_SECRET_ACCESS_KEY']);
  if (problems.length) throw new Error(`invalid storage configuration: ${problems.join('; ')}`);
}

/**
 * Reads and validates the S3_* variables. Throws one Error listing every problem
 * ("invalid storage configuration: <problem>; <problem>"); secret values never appear in it.
 */
export function storageConfigFromEnv(env: Record<string, string | undefined> = process.env): StorageConfig {
  const picked = {
    S3_ENDPOINT: env.S3_ENDPOINT,
    S3_REGION: env.S3_REGION,
    S3_BUCKET: env.S3_BUCKET,
    S3_ACCESS_KEY_ID: env.S3_ACCESS_KEY_ID,
    S3_SECRET_ACCESS_KEY: env.S3_SECRET_ACCESS_KEY,
    S3_FORCE_PATH_STYLE: env.S3_FORCE_PATH_STYLE,
    S3_MAX_ATTEMPTS: env.S3_MAX_ATTEMPTS,
  };
  refusePlaceholderCredentials(picked);
  const parsed = EnvSchema.safeParse(picked);
  if (!parsed.success) {
    // Only our own messages (which never hold secrets) are used; the ZodError itself is not attached.
    const problems = parsed.error.issues.map((i) => i.message);
    throw new Error(`invalid storage configuration: ${problems.join('; ')}`);
  }
  const v = parsed.data;
  const endpoint = v.S3_ENDPOINT === undefined ? undefined : new URL(v.S3_ENDPOINT).origin;
  return new StorageConfig({
    endpoint,
    region: v.S3_REGION ?? DEFAULT_REGION,
    bucket: v.S3_BUCKET!,
    forcePathStyle: v.S3_FORCE_PATH_STYLE === undefined ? endpoint !== undefined : parseBoolean(v.S3_FORCE_PATH_STYLE)!,
    maxAttempts: v.S3_MAX_ATTEMPTS === undefined ? DEFAULT_MAX_ATTEMPTS : Number(v.S3_MAX_ATTEMPTS),
    credentials:
      v.S3_ACCESS_KEY_ID !== undefined && v.S3_SECRET_ACCESS_KEY !== undefined
        ? { accessKeyId: v.S3_ACCESS_KEY_ID, secretAccessKey: v.S3_SECRET_ACCESS_KEY }
        : undefined,
  });
}
