// Every Kubernetes object of k8s/ checked against the API's schemas (test/deploy/k8s-api.ts), as a cluster would
// check it on `kubectl apply`: the files as written, and where kubectl is installed everything `kubectl kustomize`
// renders (the base, both overlays, each component applied to the base, and all components together). A misspelt
// field, a wrong type or a missing required field fails here, not at deploy time. (No cluster can run here.)
import { before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative, sep } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { repoRoot } from '../../shared/paths.js';
import { apiProblems, describe, type ApiObject } from './k8s-api.js';

const K8S = join(repoRoot, 'k8s');

const kubectl = spawnSync('kubectl', ['version', '--client'], { encoding: 'utf8' }).status === 0;
const NO_KUBECTL = 'kubectl is not installed: kustomize renderings are not checked (install kubectl to run these)';
// On CI a missing kubectl must not quietly turn the renderings' check off.
if (!kubectl && process.env.CI === 'true') throw new Error(`${NO_KUBECTL}; CI needs kubectl 1.27 or newer (kustomize v5)`);

function parseObjects(text: string, what: string): ApiObject[] {
  return parseAllDocuments(text).flatMap((d, i) => {
    assert.deepEqual(d.errors, [], `${what}: document ${i}`);
    const v = d.toJS() as ApiObject | null;
    return v ? [v] : [];
  });
}

function yamlFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) return yamlFiles(p);
    return name.endsWith('.yaml') ? [p] : [];
  });
}

const components = readdirSync(join(K8S, 'components')).filter((c) => statSync(join(K8S, 'components', c)).isDirectory());

/** Renders a kustomization written into a temporary folder (paths in it relative to that folder). */
function kustomizeWith(make: (k8s: string) => string, extra: Record<string, string> = {}): ApiObject[] {
  const dir = mkdtempSync(join(tmpdir(), 'patchcore-api-'));
  try {
    const site = join(dir, 'site');
    mkdirSync(site);
    writeFileSync(join(site, 'kustomization.yaml'), make(relative(site, K8S).split(sep).join('/')));
    for (const [name, text] of Object.entries(extra)) writeFileSync(join(site, name), text);
    return kustomize(site);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function kustomize(dir: string): ApiObject[] {
  return parseObjects(execFileSync('kubectl', ['kustomize', dir], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }), `kubectl kustomize ${dir}`);
}

const onBase = (names: string[]) => (k8s: string) =>
  `resources:\n  - ${k8s}/base\ncomponents:\n${names.map((c) => `  - ${k8s}/components/${c}\n`).join('')}`;

const renderings: { name: string; objects: ApiObject[] }[] = [];

before(() => {
  if (!kubectl) return;
  for (const dir of ['', 'overlays/cpu', 'overlays/gpu']) {
    renderings.push({ name: `kubectl kustomize k8s/${dir}`, objects: kustomize(join(K8S, dir)) });
  }
  for (const c of components) renderings.push({ name: `k8s/base + components/${c}`, objects: kustomizeWith(onBase([c])) });
  renderings.push({ name: 'k8s/base + every component', objects: kustomizeWith(onBase(components)) });
});

async function problemsOf(objects: ApiObject[], where: string): Promise<string[]> {
  const out: string[] = [];
  for (const o of objects) for (const p of await apiProblems(o)) out.push(`${where}: ${describe(o)}: ${p}`);
  return out;
}

test('the schema check catches a misspelt field at any depth, a wrong type, a missing field and an unknown kind', async () => {
  const deployment = () => ({
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: { name: 'w', labels: { 'app.kubernetes.io/name': 'w' } },
    spec: {
      selector: { matchLabels: { app: 'w' } },
      template: {
        metadata: { labels: { app: 'w' }, annotations: { 'prometheus.io/port': '9464' } },
        spec: { containers: [{ name: 'c', image: 'i:1', ports: [{ name: 'health', containerPort: 9464 }], resources: { limits: { cpu: '1', 'nvidia.com/gpu': '1' } } }] },
      },
    },
  });
  assert.deepEqual(await apiProblems(deployment()), [], 'a valid Deployment (labels, annotations, resource names are maps)');

  const misspelt = deployment();
  (misspelt.spec.template.spec.containers[0] as Record<string, unknown>).imagePullPolicyy = 'IfNotPresent';
  (misspelt.spec as Record<string, unknown>).replica = 2;
  assert.deepEqual((await apiProblems(misspelt)).sort(), [
    'unknown field "spec.replica"',
    'unknown field "spec.template.spec.containers[0].imagePullPolicyy"',
  ]);

  const wrongType = deployment();
  (wrongType.spec as Record<string, unknown>).replicas = '2';
  assert.match((await apiProblems(wrongType))[0], /spec\/replicas must be integer/);

  const missing = deployment();
  delete (missing.spec.template.spec.containers[0] as Partial<{ name: string }>).name;
  assert.match((await apiProblems(missing))[0], /containers\/0 must have required property name/);

  assert.match((await apiProblems({ ...deployment(), kind: 'Deploymnet' }))[0], /no API schema for Deploymnet in apps\/v1/);

  // The CRD kinds, from their own model packages.
  const scaled = {
    apiVersion: 'keda.sh/v1alpha1',
    kind: 'ScaledObject',
    metadata: { name: 's' },
    spec: { scaleTargetRef: { name: 'w' }, minReplicaCont: 0, triggers: [{ type: 'redis', metadata: { listName: 'bull:q:wait' } }] },
  };
  assert.deepEqual(await apiProblems(scaled), ['unknown field "spec.minReplicaCont"']);
  const monitor = { apiVersion: 'monitoring.coreos.com/v1', kind: 'PodMonitor', metadata: { name: 'p' }, spec: { selector: {}, podMetricsEndpoints: [{ prot: 'health' }] } };
  assert.deepEqual(await apiProblems(monitor), ['unknown field "spec.podMetricsEndpoints[0].prot"']);
});

test('every Kubernetes object in k8s/ as written is valid to the API (base, components, the Secret template)', async () => {
  const problems: string[] = [];
  let checked = 0;
  for (const file of yamlFiles(K8S)) {
    const where = relative(repoRoot, file);
    for (const o of parseObjects(readFileSync(file, 'utf8'), where)) {
      // Kustomizations and components are kustomize's files, not API objects.
      if (String(o.apiVersion).startsWith('kustomize.config.k8s.io/')) continue;
      problems.push(...(await problemsOf([o], where)));
      checked++;
    }
  }
  assert.deepEqual(problems, []);
  assert.ok(checked >= 25, `${checked} objects checked`);
});

test('every object kustomize renders is valid to the API: base, both overlays, each component on the base, all of them', async (t) => {
  if (!kubectl) return t.skip(NO_KUBECTL);
  assert.ok(components.length >= 4, `components: ${components.join(', ')}`);
  const kinds = new Set<string>();
  for (const r of renderings) {
    assert.ok(r.objects.length >= 15, `${r.name}: ${r.objects.length} objects`);
    assert.deepEqual(await problemsOf(r.objects, r.name), []);
    for (const o of r.objects) kinds.add(`${String(o.apiVersion)} ${String(o.kind)}`);
  }
  // The CRD kinds went through their own models too.
  for (const k of ['keda.sh/v1alpha1 ScaledObject', 'keda.sh/v1alpha1 TriggerAuthentication', 'monitoring.coreos.com/v1 PodMonitor', 'networking.k8s.io/v1 NetworkPolicy']) {
    assert.ok(kinds.has(k), `${k} is among the rendered kinds`);
  }
});

test('a misspelt field that an overlay patch brings in fails the check', async (t) => {
  if (!kubectl) return t.skip(NO_KUBECTL);
  const patch =
    '- op: add\n  path: /spec/template/spec/nodeSelectr\n  value: {disktype: ssd}\n' +
    '- op: add\n  path: /spec/template/spec/containers/0/resources/limit\n  value: {cpu: "2"}\n';
  const objects = kustomizeWith(
    (k8s) => `resources:\n  - ${k8s}/overlays/cpu\npatches:\n  - path: typo.yaml\n    target: {kind: Deployment, name: scorer}\n`,
    { 'typo.yaml': patch },
  );
  assert.deepEqual((await problemsOf(objects, 'overlay with a typo')).sort(), [
    'overlay with a typo: Deployment/scorer (apps/v1): unknown field "spec.template.spec.containers[0].resources.limit"',
    'overlay with a typo: Deployment/scorer (apps/v1): unknown field "spec.template.spec.nodeSelectr"',
  ]);
});
