// Kubernetes objects checked against the API's schemas without a cluster: the model classes of kubernetes-models
// (built-in kinds) and of @kubernetes-models/keda and @kubernetes-models/prometheus-operator (their CRDs), through
// each class's validate().
//
// Those validators (the API's JSON schemas compiled by ajv) ignore fields the schema does not name, where the API
// server refuses them (kubectl's strict field validation): a misspelt field would pass. apiProblems() therefore
// also looks for unknown fields, with the same validators as the oracle: the schema knows a field when it
// constrains its value, so replacing the value with one of another type makes validate() fail; replacing an
// unknown field's value changes nothing. (A known field whose schema accepts anything would be reported too: none
// of the manifests has one, and such a report names the field, so it cannot pass unnoticed.)

interface Model {
  validate(): void;
}
type ModelClass = new (data: object) => Model;

export interface ApiObject {
  apiVersion?: unknown;
  kind?: unknown;
  metadata?: { name?: unknown };
  [field: string]: unknown;
}

/** The package holding the models of an API group. */
function modelPackage(apiVersion: string): string {
  const group = apiVersion.includes('/') ? apiVersion.split('/')[0] : '';
  if (group === 'keda.sh' || group === 'eventing.keda.sh') return '@kubernetes-models/keda';
  if (group === 'monitoring.coreos.com') return '@kubernetes-models/prometheus-operator';
  return 'kubernetes-models';
}

const classes = new Map<string, Promise<ModelClass | null>>();

/** The model class of apiVersion/kind, or null when no package has one. */
export function modelClass(apiVersion: string, kind: string): Promise<ModelClass | null> {
  const id = `${apiVersion}/${kind}`;
  let c = classes.get(id);
  if (!c) {
    const spec = `${modelPackage(apiVersion)}/${apiVersion}/${kind}`;
    c = (import(spec) as Promise<Record<string, unknown>>).then(
      (m) => (typeof m[kind] === 'function' ? (m[kind] as ModelClass) : null),
      () => null,
    );
    classes.set(id, c);
  }
  return c;
}

const isPlainObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function valid(model: Model): boolean {
  try {
    model.validate();
    return true;
  } catch {
    return false;
  }
}

/** A value of another type than `value`: any schema that constrains the field refuses it. */
const probeFor = (value: unknown): unknown => (isPlainObject(value) || Array.isArray(value) ? true : { probe: [] });

/** Paths of the fields under `node` (inside `model`, which must validate) that the schema does not know. */
function unknownFields(model: Model, node: Record<string, unknown>, path: string, out: string[]): void {
  for (const key of Object.keys(node)) {
    const value = node[key];
    const at = path ? `${path}.${key}` : key;
    node[key] = probeFor(value);
    const known = !valid(model);
    node[key] = value;
    if (!known) {
      out.push(at);
      continue;
    }
    if (isPlainObject(value)) unknownFields(model, value, at, out);
    else if (Array.isArray(value)) {
      value.forEach((item, i) => {
        if (isPlainObject(item)) unknownFields(model, item, `${at}[${i}]`, out);
      });
    }
  }
}

/**
 * What the API server would refuse in `object`: a kind no model package knows, schema violations (wrong types,
 * missing required fields, bad enums), and fields the schema does not have. Empty when the object is valid.
 */
export async function apiProblems(object: ApiObject): Promise<string[]> {
  const { apiVersion, kind } = object;
  if (typeof apiVersion !== 'string' || typeof kind !== 'string') return ['apiVersion and kind must be strings'];
  const Class = await modelClass(apiVersion, kind);
  if (!Class) return [`no API schema for ${kind} in ${apiVersion} (kubernetes-models, @kubernetes-models/keda, @kubernetes-models/prometheus-operator)`];
  // The model copies the data: probing mutates the copy only.
  const model = new Class(object);
  try {
    model.validate();
  } catch (err) {
    return [(err as Error).message];
  }
  const unknown: string[] = [];
  unknownFields(model, model as unknown as Record<string, unknown>, '', unknown);
  return unknown.map((p) => `unknown field "${p}"`);
}

/** A name for messages: Kind/name (apiVersion). */
export function describe(object: ApiObject): string {
  return `${String(object.kind)}/${String(object.metadata?.name)} (${String(object.apiVersion)})`;
}
