// The MVTec AD layout of a category, whether it sits in a local folder or under an object-storage prefix:
//   train/good/*            normal training images
//   test/<good|defect>/*    test images, one folder per defect type
//   ground_truth/<defect>/<stem>_mask.<ext>   one mask per defective test image
// Files are recognised by place only; their format is sniffed from content when they are decoded.
import { existsSync, readdirSync, statSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';

export interface DatasetImage {
  /** Path relative to the category root, with forward slashes (also the image's id in reports). */
  path: string;
  split: 'train' | 'test';
  /** 'good' or the defect folder name. */
  defectType: string;
  /** 1 for anomalous (any defect type), 0 for good. */
  label: 0 | 1;
  /** Relative path of the ground-truth mask, or null (good images, or a defect image without a mask). */
  maskPath: string | null;
}

export interface MvtecDataset {
  root: string;
  category: string;
  train: DatasetImage[];
  test: DatasetImage[];
}

export interface DatasetNeeds {
  train?: boolean;
  test?: boolean;
}

const GOOD = 'good';
const stemOf = (file: string) => file.replace(/\.[^.]*$/, '');
const hidden = (rel: string) => rel.split('/').some((s) => s.startsWith('.'));

/**
 * Sorts relative file paths of a category into train and test images, matching each defect image with its mask.
 * Paths elsewhere in the tree are ignored. `where` names the dataset in errors.
 */
export function classifyDatasetPaths(paths: string[], where: string, need: DatasetNeeds = {}): Pick<MvtecDataset, 'train' | 'test'> {
  const masks = new Map<string, string>();
  for (const p of paths) {
    const parts = p.split('/');
    if (parts.length === 3 && parts[0] === 'ground_truth' && !hidden(p)) {
      const stem = stemOf(parts[2]);
      if (stem.endsWith('_mask')) masks.set(`${parts[1]}/${stem.slice(0, -'_mask'.length)}`, p);
    }
  }
  const train: DatasetImage[] = [];
  const test: DatasetImage[] = [];
  for (const p of [...paths].sort()) {
    const parts = p.split('/');
    if (parts.length !== 3 || hidden(p)) continue;
    const [split, type, file] = parts;
    if (split === 'train' && type === GOOD) {
      train.push({ path: p, split: 'train', defectType: GOOD, label: 0, maskPath: null });
    } else if (split === 'test') {
      const isGood = type === GOOD;
      test.push({
        path: p, split: 'test', defectType: type, label: isGood ? 0 : 1,
        maskPath: isGood ? null : (masks.get(`${type}/${stemOf(file)}`) ?? null),
      });
    }
  }
  if (need.train && train.length === 0) {
    throw new Error(`dataset ${where} has no training images: expected normal images in its train/good/ folder`);
  }
  if (need.test && test.length === 0) {
    throw new Error(`dataset ${where} has no test images: expected test/<good|defect type>/ folders with images in it`);
  }
  return { train, test };
}

/** Relative paths of the files two levels below the category's split folders, symbolic links followed. */
function localPaths(root: string): string[] {
  const out: string[] = [];
  const entries = (dir: string, folders: boolean) =>
    existsSync(dir)
      ? readdirSync(dir).filter((name) => {
          const st = statSync(join(dir, name), { throwIfNoEntry: false });
          return st !== undefined && (folders ? st.isDirectory() : st.isFile());
        })
      : [];
  for (const split of ['train', 'test', 'ground_truth']) {
    for (const type of entries(join(root, split), true)) {
      for (const file of entries(join(root, split, type), false)) out.push(`${split}/${type}/${file}`);
    }
  }
  return out;
}

/**
 * Reads a local category folder. `need` says which splits the caller requires: a missing required split is an
 * error that names the folder, raised before any work starts.
 */
export function listMvtecDataset(rootDir: string, need: DatasetNeeds = {}): MvtecDataset {
  const root = resolve(rootDir);
  if (!existsSync(root) || !statSync(root).isDirectory()) {
    throw new Error(`dataset folder "${rootDir}" does not exist or is not a folder`);
  }
  return { root, category: basename(root), ...classifyDatasetPaths(localPaths(root), `folder "${rootDir}"`, need) };
}
