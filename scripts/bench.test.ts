import { test } from 'node:test';
import assert from 'node:assert/strict';
import { compareStages, formatTable, ourStages, referenceStages, STAGES } from './bench.js';

// timings_s keys as ref_patchcore.py writes them.
const refTimings = {
  train_decode_preprocess_s: 4.5, test_decode_preprocess_s: 1.9, train_forward_s: 9, test_forward_s: 3.6,
  train_aggregate_s: 17.6, test_aggregate_s: 7, coreset_s: 58, faiss_index_build_s: 0.02, test_knn_s: 13.1,
  test_maps_s: 0.8, total_wall_s: 120,
};

test('stages map fit/evaluate timers and the reference JSON onto the same names', () => {
  const ours = ourStages(
    { decode: 9000, backbone: 4500, features: 1900, coreset: 8000, index: 6500, total: 30000 },
    { decode: 3000, backbone: 1500, features: 700, scoring: 7000, maps: 400, total: 15000 },
    45,
  );
  const want = { decode: 12, backbone: 6, features: 2.6, coreset: 8, index: 6.5, scoring: 7, maps: 0.4, total: 45 };
  for (const st of STAGES) assert.ok(Math.abs(ours[st] - want[st]) < 1e-9, `${st}: ${ours[st]}`);
  const ref = referenceStages(refTimings);
  assert.ok(Math.abs(ref.decode - 6.4) < 1e-9 && Math.abs(ref.backbone - 12.6) < 1e-9 && Math.abs(ref.features - 24.6) < 1e-9);
  assert.equal(ref.coreset, 58);
  assert.equal(ref.scoring, 13.1);
  assert.equal(ref.total, 120);
  const { test_knn_s: _, ...missing } = refTimings;
  assert.throws(() => referenceStages(missing), /timings_s\.test_knn_s is missing/);
});

test('ratio is reference / ours per stage, and the table shows it with throughput for per-image stages', () => {
  const ours = ourStages({ decode: 10000, backbone: 5000, features: 2000, coreset: 10000, index: 5000 }, { scoring: 5000, maps: 500 }, 60);
  const rows = compareStages(ours, referenceStages(refTimings));
  assert.deepEqual(Object.keys(rows), [...STAGES]);
  assert.equal(rows.coreset.ratio, 5.8);
  assert.equal(rows.total.ratio, 2);
  assert.equal(rows.backbone.ours, 5);
  const table = formatTable(rows, 292);
  assert.match(table, /^stage\s+ours s\s+ours img\/s\s+ref s\s+ref img\/s\s+ref\/ours$/m);
  assert.match(table, /^backbone\s+5\.00\s+58\.4\s+12\.60\s+23\.2\s+2\.52x$/m);
  assert.match(table, /^coreset\s+10\.00\s+58\.00\s+5\.80x$/m);
  // Without the reference: our columns only.
  assert.doesNotMatch(formatTable(compareStages(ours), 292), /ref/);
});
