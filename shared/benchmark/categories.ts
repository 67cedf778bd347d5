// The categories of a benchmark: MVTec-layout folders (train/ and test/ side by side) found under a root, at the
// root itself or at most two levels below it (datasets/mvtec_ad/bottle, datasets/visa/capsules), symbolic links
// followed. A category's name is its folder name; it names its results and its folder under the benchmark's --out.
import { readdirSync, statSync } from 'node:fs';
import { basename, join, relative, resolve } from 'node:path';
import { UserError } from '../errors.js';

export interface BenchmarkCategory {
  /** The folder name: bottle, capsules. */
  name: string;
  /** Absolute path of the category folder. */
  dir: string;
}

/** How deep below the root a category folder may sit. */
export const MAX_CATEGORY_DEPTH = 2;

const isDir = (p: string) => {
  try {
    return statSync(p).isDirectory();
  } catch {
    return false;
  }
};

/** A folder with the MVTec layout's train/ and test/ folders. */
export function isCategoryFolder(dir: string): boolean {
  return isDir(join(dir, 'train')) && isDir(join(dir, 'test'));
}

/**
 * The category folders under `root`, sorted by name; `names` keeps only those, in the order given. A root that
 * is not a folder, holds no category, holds two categories of one name, or lacks a named one is refused with a
 * message naming it (`flags` says how the user gave the root and the names).
 */
export function findCategories(
  root: string, names?: readonly string[], flags = { data: '--data', categories: '--categories' },
): BenchmarkCategory[] {
  const top = resolve(root);
  if (!isDir(top)) throw new UserError(`${flags.data} "${root}" is not a folder`);
  const found: BenchmarkCategory[] = [];
  const walk = (dir: string, depth: number) => {
    if (isCategoryFolder(dir)) {
      found.push({ name: basename(dir), dir });
      return;
    }
    if (depth === MAX_CATEGORY_DEPTH) return;
    for (const entry of readdirSync(dir).sort()) {
      if (entry.startsWith('.')) continue;
      const sub = join(dir, entry);
      if (isDir(sub)) walk(sub, depth + 1);
    }
  };
  walk(top, 0);
  if (found.length === 0) {
    throw new UserError(`${flags.data} "${root}" holds no category: expected folders with train/ and test/ (MVTec AD layout) `
      + `at most ${MAX_CATEGORY_DEPTH} levels below it`);
  }
  found.sort((a, b) => a.name.localeCompare(b.name) || a.dir.localeCompare(b.dir));
  const twice = found.find((c, i) => found.findIndex((o) => o.name === c.name) !== i);
  if (twice) {
    const both = found.filter((c) => c.name === twice.name).map((c) => relative(top, c.dir) || '.');
    throw new UserError(`${flags.data} "${root}" holds two categories named "${twice.name}" (${both.join(', ')}): `
      + `their results would share one folder; point ${flags.data} at a root where names are unique`);
  }
  if (!names) return found;
  if (names.length === 0) throw new UserError(`${flags.categories}: expected one or more category names, comma-separated`);
  const dup = names.find((n, i) => names.indexOf(n) !== i);
  if (dup !== undefined) throw new UserError(`${flags.categories}: "${dup}" is given twice`);
  return names.map((n) => {
    const c = found.find((f) => f.name === n);
    if (!c) {
      throw new UserError(`${flags.categories}: no category "${n}" under "${root}" (found: ${found.map((f) => f.name).join(', ')})`);
    }
    return c;
  });
}
