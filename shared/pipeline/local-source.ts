import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { DatasetImage } from '../dataset/mvtec.js';
import type { ImageSource } from './extract.js';

/** Image sources for files of a local dataset folder. */
export function localSources(root: string, images: DatasetImage[]): ImageSource[] {
  return images.map((img) => ({ id: img.path, read: () => readFile(join(root, img.path)) }));
}
