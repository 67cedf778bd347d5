// The option table and the command definitions derived from it: every flag declared once, every command's help
// listing each of its options once, and bad values refused with the command and the flag named. The end-to-end
// behaviour (the exit code, the usage printed after the error) is covered by test/cli-local.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { z } from 'zod';
import { join } from 'node:path';
import { defaultDatasetDir, defaultWeightsPath, sharedDir } from '../shared/paths.js';
import { UsageError, defineCommand, option, optionTable, positional, positiveInt, toggle } from './args.js';
import { OPTIONS, frameSpecFromOptions } from './options.js';
import { BENCHMARK } from './commands/benchmark.js';
import { DEMO } from './commands/demo.js';
import { CANCEL, GC, RETRY } from './commands/ops.js';
import { EVALUATE, FIT } from './commands/local.js';
import {
  INGEST, REPORT_GET, SCHEDULE_LIST, SCHEDULE_REMOVE, SCHEDULE_SET, STATUS, SUBMIT_EVALUATE, SUBMIT_SCORE, SUBMIT_TRAIN, WORKER,
} from './commands/pipeline.js';

const COMMANDS = [FIT, EVALUATE, DEMO, BENCHMARK, INGEST, SUBMIT_TRAIN, SUBMIT_EVALUATE, SUBMIT_SCORE, STATUS, WORKER, REPORT_GET, SCHEDULE_SET, SCHEDULE_LIST, SCHEDULE_REMOVE, GC, RETRY, CANCEL];

/** The flags a help text documents: lines starting with "  --flag". */
const helpFlags = (usage: string) => [...usage.matchAll(/^ {2}--([a-z0-9-]+)/gm)].map((m) => m[1]);

/** The message of the UsageError that parsing `argv` throws. */
function usageError(parse: () => unknown): string {
  try {
    parse();
  } catch (err) {
    assert.ok(err instanceof UsageError, `expected a UsageError, got ${String(err)}`);
    return err.message;
  }
  assert.fail('expected a UsageError');
}

test('every option of the table is documented by the commands that take it, each exactly once', () => {
  const documented = new Set<string>();
  for (const c of COMMANDS) {
    const flags = helpFlags(c.usage);
    assert.deepEqual(flags, [...new Set(flags)], `${c.name}: an option listed twice in\n${c.usage}`);
    for (const f of flags) {
      assert.ok(f in OPTIONS, `${c.name}: --${f} is not in the option table`);
      documented.add(f);
    }
    for (const line of c.usage.split('\n')) assert.ok(line.length <= 118, `${c.name}: help line too long: ${line}`);
  }
  assert.deepEqual(Object.keys(OPTIONS).filter((f) => !documented.has(f)), [], 'options no command takes');
});

test('the help is derived from the table: value placeholders, choices, defaults and required options', () => {
  assert.match(FIT.usage, /^patchcore fit --data <category dir> --model <model dir> \[options\]$/m);
  assert.match(FIT.usage, /^ {2}--method patchcore\|autoencoder {2}what to train; the model folder records it \(default patchcore\)$/m);
  assert.match(FIT.usage, /^ {2}--model <dir> +where to write the model folder \(required\)$/m);
  assert.match(FIT.usage, /^ {2}--coreset-ratio <r> +fraction of training patches kept in the bank \(default: 0\.1 for paper, 0\.01 for seed\)$/m);
  assert.match(FIT.usage, /^ {2}--engine auto\|tfjs\|onnx +backbone engine; .*\(default auto\)$/m);
  assert.match(FIT.usage, /\(default: \$PATCHCORE_WEIGHTS or the shared file\)/);
  // Sections: each method's options under its heading, in that order.
  const patchcore = FIT.usage.indexOf(' PatchCore only:');
  const autoencoder = FIT.usage.indexOf(' Autoencoder only');
  assert.ok(patchcore > 0 && autoencoder > patchcore);
  assert.ok(FIT.usage.indexOf('--recipe') > patchcore && FIT.usage.indexOf('--recipe') < autoencoder);
  assert.ok(FIT.usage.indexOf('--epochs') > autoencoder);
  assert.match(EVALUATE.usage, /Give it more\s+than once to compare models/);
  assert.match(DEMO.usage, /^ {2}--out <dir> +.*\(default \.\/patchcore-demo\)$/m);
  assert.match(SUBMIT_TRAIN.usage, /^ {2}--wait {2,}wait for the run and show its progress$/m);
  assert.match(WORKER.usage, /^patchcore worker <features\|index\|score\|scheduler>$/m);
  assert.match(SCHEDULE_REMOVE.usage, /^patchcore schedule remove <category>$/m);
  assert.equal(SCHEDULE_LIST.usage, 'patchcore schedule list');
});

test('a flag declared twice is refused at start-up, in the table or in a command', () => {
  assert.throws(
    () => optionTable([option('seed', '<n>', positiveInt, 'a seed'), toggle('wait', 'wait'), option('seed', '<s>', z.string(), 'another seed')]),
    { message: 'option --seed is declared twice' },
  );
  assert.throws(() => optionTable([option('batchSize', '<n>', positiveInt, 'camel case')]), /option "batchSize": a flag is a lower-case kebab-case name/);
  assert.throws(() => optionTable([option('--seed', '<n>', positiveInt, 'dashes')]), /option "--seed": a flag is a lower-case kebab-case name/);
  assert.throws(() => defineCommand({ name: 'x', options: [OPTIONS.seed, OPTIONS.resize, OPTIONS.seed] }), {
    message: 'patchcore x: option --seed is declared twice',
  });
  // The same flag from the table and adjusted by the command is still one flag.
  assert.throws(() => defineCommand({ name: 'x', options: [OPTIONS.model, OPTIONS.model.multiple()] }), {
    message: 'patchcore x: option --model is declared twice',
  });
  assert.throws(() => defineCommand({ name: 'x', positionals: [positional('dataset')], options: [OPTIONS.dataset] }), {
    message: 'patchcore x: option --dataset is declared twice',
  });
  assert.throws(() => defineCommand({ name: 'x', positionals: [positional('dir'), positional('dir')] }), {
    message: 'patchcore x: a positional argument is declared twice',
  });
  // A default the help cannot show is refused too.
  assert.throws(() => option('out', '<dir>', z.string(), 'where').default(() => '/tmp'), {
    message: 'option --out: a computed default needs the text the help shows for it',
  });
});

test('a bad value is refused naming the command and the flag', () => {
  const fit = (...argv: string[]) => usageError(() => FIT.parse(['--model', 'm', ...argv]));
  assert.equal(fit('--coreset-ratio', 'abc'), 'patchcore fit: --coreset-ratio: expected a number');
  assert.equal(fit('--coreset-ratio', '1.5'), 'patchcore fit: --coreset-ratio: expected a ratio in (0, 1]');
  assert.equal(fit('--seed', '1.5'), 'patchcore fit: --seed: expected an integer');
  assert.equal(fit('--batch-size', '0'), 'patchcore fit: --batch-size: expected a positive integer');
  assert.equal(fit('--crop', 'abc'), 'patchcore fit: --crop: expected a positive integer or "none"');
  assert.equal(fit('--validation-split', '1'), 'patchcore fit: --validation-split: expected a fraction in [0, 1)');
  assert.equal(fit('--input-size', '100'), 'patchcore fit: --input-size: expected a multiple of 16');
  assert.equal(fit('--learning-rate', '2'), 'patchcore fit: --learning-rate: expected a rate in (0, 1)');
  assert.equal(fit('--method', 'vae'), 'patchcore fit: --method: Invalid option: expected one of "patchcore"|"autoencoder"');
  assert.equal(fit('--engine', 'cuda'), 'patchcore fit: --engine: Invalid option: expected one of "auto"|"tfjs"|"onnx"');
  assert.equal(fit('--wait'), "patchcore fit: Unknown option '--wait'");
  assert.equal(fit('extra'), "patchcore fit: Unexpected argument 'extra'. This command does not take positional arguments");
  assert.equal(usageError(() => FIT.parse([])), 'patchcore fit: --model: is required');
  assert.equal(usageError(() => EVALUATE.parse(['--out', 'e'])), 'patchcore evaluate: --model: is required');
  assert.equal(usageError(() => EVALUATE.parse(['--model', 'm', '--out', 'e', '--recall-sample=-1'])), 'patchcore evaluate: --recall-sample: expected 0 or more');
  assert.equal(usageError(() => DEMO.parse(['--feature-workers', '17'])), 'patchcore demo: --feature-workers: expected 1 to 16');
  assert.equal(usageError(() => SUBMIT_TRAIN.parse([])), 'patchcore submit train: --dataset: is required');
  assert.equal(usageError(() => SUBMIT_TRAIN.parse(['--dataset', 'd', '--wait=x'])), "patchcore submit train: Option '--wait' does not take an argument");
  assert.equal(usageError(() => SUBMIT_EVALUATE.parse(['--dataset', 'd', '--shard-size', 'x'])), 'patchcore submit evaluate: --shard-size: expected a number');
  assert.equal(usageError(() => SCHEDULE_SET.parse(['c', '--dataset', 'd'])), 'patchcore schedule set: --cron: is required');
  // Positionals are named <name>.
  assert.equal(usageError(() => INGEST.parse(['--dataset', 'd'])), 'patchcore ingest: <dir>: is required');
  assert.equal(usageError(() => REPORT_GET.parse(['r'])), 'patchcore report get: <dir>: is required');
  assert.equal(usageError(() => STATUS.parse(['a', 'b'])), 'patchcore status: unexpected argument "b"');
  assert.equal(usageError(() => WORKER.parse([])), 'patchcore worker: <kind>: expected features, index, score or scheduler');
  assert.equal(usageError(() => WORKER.parse(['gpu'])), 'patchcore worker: <kind>: expected features, index, score or scheduler');
});

test('parsed values: converted, with the defaults of the table or of the command, undefined where the library decides', () => {
  // The frame: a preset (whole by default), --resize and --crop undefined unless given, then overriding the preset.
  assert.deepEqual(FIT.parse(['--model', 'm']), {
    method: 'patchcore', data: defaultDatasetDir(), model: 'm', seed: 0, frame: 'whole', 'batch-size': 8,
  });
  assert.deepEqual(frameSpecFromOptions(FIT.parse(['--model', 'm'])), { resize: 256, crop: null });
  assert.deepEqual(frameSpecFromOptions(FIT.parse(['--model', 'm', '--frame', 'paper'])), { resize: 256, crop: 224 });
  const paperNoResize = FIT.parse(['--model', 'm', '--frame', 'paper', '--resize', 'none', '--coreset-ratio', ' 0.25 ', '--engine', 'onnx', '--limit', '3']);
  assert.deepEqual(paperNoResize, {
    method: 'patchcore', data: defaultDatasetDir(), model: 'm', seed: 0, frame: 'paper', resize: null, 'batch-size': 8, limit: 3,
    'coreset-ratio': 0.25, engine: 'onnx',
  });
  assert.deepEqual(frameSpecFromOptions(paperNoResize), { resize: null, crop: 224 });
  assert.deepEqual(frameSpecFromOptions(FIT.parse(['--model', 'm', '--crop', '224'])), { resize: 256, crop: 224 });
  assert.deepEqual(frameSpecFromOptions(FIT.parse(['--model', 'm', '--tile', '128'])), { resize: 256, crop: null, tile: 128, tileOverlap: 32 });
  assert.deepEqual(frameSpecFromOptions(FIT.parse(['--model', 'm', '--resize', 'none', '--tile', '512', '--tile-overlap', '64'])),
    { resize: null, crop: null, tile: 512, tileOverlap: 64 });
  const frameError = (...argv: string[]) => usageError(() => frameSpecFromOptions(FIT.parse(['--model', 'm', ...argv])));
  assert.equal(frameError('--frame', 'paper', '--tile', '128'),
    '--tile needs the whole image, but the frame crops to 224: leave --frame at whole and --crop unset (or none)');
  assert.equal(frameError('--tile-overlap', '16'), '--tile-overlap needs --tile');
  assert.equal(frameError('--tile', '128', '--tile-overlap', '128'), '--tile-overlap 128 must be smaller than --tile 128');
  assert.equal(usageError(() => FIT.parse(['--model', 'm', '--tile', '100'])), 'patchcore fit: --tile: expected a multiple of 16');
  assert.equal(usageError(() => FIT.parse(['--model', 'm', '--frame', 'square'])), 'patchcore fit: --frame: Invalid option: expected one of "whole"|"paper"');
  assert.deepEqual(EVALUATE.parse(['--model', 'a', '--model', 'b', '--out', 'e']), {
    model: ['a', 'b'], data: defaultDatasetDir(), out: 'e', weights: defaultWeightsPath(), engine: 'auto', 'batch-size': 8,
    'recall-sample': 2000, threshold: 'f1-max',
  });
  assert.deepEqual(DEMO.parse([]), {
    data: defaultDatasetDir(), out: 'patchcore-demo', 'feature-workers': 1, 'shard-size': 32, weights: defaultWeightsPath(),
  });
  assert.deepEqual(SUBMIT_EVALUATE.parse(['--dataset', 'd', '--wait']), { dataset: 'd', 'shard-size': 32, wait: true, 'model-version': 'latest' });
  // A schedule records only what was given: each run applies the defaults of its time.
  assert.deepEqual(SCHEDULE_SET.parse(['bottle', '--dataset', 'd', '--cron', '0 3 * * *']), { category: 'bottle', dataset: 'd', cron: '0 3 * * *' });
  assert.deepEqual(WORKER.parse(['index']), { kind: 'index' });
  assert.deepEqual(REPORT_GET.parse(['r', 'd']), { run: 'r', dir: 'd' });
});

test('benchmark: the categories as a list, the shared datasets folder by default, model settings undefined unless given', () => {
  assert.deepEqual(BENCHMARK.parse(['--out', 'bm']), {
    data: join(sharedDir(), 'datasets'), out: 'bm', compare: false, distributed: false, weights: defaultWeightsPath(),
  });
  assert.deepEqual(BENCHMARK.parse(['--out', 'bm', '--categories', ' bottle, capsules ', '--compare', '--crop', 'none']), {
    data: join(sharedDir(), 'datasets'), out: 'bm', categories: ['bottle', 'capsules'], compare: true, distributed: false,
    weights: defaultWeightsPath(), crop: null,
  });
  assert.equal(usageError(() => BENCHMARK.parse(['--out', 'bm', '--coreset-ratio', '2'])), 'patchcore benchmark: --coreset-ratio: expected a ratio in (0, 1]');
  assert.match(BENCHMARK.usage, /^patchcore benchmark --data <root> --out <dir> \[--categories a,b\] \[--compare\] \[--distributed\] \[options\]$/m);
});
