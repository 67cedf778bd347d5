// Where a run's images come from: a source is an id and a way to read its bytes, so the stages never know whether
// the bytes sit in a local folder or in object storage.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { DatasetImage } from '../dataset/mvtec.js';

export interface ImageSource {
  /** The image's id: its path relative to the dataset root (or its object key). */
  id: string;
  read(): Promise<Buffer>;
}

/** Reads a file of a dataset by its path relative to the dataset root (an image or a mask). */
export type ByteReader = (relativePath: string) => Promise<Buffer>;

/** A byte reader over a local dataset folder. */
export function localReader(root: string): ByteReader {
  return (rel) => readFile(join(root, rel));
}

/** Image sources for images of a dataset read through `read`. */
export function datasetSources(read: ByteReader, images: readonly DatasetImage[]): ImageSource[] {
  return images.map((img) => ({ id: img.path, read: () => read(img.path) }));
}

/** Image sources for files of a local dataset folder. */
export function localSources(root: string, images: readonly DatasetImage[]): ImageSource[] {
  return datasetSources(localReader(root), images);
}
