// Import cycles, found with dpdm: between files (type-only imports included: they couple modules just as much),
// and between the module folders (shared/<module>, services/<service>, cli), where a cycle means two modules that
// cannot be understood or changed one without the other. Exits 1 and lists them when there is any.
// `npm run check:cycles`; part of `npm test` and so of CI.
import { relative, sep } from 'node:path';
import { globFiles, parseCircular, parseDependencyTree, type DependencyTree } from 'dpdm';

const ROOT = process.cwd();
const PATTERNS = ['shared/**/*.ts', 'services/**/*.ts', 'cli/**/*.ts', 'scripts/**/*.ts'];

/** The module a file belongs to: shared/<module>, services/<service>, or its top folder. */
export function moduleOf(file: string): string {
  const parts = relative(ROOT, file).split(sep);
  if ((parts[0] === 'shared' || parts[0] === 'services') && parts.length > 2) return `${parts[0]}/${parts[1]}`;
  return parts[0];
}

/** The module cycles: every strongly connected component of two or more modules (one line per tangle). */
export function folderCycles(edges: Map<string, Set<string>>): string[][] {
  // Tarjan's strongly connected components; a component of two or more modules is a cycle.
  let index = 0;
  const stack: string[] = [];
  const onStack = new Set<string>();
  const idx = new Map<string, number>();
  const low = new Map<string, number>();
  const out: string[][] = [];
  const visit = (v: string) => {
    idx.set(v, index);
    low.set(v, index++);
    stack.push(v);
    onStack.add(v);
    for (const w of edges.get(v) ?? []) {
      if (!idx.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, idx.get(w)!));
    }
    if (low.get(v) === idx.get(v)) {
      const comp: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        comp.push(w);
      } while (w !== v);
      if (comp.length > 1) out.push(comp.sort());
    }
  };
  for (const v of [...edges.keys()].sort()) if (!idx.has(v)) visit(v);
  return out;
}

async function main(): Promise<void> {
  const files = (await Promise.all(PATTERNS.map((p) => globFiles(p, ROOT)))).flat();
  const tree: DependencyTree = await parseDependencyTree(files, {
    context: ROOT,
    tsconfig: 'tsconfig.json',
    transform: false, // keep type-only imports
    include: /\.ts$/,
    exclude: /node_modules/,
  });
  const fileCycles = parseCircular(tree);
  const edges = new Map<string, Set<string>>();
  for (const [file, deps] of Object.entries(tree)) {
    const from = moduleOf(file);
    if (!edges.has(from)) edges.set(from, new Set());
    for (const d of deps ?? []) {
      if (!d.id || d.id.includes('node_modules')) continue;
      const to = moduleOf(d.id);
      // A test file importing its module's neighbours is not a design cycle.
      if (to !== from && !file.endsWith('.test.ts')) edges.get(from)!.add(to);
    }
  }
  const moduleCycles = folderCycles(edges);
  for (const c of fileCycles) console.log(`file cycle: ${c.map((f) => relative(ROOT, f)).join(' -> ')}`);
  for (const c of moduleCycles) console.log(`module cycle: ${c.join(' <-> ')}`);
  const files_ = Object.keys(tree).length;
  if (fileCycles.length + moduleCycles.length > 0) {
    console.log(`check-cycles: ${fileCycles.length} file cycle(s), ${moduleCycles.length} module cycle(s) in ${files_} files`);
    process.exit(1);
  }
  console.log(`check-cycles: no import cycle in ${files_} files (${edges.size} modules)`);
}

if (import.meta.url === `file://${process.argv[1]}`) await main();
