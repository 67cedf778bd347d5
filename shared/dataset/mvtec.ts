// Lists an MVTec AD style category folder:
//   train/good/*            normal training images
//   test/<good|defect>/*    test images, one folder per defect type
//   ground_truth/<defect>/<stem>_mask.<ext>   one mask per defective test image
// Files are listed by name only; their format is sniffed from content when they are decoded.
import { existsSync, readdirSync, statSync } from 'node:fs';
import { basename, join, parse, resolve } from 'node:path';

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

const GOOD = 'good';

/** Visible entries of `dir` that are files (or folders), symbolic links followed. */
function listEntries(dir: string, folders: boolean): string[] {
  return readdirSync(dir)
    .filter((name) => !name.startsWith('.'))
    .filter((name) => {
      const st = statSync(join(dir, name), { throwIfNoEntry: false });
      return st !== undefined && (folders ? st.isDirectory() : st.isFile());
    })
    .sort();
}

const listFiles = (dir: string) => listEntries(dir, false);
const listDirs = (dir: string) => listEntries(dir, true);

function findMask(root: string, defect: string, file: string): string | null {
  const dir = join(root, 'ground_truth', defect);
  if (!existsSync(dir)) return null;
  const stem = parse(file).name;
  const match = listFiles(dir).find((f) => parse(f).name === `${stem}_mask`);
  return match ? `ground_truth/${defect}/${match}` : null;
}

/**
 * Reads the folder layout. `need` says which splits the caller requires: a missing required split is an error
 * that names the folder, raised before any work starts.
 */
export function listMvtecDataset(rootDir: string, need: { train?: boolean; test?: boolean } = {}): MvtecDataset {
  const root = resolve(rootDir);
  if (!existsSync(root) || !statSync(root).isDirectory()) {
    throw new Error(`dataset folder "${rootDir}" does not exist or is not a folder`);
  }
  const train: DatasetImage[] = [];
  const trainDir = join(root, 'train', GOOD);
  if (existsSync(trainDir)) {
    for (const f of listFiles(trainDir)) {
      train.push({ path: `train/${GOOD}/${f}`, split: 'train', defectType: GOOD, label: 0, maskPath: null });
    }
  }
  if (need.train && train.length === 0) {
    throw new Error(
      `dataset folder "${rootDir}" has no training images: expected normal images in ${join(rootDir, 'train', GOOD)}/`,
    );
  }
  const test: DatasetImage[] = [];
  const testDir = join(root, 'test');
  if (existsSync(testDir)) {
    for (const defect of listDirs(testDir)) {
      for (const f of listFiles(join(testDir, defect))) {
        const isGood = defect === GOOD;
        test.push({
          path: `test/${defect}/${f}`,
          split: 'test',
          defectType: defect,
          label: isGood ? 0 : 1,
          maskPath: isGood ? null : findMask(root, defect, f),
        });
      }
    }
  }
  if (need.test && test.length === 0) {
    throw new Error(
      `dataset folder "${rootDir}" has no test images: expected ${join(rootDir, 'test')}/<good|defect type>/ folders with images`,
    );
  }
  return { root, category: basename(root), train, test };
}
