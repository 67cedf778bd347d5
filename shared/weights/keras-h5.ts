// Reads a Keras `save_weights` HDF5 file (the layout of the official ResNet-50 ImageNet weights) by
// layer name. Datasets are found by walking each layer's group rather than trusting one exact path,
// so files written by different Keras/h5py versions (`kernel:0` vs `kernel`, extra nesting) all load.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open as openFile, stat } from 'node:fs/promises';
import h5wasm from 'h5wasm/node';

export type KerasWeightName = 'kernel' | 'bias' | 'gamma' | 'beta' | 'moving_mean' | 'moving_variance';

type H5File = InstanceType<typeof h5wasm.File>;
type H5Group = InstanceType<typeof h5wasm.Group>;
type H5Dataset = InstanceType<typeof h5wasm.Dataset>;

const HDF5_SIGNATURE = Buffer.from([0x89, 0x48, 0x44, 0x46, 0x0d, 0x0a, 0x1a, 0x0a]);
// Deep enough for `<layer>/<layer>/<name>` plus one extra level some writers add.
const MAX_GROUP_DEPTH = 3;

export class KerasWeights {
  readonly path: string;
  /** Hex sha256 of the whole file: identifies the weights a model was built with. */
  readonly sha256: string;
  private file: H5File | null;
  private readonly layers: string[];
  /** Per layer: weight name (without `:0`) -> dataset path; built on first use. */
  private readonly index = new Map<string, Map<string, string>>();

  private constructor(path: string, sha256: string, file: H5File, layers: string[]) {
    this.path = path;
    this.sha256 = sha256;
    this.file = file;
    this.layers = layers;
  }

  static async open(path: string): Promise<KerasWeights> {
    await assertHdf5File(path);
    const sha256 = await sha256OfFile(path);
    await h5wasm.ready;
    let file: H5File;
    try {
      file = new h5wasm.File(path, 'r');
    } catch (err) {
      throw new Error(`weights file "${path}" could not be opened as HDF5: ${(err as Error).message}`);
    }
    // h5wasm signals some open failures with a negative id instead of throwing.
    if ((file as unknown as { file_id: bigint }).file_id < 0n) {
      throw new Error(`weights file "${path}" could not be opened as HDF5`);
    }
    try {
      const layers = layersWithWeights(file);
      if (layers.length === 0) {
        throw new Error(`weights file "${path}" holds no Keras layer weights (is it a save_weights file?)`);
      }
      return new KerasWeights(path, sha256, file, layers);
    } catch (err) {
      file.close();
      throw err;
    }
  }

  /** Names of the layers that hold weights, in the file's layer order. */
  layerNames(): string[] {
    return [...this.layers];
  }

  hasLayer(layer: string): boolean {
    return this.layers.includes(layer);
  }

  /** The dataset's shape, e.g. [kh, kw, in, out] for a conv kernel. */
  shape(layer: string, name: KerasWeightName): number[] {
    return this.dataset(layer, name).shape ?? [];
  }

  /** A fresh copy of the dataset's values (the caller may modify it). */
  get(layer: string, name: KerasWeightName, expectedShape?: number[]): Float32Array {
    const ds = this.dataset(layer, name);
    const shape = ds.shape ?? [];
    if (expectedShape && !sameShape(shape, expectedShape)) {
      throw new Error(
        `layer ${layer} ${name} has shape [${shape.join(',')}], expected [${expectedShape.join(',')}]`,
      );
    }
    const value = ds.value;
    if (value instanceof Float32Array) return value;
    if (value instanceof Float64Array) return Float32Array.from(value);
    throw new Error(`layer ${layer} ${name} in weights file "${this.path}" is not a numeric array (dtype ${String(ds.dtype)})`);
  }

  close(): void {
    this.file?.close();
    this.file = null;
  }

  private openFile(): H5File {
    if (!this.file) throw new Error(`weights file "${this.path}" is already closed`);
    return this.file;
  }

  private dataset(layer: string, name: KerasWeightName): H5Dataset {
    const file = this.openFile();
    if (!this.layers.includes(layer)) {
      throw new Error(`weights file "${this.path}" has no layer "${layer}"; ${describeLayers(this.layers)}`);
    }
    let byName = this.index.get(layer);
    if (!byName) {
      byName = datasetsUnder(file, layer);
      this.index.set(layer, byName);
    }
    const path = byName.get(name);
    if (!path) {
      const has = [...byName.keys()].join(', ') || 'nothing';
      throw new Error(`layer ${layer} in weights file "${this.path}" has no weight "${name}" (it has ${has})`);
    }
    return file.get(path) as H5Dataset;
  }
}

async function assertHdf5File(path: string): Promise<void> {
  let size: number;
  try {
    const st = await stat(path);
    if (!st.isFile()) throw new Error(`weights file "${path}" is not a file`);
    size = st.size;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new Error(`weights file "${path}" does not exist`);
    throw err;
  }
  // The superblock sits at offset 0 or, after a user block, at 512, 1024, 2048, ...
  const handle = await openFile(path, 'r');
  try {
    const buf = Buffer.alloc(HDF5_SIGNATURE.length);
    for (let offset = 0; offset + buf.length <= size; offset = offset === 0 ? 512 : offset * 2) {
      const { bytesRead } = await handle.read(buf, 0, buf.length, offset);
      if (bytesRead === buf.length && buf.equals(HDF5_SIGNATURE)) return;
    }
  } finally {
    await handle.close();
  }
  throw new Error(`weights file "${path}" is not an HDF5 file`);
}

function sha256OfFile(path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const hash = createHash('sha256');
    createReadStream(path)
      .on('data', (chunk) => hash.update(chunk))
      .on('error', reject)
      .on('end', () => resolve(hash.digest('hex')));
  });
}

/** Layer order from the root `layer_names` attribute (falling back to the root groups), keeping
 * only layers that hold datasets: the official file also lists weightless layers (pads, pools). */
function layersWithWeights(file: H5File): string[] {
  const attr = file.attrs['layer_names']?.value;
  const listed = Array.isArray(attr) ? attr.map((v) => String(v)) : file.keys();
  const present = new Set(file.keys());
  return listed.filter((layer) => present.has(layer) && hasDataset(file.get(layer), 0));
}

function hasDataset(entity: unknown, depth: number): boolean {
  if (entity instanceof h5wasm.Dataset) return true;
  if (!(entity instanceof h5wasm.Group) || depth >= MAX_GROUP_DEPTH) return false;
  for (const key of entity.keys()) {
    if (hasDataset(entity.get(key), depth + 1)) return true;
  }
  return false;
}

function datasetsUnder(file: H5File, layer: string): Map<string, string> {
  const found = new Map<string, string>();
  const walk = (group: H5Group, path: string, depth: number): void => {
    for (const key of group.keys()) {
      const child = group.get(key);
      const childPath = `${path}/${key}`;
      if (child instanceof h5wasm.Dataset) {
        const name = key.replace(/:\d+$/, '');
        if (!found.has(name)) found.set(name, childPath);
      } else if (child instanceof h5wasm.Group && depth < MAX_GROUP_DEPTH) {
        walk(child, childPath, depth + 1);
      }
    }
  };
  walk(file.get(layer) as H5Group, layer, 1);
  return found;
}

function describeLayers(layers: string[]): string {
  if (layers.length <= 8) return `it has ${layers.length} layers: ${layers.join(', ')}`;
  return `it has ${layers.length} layers: ${layers.slice(0, 4).join(', ')}, ..., ${layers.slice(-4).join(', ')}`;
}

function sameShape(a: number[], b: number[]): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}
