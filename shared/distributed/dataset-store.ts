// A category's files under an object-storage prefix (datasets/<name>/), listed once and classified like a local
// folder; and image sources that read from the store.
import { classifyDatasetPaths, type DatasetNeeds, type MvtecDataset } from '../dataset/mvtec.js';
import type { ImageSource } from '../pipeline/extract.js';
import type { ObjectStore } from '../storage/object-store.js';

/** Keys under `prefix` (which ends with "/"), relative to it. Paginated, any size. */
export async function listRelative(store: ObjectStore, prefix: string): Promise<string[]> {
  const out: string[] = [];
  for await (const o of store.list(prefix)) out.push(o.key.slice(prefix.length));
  return out;
}

export async function listStoredDataset(
  store: ObjectStore, prefix: string, need: DatasetNeeds = {},
): Promise<Omit<MvtecDataset, 'root' | 'category'>> {
  const paths = await listRelative(store, prefix);
  return classifyDatasetPaths(paths, `"${prefix}"`, need);
}

/** `keys` are full object keys; an image's id is its path relative to `prefix`. */
export function storeSources(store: ObjectStore, prefix: string, keys: string[]): ImageSource[] {
  return keys.map((key) => {
    if (!key.startsWith(prefix)) throw new Error(`image key "${key}" is not under the dataset prefix "${prefix}"`);
    return { id: key.slice(prefix.length), read: () => store.getObject(key) };
  });
}
