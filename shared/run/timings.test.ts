import { test } from 'node:test';
import assert from 'node:assert/strict';
import { jobTimingRows, jobTimings, queueWaitMs, sumJobTimings } from './timings.js';

test('jobTimings splits compute from storage; decode_wait and total count as neither', () => {
  const t = jobTimings({ decode: 10, backbone: 30, decode_wait: 5, download: 7, upload: 3, load_model: 2, total: 99 }, 4);
  assert.deepEqual({ ...t, by_stage_ms: undefined }, { jobs: 1, compute_ms: 40, storage_ms: 12, queue_wait_ms: 4, by_stage_ms: undefined });
  const sum = sumJobTimings([t, jobTimings({ backbone: 1 }, 6)]);
  assert.deepEqual([sum.jobs, sum.compute_ms, sum.storage_ms, sum.queue_wait_ms, sum.by_stage_ms.backbone], [2, 41, 12, 10, 31]);
  assert.equal(sumJobTimings([t, jobTimings({}, null)]).queue_wait_ms, null);
  assert.deepEqual(jobTimingRows({ score: sum }), { 'score compute (2 jobs)': 41, 'score storage': 12, 'score queue wait': 10 });
});

test('queueWaitMs: from added (or the last child finished) to taken; unknown before a worker took it', () => {
  assert.equal(queueWaitMs({ timestamp: 1000, processedOn: 1250 }), 250);
  assert.equal(queueWaitMs({ timestamp: 1000, processedOn: 1250 }, 1200), 50);
  assert.equal(queueWaitMs({ timestamp: 1000 }), null);
  assert.equal(queueWaitMs(undefined), null);
});
