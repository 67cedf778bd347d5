// Reads a tensor file's rows from the object store a chunk at a time (byte-range GETs), for a step that only passes
// them on (a reduce step spools them to local disk): it never holds a whole file, whose 16,384 rows of 1024 floats
// are 64 MiB, and the process's memory no longer grows with the number of inputs a step reads one after another.
import type { StageTimer } from '../run/timings.js';
import type { ObjectStore } from './object-store.js';
import { checkTensorDataBytes, decodeTensorFile, decodeTensorHeader, floatsFromLE, type TensorFileHeader } from './tensor-file.js';

/** Bytes of rows per range request; a file no larger than this is read in one GET. */
export const TENSOR_CHUNK_BYTES = 16 * 1024 * 1024;
/** Bytes read first for the preamble and the header (more when the header says it is longer). */
const HEADER_PROBE_BYTES = 64 * 1024;

/**
 * Reads `key` (a tensor file): `onHeader` sees the checked header before any row is read (and may throw to refuse
 * the file), then `onRows` gets its rows in order, whole rows per call, at most `chunkBytes` at a time. Returns the
 * header and the file's size. Errors name the file, as decodeTensorFile's do.
 */
export async function readTensorRows(
  store: ObjectStore, key: string, timer: StageTimer,
  onHeader: (header: TensorFileHeader) => void, onRows: (rows: Float32Array) => Promise<void>,
  opts: { kind?: string; chunkBytes?: number } = {},
): Promise<{ header: TensorFileHeader; bytes: number }> {
  const kind = opts.kind ?? 'embeddings';
  const chunkBytes = opts.chunkBytes ?? TENSOR_CHUNK_BYTES;
  const download = (range?: { start: number; end: number }) => timer.time('download', () => store.getObject(key, range ? { range } : {}));
  const info = await timer.time('download', () => store.head(key));
  if (!info) throw new Error(`${kind} file ${JSON.stringify(key)} does not exist`);
  if (info.size <= Math.max(chunkBytes, HEADER_PROBE_BYTES)) {
    const file = decodeTensorFile(await download(), key, kind);
    onHeader(file.header);
    if (file.data.length > 0) await onRows(file.data);
    return { header: file.header, bytes: info.size };
  }
  let decoded = decodeTensorHeader(await download({ start: 0, end: HEADER_PROBE_BYTES }), key, kind);
  if ('need' in decoded) {
    if (decoded.need > info.size) throw new Error(`${kind} file ${JSON.stringify(key)} is truncated: its header needs ${decoded.need} bytes, the file has ${info.size}`);
    decoded = decodeTensorHeader(await download({ start: 0, end: decoded.need }), key, kind);
    if ('need' in decoded) throw new Error(`${kind} file ${JSON.stringify(key)} changed while it was read`);
  }
  const { header, dataOffset } = decoded;
  checkTensorDataBytes(header, info.size - dataOffset, key, kind);
  onHeader(header);
  const rowBytes = header.dim * 4;
  const step = Math.max(rowBytes, Math.floor(chunkBytes / rowBytes) * rowBytes);
  for (let at = dataOffset; at < info.size; at += step) {
    const end = Math.min(info.size, at + step);
    const buf = await download({ start: at, end });
    if (buf.length !== end - at) throw new Error(`${kind} file ${JSON.stringify(key)} changed while it was read (bytes ${at}-${end} came back as ${buf.length})`);
    await onRows(floatsFromLE(buf, 0, buf.length / 4));
  }
  return { header, bytes: info.size };
}
