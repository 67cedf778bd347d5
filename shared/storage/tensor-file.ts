// Binary file of patch embeddings (or any float32 rows: anomaly maps use it too), versioned so that a
// reader rejects a foreign, newer or truncated file with a clear message instead of returning garbage.
//
// Layout (all integers little-endian):
//   bytes 0..4    magic "PCEMB"
//   byte  5       format version (uint8), currently 1
//   bytes 6..7    reserved, 0
//   bytes 8..11   header length H (uint32), including padding
//   bytes 12..    header: UTF-8 JSON, padded with spaces so the data starts on a 16-byte boundary
//                 { dtype: 'float32', dim, count, grid: [h, w], images: [{ key, offset, patches, grid? }], ...extra }
//   then          count * dim float32 values, little-endian, row-major: row r = one patch vector.
// images[i] owns rows offset .. offset + patches - 1 (offset and patches count rows, not bytes). images[i].grid is
// that image's patch grid (images of different sizes have their own); files written before it existed have only the
// header's grid, which every image then shared (imageGrid reads both).
import { endianness } from 'node:os';
import { z } from 'zod';

export const TENSOR_MAGIC = 'PCEMB';
export const TENSOR_FORMAT_VERSION = 1;
const PREAMBLE_BYTES = 12;
const DATA_ALIGN = 16;
const MAX_HEADER_BYTES = 64 * 1024 * 1024;
const littleEndianHost = endianness() === 'LE';

export interface TensorImageEntry {
  key: string;
  offset: number;
  patches: number;
  /** The image's patch grid [h, w] (absent in older files: the header's grid). */
  grid?: [number, number];
  [extra: string]: unknown;
}

export interface TensorFileHeader {
  dtype: 'float32';
  dim: number;
  count: number;
  grid: [number, number];
  images: TensorImageEntry[];
  [extra: string]: unknown;
}

export interface TensorFile {
  header: TensorFileHeader;
  /** count * dim values; shares memory with the decoded buffer when it is 4-byte aligned. */
  data: Float32Array;
}

const rowCount = z.number().int().nonnegative();
const HeaderSchema = z.looseObject({
  dtype: z.literal('float32'),
  dim: z.number().int().positive(),
  count: rowCount,
  grid: z.tuple([z.number().int().positive(), z.number().int().positive()]),
  images: z.array(z.looseObject({
    key: z.string().min(1), offset: rowCount, patches: rowCount,
    grid: z.tuple([z.number().int().positive(), z.number().int().positive()]).optional(),
  })),
});

/** Problems with a header object, or null; shared by the writer and the reader. */
function headerProblem(header: unknown): string | null {
  const parsed = HeaderSchema.safeParse(header);
  if (!parsed.success) {
    const i = parsed.error.issues[0];
    return `${i.path.length ? i.path.join('.') : 'header'}: ${i.message}`;
  }
  const h = parsed.data;
  for (let i = 0; i < h.images.length; i++) {
    const im = h.images[i];
    if (im.offset + im.patches > h.count) {
      return `images.${i} (key ${JSON.stringify(im.key)}) covers rows ${im.offset}..${im.offset + im.patches - 1} but count is ${h.count}`;
    }
  }
  return null;
}

export function encodeTensorFile(header: TensorFileHeader, data: Float32Array): Buffer {
  const problem = headerProblem(header);
  if (problem) throw new Error(`encodeTensorFile: invalid header: ${problem}`);
  const expected = header.count * header.dim;
  if (data.length !== expected) {
    throw new Error(
      `encodeTensorFile: header/data size mismatch: header says count ${header.count} x dim ${header.dim} = ${expected} values, data has ${data.length}`,
    );
  }
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const dataOffset = Math.ceil((PREAMBLE_BYTES + json.length) / DATA_ALIGN) * DATA_ALIGN;
  const out = Buffer.alloc(dataOffset + data.byteLength);
  out.write(TENSOR_MAGIC, 0, 'latin1');
  out[5] = TENSOR_FORMAT_VERSION;
  out.writeUInt32LE(dataOffset - PREAMBLE_BYTES, 8);
  json.copy(out, PREAMBLE_BYTES);
  out.fill(0x20, PREAMBLE_BYTES + json.length, dataOffset);
  if (littleEndianHost) {
    out.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), dataOffset);
  } else {
    for (let i = 0, o = dataOffset; i < data.length; i++, o += 4) out.writeFloatLE(data[i], o);
  }
  return out;
}

/**
 * Checks the preamble and header at the start of a tensor file (`buf` holds at least the preamble, and the header
 * once `dataOffset` is known: pass more bytes and call again when this asks for them). Returns the header and where
 * the data starts, or `{ need }` when `buf` is too short to hold the header: the bytes to read from the start.
 */
export function decodeTensorHeader(
  buf: Buffer, name: string, kind = 'embeddings',
): { header: TensorFileHeader; dataOffset: number } | { need: number } {
  const label = `${kind} file ${JSON.stringify(name)}`;
  const fail = (why: string): never => {
    throw new Error(`${label} ${why}`);
  };
  const magicBytes = Math.min(buf.length, TENSOR_MAGIC.length);
  if (buf.toString('latin1', 0, magicBytes) !== TENSOR_MAGIC.slice(0, magicBytes)) {
    fail('is not a patchcore tensor file (bad magic)');
  }
  if (buf.length < PREAMBLE_BYTES) {
    fail(`is truncated: expected at least ${PREAMBLE_BYTES} preamble bytes, found ${buf.length}`);
  }
  const version = buf[5];
  if (version !== TENSOR_FORMAT_VERSION) {
    fail(`has format version ${version}; this build reads version ${TENSOR_FORMAT_VERSION}`);
  }
  const headerBytes = buf.readUInt32LE(8);
  if (headerBytes > MAX_HEADER_BYTES) fail(`has an implausible header length ${headerBytes} (corrupt file?)`);
  const dataOffset = PREAMBLE_BYTES + headerBytes;
  if (buf.length < dataOffset) return { need: dataOffset };
  let header: unknown;
  try {
    header = JSON.parse(buf.toString('utf8', PREAMBLE_BYTES, dataOffset));
  } catch (e) {
    fail(`has a corrupt header (not valid JSON: ${(e as Error).message})`);
  }
  const problem = headerProblem(header);
  if (problem) fail(`has an invalid header: ${problem}`);
  return { header: header as TensorFileHeader, dataOffset };
}

/** Throws naming the file unless `dataBytes` is exactly what the header's count x dim floats take. */
export function checkTensorDataBytes(header: TensorFileHeader, dataBytes: number, name: string, kind = 'embeddings'): void {
  const label = `${kind} file ${JSON.stringify(name)}`;
  const expectedBytes = header.count * header.dim * 4;
  if (dataBytes < expectedBytes) throw new Error(`${label} is truncated: expected ${expectedBytes} data bytes, found ${dataBytes}`);
  if (dataBytes > expectedBytes) {
    throw new Error(
      `${label} has ${dataBytes} data bytes but its header (count ${header.count} x dim ${header.dim}) describes ${expectedBytes}: header and data do not match`,
    );
  }
}

/** Float32 values from little-endian bytes: a view where the host and the alignment allow, else a copy. */
export function floatsFromLE(buf: Buffer, byteOffset: number, values: number): Float32Array {
  const start = buf.byteOffset + byteOffset;
  if (littleEndianHost && start % 4 === 0) return new Float32Array(buf.buffer, start, values);
  const data = new Float32Array(values);
  for (let i = 0, o = byteOffset; i < values; i++, o += 4) data[i] = buf.readFloatLE(o);
  return data;
}

/**
 * Decodes and checks a tensor file. `name` (usually the object key) and `kind` ('embeddings',
 * 'maps', ...) name the file in errors: `embeddings file "runs/x/embeddings/0003.bin" is truncated ...`.
 */
export function decodeTensorFile(buf: Buffer, name: string, kind = 'embeddings'): TensorFile {
  const decoded = decodeTensorHeader(buf, name, kind);
  if ('need' in decoded) {
    throw new Error(`${kind} file ${JSON.stringify(name)} is truncated: expected ${decoded.need - PREAMBLE_BYTES} header bytes, found ${buf.length - PREAMBLE_BYTES}`);
  }
  const { header: h, dataOffset } = decoded;
  checkTensorDataBytes(h, buf.length - dataOffset, name, kind);
  return { header: h, data: floatsFromLE(buf, dataOffset, h.count * h.dim) };
}

/** The patch grid of images[index]: its own, or the header's in files written before images had one. */
export function imageGrid(file: TensorFile, index: number): [number, number] {
  const im = file.header.images[index];
  if (!im) throw new Error(`image index ${index} is out of range (the file has ${file.header.images.length} images)`);
  return im.grid ?? file.header.grid;
}

/** The rows of images[index] as a view (patches * dim values). */
export function imageRows(file: TensorFile, index: number): Float32Array {
  const im = file.header.images[index];
  if (!im) throw new Error(`image index ${index} is out of range (the file has ${file.header.images.length} images)`);
  const dim = file.header.dim;
  return file.data.subarray(im.offset * dim, (im.offset + im.patches) * dim);
}
