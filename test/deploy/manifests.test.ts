// Static checks of the deployment files against the code they deploy: the Dockerfile, .dockerignore,
// docker-compose.yml, the Kubernetes base (parsed as written) and, where kubectl is installed, every kustomize
// rendering (base, overlays/cpu, overlays/gpu, and the optional components). Plus live checks that the KEDA list
// names are the keys BullMQ really uses and that Redis's flags do what they should, and the least-privilege checks:
// one S3 user per service with policies matching the keys the code writes, NetworkPolicies matching who talks to
// whom. (Validation against the Kubernetes API schemas is in api-schemas.test.ts.)
//
// Needs the YAML parser "yaml" (a devDependency); without it every test here fails with a message saying so.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { Queue, Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { SUBMIT_USAGE, WORKER_USAGE } from '../../cli/commands/pipeline.js';
import { serviceSettingsFromEnv } from '../../shared/distributed/service-env.js';
import { startRedisServer, type RedisServer } from '../../shared/embedded/redis-server.js';
import { repoRoot } from '../../shared/paths.js';
import { createRedisConnection, redisConfigFromEnv, workerSettingsFromEnv } from '../../shared/queue/config.js';
import { FEATURES_QUEUE, INDEX_QUEUE, QUEUE_NAMES, REDUCE_QUEUE, REPORT_QUEUE, SCHEDULE_QUEUE, SCORE_QUEUE, type QueueName } from '../../shared/queue/jobs.js';
import { storageConfigFromEnv } from '../../shared/storage/config.js';
import {
  datasetKey, datasetPrefix, embeddingsKey, mapsKey, modelKey, modelLatestKey, modelVersionPrefix, reportKey, reportPrefix, runManifestKey, scoresKey,
} from '../../shared/storage/keys.js';

// ---------------------------------------------------------------------------------------------------------------
// Loading

interface YamlDocument {
  errors: { message: string }[];
  toJS(): unknown;
}
interface YamlModule {
  parseAllDocuments(source: string, options?: { merge?: boolean }): YamlDocument[] | { errors: { message: string }[] };
}

let yaml: YamlModule;

async function loadYaml(): Promise<YamlModule> {
  // Imported by a computed name: `yaml` is not a declared dependency yet, and the typecheck must pass without it.
  try {
    return (await import('yaml' as string)) as YamlModule;
  } catch (err) {
    throw new Error(
      `test/deploy needs the YAML parser "yaml" as a devDependency (npm install --save-dev yaml): ${(err as Error).message}`,
    );
  }
}

const read = (path: string): string => readFileSync(join(repoRoot, path), 'utf8');

/** Every document of a YAML file (or text), as plain values; a syntax error names the file. */
function parseYaml(text: string, what: string, merge = false): unknown[] {
  const docs = yaml.parseAllDocuments(text, { merge });
  if (!Array.isArray(docs)) throw new Error(`${what}: ${docs.errors.map((e) => e.message).join('; ')}`);
  const values: unknown[] = [];
  for (const d of docs) {
    if (d.errors.length) throw new Error(`${what}: ${d.errors.map((e) => e.message).join('; ')}`);
    const v = d.toJS();
    if (v !== null && v !== undefined) values.push(v);
  }
  return values;
}

// Kubernetes shapes, as far as these checks look into them.
interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: {
    secretKeyRef?: { name: string; key: string; optional?: boolean };
    configMapKeyRef?: { name: string; key: string; optional?: boolean };
  };
}
interface Probe {
  httpGet?: { path: string; port: string | number };
  exec?: { command: string[] };
}
interface Container {
  name: string;
  image: string;
  command?: string[];
  args?: string[];
  env?: EnvVar[];
  envFrom?: { configMapRef?: { name: string }; secretRef?: { name: string } }[];
  ports?: { name?: string; containerPort: number }[];
  resources?: { requests?: Record<string, string>; limits?: Record<string, string> };
  startupProbe?: Probe;
  readinessProbe?: Probe;
  livenessProbe?: Probe;
  securityContext?: { allowPrivilegeEscalation?: boolean; readOnlyRootFilesystem?: boolean; capabilities?: { drop?: string[] } };
  volumeMounts?: { name: string; mountPath: string; readOnly?: boolean }[];
}
interface PodSpec {
  containers: Container[];
  initContainers?: Container[];
  securityContext?: { runAsNonRoot?: boolean; runAsUser?: number; seccompProfile?: { type: string } };
  volumes?: { name: string; emptyDir?: object; configMap?: { name: string }; persistentVolumeClaim?: object }[];
  nodeSelector?: Record<string, string>;
  tolerations?: object[];
  terminationGracePeriodSeconds?: number;
}
interface PodTemplate {
  metadata?: { labels?: Record<string, string>; annotations?: Record<string, string> };
  spec: PodSpec;
}
interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  /** Loosely typed: the checks below look into it field by field and fail on a missing field. */
  spec?: any;
  data?: Record<string, string>;
  stringData?: Record<string, string>;
}

interface Rendering {
  /** What was rendered, for messages. */
  name: string;
  objects: K8sObject[];
  /** False for the base parsed as written (no namespace, generator names unsuffixed). */
  rendered: boolean;
}

function asObjects(values: unknown[], what: string): K8sObject[] {
  return values.map((v, i) => {
    const o = v as K8sObject;
    assert.ok(o && typeof o.kind === 'string' && typeof o.metadata?.name === 'string', `${what}: document ${i} is not a Kubernetes object`);
    return o;
  });
}

/** The base as written: the files its kustomization lists, plus its generated ConfigMaps. */
function rawBase(): Rendering {
  const [k] = parseYaml(read('k8s/base/kustomization.yaml'), 'k8s/base/kustomization.yaml') as {
    resources: string[];
    configMapGenerator?: { name: string; files: string[] }[];
  }[];
  const objects: K8sObject[] = [];
  for (const file of k.resources) objects.push(...asObjects(parseYaml(read(`k8s/base/${file}`), `k8s/base/${file}`), file));
  for (const g of k.configMapGenerator ?? []) {
    // Keyed by file name, as kustomize does.
    const data = Object.fromEntries(g.files.map((f) => [f.split('/').pop()!, read(`k8s/base/${f}`)]));
    objects.push({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: g.name }, data });
  }
  return { name: 'k8s/base as written', objects, rendered: false };
}

const kubectl = (() => {
  const r = spawnSync('kubectl', ['version', '--client', '-o', 'json'], { encoding: 'utf8' });
  if (r.status !== 0) return null;
  const v = JSON.parse(r.stdout) as { clientVersion?: { gitVersion?: string }; kustomizeVersion?: string };
  return `kubectl ${v.clientVersion?.gitVersion ?? '?'} (kustomize ${v.kustomizeVersion ?? '?'})`;
})();
const NO_KUBECTL = 'kubectl is not installed: kustomize renderings are not checked (install kubectl to run these)';

function kustomize(dir: string): K8sObject[] {
  const out = execFileSync('kubectl', ['kustomize', dir], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  return asObjects(parseYaml(out, `kubectl kustomize ${dir}`), dir);
}

let renderings: Rendering[] = [];
let rendered: Record<'base' | 'cpu' | 'gpu', K8sObject[]> | null = null;

// One hook: the parser first, then everything parsed with it.
before(async () => {
  yaml = await loadYaml();
  renderings = [rawBase()];
  if (!kubectl) return;
  rendered = {
    base: kustomize(join(repoRoot, 'k8s')),
    cpu: kustomize(join(repoRoot, 'k8s/overlays/cpu')),
    gpu: kustomize(join(repoRoot, 'k8s/overlays/gpu')),
  };
  renderings.push(
    { name: 'kubectl kustomize k8s', objects: rendered.base, rendered: true },
    { name: 'kubectl kustomize k8s/overlays/cpu', objects: rendered.cpu, rendered: true },
    { name: 'kubectl kustomize k8s/overlays/gpu', objects: rendered.gpu, rendered: true },
  );
});

// ---------------------------------------------------------------------------------------------------------------
// What the code reads and requires

const CODE_ROOTS = ['bin', 'cli', 'services', 'shared'];
const CONFIG_MODULES = ['shared/queue/config.ts', 'shared/storage/config.ts', 'shared/distributed/service-env.ts', 'shared/paths.ts', 'shared/log.ts'];
const INIT_SCRIPT = 'k8s/base/fetch-weights.mjs';

function sourceFiles(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(join(repoRoot, dir))) {
    const rel = `${dir}/${name}`;
    if (name === 'node_modules') continue;
    if (statSync(join(repoRoot, rel)).isDirectory()) out.push(...sourceFiles(rel));
    else if (/\.(ts|js|mjs)$/.test(name) && !name.endsWith('.test.ts')) out.push(rel);
  }
  return out;
}

/** Variables a source reads: process.env.X, env.X / clean.X (an env record passed in), env['X']. */
function envReads(text: string): Set<string> {
  const names = new Set<string>();
  for (const re of [/process\.env\.([A-Z][A-Z0-9_]*)/g, /\b(?:env|clean)\.([A-Z][A-Z0-9_]*)/g, /\benv\[['"]([A-Z][A-Z0-9_]*)['"]\]/g]) {
    for (const m of text.matchAll(re)) names.add(m[1]);
  }
  return names;
}

/** Variables a config module documents in its header ("//   NAME   what it is"). */
function documentedVars(text: string): Set<string> {
  const names = new Set<string>();
  for (const m of text.matchAll(/^\/\/\s{2,}([A-Z][A-Z0-9_]{2,})\s/gm)) names.add(m[1]);
  return names;
}

const codeVars = new Set<string>();
for (const root of CODE_ROOTS) for (const f of sourceFiles(root)) for (const v of envReads(read(f))) codeVars.add(v);
for (const f of CONFIG_MODULES) for (const v of documentedVars(read(f))) codeVars.add(v);
const initScriptVars = envReads(read(INIT_SCRIPT));
/** Everything a patchcore container may be given: read by the code, or by the init script that runs in its image. */
const readableVars = new Set([...codeVars, ...initScriptVars]);

/** What a container is, from its command line. */
function roleOf(argv: string[]): string {
  if (argv.some((a) => a.endsWith('fetch-weights.mjs'))) return 'fetch-weights';
  const i = argv.findIndex((a) => a === 'worker' || a === 'submit' || a === 'demo');
  if (i < 0) return argv.join(' ');
  return argv[i] === 'demo' ? 'demo' : `${argv[i]} ${argv[i + 1]}`;
}

const QUEUE_VARS = ['REDIS_URL', 'QUEUE_PREFIX', 'S3_BUCKET'];
const WORKER_VARS = [...QUEUE_VARS, 'HEALTH_PORT', 'SHUTDOWN_GRACE_MS'];
/**
 * Variables each role needs in a container although the code has defaults: the defaults point at localhost
 * (REDIS_URL), at ../shared beside a checkout (PATCHCORE_WEIGHTS), at no endpoint (HEALTH_PORT) or at a folder
 * under the read-only root (MODEL_CACHE_DIR, unless the image's own default is used).
 */
const REQUIRED: Record<string, string[]> = {
  'worker features': [...WORKER_VARS, 'PATCHCORE_WEIGHTS'],
  'worker score': [...WORKER_VARS, 'PATCHCORE_WEIGHTS', 'MODEL_CACHE_DIR'],
  'worker index': WORKER_VARS,
  'worker scheduler': [...WORKER_VARS, 'PATCHCORE_WEIGHTS'],
  'submit train': [...QUEUE_VARS, 'PATCHCORE_WEIGHTS'],
  'submit evaluate': QUEUE_VARS,
  demo: [...QUEUE_VARS, 'S3_ENDPOINT', 'PATCHCORE_WEIGHTS'],
  'fetch-weights': ['S3_BUCKET', 'WEIGHTS_OBJECT_KEY', 'WEIGHTS_SHA256', 'PATCHCORE_WEIGHTS'],
};
const WEIGHTS_ROLES = new Set(['worker features', 'worker score', 'worker scheduler', 'submit train', 'demo']);

/** The queues each worker role serves (the scorer serves two), as the services start them. */
const QUEUES_OF_ROLE: Record<string, QueueName[]> = {
  'worker features': [FEATURES_QUEUE],
  'worker index': [INDEX_QUEUE, REDUCE_QUEUE],
  'worker score': [SCORE_QUEUE, REPORT_QUEUE],
  'worker scheduler': [SCHEDULE_QUEUE],
};
/** Pools scale with their backlog; the scheduler is one fixed replica. */
const POOL_ROLES = new Set(['worker features', 'worker index', 'worker score']);

/** Passes the container's environment through the code's own validators, as the process would at start. */
function validateEnv(role: string, env: Record<string, string>, where: string): void {
  for (const name of Object.keys(env)) {
    assert.ok(readableVars.has(name), `${where}: ${name} is set but nothing in the code reads it`);
  }
  for (const name of REQUIRED[role] ?? []) assert.ok(name in env, `${where}: ${role} needs ${name}`);
  try {
    if (role !== 'fetch-weights') {
      const redis = redisConfigFromEnv(env);
      assert.notEqual(redis.host, '127.0.0.1', `${where}: REDIS_URL points at localhost`);
    }
    storageConfigFromEnv(env);
    serviceSettingsFromEnv(env);
    if (role.startsWith('worker ')) {
      const w = workerSettingsFromEnv(env);
      assert.ok(w.healthPort !== null && w.healthPort > 0, `${where}: HEALTH_PORT must be a fixed port for the probes`);
    }
  } catch (err) {
    throw new Error(`${where}: ${(err as Error).message}`);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Dockerfile and images

interface Stage {
  from: string;
  name: string | null;
  lines: string[];
}

function dockerStages(): Stage[] {
  const text = read('Dockerfile').replace(/\\\n/g, ' ');
  const stages: Stage[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const from = /^FROM\s+(\S+)(?:\s+AS\s+(\S+))?$/i.exec(line);
    if (from) stages.push({ from: from[1], name: from[2] ?? null, lines: [] });
    else stages.at(-1)?.lines.push(line);
  }
  return stages;
}

const pkg = JSON.parse(read('package.json')) as { version: string; allowScripts: Record<string, boolean> };
const APP_IMAGE_RE = /^(?:[^/]+\/)*patchcore-(cpu|gpu):(\S+)$/;

/** A third-party image with an explicit version (a tag with a digit, not "latest", or a digest). */
function pinned(image: string): boolean {
  if (image.includes('@sha256:')) return true;
  const tag = /:([^/:]+)$/.exec(image)?.[1];
  return !!tag && tag !== 'latest' && /\d/.test(tag);
}

/** Third-party images by repository, from docker-compose.yml; the manifests must use the same versions. */
function composeThirdPartyImages(): Map<string, string> {
  const images = new Map<string, string>();
  for (const s of Object.values(compose().services)) {
    if (s.image && !APP_IMAGE_RE.test(s.image)) images.set(s.image.replace(/:[^/:]+$/, ''), s.image);
  }
  return images;
}

// ---------------------------------------------------------------------------------------------------------------
// docker-compose.yml

interface ComposeService {
  image?: string;
  build?: { context: string; target?: string };
  command?: string[];
  entrypoint?: string[];
  environment?: Record<string, string>;
  profiles?: string[];
  depends_on?: Record<string, { condition: string }>;
  healthcheck?: { test: string[] };
  volumes?: string[];
  tmpfs?: string[];
  read_only?: boolean;
  cap_drop?: string[];
  restart?: string;
  stop_grace_period?: string;
  deploy?: { resources?: { reservations?: { devices?: { driver: string; count: number; capabilities: string[] }[] } } };
}

let composeFile: { services: Record<string, ComposeService>; volumes?: Record<string, unknown> } | null = null;
function compose(): { services: Record<string, ComposeService>; volumes?: Record<string, unknown> } {
  composeFile ??= parseYaml(read('docker-compose.yml'), 'docker-compose.yml', true)[0] as typeof composeFile;
  return composeFile!;
}

/** ${VAR:-default} and ${VAR} as compose substitutes them with an empty environment. */
const interpolate = (s: string): string => s.replace(/\$\{([A-Z0-9_]+)(?::?-([^}]*))?\}/g, (_m, _v, d: string | undefined) => d ?? '');

const isAppService = (s: ComposeService): boolean => !!s.image && APP_IMAGE_RE.test(s.image);

// ---------------------------------------------------------------------------------------------------------------
// Kubernetes helpers

function podsOf(objects: K8sObject[]): { owner: K8sObject; template: PodTemplate }[] {
  const pods: { owner: K8sObject; template: PodTemplate }[] = [];
  for (const o of objects) {
    if (['Deployment', 'StatefulSet', 'Job'].includes(o.kind)) pods.push({ owner: o, template: o.spec.template });
    if (o.kind === 'CronJob') pods.push({ owner: o, template: o.spec.jobTemplate.spec.template });
  }
  return pods;
}

const allContainers = (spec: PodSpec): Container[] => [...(spec.initContainers ?? []), ...spec.containers];
const isApp = (c: Container): boolean => APP_IMAGE_RE.test(c.image);
const argvOf = (c: Container): string[] => [...(c.command ?? []), ...(c.args ?? [])];

function secretTemplate(): Record<string, string> {
  const [s] = asObjects(parseYaml(read('k8s/secret.template.yaml'), 'k8s/secret.template.yaml'), 'secret template');
  assert.equal(s.kind, 'Secret');
  assert.equal(s.metadata.name, 'patchcore-secrets');
  return s.stringData ?? {};
}

/** The Secret as an operator fills it in: every CHANGE_ME replaced (the services refuse the placeholder). */
function filledSecret(): Record<string, string> {
  return Object.fromEntries(Object.entries(secretTemplate()).map(([k, v]) => [k, v.replaceAll('CHANGE_ME', 'generated-0f3a9c2e71b4')]));
}

/**
 * The S3 user of each role (its own keys <USER>_S3_* in the Secret, its policy k8s/base/minio-policies/<user>.json):
 * a fetch-weights init container uses its pod's.
 */
const S3_USER_OF_ROLE: Record<string, string> = {
  'worker features': 'feature-worker',
  'worker index': 'index-worker',
  'worker score': 'scorer',
  'worker scheduler': 'producer',
  'submit train': 'producer',
  'submit evaluate': 'producer',
};
const S3_USERS = ['feature-worker', 'index-worker', 'scorer', 'producer'];
const secretPrefix = (user: string): string => user.toUpperCase().replaceAll('-', '_');

/** A ConfigMap by name; generated ones carry a hash suffix once rendered. */
function configMap(objects: K8sObject[], name: string): K8sObject | undefined {
  return objects.find((o) => o.kind === 'ConfigMap' && (o.metadata.name === name || o.metadata.name.startsWith(`${name}-`)));
}

/** The environment a container gets: envFrom ConfigMaps, then env (values, $(VAR) references, key refs). */
function containerEnv(c: Container, objects: K8sObject[], secret: Record<string, string>, where: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const src of c.envFrom ?? []) {
    assert.ok(!src.secretRef, `${where}: secrets are passed one key at a time, not with envFrom`);
    const cm = src.configMapRef && configMap(objects, src.configMapRef.name);
    assert.ok(cm?.data, `${where}: envFrom ConfigMap ${src.configMapRef?.name} does not exist`);
    Object.assign(env, cm.data);
  }
  for (const e of c.env ?? []) {
    if (e.value !== undefined) {
      env[e.name] = e.value.replace(/\$\(([A-Za-z0-9_]+)\)/g, (m, v: string) => env[v] ?? m);
    } else if (e.valueFrom?.secretKeyRef) {
      const ref = e.valueFrom.secretKeyRef;
      assert.equal(ref.name, 'patchcore-secrets', `${where}: ${e.name} refers to Secret ${ref.name}`);
      assert.ok(ref.key in secret, `${where}: ${e.name} refers to key ${ref.key}, which the Secret template does not have`);
      env[e.name] = secret[ref.key];
    } else if (e.valueFrom?.configMapKeyRef) {
      const ref = e.valueFrom.configMapKeyRef;
      const value = configMap(objects, ref.name)?.data?.[ref.key];
      assert.ok(value !== undefined, `${where}: ${e.name} refers to ${ref.name}.${ref.key}, which does not exist`);
      env[e.name] = value;
    } else {
      assert.fail(`${where}: ${e.name} has neither a value nor a key reference`);
    }
  }
  return env;
}

/** The Deployments of the worker pools, with their role. */
function workerDeployments(objects: K8sObject[]): { d: K8sObject; c: Container; role: string }[] {
  return objects
    .filter((o) => o.kind === 'Deployment')
    .map((d) => {
      const c = (d.spec.template as PodTemplate).spec.containers.find(isApp)!;
      return { d, c, role: roleOf(argvOf(c)) };
    })
    .filter((w) => w.role.startsWith('worker '));
}

// ---------------------------------------------------------------------------------------------------------------
// Dockerfile

test('Dockerfile: pinned multi-stage builds of a cpu and a gpu target, non-root, production dependencies only', () => {
  const stages = dockerStages();
  const names = new Set(stages.map((s) => s.name));
  for (const s of stages) {
    if (names.has(s.from)) continue; // built on an earlier stage
    assert.ok(pinned(s.from), `FROM ${s.from} is not pinned to a version`);
  }
  const node = stages.find((s) => s.from.startsWith('node:'));
  assert.match(node!.from, new RegExp(`^node:${process.versions.node.split('.')[0]}\\.\\d+\\.\\d+-`), 'the node image has the major version the tests run on');
  // @tensorflow/tfjs-node-gpu 4.x loads libtensorflow 2.9, built for CUDA 11.2 and cuDNN 8.1.
  const gpu = stages.find((s) => s.name === 'gpu');
  assert.ok(gpu, 'a stage named gpu');
  assert.match(gpu.from, /^nvidia\/cuda:11\.2\.\d+-cudnn8-runtime-ubuntu\d+\.\d+$/);
  for (const target of ['cpu', 'gpu']) {
    const s = stages.find((x) => x.name === target)!;
    assert.ok(s, `a stage named ${target}`);
    assert.ok(s.lines.includes('USER 10001:10001'), `${target}: runs as the numeric non-root user 10001 (runAsNonRoot can verify it)`);
    assert.ok(s.lines.includes('ENTRYPOINT ["node", "bin/patchcore.js"]'), `${target}: the patchcore command is the entrypoint`);
    assert.ok(!s.lines.some((l) => /^RUN .*npm (ci|install)/.test(l)), `${target}: installs nothing itself (deps come from a build stage)`);
    assert.ok(s.lines.some((l) => /^COPY --from=deps-\w+ \/app\/node_modules/.test(l)), `${target}: node_modules from a deps stage`);
  }
  // Install scripts: everything ignored, then exactly the allowed packages each image needs are rebuilt.
  const allowed = Object.entries(pkg.allowScripts).filter(([, v]) => v).map(([k]) => k);
  const lock = JSON.parse(read('package-lock.json')) as { packages: Record<string, { dev?: boolean; hasInstallScript?: boolean }> };
  const withScripts = allowed.filter((p) => {
    const entry = lock.packages[`node_modules/${p}`];
    return entry?.hasInstallScript && !entry.dev;
  });
  for (const [deps, needs] of [['deps-cpu', []], ['deps-gpu', ['@tensorflow/tfjs-node-gpu']]] as const) {
    const s = stages.find((x) => x.name === deps)!;
    assert.ok(s, `a stage named ${deps}`);
    const run = s.lines.filter((l) => l.startsWith('RUN ')).join(' ');
    assert.match(run, /npm install -g npm@\$\{NPM_VERSION\}/, `${deps}: npm 11 (allowScripts)`);
    assert.match(s.lines.find((l) => l.startsWith('ARG NPM_VERSION='))!, /=1[1-9]\.\d+\.\d+$/);
    assert.match(run, /npm ci --omit=dev --ignore-scripts/, `${deps}: production dependencies only`);
    const rebuilt = /npm rebuild(?: --[a-z-]+)* ((?:[@\w./-]+ ?)+)/.exec(run)?.[1].trim().split(/\s+/) ?? [];
    const removed = [...run.matchAll(/node_modules\/(@?[\w.-]+(?:\/[\w.-]+)?)/g)].map((m) => m[1]);
    for (const p of rebuilt) assert.ok(allowed.includes(p), `${deps}: rebuilds ${p}, which package.json#allowScripts does not allow`);
    for (const p of withScripts) {
      assert.ok(rebuilt.includes(p) || removed.includes(p), `${deps}: ${p} has an allowed install script but is neither rebuilt nor removed`);
    }
    for (const p of needs) assert.ok(rebuilt.includes(p), `${deps}: must run ${p}'s install script`);
  }
});

test('.dockerignore sends the sources the images copy and nothing else: no tests, weights, node_modules', () => {
  const rules = read('.dockerignore').split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
  assert.equal(rules[0], '**', 'an allowlist: everything is excluded first');
  for (const must of ['**/*.test.ts', '**/*.h5', '**/node_modules', '**/.env']) assert.ok(rules.includes(must), `.dockerignore excludes ${must}`);
  const included = rules.filter((r) => r.startsWith('!')).map((r) => r.slice(1).replace(/\/$/, ''));
  const copied = new Set<string>();
  for (const s of dockerStages()) {
    for (const l of s.lines) {
      const m = /^COPY (?!--from)(.+) (\S+)$/.exec(l);
      if (m) for (const src of m[1].trim().split(/\s+/)) copied.add(src);
    }
  }
  for (const src of copied) assert.ok(included.includes(src), `COPY ${src}: excluded by .dockerignore`);
  for (const p of included) assert.ok(!/^test|\.h5$|\.\./.test(p), `.dockerignore lets in ${p}`);
  // The code in the image only imports from what the image has.
  const inImage = new Set(included.filter((p) => !p.includes('.')));
  for (const root of CODE_ROOTS) {
    for (const f of sourceFiles(root)) {
      for (const m of read(f).matchAll(/(?:from|import)\s*\(?\s*'(\.{1,2}\/[^']+)'/g)) {
        const target = relative(repoRoot, resolve(repoRoot, dirname(f), m[1]));
        assert.ok(inImage.has(target.split(sep)[0]), `${f} imports ${m[1]}, outside the image's folders`);
      }
    }
  }
});

// ---------------------------------------------------------------------------------------------------------------
// docker-compose.yml

test('compose: Redis with AOF, MinIO with its bucket job, GPU and cpu-profile workers, producer and demo one-shots', () => {
  const { services } = compose();
  const redis = services.redis;
  assert.deepEqual(redis.command?.slice(0, 3), ['redis-server', '--appendonly', 'yes']);
  assert.ok(redis.command?.join(' ').includes('--maxmemory-policy noeviction'), 'BullMQ needs noeviction');
  assert.ok(redis.volumes?.some((v) => v.endsWith(':/data')), 'the AOF lives on a volume');
  const bucket = services['index-worker'].environment!.S3_BUCKET;
  // minio-init runs the set-up script Kubernetes runs (bucket, users, policies), on the bucket the services use.
  assert.deepEqual(services['minio-init'].entrypoint, ['sh', '/opt/minio-setup/minio-setup.sh']);
  assert.equal(services['minio-init'].environment!.S3_BUCKET, bucket);
  assert.ok(read('k8s/base/minio-setup.sh').includes('mcs mb --ignore-existing "store/$S3_BUCKET"'));
  assert.deepEqual(services['minio-init'].volumes, [
    './k8s/base/minio-setup.sh:/opt/minio-setup/minio-setup.sh:ro',
    `./k8s/base/minio-policies:${services['minio-init'].environment!.POLICY_DIR}:ro`,
  ]);
  assert.match(interpolate(services['minio-init'].environment!.MC_HOST_store), /^http:\/\/[^:]+:[^@]{8,}@minio:9000$/);
  assert.equal(services['minio-init'].depends_on?.minio.condition, 'service_healthy');

  const gpuWorkers = ['feature-worker', 'scorer'];
  for (const name of gpuWorkers) {
    const gpu = services[name];
    const cpu = services[`${name}-cpu`];
    assert.deepEqual(gpu.profiles, ['gpu']);
    assert.deepEqual(gpu.deploy?.resources?.reservations?.devices, [{ driver: 'nvidia', count: 1, capabilities: ['gpu'] }]);
    assert.equal(gpu.build?.target, 'gpu');
    assert.deepEqual(cpu.profiles, ['cpu']);
    assert.equal(cpu.deploy, undefined, `${name}-cpu reserves no GPU`);
    assert.equal(cpu.build?.target, 'cpu');
    assert.deepEqual(cpu.command, gpu.command);
  }
  assert.deepEqual(services['feature-worker'].command, ['worker', 'features']);
  assert.deepEqual(services.scorer.command, ['worker', 'score']);
  assert.deepEqual(services['index-worker'].command, ['worker', 'index']);
  assert.equal(services['index-worker'].profiles, undefined, 'the index worker runs in every profile');
  assert.deepEqual(services.scheduler.command, ['worker', 'scheduler']);
  assert.equal(services.scheduler.profiles, undefined);
  assert.equal(services.demo.command?.[0], 'demo');
  assert.equal(services.demo.restart, 'no');
  assert.deepEqual(services.producer.profiles, ['tools']);
});

test('compose: health checks, start order, images, security and each patchcore container\'s environment', () => {
  const { services } = compose();
  const stages = new Set(dockerStages().map((s) => s.name));
  const oneShot = (s: ComposeService) => s.restart === 'no';
  for (const [name, s] of Object.entries(compose().services)) {
    const where = `docker-compose.yml service ${name}`;
    if (!oneShot(s)) assert.ok(s.healthcheck, `${where}: has a health check`);
    assert.ok(s.image, `${where}: names its image`);
    for (const [dep, { condition }] of Object.entries(s.depends_on ?? {})) {
      assert.ok(services[dep], `${where}: depends on unknown service ${dep}`);
      assert.equal(condition, oneShot(services[dep]) ? 'service_completed_successfully' : 'service_healthy', `${where} -> ${dep}`);
    }
    if (!isAppService(s)) {
      assert.ok(pinned(s.image!), `${where}: ${s.image} is not pinned`);
      continue;
    }
    const [, target, tag] = APP_IMAGE_RE.exec(s.image!)!;
    assert.equal(tag, pkg.version, `${where}: tagged with package.json's version`);
    assert.equal(s.build?.target, target, `${where}: ${s.image} is built from the Dockerfile target ${target}`);
    assert.ok(stages.has(target), `${where}: the Dockerfile has no target ${target}`);
    for (const dep of ['redis', 'minio', 'minio-init']) assert.ok(s.depends_on?.[dep], `${where}: waits for ${dep}`);
    assert.equal(s.read_only, true, `${where}: read-only root filesystem`);
    assert.deepEqual(s.cap_drop, ['ALL'], `${where}: drops all capabilities`);
    assert.ok(s.tmpfs?.includes('/tmp'), `${where}: /tmp is writable`);

    const env = Object.fromEntries(Object.entries(s.environment ?? {}).map(([k, v]) => [k, interpolate(String(v))]));
    const role = roleOf(s.command ?? []);
    validateEnv(role, env, where);
    const mounts = (s.volumes ?? []).map((v) => interpolate(v).split(':'));
    const shared = mounts.find(([, inside]) => inside === env.PATCHCORE_SHARED_DIR);
    assert.ok(shared && shared[2] === 'ro', `${where}: the shared folder is mounted read-only at PATCHCORE_SHARED_DIR`);
    if (WEIGHTS_ROLES.has(role)) {
      // The default mount is ../shared beside the checkout, as on CI: the weights must be there.
      const host = join(repoRoot, shared[0], relative(shared[1], env.PATCHCORE_WEIGHTS));
      assert.ok(env.PATCHCORE_WEIGHTS.startsWith(`${shared[1]}/`), `${where}: PATCHCORE_WEIGHTS is inside the shared mount`);
      assert.ok(existsSync(host), `${where}: PATCHCORE_WEIGHTS maps to ${host}, which does not exist`);
    }
    if (env.MODEL_CACHE_DIR) {
      assert.ok((s.tmpfs ?? []).some((t) => env.MODEL_CACHE_DIR.startsWith(`${t}/`)), `${where}: MODEL_CACHE_DIR is on a tmpfs`);
    }
    if (role.startsWith('worker ')) {
      const probe = s.healthcheck!.test.join(' ');
      assert.ok(probe.includes(`http://127.0.0.1:${env.HEALTH_PORT}/readyz`), `${where}: the health check asks /readyz on HEALTH_PORT`);
      const graceS = Number(/^(\d+)s$/.exec(s.stop_grace_period ?? '')?.[1]);
      assert.ok(graceS >= Number(env.SHUTDOWN_GRACE_MS) / 1000 + 10, `${where}: stop_grace_period outlasts SHUTDOWN_GRACE_MS`);
    }
  }
});

// ---------------------------------------------------------------------------------------------------------------
// Kubernetes

test('k8s: kustomize renders the base and both overlays', (t) => {
  if (!kubectl) return t.skip(NO_KUBECTL);
  t.diagnostic(kubectl);
  for (const r of renderings.filter((x) => x.rendered)) {
    assert.ok(r.objects.length >= 15, `${r.name}: ${r.objects.length} objects`);
    const ns = r.objects.find((o) => o.kind === 'Namespace');
    assert.equal(ns?.metadata.name, 'patchcore');
    for (const o of r.objects) {
      if (o.kind !== 'Namespace') assert.equal(o.metadata.namespace, 'patchcore', `${r.name}: ${o.kind}/${o.metadata.name} namespace`);
      assert.equal(o.metadata.labels?.['app.kubernetes.io/part-of'], 'patchcore', `${r.name}: ${o.kind}/${o.metadata.name} label`);
    }
    assert.ok(!r.objects.some((o) => o.kind === 'Secret'), `${r.name}: ships no Secret (only its template)`);
  }
});

test('k8s: every container has resource requests and limits, and runs restricted (non-root, read-only, no capabilities)', () => {
  for (const r of renderings) {
    const pods = podsOf(r.objects);
    assert.ok(pods.length >= 7, `${r.name}: ${pods.length} pod templates`);
    for (const { owner, template } of pods) {
      const where = `${r.name}: ${owner.kind}/${owner.metadata.name}`;
      const psc = template.spec.securityContext;
      assert.equal(psc?.runAsNonRoot, true, `${where}: runAsNonRoot`);
      assert.ok((psc?.runAsUser ?? 0) > 0, `${where}: runAsUser is not root`);
      assert.equal(psc?.seccompProfile?.type, 'RuntimeDefault', `${where}: seccomp`);
      for (const c of allContainers(template.spec)) {
        const cw = `${where} container ${c.name}`;
        for (const kind of ['requests', 'limits'] as const) {
          for (const res of ['cpu', 'memory']) assert.ok(c.resources?.[kind]?.[res], `${cw}: resources.${kind}.${res}`);
        }
        assert.equal(c.securityContext?.allowPrivilegeEscalation, false, `${cw}: allowPrivilegeEscalation`);
        assert.equal(c.securityContext?.readOnlyRootFilesystem, true, `${cw}: readOnlyRootFilesystem`);
        assert.deepEqual(c.securityContext?.capabilities?.drop, ['ALL'], `${cw}: drops ALL capabilities`);
        assert.ok(!c.image.endsWith(':latest') && (isApp(c) || pinned(c.image)), `${cw}: ${c.image} is pinned`);
        if (isApp(c)) {
          assert.equal(psc?.runAsUser, 10001, `${where}: the image's user`);
          const tmp = c.volumeMounts?.find((m) => m.mountPath === '/tmp');
          const vol = template.spec.volumes?.find((v) => v.name === tmp?.name);
          assert.ok(vol?.emptyDir, `${cw}: /tmp is an emptyDir (the root filesystem is read-only)`);
        }
      }
    }
  }
});

test('k8s: images are the Dockerfile targets at package.json\'s version, third-party ones the versions compose uses', () => {
  const targets = new Set(dockerStages().map((s) => s.name));
  const third = composeThirdPartyImages();
  for (const r of renderings) {
    for (const { owner, template } of podsOf(r.objects)) {
      for (const c of allContainers(template.spec)) {
        const where = `${r.name}: ${owner.metadata.name}/${c.name}`;
        const app = APP_IMAGE_RE.exec(c.image);
        if (app) {
          assert.ok(targets.has(app[1]), `${where}: no Dockerfile target ${app[1]}`);
          assert.equal(app[2], pkg.version, `${where}: ${c.image} is not package.json's version ${pkg.version}`);
        } else {
          assert.equal(c.image, third.get(c.image.replace(/:[^/:]+$/, '')), `${where}: ${c.image} differs from docker-compose.yml`);
        }
      }
    }
  }
});

test('k8s: workers probe /healthz and /readyz on HEALTH_PORT, get the time to finish a job, and expose /metrics', () => {
  const runtime = read('shared/queue/worker-runtime.ts');
  for (const path of ["'/healthz'", "'/readyz'", "'/metrics'"]) assert.ok(runtime.includes(path), `the worker runtime serves ${path}`);
  for (const r of renderings) {
    const workers = workerDeployments(r.objects);
    assert.deepEqual(workers.map((w) => w.role).sort(), Object.keys(QUEUES_OF_ROLE).sort());
    assert.deepEqual(
      new Set(workers.flatMap((w) => QUEUES_OF_ROLE[w.role])),
      new Set(QUEUE_NAMES),
      `${r.name}: every queue of shared/queue/jobs.ts has workers`,
    );
    for (const { d, c, role } of workers) {
      const where = `${r.name}: Deployment/${d.metadata.name}`;
      assert.ok(WORKER_USAGE.includes(role.split(' ')[1]), `${where}: "patchcore ${role}" is not a command`);
      const port = Number(c.env?.find((e) => e.name === 'HEALTH_PORT')?.value);
      assert.ok(port > 0, `${where}: HEALTH_PORT is set in the Deployment`);
      const portOf = (p: string | number) => (typeof p === 'number' ? p : c.ports?.find((x) => x.name === p)?.containerPort);
      for (const [probe, path] of [['startupProbe', '/healthz'], ['readinessProbe', '/readyz'], ['livenessProbe', '/healthz']] as const) {
        const get = c[probe]?.httpGet;
        assert.equal(get?.path, path, `${where}: ${probe} path`);
        assert.equal(portOf(get!.port), port, `${where}: ${probe} port is HEALTH_PORT`);
      }
      const pod = d.spec.template as PodTemplate;
      assert.equal(pod.metadata?.annotations?.['prometheus.io/port'], String(port), `${where}: scrape port`);
      assert.equal(pod.metadata?.annotations?.['prometheus.io/path'], '/metrics', `${where}: scrape path`);
      const graceS = Number(c.env?.find((e) => e.name === 'SHUTDOWN_GRACE_MS')?.value) / 1000;
      const tgps = pod.spec.terminationGracePeriodSeconds ?? 30;
      assert.ok(tgps >= graceS + 10 && tgps <= graceS + 120, `${where}: terminationGracePeriodSeconds ${tgps} vs SHUTDOWN_GRACE_MS ${graceS} s`);
      const pdb = r.objects.find((o) => o.kind === 'PodDisruptionBudget' && o.metadata.name === d.metadata.name);
      assert.deepEqual(pdb?.spec.selector.matchLabels, d.spec.selector.matchLabels, `${where}: a PodDisruptionBudget`);
      const autoscalers = r.objects.filter(
        (o) => (o.kind === 'HorizontalPodAutoscaler' || o.kind === 'ScaledObject') && o.spec.scaleTargetRef.name === d.metadata.name,
      );
      if (POOL_ROLES.has(role)) {
        assert.equal(d.spec.replicas, undefined, `${where}: no replicas field (the autoscaler owns it)`);
        assert.equal(autoscalers.length, 1, `${where}: exactly one autoscaler (HPA or ScaledObject)`);
      } else {
        assert.equal(d.spec.replicas, 1, `${where}: one replica`);
        assert.equal(autoscalers.length, 0, `${where}: not autoscaled`);
      }
    }
  }
});

test('k8s: every patchcore container gets the variables its role needs, all read by the code and valid to it', () => {
  const unfilledSecret = secretTemplate();
  for (const [key, value] of Object.entries(unfilledSecret)) {
    // User names (S3 access key ids, MinIO's root user) are not secrets; every password is the placeholder.
    const userName = /(_S3_ACCESS_KEY_ID|^MINIO_ROOT_USER)$/.test(key) && /^patchcore-[a-z-]+$/.test(value);
    assert.ok(value.includes('CHANGE_ME') || ['redis:6379', 'disable'].includes(value) || userName, `secret template ${key}: "${value}" looks like a real value`);
  }
  const secret = filledSecret();
  const base = parseYaml(read('k8s/base/kustomization.yaml'), 'kustomization')[0] as { resources: string[] };
  assert.ok(!base.resources.some((f) => f.includes('secret')), 'the Secret template is not deployed by kustomize');
  for (const r of renderings) {
    const prefixes = new Set<string>();
    let checked = 0;
    for (const { owner, template } of podsOf(r.objects)) {
      for (const c of allContainers(template.spec)) {
        const where = `${r.name}: ${owner.kind}/${owner.metadata.name} container ${c.name}`;
        const env = containerEnv(c, r.objects, secret, where);
        if (!isApp(c)) continue;
        const role = roleOf(argvOf(c));
        assert.ok(REQUIRED[role], `${where}: unknown role "${role}"`);
        validateEnv(role, env, where);
        checked++;
        // Applied with the template's values unchanged, the container refuses to start, naming the variable.
        const unfilled = containerEnv(c, r.objects, unfilledSecret, where);
        if (Object.values(unfilled).some((v) => v.includes('CHANGE_ME'))) {
          assert.throws(() => validateEnv(role, unfilled, where), /(REDIS_URL|S3_ACCESS_KEY_ID|S3_SECRET_ACCESS_KEY) still holds the placeholder CHANGE_ME/, where);
        } else {
          assert.fail(`${where}: gets no secret from the Secret at all`);
        }
        if ('QUEUE_PREFIX' in env) prefixes.add(env.QUEUE_PREFIX);
        const mounts = c.volumeMounts ?? [];
        const mountOf = (path: string) => mounts.find((m) => path.startsWith(`${m.mountPath}/`));
        if (WEIGHTS_ROLES.has(role) || role === 'fetch-weights') {
          const m = mountOf(env.PATCHCORE_WEIGHTS);
          assert.ok(m, `${where}: PATCHCORE_WEIGHTS ${env.PATCHCORE_WEIGHTS} is not on a mounted volume`);
          const writer = template.spec.initContainers?.find((i) => roleOf(argvOf(i)) === 'fetch-weights');
          assert.ok(writer, `${where}: an init container fetches the weights`);
          const w = writer.volumeMounts?.find((x) => x.name === m.name);
          assert.ok(w && w.mountPath === m.mountPath && !w.readOnly, `${where}: the fetch-weights container writes the same volume`);
        }
        if (role === 'fetch-weights') {
          const scripts = template.spec.volumes?.find((v) => v.configMap && configMap(r.objects, 'patchcore-scripts')?.metadata.name === v.configMap.name);
          assert.ok(scripts, `${where}: the scripts ConfigMap is a volume`);
          const at = c.volumeMounts?.find((x) => x.name === scripts.name)?.mountPath;
          assert.ok(at && argvOf(c).includes(`${at}/fetch-weights.mjs`), `${where}: runs the mounted script`);
          assert.equal(configMap(r.objects, 'patchcore-scripts')?.data?.['fetch-weights.mjs'], read(INIT_SCRIPT));
        }
        if (env.MODEL_CACHE_DIR) {
          const m = mountOf(`${env.MODEL_CACHE_DIR}/x`);
          assert.ok(m && template.spec.volumes?.find((v) => v.name === m.name)?.emptyDir, `${where}: MODEL_CACHE_DIR is on an emptyDir`);
        }
      }
    }
    assert.ok(checked >= 10, `${r.name}: ${checked} patchcore containers checked`);
    assert.equal(prefixes.size, 1, `${r.name}: every container uses the same QUEUE_PREFIX`);
  }
});

test('k8s: the retraining CronJob submits training then evaluation of one category, never two runs at once', () => {
  for (const r of renderings) {
    const cron = r.objects.filter((o) => o.kind === 'CronJob');
    assert.ok(cron.length >= 1, `${r.name}: a CronJob`);
    for (const cj of cron) {
      const where = `${r.name}: CronJob/${cj.metadata.name}`;
      assert.equal(cj.spec.concurrencyPolicy, 'Forbid', where);
      assert.match(cj.spec.schedule, /^\S+ \S+ \S+ \S+ \S+$/, `${where}: a five-field schedule`);
      const pod = cj.spec.jobTemplate.spec.template as PodTemplate;
      const steps = allContainers(pod.spec).filter(isApp).map(argvOf).filter((a) => a[0] === 'submit');
      assert.deepEqual(steps.map((a) => a.slice(0, 2).join(' ')), ['submit train', 'submit evaluate'], `${where}: train, then evaluate`);
      const flag = (a: string[], f: string) => a[a.indexOf(f) + 1];
      for (const argv of steps) {
        for (const f of argv.filter((x) => x.startsWith('--'))) assert.ok(SUBMIT_USAGE.includes(f), `${where}: ${f} is not a submit option`);
        assert.ok(argv.includes('--wait'), `${where}: ${argv[1]} waits for its run`);
        assert.equal(flag(argv, '--dataset'), flag(steps[0], '--dataset'));
        assert.equal(flag(argv, '--category'), flag(steps[0], '--category'));
      }
      assert.ok(flag(steps[0], '--category'), `${where}: names the category`);
    }
  }
});

test('k8s: GPU pools on GPU nodes in the base and the gpu overlay; the cpu overlay has no trace of a GPU', (t) => {
  if (!rendered) return t.skip(NO_KUBECTL);
  const gpuRoles = new Set(['worker features', 'worker score']);
  for (const [name, objects] of [['base', rendered.base], ['gpu', rendered.gpu]] as const) {
    for (const { d, c, role } of workerDeployments(objects)) {
      const spec = (d.spec.template as PodTemplate).spec;
      const where = `${name}: ${d.metadata.name}`;
      if (gpuRoles.has(role)) {
        assert.equal(c.resources?.limits?.['nvidia.com/gpu'], '1', where);
        assert.equal(spec.nodeSelector?.['nvidia.com/gpu.present'], 'true', where);
        assert.deepEqual(spec.tolerations, [{ key: 'nvidia.com/gpu', operator: 'Exists', effect: 'NoSchedule' }], where);
        assert.ok(allContainers(spec).every((x) => !isApp(x) || x.image.startsWith('patchcore-gpu:')), `${where}: GPU image`);
      } else {
        assert.equal(c.resources?.limits?.['nvidia.com/gpu'], undefined, where);
        assert.ok(c.image.startsWith('patchcore-cpu:'), `${where}: CPU image`);
      }
    }
  }
  const cpuText = JSON.stringify(rendered.cpu);
  assert.ok(!cpuText.includes('nvidia'), 'cpu overlay mentions no nvidia resource, label or toleration');
  assert.ok(!cpuText.includes('patchcore-gpu'), 'cpu overlay uses the CPU image everywhere');
  for (const { d } of workerDeployments(rendered.cpu)) {
    assert.equal((d.spec.template as PodTemplate).spec.nodeSelector, undefined, `cpu: ${d.metadata.name} nodeSelector`);
  }
  assert.equal(rendered.cpu.filter((o) => o.kind === 'HorizontalPodAutoscaler').length, 3, 'cpu: CPU HPAs');
  assert.equal(rendered.gpu.filter((o) => o.kind === 'ScaledObject').length, 3, 'gpu: KEDA ScaledObjects');
  assert.equal(rendered.gpu.filter((o) => o.kind === 'HorizontalPodAutoscaler').length, 0, 'gpu: no HPA besides KEDA');
});

/** Checks the ScaledObjects of a rendering: BullMQ list names of the right queues, authentication from the Secret. */
function checkKeda(objects: K8sObject[], where: string): string[] {
  const secret = secretTemplate();
  const prefix = configMap(objects, 'patchcore-config')!.data!.QUEUE_PREFIX;
  const listNames: string[] = [];
  const scaled = objects.filter((o) => o.kind === 'ScaledObject');
  assert.equal(scaled.length, 3, `${where}: one ScaledObject per pool`);
  for (const so of scaled) {
    const w = workerDeployments(objects).find((x) => x.d.metadata.name === so.spec.scaleTargetRef.name);
    assert.ok(w, `${where}: ScaledObject ${so.metadata.name} targets no worker Deployment`);
    const names = (so.spec.triggers as { type: string; metadata: { listName: string }; authenticationRef: { name: string } }[]).map((t) => {
      assert.equal(t.type, 'redis');
      const ta = objects.find((o) => o.kind === 'TriggerAuthentication' && o.metadata.name === t.authenticationRef.name);
      assert.ok(ta, `${where}: TriggerAuthentication ${t.authenticationRef.name}`);
      for (const ref of ta.spec.secretTargetRef as { name: string; key: string }[]) {
        assert.ok(ref.name === 'patchcore-secrets' && ref.key in secret, `${where}: trigger auth key ${ref.key} is in the Secret template`);
      }
      return t.metadata.listName;
    });
    const expected = QUEUES_OF_ROLE[w.role].flatMap((q) => [`${prefix}:${q}:wait`, `${prefix}:${q}:active`]);
    assert.deepEqual(names.sort(), expected.sort(), `${where}: ${so.metadata.name} watches its queues' BullMQ lists`);
    listNames.push(...names);
  }
  assert.deepEqual(
    new Set(listNames.map((n) => n.split(':')[1])),
    new Set([...POOL_ROLES].flatMap((role) => QUEUES_OF_ROLE[role])),
    `${where}: every pool's queues are watched`,
  );
  return listNames;
}

test('k8s: the KEDA component as written watches each pool\'s BullMQ lists under the base\'s QUEUE_PREFIX', () => {
  const keda = asObjects(parseYaml(read('k8s/components/keda/scaledobjects.yaml'), 'scaledobjects.yaml'), 'keda');
  const objects = [...rawBase().objects.filter((o) => o.kind !== 'HorizontalPodAutoscaler'), ...keda];
  assert.ok(checkKeda(objects, 'components/keda').includes(`bull:${INDEX_QUEUE}:wait`));
});

test('k8s: KEDA scales each pool on its BullMQ wait and active lists, with QUEUE_PREFIX from the ConfigMap', (t) => {
  if (!rendered) return t.skip(NO_KUBECTL);
  assert.ok(checkKeda(rendered.gpu, 'overlays/gpu').includes(`bull:${FEATURES_QUEUE}:wait`));
  // A site that sets a Redis Cluster hash tag below the KEDA component, and uses every optional component.
  const dir = mkdtempSync(join(tmpdir(), 'patchcore-kustomize-'));
  try {
    const k8s = (from: string) => relative(from, join(repoRoot, 'k8s')).split(sep).join('/');
    mkdirSync(join(dir, 'site'));
    mkdirSync(join(dir, 'top'));
    writeFileSync(
      join(dir, 'site', 'kustomization.yaml'),
      `resources:\n  - ${k8s(join(dir, 'site'))}/base\npatches:\n  - target: {kind: ConfigMap, name: patchcore-config}\n` +
        `    patch: |-\n      - op: replace\n        path: /data/QUEUE_PREFIX\n        value: "{patchcore}"\n`,
    );
    const top = k8s(join(dir, 'top'));
    writeFileSync(
      join(dir, 'top', 'kustomization.yaml'),
      `namespace: patchcore\nresources:\n  - ../site\ncomponents:\n` +
        ['keda', 'external-redis', 'external-s3', 'podmonitor'].map((c) => `  - ${top}/components/${c}\n`).join(''),
    );
    const objects = kustomize(join(dir, 'top'));
    assert.ok(checkKeda(objects, 'site with {patchcore}').includes(`{patchcore}:${SCORE_QUEUE}:wait`));
    for (const o of objects) if (o.kind !== 'Namespace') assert.equal(o.metadata.namespace, 'patchcore', `${o.kind}/${o.metadata.name}`);
    const kinds = objects.map((o) => `${o.kind}/${o.metadata.name}`);
    for (const gone of ['StatefulSet/redis', 'StatefulSet/minio', 'Job/minio-setup', 'Service/redis', 'Service/minio', 'NetworkPolicy/redis', 'NetworkPolicy/minio']) {
      assert.ok(!kinds.includes(gone), `external components remove ${gone}`);
    }
    assert.ok(kinds.includes('PodMonitor/patchcore-workers'));
    const pm = objects.find((o) => o.kind === 'PodMonitor')!;
    assert.equal(pm.spec.podMetricsEndpoints[0].path, '/metrics');
    assert.equal(pm.spec.podMetricsEndpoints[0].port, 'health');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

// ---------------------------------------------------------------------------------------------------------------
// Least privilege: Redis with a password and a memory limit, one S3 user per service, NetworkPolicies

/** Redis's flags as `--name value` pairs. */
function redisFlags(args: string[]): Map<string, string> {
  const flags = new Map<string, string>();
  for (let i = 0; i < args.length; i++) if (args[i].startsWith('--')) flags.set(args[i].slice(2), args[i + 1]);
  return flags;
}

function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as AddressInfo;
      srv.close(() => resolvePort(port));
    });
  });
}

test('Redis in compose and k8s, run by a real redis-server with their flags: password required, maxmemory with noeviction', async () => {
  const { services } = compose();
  const composeArgs = services.redis.command!.slice(1).map(interpolate);
  const composePassword = redisFlags(composeArgs).get('requirepass')!;
  assert.ok(composePassword, 'compose: --requirepass');
  assert.equal(interpolate(services.redis.environment!.REDISCLI_AUTH), composePassword, 'compose: the health check authenticates');
  assert.ok(services.redis.healthcheck!.test.join(' ').includes('PONG'), 'compose: the health check wants PONG, not a NOAUTH error');
  for (const [name, s] of Object.entries(services)) {
    if (!isAppService(s)) continue;
    const url = redisConfigFromEnv({ REDIS_URL: interpolate(s.environment!.REDIS_URL) });
    assert.equal(url.password(), composePassword, `compose: ${name}'s REDIS_URL carries Redis's password`);
  }

  const sts = rawBase().objects.find((o) => o.kind === 'StatefulSet' && o.metadata.name === 'redis')!;
  const c = (sts.spec.template as PodTemplate).spec.containers[0];
  const k8sFlags = redisFlags(c.args!);
  assert.equal(k8sFlags.get('requirepass'), '$(REDIS_PASSWORD)', 'k8s: --requirepass from the Secret');
  assert.equal(c.env?.find((e) => e.name === 'REDIS_PASSWORD')?.valueFrom?.secretKeyRef?.key, 'REDIS_PASSWORD');
  const template = secretTemplate();
  assert.equal(redisConfigFromEnv({ REDIS_URL: filledSecret().REDIS_URL }).password(), filledSecret().REDIS_PASSWORD, 'the template\'s REDIS_URL embeds REDIS_PASSWORD');
  assert.ok(template.REDIS_PASSWORD.includes('CHANGE_ME'));
  const limit = c.resources!.limits!.memory;
  assert.match(limit, /^\d+Gi$/);

  const k8sPassword = 'k8s-redis-0f3a9c2e71b4';
  const runs: [string, string[], string][] = [
    ['docker-compose.yml', composeArgs, composePassword],
    ['k8s/base/redis.yaml', c.args!.map((a) => a.replace('$(REDIS_PASSWORD)', k8sPassword)), k8sPassword],
  ];
  for (const [where, args, password] of runs) {
    const flags = redisFlags(args);
    assert.equal(flags.get('maxmemory-policy'), 'noeviction', `${where}: BullMQ needs noeviction`);
    const dir = mkdtempSync(join(tmpdir(), 'patchcore-redis-flags-'));
    const port = await freePort();
    // The file's own flags with a private directory (redis chdirs to --dir as it parses it), then a private port.
    const own = args.map((a, i) => (args[i - 1] === '--dir' ? dir : a));
    const child = spawn('redis-server', [...own, '--dir', dir, '--port', String(port), '--bind', '127.0.0.1', '--save', ''], { stdio: 'ignore' });
    try {
      const open = new Redis({ port, host: '127.0.0.1', lazyConnect: true, enableReadyCheck: false, maxRetriesPerRequest: 0, retryStrategy: () => null });
      // Retries while the server starts; commands wait in the offline queue.
      const authed = new Redis({ port, host: '127.0.0.1', password, retryStrategy: (n) => (n > 100 ? null : 50) });
      try {
        assert.equal(await authed.ping(), 'PONG');
        await assert.rejects(open.get('x'), /NOAUTH/, `${where}: a client without the password is refused`);
        const [, policy] = (await authed.config('GET', 'maxmemory-policy')) as string[];
        const [, maxmemory] = (await authed.config('GET', 'maxmemory')) as string[];
        assert.equal(policy, 'noeviction', where);
        assert.ok(Number(maxmemory) > 0, `${where}: maxmemory is set (${maxmemory})`);
        if (where.startsWith('k8s')) {
          const limitBytes = Number(limit.slice(0, -2)) * 2 ** 30;
          assert.ok(Number(maxmemory) <= limitBytes / 2, `${where}: maxmemory leaves half the ${limit} limit for the AOF rewrite's fork`);
        }
      } finally {
        open.disconnect();
        authed.disconnect();
      }
    } finally {
      child.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    }
  }
});

/** The S3 user a pod's S3 credentials belong to, from the Secret keys its containers read; null when none. */
function s3KeysOf(c: Container): { id?: string; secret?: string } {
  const ref = (name: string) => c.env?.find((e) => e.name === name)?.valueFrom?.secretKeyRef?.key;
  return { id: ref('S3_ACCESS_KEY_ID'), secret: ref('S3_SECRET_ACCESS_KEY') };
}

test('k8s: each service has its own S3 user, and only MinIO and its set-up Job see the root credentials', () => {
  const template = secretTemplate();
  for (const user of S3_USERS) {
    assert.equal(template[`${secretPrefix(user)}_S3_ACCESS_KEY_ID`], `patchcore-${user}`, `the Secret template has ${user}'s keys`);
    assert.ok(`${secretPrefix(user)}_S3_SECRET_ACCESS_KEY` in template);
  }
  for (const r of renderings) {
    const seen = new Set<string>();
    for (const { owner, template: pod } of podsOf(r.objects)) {
      const where = `${r.name}: ${owner.kind}/${owner.metadata.name}`;
      const rootRefs = allContainers(pod.spec).flatMap((c) => (c.env ?? []).map((e) => e.valueFrom?.secretKeyRef?.key ?? '')).filter((k) => k.startsWith('MINIO_ROOT_'));
      if (['minio', 'minio-setup'].includes(owner.metadata.name)) {
        assert.ok(rootRefs.length > 0, `${where}: uses the root user`);
        continue;
      }
      assert.deepEqual(rootRefs, [], `${where}: no root credentials`);
      const users = new Set(pod.spec.containers.filter(isApp).map((c) => S3_USER_OF_ROLE[roleOf(argvOf(c))]));
      if (!allContainers(pod.spec).some(isApp)) continue;
      assert.equal(users.size, 1, `${where}: one S3 user per pod (${[...users]})`);
      const [user] = users;
      assert.ok(user, `${where}: an S3 user for its role`);
      seen.add(user);
      for (const c of allContainers(pod.spec).filter(isApp)) {
        assert.deepEqual(
          s3KeysOf(c),
          { id: `${secretPrefix(user)}_S3_ACCESS_KEY_ID`, secret: `${secretPrefix(user)}_S3_SECRET_ACCESS_KEY` },
          `${where} container ${c.name}: the ${user} user's keys`,
        );
      }
    }
    assert.deepEqual([...seen].sort(), [...S3_USERS].sort(), `${r.name}: every S3 user is used`);
    const job = r.objects.find((o) => o.kind === 'Job' && o.metadata.name === 'minio-setup');
    assert.ok(job, `${r.name}: the MinIO set-up Job`);
    const c = (job.spec.template as PodTemplate).spec.containers[0];
    const refs = (c.env ?? []).map((e) => e.valueFrom?.secretKeyRef?.key).filter(Boolean);
    for (const user of S3_USERS) {
      for (const k of ['S3_ACCESS_KEY_ID', 'S3_SECRET_ACCESS_KEY']) assert.ok(refs.includes(`${secretPrefix(user)}_${k}`), `${r.name}: the set-up Job creates ${user}`);
    }
    const setup = configMap(r.objects, 'minio-setup');
    assert.equal(setup?.data?.['minio-setup.sh'], read('k8s/base/minio-setup.sh'));
    for (const user of S3_USERS) assert.equal(setup?.data?.[`${user}.json`], read(`k8s/base/minio-policies/${user}.json`));
    const env = containerEnv(c, r.objects, filledSecret(), `${r.name}: Job/minio-setup`);
    assert.equal(env.POLICY_DIR, c.volumeMounts?.find((m) => m.name === (job.spec.template as PodTemplate).spec.volumes?.find((v) => v.configMap?.name === setup!.metadata.name)?.name)?.mountPath);
    assert.equal(env.S3_BUCKET, configMap(r.objects, 'patchcore-config')!.data!.S3_BUCKET);
  }
});

test('compose: each service has its own S3 user, created by minio-init; no patchcore container sees MinIO\'s root user', () => {
  const { services } = compose();
  const init = services['minio-init'].environment!;
  const root = interpolate(services.minio.environment!.MINIO_ROOT_USER);
  for (const [name, s] of Object.entries(services)) {
    if (!isAppService(s)) continue;
    const env = Object.fromEntries(Object.entries(s.environment ?? {}).map(([k, v]) => [k, interpolate(String(v))]));
    assert.ok(!Object.keys(env).some((k) => k.startsWith('MINIO_ROOT_')), `${name}: no root credentials`);
    assert.notEqual(env.S3_ACCESS_KEY_ID, root, `${name}: not the root user`);
    const role = roleOf(s.command ?? []);
    const user = role === 'demo' ? 'demo' : role === '--help' ? 'producer' : S3_USER_OF_ROLE[role];
    assert.ok(user, `${name}: an S3 user for ${role}`);
    assert.equal(env.S3_ACCESS_KEY_ID, `patchcore-${user}`, name);
    const prefix = secretPrefix(user);
    assert.equal(init[`${prefix}_S3_ACCESS_KEY_ID`], env.S3_ACCESS_KEY_ID, `${name}: minio-init creates its user`);
    assert.equal(interpolate(init[`${prefix}_S3_SECRET_ACCESS_KEY`]), env.S3_SECRET_ACCESS_KEY, `${name}: with its secret key`);
  }
  assert.match(read('k8s/base/minio-setup.sh'), /DEMO_S3_ACCESS_KEY_ID/, 'the demo user gets every policy');
});

// IAM policy evaluation as far as these policies use it: Allow statements, "*" wildcards in resources and in the
// StringLike s3:prefix condition of ListBucket. (MinIO itself cannot run here; its evaluation is the same.)
interface PolicyStatement {
  Effect: string;
  Action: string[];
  Resource: string[];
  Condition?: { StringLike?: Record<string, string[]> };
}
const globMatch = (pattern: string, value: string): boolean =>
  new RegExp(`^${pattern.split('*').map((p) => p.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*')}$`).test(value);

function policyOf(user: string): { Version: string; Statement: PolicyStatement[] } {
  return JSON.parse(read(`k8s/base/minio-policies/${user}.json`));
}

function allows(user: string, bucket: string, action: 's3:GetObject' | 's3:PutObject', key: string): boolean;
function allows(user: string, bucket: string, action: 's3:ListBucket', prefix: string): boolean;
function allows(user: string, bucket: string, action: string, target: string): boolean {
  return policyOf(user).Statement.some((st) => {
    if (st.Effect !== 'Allow' || !st.Action.includes(action)) return false;
    if (action === 's3:ListBucket') {
      if (!st.Resource.includes(`arn:aws:s3:::${bucket}`)) return false;
      const prefixes = st.Condition?.StringLike?.['s3:prefix'];
      return prefixes === undefined || (target !== '' && prefixes.some((p) => globMatch(p, target)));
    }
    return st.Resource.some((res) => globMatch(res, `arn:aws:s3:::${bucket}/${target}`));
  });
}

test('S3 policies: each service may write exactly the prefixes it writes, and read what it reads', () => {
  const bucket = configMap(rawBase().objects, 'patchcore-config')!.data!.S3_BUCKET;
  assert.equal(compose().services['index-worker'].environment!.S3_BUCKET, bucket, 'compose and k8s use the same bucket');
  const weights = configMap(rawBase().objects, 'patchcore-config')!.data!.WEIGHTS_OBJECT_KEY;
  const known = new Set(['s3:GetObject', 's3:PutObject', 's3:ListBucket', 's3:AbortMultipartUpload', 's3:ListMultipartUploadParts']);
  for (const user of S3_USERS) {
    const policy = policyOf(user);
    assert.equal(policy.Version, '2012-10-17');
    for (const st of policy.Statement) {
      assert.equal(st.Effect, 'Allow', `${user}: only Allow statements`);
      for (const a of st.Action) assert.ok(known.has(a), `${user}: action ${a} (no wildcard, no delete: nothing deletes objects)`);
      for (const res of st.Resource) assert.ok(res === `arn:aws:s3:::${bucket}` || res.startsWith(`arn:aws:s3:::${bucket}/`) && !res.startsWith(`arn:aws:s3:::${bucket}/*`), `${user}: ${res} is in bucket ${bucket} under a prefix`);
    }
  }
  // What the services write, built by the code's own key functions (shared/storage/keys.ts).
  const writes: Record<string, string[]> = {
    'feature-worker': [embeddingsKey('run-1', 3)],
    'index-worker': [modelKey('bottle', 'v-1', 'bank.f32'), modelKey('bottle', 'v-1', 'bank.hnsw'), modelKey('bottle', 'v-1', 'bank.json'), modelKey('bottle', 'v-1', 'manifest.json'), modelLatestKey('bottle')],
    scorer: [scoresKey('eval-1', 0), mapsKey('eval-1', 0), reportKey('eval-1', 'index.html'), reportKey('eval-1', 'plots/roc.svg')],
    producer: [datasetKey('bottle', 'train/good/000.png'), runManifestKey('run-1'), runManifestKey('eval-1')],
  };
  const allWrites = Object.values(writes).flat();
  for (const user of S3_USERS) {
    for (const key of allWrites) {
      assert.equal(allows(user, bucket, 's3:PutObject', key), writes[user].includes(key), `${user} ${writes[user].includes(key) ? 'may' : 'may not'} write ${key}`);
    }
    assert.ok(!allows(user, bucket, 's3:PutObject', weights), `${user} may not replace the weights`);
    // Everyone reads the data sets and models.
    for (const key of [datasetKey('bottle', 'test/crack/001.png'), modelKey('bottle', 'v-1', 'manifest.json'), modelLatestKey('bottle')]) {
      assert.ok(allows(user, bucket, 's3:GetObject', key), `${user} reads ${key}`);
    }
    for (const prefix of [datasetPrefix('bottle'), modelVersionPrefix('bottle', 'v-1')]) {
      assert.ok(allows(user, bucket, 's3:ListBucket', prefix), `${user} lists ${prefix}`);
    }
    assert.ok(!allows(user, bucket, 's3:GetObject', `other/${weights}`));
  }
  // Reads of one service's output by the next, and of the weights by the pods that fetch them.
  const reads: [string, string][] = [
    ['index-worker', embeddingsKey('run-1', 3)],
    ['scorer', scoresKey('eval-1', 0)],
    ['scorer', mapsKey('eval-1', 0)],
    ['producer', reportKey('eval-1', 'metrics.json')],
    ['feature-worker', weights],
    ['scorer', weights],
    ['producer', weights],
  ];
  for (const [user, key] of reads) assert.ok(allows(user, bucket, 's3:GetObject', key), `${user} reads ${key}`);
  assert.ok(!allows('feature-worker', bucket, 's3:GetObject', reportKey('eval-1', 'metrics.json')), 'the feature worker reads no reports');
  assert.ok(!allows('scorer', bucket, 's3:GetObject', embeddingsKey('run-1', 3)), 'the scorer reads no embeddings');
  // `report get` lists the report; `ingest` checks the bucket (HeadBucket = ListBucket with no prefix).
  assert.ok(allows('producer', bucket, 's3:ListBucket', reportPrefix('eval-1')));
  assert.ok(allows('producer', bucket, 's3:ListBucket', ''));
  assert.ok(!allows('feature-worker', bucket, 's3:ListBucket', ''), 'the workers cannot list the whole bucket');
});

/** Whether a NetworkPolicy peer's podSelector (same namespace, no namespaceSelector) selects these labels. */
function selects(selector: { matchLabels?: Record<string, string>; matchExpressions?: { key: string; operator: string; values?: string[] }[] }, labels: Record<string, string>): boolean {
  for (const [k, v] of Object.entries(selector.matchLabels ?? {})) if (labels[k] !== v) return false;
  for (const e of selector.matchExpressions ?? []) {
    assert.ok(['In', 'NotIn', 'Exists', 'DoesNotExist'].includes(e.operator), e.operator);
    const has = k(labels, e.key);
    if (e.operator === 'In' && !(has && e.values!.includes(labels[e.key]))) return false;
    if (e.operator === 'NotIn' && has && e.values!.includes(labels[e.key])) return false;
    if (e.operator === 'Exists' && !has) return false;
    if (e.operator === 'DoesNotExist' && has) return false;
  }
  return true;
}
const k = (o: Record<string, string>, key: string): boolean => Object.hasOwn(o, key);

test('k8s: NetworkPolicies: nothing comes in by default; Redis and MinIO only from the pods that use them; /metrics only from monitoring', () => {
  for (const r of renderings) {
    const policies = r.objects.filter((o) => o.kind === 'NetworkPolicy');
    const deny = policies.find((p) => p.metadata.name === 'default-deny-ingress');
    assert.deepEqual(deny?.spec, { podSelector: {}, policyTypes: ['Ingress'] }, `${r.name}: default deny`);
    const pods = podsOf(r.objects);
    const secret = filledSecret();
    const usesOf = (pod: PodTemplate, name: string) =>
      allContainers(pod.spec).some((c) => name in containerEnv(c, r.objects, secret, r.name) || argvOf(c).join(' ').includes(name));
    for (const [service, port, clientVar] of [['redis', 6379, 'REDIS_URL'], ['minio', 9000, 'MC_HOST_store']] as const) {
      const policy = policies.find((p) => p.metadata.name === service);
      const server = pods.find((p) => p.owner.metadata.name === service);
      if (!server) {
        assert.equal(policy, undefined, `${r.name}: no ${service} policy without ${service}`);
        continue;
      }
      assert.ok(policy, `${r.name}: a NetworkPolicy for ${service}`);
      assert.ok(selects(policy.spec.podSelector, server.template.metadata!.labels!), `${r.name}: ${service}'s policy selects its pods`);
      const rules = policy.spec.ingress as { from: { podSelector?: any; namespaceSelector?: any }[]; ports: { port: number | string }[] }[];
      assert.equal(rules.length, 1);
      assert.deepEqual(rules[0].ports, [{ protocol: 'TCP', port }], `${r.name}: ${service} only on its port`);
      const inNamespace = rules[0].from.filter((f) => !f.namespaceSelector);
      for (const { owner, template } of pods) {
        if (owner.metadata.name === service) continue;
        // Redis clients have REDIS_URL; MinIO clients have S3 credentials (or, for the set-up Job, mc's alias).
        const client = service === 'redis' ? usesOf(template, clientVar) : usesOf(template, 'S3_ACCESS_KEY_ID') || usesOf(template, clientVar);
        const allowed = inNamespace.some((f) => selects(f.podSelector, template.metadata!.labels!));
        assert.equal(allowed, client, `${r.name}: ${owner.kind}/${owner.metadata.name} ${client ? 'may' : 'may not'} reach ${service}`);
      }
      for (const f of rules[0].from.filter((x) => x.namespaceSelector)) {
        assert.equal(service, 'redis', `${r.name}: only KEDA comes from outside the namespace, to Redis`);
        assert.deepEqual(f, { namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'keda' } }, podSelector: { matchLabels: { 'app.kubernetes.io/name': 'keda-operator' } } });
      }
    }
    const metrics = policies.find((p) => p.metadata.name === 'worker-metrics');
    assert.ok(metrics, `${r.name}: worker-metrics`);
    assert.deepEqual(metrics.spec.ingress, [
      { from: [{ namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'monitoring' } } }], ports: [{ protocol: 'TCP', port: 9464 }] },
    ]);
    for (const { d, c } of workerDeployments(r.objects)) {
      assert.ok(selects(metrics.spec.podSelector, (d.spec.template as PodTemplate).metadata!.labels!), `${r.name}: ${d.metadata.name} is covered`);
      assert.equal(Number(c.env?.find((e) => e.name === 'HEALTH_PORT')?.value), 9464, `${r.name}: ${d.metadata.name}'s HEALTH_PORT is the allowed port`);
    }
    const pm = r.objects.find((o) => o.kind === 'PodMonitor');
    if (pm) assert.ok(selects(metrics.spec.podSelector, pm.spec.selector.matchLabels), `${r.name}: the PodMonitor scrapes pods the policy opens`);
    for (const p of policies) assert.deepEqual(p.spec.policyTypes, ['Ingress'], `${r.name}: ${p.metadata.name} restricts ingress only`);
  }
});

// ---------------------------------------------------------------------------------------------------------------
// The BullMQ keys themselves

let redis: RedisServer | undefined;
after(async () => {
  await redis?.stop();
});

test('the lists KEDA watches are where BullMQ keeps waiting and running jobs, with and without a hash tag', async () => {
  redis = await startRedisServer();
  const conn = createRedisConnection(redisConfigFromEnv({ REDIS_URL: redis.url }));
  try {
    for (const prefix of ['bull', '{patchcore}']) {
      const queue = new Queue(FEATURES_QUEUE, { connection: conn, prefix });
      const worker = new Worker(FEATURES_QUEUE, null, { connection: conn, prefix, autorun: false });
      try {
        await queue.add('extract-features', { runId: 'r' }, { jobId: 'a' });
        await queue.add('extract-features', { runId: 'r' }, { jobId: 'b' });
        const wait = `${prefix}:${FEATURES_QUEUE}:wait`;
        const active = `${prefix}:${FEATURES_QUEUE}:active`;
        assert.equal(await conn.type(wait), 'list');
        assert.equal(await conn.llen(wait), 2);
        const job = await worker.getNextJob('token-1', { block: false });
        assert.equal(job?.id, 'a');
        assert.equal(await conn.type(active), 'list');
        assert.deepEqual([await conn.llen(wait), await conn.llen(active)], [1, 1]);
      } finally {
        await worker.close(true);
        await queue.obliterate({ force: true });
        await queue.close();
      }
    }
  } finally {
    await conn.quit();
  }
});
