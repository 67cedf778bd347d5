// The local evaluate's anomaly maps, written to a temporary file as they are scored and read back only for the
// gallery images: the local counterpart of the score shards' maps in the bucket, so that an evaluation's memory does
// not grow with its number of test images.
import { mkdtemp, open, rm, type FileHandle } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Where one map lies in the spill file. */
export interface SpilledMap {
  offset: number;
  length: number;
}

export class MapSpill {
  private end = 0;

  private constructor(private readonly dir: string, private readonly file: FileHandle) {}

  static async open(): Promise<MapSpill> {
    const dir = await mkdtemp(join(tmpdir(), 'patchcore-maps-'));
    return new MapSpill(dir, await open(join(dir, 'maps.f32'), 'w+'));
  }

  async put(map: Float32Array): Promise<SpilledMap> {
    const at = { offset: this.end, length: map.length };
    await this.file.write(new Uint8Array(map.buffer, map.byteOffset, map.byteLength), 0, map.byteLength, this.end);
    this.end += map.byteLength;
    return at;
  }

  async get(at: SpilledMap): Promise<Float32Array> {
    const out = new Float32Array(at.length);
    const { bytesRead } = await this.file.read(new Uint8Array(out.buffer), 0, out.byteLength, at.offset);
    if (bytesRead !== out.byteLength) throw new Error(`map spill ${this.dir}: read ${bytesRead} of ${out.byteLength} bytes at ${at.offset}`);
    return out;
  }

  /** Closes and deletes the file. Safe to call twice. */
  async close(): Promise<void> {
    await this.file.close().catch(() => {});
    await rm(this.dir, { recursive: true, force: true });
  }
}
