// The WebAssembly SIMD kernels of the greedy coreset (shared/coreset) and the exact sketch-pruned
// search (shared/bank), as WAT text in one module. Small JS helpers below only spell out repeated
// lines (unrolled rows, lanes); every instruction the engine runs is written here.
//
// Arithmetic contracts the callers and their tests rely on (plain loops compare bit for bit):
// - float64 exact distances: elements promoted from float32, differences squared and summed in
//   lane pairs, lanes combined as (l0 + l1) + (l2 + l3) (see each kernel for its lane layout);
// - float32 filters and sketches: f32x4 sums folded as (l0 + l1) + (l2 + l3);
// - projections: each output summed in float64 in input order, then rounded to float32.
// All addresses are byte offsets into the imported memory; rows are 16-byte aligned.

import { assembleWat, compileModule, type WasmModule } from './runtime.js';

/** Leading sketch coordinates the search scans for every bank row (scanHead, refine). */
export const SEARCH_HEAD = 16;
/** Candidates ahead whose sketch row `screened` touches early, so its cache miss overlaps work. */
const PREFETCH = 8;

// ---- text helpers -------------------------------------------------------------------------------

const get = (l: string): string => `(local.get ${l})`;
const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i);
const lines = (n: number, f: (i: number) => string): string => range(n).map(f).join('\n');
/** local += step */
const bump = (l: string, step: number | string): string =>
  `(local.set ${l} (i32.add ${get(l)} ${typeof step === 'number' ? `(i32.const ${step})` : step}))`;
/** base + index * 2^shift */
const at = (base: string, index: string, shift: number): string => `(i32.add ${get(base)} (i32.shl ${get(index)} (i32.const ${shift})))`;
/** Horizontal float32 sum (l0 + l1) + (l2 + l3) of an f32x4. */
const hsum32 = (v: string): string =>
  `(f32.add (f32.add (f32x4.extract_lane 0 ${v}) (f32x4.extract_lane 1 ${v})) (f32.add (f32x4.extract_lane 2 ${v}) (f32x4.extract_lane 3 ${v})))`;
/** l0 + l1 of an f64x2. */
const lanes64 = (v: string): string => `(f64.add (f64x2.extract_lane 0 ${v}) (f64x2.extract_lane 1 ${v}))`;
/** Two floats at addr + off, widened to f64x2. */
const widen = (addr: string, off: number): string => `(f64x2.promote_low_f32x4 (v128.load64_zero offset=${off} ${get(addr)}))`;
/** acc += t * t with t = the f64x2 `diff` (t kept in local $t). */
const accumulate64 = (acc: string, diff: string): string =>
  `(local.set ${acc} (f64x2.add (f64x2.mul (local.tee $t ${diff}) (local.get $t)) ${get(acc)}))`;
/** acc += (a[off] - b[off])^2 over one f32x4 (e kept in local $e). */
const step32 = (acc: string, a: string, b: string, off: number): string =>
  `(local.set ${acc} (f32x4.add (f32x4.mul (local.tee $e (f32x4.sub (v128.load offset=${off} ${get(a)}) (v128.load offset=${off} ${get(b)}))) (local.get $e)) ${get(acc)}))`;
/** One 16-float sketch stage of (a - b)^2 at a and b, into $acc0 / $acc1 alternately. */
const sketchStage = (a: string, b: string): string => lines(4, (q) => step32(q % 2 === 0 ? '$acc0' : '$acc1', a, b, 16 * q));
/** $acc0 += $acc1, $acc1 = 0; leaves the float32 sum of $acc0 on the stack. */
const foldSum32 = `(local.set $acc0 (f32x4.add (local.get $acc0) (local.get $acc1))) (local.set $acc1 (v128.const i64x2 0 0)) ${hsum32('(local.get $acc0)')}`;
const zero = (l: string): string => `(local.set ${l} (v128.const i64x2 0 0))`;

// ---- coreset kernels ----------------------------------------------------------------------------

/**
 * dist2Many(points, idx, count, p, groups, rowBytes, out): out[i] (f64) = squared distance from
 * row idx[i] to the row at p; rows have groups * 4 floats. Element j goes to lane j % 4: lanes
 * (0, 1) in $lo, (2, 3) in $hi. Four rows at a time keep eight independent chains in flight.
 */
function dist2Many(): string {
  // `rows` rows whose addresses are in $a0.. against the query at $p; $lo<k>/$hi<k> accumulate row k.
  const rowsLoop = (rows: number): string => `
    (local.set $q ${get('$p')}) (local.set $g ${get('$groups')})
    (loop $group
      (local.set $pv0 ${widen('$q', 0)})
      (local.set $pv1 ${widen('$q', 8)})
      ${lines(rows, (k) => `${accumulate64(`$lo${k}`, `(f64x2.sub ${widen(`$a${k}`, 0)} (local.get $pv0))`)}
      ${accumulate64(`$hi${k}`, `(f64x2.sub ${widen(`$a${k}`, 8)} (local.get $pv1))`)}
      ${bump(`$a${k}`, 16)}`)}
      ${bump('$q', 16)}
      (br_if $group (local.tee $g (i32.sub ${get('$g')} (i32.const 1)))))`;
  const rowAddress = (k: number): string =>
    `(local.set $a${k} (i32.add ${get('$points')} (i32.mul (i32.load offset=${4 * k} ${at('$idx', '$i', 2)}) ${get('$rowBytes')})))`;
  const start = (k: number): string => `${zero(`$lo${k}`)} ${zero(`$hi${k}`)}`;
  const store = (k: number): string =>
    `(f64.store offset=${8 * k} ${at('$out', '$i', 3)} (f64.add ${lanes64(`(local.get $lo${k})`)} ${lanes64(`(local.get $hi${k})`)}))`;
  return `
  (func $dist2Many (export "dist2Many")
    (param $points i32) (param $idx i32) (param $count i32) (param $p i32) (param $groups i32) (param $rowBytes i32) (param $out i32)
    (local $i i32) (local $q i32) (local $g i32) ${lines(4, (k) => `(local $a${k} i32)`)}
    ${lines(4, (k) => `(local $lo${k} v128) (local $hi${k} v128)`)} (local $pv0 v128) (local $pv1 v128) (local $t v128)
    (block $quadsDone
      (loop $quad
        (br_if $quadsDone (i32.lt_s (i32.sub ${get('$count')} ${get('$i')}) (i32.const 4)))
        ${lines(4, rowAddress)}
        ${lines(4, start)}
        ${rowsLoop(4)}
        ${lines(4, store)}
        ${bump('$i', 4)}
        (br $quad)))
    (block $done
      (loop $single
        (br_if $done (i32.ge_s ${get('$i')} ${get('$count')}))
        ${rowAddress(0)}
        ${start(0)}
        ${rowsLoop(1)}
        ${store(0)}
        ${bump('$i', 1)}
        (br $single))))`;
}

/** Locals of the candidate test below. */
const CANDIDATE_LOCALS = `(local $x i32) (local $a i32) (local $q i32) (local $g i32) (local $sa i32) (local $ps i32) (local $s i32)
    (local $th f32) (local $d f64)
    (local $acc0 v128) (local $acc1 v128) (local $e v128) (local $lo v128) (local $hi v128) (local $pv0 v128) (local $pv1 v128) (local $t v128)`;

/**
 * The test of candidate row $x against the query row at $p (sketch at $pSketch): branches to
 * `far` when a float32 test proves its squared distance at least its bound, else leaves the exact
 * float64 squared distance in $d. Tests: the sketch distance ($stages stages of 16 floats, checked
 * after each) against sketchThr[x], then the full-row float32 distance against rowThr[x]. The
 * float64 distance (element j in lane j % 4: lanes (0, 1) in $lo, (2, 3) in $hi; as dist2Many)
 * reads the row again, from cache, at about four times the float32 cost.
 */
const candidateTest = (far: string, sketch = true): string => `${sketch ? `
          (if ${get('$stages')}
            (then
              (local.set $th (f32.load ${at('$sketchThr', '$x', 2)}))
              (local.set $sa (i32.add ${get('$sketches')} (i32.mul ${get('$x')} (i32.shl ${get('$stages')} (i32.const 6)))))
              (local.set $ps ${get('$pSketch')})
              ${zero('$acc0')} ${zero('$acc1')}
              (local.set $s ${get('$stages')})
              (loop $stage
                ${sketchStage('$sa', '$ps')}
                (br_if ${far} (f32.gt ${foldSum32} ${get('$th')}))
                ${bump('$sa', 64)} ${bump('$ps', 64)}
                (br_if $stage (local.tee $s (i32.sub ${get('$s')} (i32.const 1)))))))` : ''}
          (local.set $a (i32.add ${get('$points')} (i32.mul ${get('$x')} ${get('$rowBytes')})))
          (local.set $q ${get('$p')}) (local.set $g (i32.shr_u ${get('$groups')} (i32.const 1)))
          ${zero('$acc0')} ${zero('$acc1')}
          (loop $eight
            ${step32('$acc0', '$a', '$q', 0)}
            ${step32('$acc1', '$a', '$q', 16)}
            ${bump('$a', 32)} ${bump('$q', 32)}
            (br_if $eight (local.tee $g (i32.sub ${get('$g')} (i32.const 1)))))
          (br_if ${far} (f32.gt ${foldSum32} (f32.load ${at('$rowThr', '$x', 2)})))
          (local.set $a (i32.add ${get('$points')} (i32.mul ${get('$x')} ${get('$rowBytes')})))
          (local.set $q ${get('$p')}) (local.set $g ${get('$groups')})
          ${zero('$lo')} ${zero('$hi')}
          (loop $group
            (local.set $pv0 ${widen('$q', 0)})
            (local.set $pv1 ${widen('$q', 8)})
            ${accumulate64('$lo', `(f64x2.sub ${widen('$a', 0)} (local.get $pv0))`)}
            ${accumulate64('$hi', `(f64x2.sub ${widen('$a', 8)} (local.get $pv1))`)}
            ${bump('$a', 16)} ${bump('$q', 16)}
            (br_if $group (local.tee $g (i32.sub ${get('$g')} (i32.const 1)))))
          (local.set $d (f64.add ${lanes64('(local.get $lo)')} ${lanes64('(local.get $hi)')}))`;

/**
 * screened(points, sketches, sketchThr, rowThr, idx, count, p, pSketch, out, groups, rowBytes, stages):
 * out[i] (f64) = squared distance from row idx[i] to the row at p, or +Infinity where the
 * candidate test proves it no closer than its bound.
 */
function screened(): string {
  return `
  (func $screened (export "screened")
    (param $points i32) (param $sketches i32) (param $sketchThr i32) (param $rowThr i32) (param $idx i32) (param $count i32)
    (param $p i32) (param $pSketch i32) (param $out i32) (param $groups i32) (param $rowBytes i32) (param $stages i32)
    (local $i i32) ${CANDIDATE_LOCALS}
    (block $done
      (loop $candidate
        (br_if $done (i32.ge_s ${get('$i')} ${get('$count')}))
        ;; Touch the sketch of the candidate PREFETCH places ahead, so its cache miss overlaps this work.
        (if (i32.and (i32.ne ${get('$stages')} (i32.const 0)) (i32.lt_s (i32.add ${get('$i')} (i32.const ${PREFETCH})) ${get('$count')}))
          (then (drop (i32.load (i32.add ${get('$sketches')}
            (i32.mul (i32.load offset=${4 * PREFETCH} ${at('$idx', '$i', 2)}) (i32.shl ${get('$stages')} (i32.const 6))))))))
        (local.set $x (i32.load ${at('$idx', '$i', 2)}))
        (local.set $d (f64.const inf))
        (block $far ${candidateTest('$far')})
        (f64.store ${at('$out', '$i', 3)} ${get('$d')})
        ${bump('$i', 1)}
        (br $candidate))))`;
}

/** Float32 threshold of a point's row test from its squared distance bound (see rowThreshold in coreset/greedy-kernels.ts). */
export const ROW_MARGIN = 1e-4;
export const ROW_FLOOR = 1e-36;
/** Sketch thresholds (S sqrt(bound) + E)^2 / SUM_FACTOR * SLACK, see coreset/sketch.ts. */
export const SKETCH_SUM_FACTOR = 1 - 1e-5;
export const SKETCH_SLACK = 1 + 1e-6;

/** Sketch coordinates per grouped copy ("quarter") that scanAll tests four points at a time. */
export const SCAN_QUARTER = 8;
/** Largest magnitude of a quantised sketch coordinate: 32 squared differences (< 2^24 each) sum below 2^31. */
export const HEAD_LEVELS = 2047;
/** Integer head thresholds are floor(h^2 * HEAD_SUM_FACTOR + 1): strictly above h^2 despite rounding. */
export const HEAD_SUM_FACTOR = 1 + 1e-9;
/** Quarters of the widest sketch (2 stages of 16). */
const MAX_QUARTERS = 4;

/**
 * scanAll(points, heads, quarterBytes, sketchThr, headThr, rowThr, val, owner, skipBelow, from,
 * count, p, pHead, groups, rowBytes, stages, centre, sigma, errorNorm, headScale, headSlack,
 * movedIdx, movedFrom, counters) -> moved: one greedy step over the points from..count - 1 (from a
 * multiple of 4; chunks of one step may run on several threads at once: each writes only its
 * points and its own outputs). Point x (val[x] its squared distance to the chosen set, -1 once
 * chosen; owner[x] its list) is a candidate unless val[x] < skipBelow[owner[x]]; a candidate the
 * new centre (row p) brings closer gets val[x] = that exact distance, owner[x] = centre and new
 * thresholds (sketchThr and headThr from sigma and errorNorm, see below; rowThr), and is listed in
 * movedIdx with its old list in movedFrom (from their start, in increasing order).
 * With sketches (stages > 0), the candidates of four points at a time are first tested on their
 * quantised sketch ("head": each coordinate rounded to a multiple of a step D, at most HEAD_LEVELS
 * steps, as int16) against headThr, SCAN_QUARTER coordinates at a time (all 2 * stages quarters,
 * for every group), in exact integer arithmetic, from grouped copies: quarter q,
 * group g holds points 4g..4g+3 at heads + q * quarterBytes + 64g, coordinates 2i, 2i + 1 of point
 * k at i16 lanes 8i + 2k, 8i + 2k + 1. pHead: p's quantised coordinates, two per i32 (the same
 * pairs). Rounding moves a sketch difference by at most D sqrt(width) (headSlack, in steps, covers
 * it), so a head distance^2 above headThr[x] = floor(h^2 HEAD_SUM_FACTOR + 1), h = r headScale +
 * headSlack, r = sigma sqrt(val[x]) + errorNorm, headScale = 1 / D, proves x no closer.
 * Sequential reads, four points per vector; the per-point sketches are not read again.
 * val, owner and headThr are read in whole groups of four: callers pad them.
 * counters (i32 x 2) = the candidates, and those of them given the float64 distance.
 */
function scanAll(): string {
  // Each v128 of a quarter holds two coordinates of each of the four points (i16 lanes 2k, 2k + 1:
  // point k); i32x4.dot_i16x8_s squares and adds each pair, so $hacc lane k sums point k's squares.
  // Quarter q's coordinates added to $hacc, then the lanes over their threshold ($thr) leave $mask.
  const quarter = (q: number): string => `
                (local.set $hq (i32.add ${get('$ha')} (i32.mul (i32.const ${q}) ${get('$quarterBytes')})))
                ${lines(SCAN_QUARTER / 2, (i) =>
                  `(local.set $hacc (i32x4.add (i32x4.dot_i16x8_s (local.tee $e (i16x8.sub (v128.load offset=${16 * i} ${get('$hq')}) (local.get $p${(SCAN_QUARTER / 2) * q + i}))) (local.get $e)) ${get('$hacc')}))`)}
                (local.set $mask (i32.and ${get('$mask')} (i32x4.bitmask (i32x4.le_s ${get('$hacc')} ${get('$thr')}))))`;
  // Bit k of $mask: point x0 + k is unchosen and a candidate (branch-free; lanes past the end are cleared after).
  const candidateBit = (k: number): string => `
        (local.set $v (f64.load offset=${8 * k} ${at('$val', '$x0', 3)}))
        (local.set $mask (i32.or ${get('$mask')} (i32.shl
          (i32.and (f64.ge ${get('$v')} (f64.const 0))
            (i32.eqz (f64.lt ${get('$v')} (f64.load (i32.add ${get('$skipBelow')} (i32.shl (i32.load offset=${4 * k} ${at('$owner', '$x0', 2)}) (i32.const 3)))))))
          (i32.const ${k}))))`;
  return `
  (func $scanAll (export "scanAll")
    (param $points i32) (param $heads i32) (param $quarterBytes i32) (param $sketchThr i32) (param $headThr i32) (param $rowThr i32)
    (param $val i32) (param $owner i32) (param $skipBelow i32)
    (param $from i32) (param $count i32) (param $p i32) (param $pHead i32) (param $groups i32) (param $rowBytes i32) (param $stages i32)
    (param $centre i32) (param $sigma f64) (param $errorNorm f64) (param $headScale f64) (param $headSlack f64)
    (param $movedIdx i32) (param $movedFrom i32) (param $counters i32)
    (result i32)
    (local $v f64) (local $candidates i32) (local $exact i32) (local $moved i32) (local $r f64) (local $h f64)
    (local $x0 i32) (local $mask i32) (local $ha i32) (local $hq i32) (local $hacc v128) (local $thr v128)
    ${lines((SCAN_QUARTER / 2) * MAX_QUARTERS, (i) => `(local $p${i} v128)`)}
    ${CANDIDATE_LOCALS}
    (if ${get('$stages')}
      (then ${lines((SCAN_QUARTER / 2) * MAX_QUARTERS, (i) => `(local.set $p${i} (v128.load32_splat offset=${4 * i} ${get('$pHead')}))`)}))
    (local.set $x0 ${get('$from')})
    (local.set $ha (i32.add ${get('$heads')} (i32.mul (i32.shr_u ${get('$from')} (i32.const 2)) (i32.const ${8 * SCAN_QUARTER}))))
    (block $done
      (loop $quad
        (br_if $done (i32.ge_s ${get('$x0')} ${get('$count')}))
        (local.set $mask (i32.const 0))
        ${lines(4, candidateBit)}
        (if (i32.gt_s (i32.add ${get('$x0')} (i32.const 4)) ${get('$count')})
          (then (local.set $mask (i32.and ${get('$mask')} (i32.sub (i32.shl (i32.const 1) (i32.sub ${get('$count')} ${get('$x0')})) (i32.const 1))))))
        (local.set $candidates (i32.add ${get('$candidates')} (i32.popcnt ${get('$mask')})))
        ;; Every quarter runs for every group, whatever its mask: a branch on the mask mispredicts
        ;; for about a third of the groups, each time waiting on the heads' cache miss, which costs
        ;; more than the quarters it saves (150 capsules images, one thread: 17.3 s of scan -> 8.7 s).
        (if ${get('$stages')}
          (then
            ${zero('$hacc')}
            (local.set $thr (v128.load ${at('$headThr', '$x0', 2)}))
            ${quarter(0)}
            ${quarter(1)}
            (if (i32.eq ${get('$stages')} (i32.const 2)) (then ${quarter(2)} ${quarter(3)}))))
        ;; the lanes still in
        (block $lanesDone
          (loop $lanes
            (br_if $lanesDone (i32.eqz ${get('$mask')}))
            (local.set $x (i32.add ${get('$x0')} (i32.ctz ${get('$mask')})))
            (local.set $mask (i32.and ${get('$mask')} (i32.sub ${get('$mask')} (i32.const 1))))
            (block $far
              ${candidateTest('$far', false)}
              ${bump('$exact', 1)}
              (br_if $far (i32.eqz (f64.lt ${get('$d')} (f64.load ${at('$val', '$x', 3)}))))
              ;; closer: x joins the new centre's list
              (i32.store ${at('$movedIdx', '$moved', 2)} ${get('$x')})
              (i32.store ${at('$movedFrom', '$moved', 2)} (i32.load ${at('$owner', '$x', 2)}))
              ${bump('$moved', 1)}
              (f64.store ${at('$val', '$x', 3)} ${get('$d')})
              (i32.store ${at('$owner', '$x', 2)} ${get('$centre')})
              (f32.store ${at('$rowThr', '$x', 2)} (f32.demote_f64 (f64.add (f64.mul ${get('$d')} (f64.const ${1 + ROW_MARGIN})) (f64.const ${ROW_FLOOR}))))
              (if ${get('$stages')}
                (then
                  (local.set $r (f64.add (f64.mul ${get('$sigma')} (f64.sqrt ${get('$d')})) ${get('$errorNorm')}))
                  (f32.store ${at('$sketchThr', '$x', 2)}
                    (f32.demote_f64 (f64.mul (f64.div (f64.mul ${get('$r')} ${get('$r')}) (f64.const ${SKETCH_SUM_FACTOR})) (f64.const ${SKETCH_SLACK}))))
                  (local.set $h (f64.add (f64.mul ${get('$r')} ${get('$headScale')}) ${get('$headSlack')}))
                  (i32.store ${at('$headThr', '$x', 2)}
                    (i32.trunc_sat_f64_s (f64.add (f64.mul (f64.mul ${get('$h')} ${get('$h')}) (f64.const ${HEAD_SUM_FACTOR})) (f64.const 1)))))))
            (br $lanes)))
        ${bump('$x0', 4)} ${bump('$ha', 8 * SCAN_QUARTER)}
        (br $quad)))
    (i32.store ${get('$counters')} ${get('$candidates')})
    (i32.store offset=4 ${get('$counters')} ${get('$exact')})
    ${get('$moved')})`;
}

/**
 * near(centres, thr, count, p, pairs, outIdx, outD2) -> found: centres c whose float32 squared
 * distance to the row at p (rows of pairs * 8 floats) is at most thr[c], with that distance; a
 * negative threshold excludes its centre. Branch-free: every centre's distance is computed and
 * stored, and `found` advances only for those within their threshold. A test that skipped rows
 * early would mispredict for about half the centres, each time waiting on the row's cache miss.
 */
function near(): string {
  return `
  (func $near (export "near")
    (param $centres i32) (param $thr i32) (param $count i32) (param $p i32) (param $pairs i32) (param $outIdx i32) (param $outD2 i32)
    (result i32)
    (local $c i32) (local $a i32) (local $q i32) (local $g i32) (local $found i32) (local $d2 f32)
    (local $acc0 v128) (local $acc1 v128) (local $e v128)
    (local.set $a ${get('$centres')})
    (block $done
      (loop $centre
        (br_if $done (i32.ge_s ${get('$c')} ${get('$count')}))
        ${zero('$acc0')} ${zero('$acc1')}
        (local.set $q ${get('$p')}) (local.set $g ${get('$pairs')})
        (loop $pair
          ${step32('$acc0', '$a', '$q', 0)}
          ${step32('$acc1', '$a', '$q', 16)}
          ${bump('$a', 32)} ${bump('$q', 32)}
          (br_if $pair (local.tee $g (i32.sub ${get('$g')} (i32.const 1)))))
        (local.set $d2 ${foldSum32})
        (i32.store ${at('$outIdx', '$found', 2)} ${get('$c')})
        (f32.store ${at('$outD2', '$found', 2)} ${get('$d2')})
        ${bump('$found', `(f32.le ${get('$d2')} (f32.load ${at('$thr', '$c', 2)}))`)}
        ${bump('$c', 1)}
        (br $centre)))
    ${get('$found')})`;
}

/**
 * project(x, pairs, dim, w, blocks, outRowBytes, out): for row pairs of x (dim floats each) and
 * 8-output blocks of the blocked float64 weights (block b: dim x 8 at w + b * dim * 64), out rows
 * get float32(sum_j x[j] * w[j][o]) summed in float64 in j order. Output o of block b lands at
 * float 8b + o of its row; lanes: $r<row>w<k> holds outputs 2k, 2k + 1.
 */
function project(): string {
  const acc = (row: number, k: number): string => `$r${row}w${k}`;
  const mac = (row: number, k: number): string =>
    `(local.set ${acc(row, k)} (f64x2.add (f64x2.mul (local.get $v${row}) (local.get $w${k})) ${get(acc(row, k))}))`;
  const store = (row: number, k: number, lane: number): string =>
    `(f32.store offset=${8 * k + 4 * lane} ${row === 0 ? get('$or') : `(i32.add ${get('$or')} ${get('$outRowBytes')})`} (f32.demote_f64 (f64x2.extract_lane ${lane} ${get(acc(row, k))})))`;
  return `
  (func $project (export "project")
    (param $x i32) (param $pairs i32) (param $dim i32) (param $w i32) (param $blocks i32) (param $outRowBytes i32) (param $out i32)
    (local $b i32) (local $r i32) (local $x0 i32) (local $x1 i32) (local $wp i32) (local $j i32) (local $or i32)
    ${lines(2, (row) => lines(4, (k) => `(local ${acc(row, k)} v128)`))}
    (local $v0 v128) (local $v1 v128) ${lines(4, (k) => `(local $w${k} v128)`)}
    (block $blocksDone
      (loop $block
        (br_if $blocksDone (i32.ge_s ${get('$b')} ${get('$blocks')}))
        (local.set $r (i32.const 0))
        (block $pairsDone
          (loop $pair
            (br_if $pairsDone (i32.ge_s ${get('$r')} ${get('$pairs')}))
            ;; x rows 2r and 2r + 1
            (local.set $x0 (i32.add ${get('$x')} (i32.mul (i32.shl ${get('$r')} (i32.const 1)) (i32.shl ${get('$dim')} (i32.const 2)))))
            (local.set $x1 (i32.add ${get('$x0')} (i32.shl ${get('$dim')} (i32.const 2))))
            (local.set $wp (i32.add ${get('$w')} (i32.shl (i32.mul ${get('$b')} ${get('$dim')}) (i32.const 6))))
            ${lines(2, (row) => lines(4, (k) => `(local.set ${acc(row, k)} (f64x2.splat (f64.const 0)))`))}
            (local.set $j ${get('$dim')})
            (loop $input
              (local.set $v0 (f64x2.splat (f64.promote_f32 (f32.load ${get('$x0')}))))
              (local.set $v1 (f64x2.splat (f64.promote_f32 (f32.load ${get('$x1')}))))
              ${lines(4, (k) => `(local.set $w${k} (v128.load offset=${16 * k} ${get('$wp')}))`)}
              ${lines(4, (k) => `${mac(0, k)} ${mac(1, k)}`)}
              ${bump('$x0', 4)} ${bump('$x1', 4)} ${bump('$wp', 64)}
              (br_if $input (local.tee $j (i32.sub ${get('$j')} (i32.const 1)))))
            ;; out address of row 2r, block b
            (local.set $or (i32.add (i32.add ${get('$out')} (i32.mul (i32.shl ${get('$r')} (i32.const 1)) ${get('$outRowBytes')})) (i32.shl ${get('$b')} (i32.const 5))))
            ${lines(2, (row) => lines(4, (k) => `${store(row, k, 0)} ${store(row, k, 1)}`))}
            ${bump('$r', 1)}
            (br $pair)))
        ${bump('$b', 1)}
        (br $block))))`;
}

// ---- search kernels -----------------------------------------------------------------------------

/**
 * scanHead(head, groups, sq, outL) -> min: head holds rows in groups of four, coordinate-major
 * (group g, coordinate i: rows 4g..4g+3 at head + 256g + 16i); outL[b] = float32 squared distance
 * of row b's first SEARCH_HEAD sketch coordinates to sq's. Returns the smallest.
 */
function scanHead(): string {
  return `
  (func $scanHead (export "scanHead") (param $head i32) (param $groups i32) (param $sq i32) (param $outL i32) (result f32)
    (local $g i32) (local $a i32) (local $o i32)
    ${lines(SEARCH_HEAD, (i) => `(local $q${i} v128)`)}
    (local $acc v128) (local $e v128) (local $min v128)
    ${lines(SEARCH_HEAD, (i) => `(local.set $q${i} (f32x4.splat (f32.load offset=${4 * i} ${get('$sq')})))`)}
    (local.set $min (f32x4.splat (f32.const inf)))
    (local.set $a ${get('$head')}) (local.set $o ${get('$outL')}) (local.set $g ${get('$groups')})
    (block $done
      (br_if $done (i32.eqz ${get('$g')}))
      (loop $group
        ${zero('$acc')}
        ${lines(SEARCH_HEAD, (i) =>
          `(local.set $acc (f32x4.add (f32x4.mul (local.tee $e (f32x4.sub (v128.load offset=${16 * i} ${get('$a')}) (local.get $q${i}))) (local.get $e)) ${get('$acc')}))`)}
        (v128.store ${get('$o')} ${get('$acc')})
        (local.set $min (f32x4.min ${get('$min')} ${get('$acc')}))
        ${bump('$a', 256)} ${bump('$o', 16)}
        (br_if $group (local.tee $g (i32.sub ${get('$g')} (i32.const 1))))))
    (f32.min (f32.min (f32.min (f32x4.extract_lane 0 ${get('$min')}) (f32x4.extract_lane 1 ${get('$min')}))
      (f32x4.extract_lane 2 ${get('$min')})) (f32x4.extract_lane 3 ${get('$min')})))`;
}

/** findFirst(L, count, value) -> the first b with L[b] == value, or -1. */
function findFirst(): string {
  return `
  (func $findFirst (export "findFirst") (param $l i32) (param $count i32) (param $value f32) (result i32)
    (local $b i32)
    (block $done
      (loop $row
        (br_if $done (i32.ge_s ${get('$b')} ${get('$count')}))
        (if (f32.eq (f32.load ${at('$l', '$b', 2)}) ${get('$value')}) (then (return ${get('$b')})))
        ${bump('$b', 1)}
        (br $row)))
    (i32.const -1))`;
}

/**
 * exact(row, q, dim) -> float64 squared distance of two rows of dim floats (dim a multiple of 8):
 * element j goes to $acc<(j % 8) / 2>, combined as ((a0 + a1) + (a2 + a3)).
 */
function exact(): string {
  return `
  (func $exact (export "exact") (param $row i32) (param $q i32) (param $dim i32) (result f64)
    (local $g i32) ${lines(4, (k) => `(local $acc${k} v128)`)} (local $t v128)
    ${lines(4, (k) => zero(`$acc${k}`))}
    (local.set $g (i32.sub ${get('$dim')} (i32.const 8)))
    (loop $eight
      ${lines(4, (k) => accumulate64(`$acc${k}`, `(f64x2.sub ${widen('$row', 8 * k)} ${widen('$q', 8 * k)})`))}
      ${bump('$row', 32)} ${bump('$q', 32)}
      (br_if $eight (i32.ge_s (local.tee $g (i32.sub ${get('$g')} (i32.const 8))) (i32.const 0))))
    (f64.add
      (f64.add ${lanes64('(local.get $acc0)')} ${lanes64('(local.get $acc1)')})
      (f64.add ${lanes64('(local.get $acc2)')} ${lanes64('(local.get $acc3)')})))`;
}

/**
 * sketch32(x, rows, dim, basis, width, out): out[r][o] = float32 dot product of row r of x with row
 * o of basis (width x dim), four lanes of dim / 4 terms each. Its rounding error is at most
 * (dim / 4 + 2) 2^-24 sum_j |x_j b_oj| <= (dim / 4 + 2) 2^-24 sigma ||x|| per coordinate.
 */
function sketch32(): string {
  const rowBytes = `(i32.shl ${get('$dim')} (i32.const 2))`;
  // `rows` rows (1 or 2) from row $r against basis rows $o..$o+3; each basis vector loaded once serves every row.
  const block = (rows: number): string => `
    (local.set $o (i32.const 0))
    (block $outputsDone
      (loop $outputs
        (br_if $outputsDone (i32.ge_s ${get('$o')} ${get('$width')}))
        ${lines(4, (i) => `(local.set $b${i} (i32.add ${get('$basis')} (i32.mul (i32.add ${get('$o')} (i32.const ${i})) ${rowBytes})))`)}
        ${lines(rows, (k) => `(local.set $xa${k} (i32.add ${get('$x')} (i32.mul (i32.add ${get('$r')} (i32.const ${k})) ${rowBytes})))`)}
        ${lines(rows, (k) => lines(4, (i) => zero(`$acc${k}${i}`)))}
        (local.set $j (i32.shr_u ${get('$dim')} (i32.const 2)))
        (loop $inputs
          ${lines(rows, (k) => `(local.set $xv${k} (v128.load ${get(`$xa${k}`)}))`)}
          ${lines(4, (i) => `(local.set $bv (v128.load ${get(`$b${i}`)}))
          ${lines(rows, (k) => `(local.set $acc${k}${i} (f32x4.add (f32x4.mul (local.get $xv${k}) (local.get $bv)) ${get(`$acc${k}${i}`)}))`)}`)}
          ${lines(rows, (k) => bump(`$xa${k}`, 16))} ${lines(4, (i) => bump(`$b${i}`, 16))}
          (br_if $inputs (local.tee $j (i32.sub ${get('$j')} (i32.const 1)))))
        ${lines(rows, (k) => `
        (local.set $oa (i32.add ${get('$out')} (i32.shl (i32.add (i32.mul (i32.add ${get('$r')} (i32.const ${k})) ${get('$width')}) ${get('$o')}) (i32.const 2))))
        ${lines(4, (i) => `(f32.store offset=${4 * i} ${get('$oa')} ${hsum32(`(local.get $acc${k}${i})`)})`)}`)}
        ${bump('$o', 4)}
        (br $outputs)))`;
  return `
  (func $sketch32 (export "sketch32") (param $x i32) (param $rows i32) (param $dim i32) (param $basis i32) (param $width i32) (param $out i32)
    (local $r i32) (local $o i32) (local $j i32) (local $oa i32) (local $xa0 i32) (local $xa1 i32) ${lines(4, (i) => `(local $b${i} i32)`)}
    ${lines(2, (k) => lines(4, (i) => `(local $acc${k}${i} v128)`))} (local $xv0 v128) (local $xv1 v128) (local $bv v128)
    (block $pairsDone
      (loop $pair
        (br_if $pairsDone (i32.gt_s (i32.add ${get('$r')} (i32.const 2)) ${get('$rows')}))
        ${block(2)}
        ${bump('$r', 2)}
        (br $pair)))
    (if (i32.lt_s ${get('$r')} ${get('$rows')}) (then ${block(1)})))`;
}

/** Float32 rounding of a search sketch distance (at most 128 terms) stays below 1e-5 relative. */
export const SEARCH_SUM_FACTOR = 1 - 1e-5;
export const SEARCH_SLACK = 1 + 1e-6;

/**
 * refine(L, count, full, width, sq, bank, q, dim, tau, sigma, err, outIdx, outD2, update, lMax) -> found:
 * for rows b with L[b] within the threshold of tau, adds the rest of the sketch (full rows of
 * `width` floats; the first SEARCH_HEAD are already in L) and, still within, computes the exact
 * distance; rows at most tau are written out. With `update`, tau follows the smallest distance found.
 */
function refine(): string {
  // $thr = float32(((sigma * sqrt(tau) + err)^2 / SUM_FACTOR) * SLACK): the sketch distance above
  // which the true distance provably exceeds tau; $lthr = min($thr, lMax) tests the head bound L.
  const setThreshold = `
    (local.set $lthr (f32.min
      (local.tee $thr (f32.demote_f64 (f64.mul
        (f64.mul (local.tee $d2 (f64.add (f64.mul ${get('$sigma')} (f64.sqrt ${get('$tau')})) ${get('$err')})) (local.get $d2))
        (f64.const ${SEARCH_SLACK / SEARCH_SUM_FACTOR}))))
      ${get('$lMax')}))`;
  // Adds $g more sketch coordinates (a multiple of 8) to $acc0/$acc1, then leaves the row ($skip)
  // when L + the partial sum exceeds $thr.
  const tailStage = `
    (block $stageDone
      (br_if $stageDone (i32.eqz ${get('$g')}))
      (loop $eight
        ${step32('$acc0', '$a', '$p', 0)}
        ${step32('$acc1', '$a', '$p', 16)}
        ${bump('$a', 32)} ${bump('$p', 32)}
        (br_if $eight (local.tee $g (i32.sub ${get('$g')} (i32.const 8))))))
    (br_if $skip (f32.gt (f32.add ${get('$lv')} ${foldSum32}) ${get('$thr')}))`;
  return `
  (func $refine (export "refine")
    (param $l i32) (param $count i32) (param $full i32) (param $width i32) (param $sq i32) (param $bank i32) (param $q i32) (param $dim i32)
    (param $tau f64) (param $sigma f64) (param $err f64) (param $outIdx i32) (param $outD2 i32) (param $update i32) (param $lMax f32)
    (result i32)
    (local $b i32) (local $r i32) (local $a i32) (local $p i32) (local $g i32) (local $found i32)
    (local $thr f32) (local $lv f32) (local $acc0 v128) (local $acc1 v128) (local $e v128) (local $d2 f64) (local $lthr f32)
    ${setThreshold}
    (block $exit
      (loop $group
        (br_if $exit (i32.ge_s ${get('$b')} ${get('$count')}))
        ;; No lane of this group of four within the threshold: skip it whole.
        (if (i32.eqz (v128.any_true (f32x4.le (v128.load ${at('$l', '$b', 2)}) (f32x4.splat ${get('$lthr')}))))
          (then ${bump('$b', 4)} (br $group)))
        (local.set $r (i32.const 4))
        (loop $lane
          (block $skip
            (br_if $exit (i32.ge_s ${get('$b')} ${get('$count')}))
            (br_if $skip (f32.gt (local.tee $lv (f32.load ${at('$l', '$b', 2)})) ${get('$lthr')}))
            ${zero('$acc0')} ${zero('$acc1')}
            (local.set $a (i32.add (i32.add ${get('$full')} (i32.mul ${get('$b')} (i32.shl ${get('$width')} (i32.const 2)))) (i32.const ${4 * SEARCH_HEAD})))
            (local.set $p (i32.add ${get('$sq')} (i32.const ${4 * SEARCH_HEAD})))
            ;; Two stages: the next (up to) 32 coordinates, then the rest.
            (local.set $g (i32.sub ${get('$width')} (i32.const ${SEARCH_HEAD})))
            (local.set $g (select ${get('$g')} (i32.const 32) (i32.lt_s ${get('$g')} (i32.const 32))))
            ${tailStage}
            (local.set $g (i32.sub ${get('$width')} (i32.const ${SEARCH_HEAD + 32})))
            (local.set $g (select ${get('$g')} (i32.const 0) (i32.gt_s ${get('$g')} (i32.const 0))))
            ${tailStage}
            (br_if $skip (f64.gt
              (local.tee $d2 (call $exact (i32.add ${get('$bank')} (i32.mul ${get('$b')} (i32.shl ${get('$dim')} (i32.const 2)))) ${get('$q')} ${get('$dim')}))
              ${get('$tau')}))
            (i32.store ${at('$outIdx', '$found', 2)} ${get('$b')})
            (f64.store ${at('$outD2', '$found', 3)} ${get('$d2')})
            ${bump('$found', 1)}
            (if (i32.and ${get('$update')} (f64.lt ${get('$d2')} ${get('$tau')}))
              (then (local.set $tau ${get('$d2')}) ${setThreshold})))
          ${bump('$b', 1)}
          (br_if $lane (local.tee $r (i32.sub ${get('$r')} (i32.const 1)))))
        (br $group)))
    ${get('$found')})`;
}

/** The whole module's text: one memory imported as env.memory (shared: a shared memory of at most 4 GiB), every kernel exported by name. */
export function kernelsWat(shared = false): string {
  return `(module
  (import "env" "memory" (memory 1${shared ? ' 65536 shared' : ''}))
${[dist2Many(), screened(), scanAll(), near(), project(), scanHead(), findFirst(), exact(), sketch32(), refine()].join('\n')}
)`;
}

type Fn = (...args: number[]) => number;

/** The exported kernels, by name (argument lists in each kernel's doc above). */
export interface Kernels {
  dist2Many: Fn;
  screened: Fn;
  scanAll: Fn;
  near: Fn;
  project: Fn;
  scanHead: Fn;
  findFirst: Fn;
  exact: Fn;
  sketch32: Fn;
  refine: Fn;
}

const compiled = new Map<boolean, WasmModule | null>();

/**
 * The compiled kernel module, or null where WebAssembly SIMD is unavailable. `shared`: the variant
 * over a shared memory (createMemory(bytes, true)), which kernel threads (threads.ts) run at once.
 */
export function kernelModule(shared = false): WasmModule | null {
  if (!compiled.has(shared)) compiled.set(shared, compileModule(assembleWat(shared ? 'kernels-shared.wat' : 'kernels.wat', kernelsWat(shared))));
  return compiled.get(shared)!;
}
