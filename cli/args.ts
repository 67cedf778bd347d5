// Command-line parsing shared by every sub-command. An option is declared once (cli/options.ts): its flag, the
// placeholder of its value, its zod validation, its default and its help line; a command lists the options it takes,
// and node's parseArgs configuration, the zod object schema and the `--help` text are all derived from that list.
// Errors are UsageErrors, printed as is (no stack) with the command's usage, because it is the user's input that is
// wrong; each names the flag: `patchcore fit: --coreset-ratio: expected a number`.
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { z } from 'zod';
import { UserError } from '../shared/errors.js';

export class UsageError extends UserError {}

/** required: must be given; default: a value when not given; optional: undefined when not given. */
type Presence = 'required' | 'default' | 'optional';

interface OptionSpec {
  flag: string;
  /** The value's placeholder in the help ("<r>", "paper|seed"); null for a switch such as --wait. */
  value: string | null;
  /** Validates the flag's text (a switch: its boolean) and converts it; without presence or repetition. */
  schema: z.ZodType;
  help: string;
  presence: Presence;
  defaultValue?: unknown;
  /** How the help shows the default ("(default 8)"); also kept by optional() where the callee applies it. */
  defaultText?: string;
  multiple: boolean;
}

/**
 * One command-line option. Immutable: the methods return a copy, so a command can take a table entry as declared
 * or adjust its presence (required, a command's own default, optional when the library applies the default) and
 * repetition without declaring the flag again.
 */
export class CliOption<F extends string = string, T = unknown, P extends Presence = Presence, M extends boolean = boolean> {
  declare readonly _types: { value: T; presence: P; multiple: M };

  constructor(readonly spec: OptionSpec & { flag: F }) {}

  get flag(): F {
    return this.spec.flag;
  }

  /** The value when the flag is absent; `text` is how the help shows it (needed when `value` is computed). */
  default(value: T | (() => T), text?: string): CliOption<F, T, 'default', M> {
    if (typeof value === 'function' && text === undefined) {
      throw new Error(`option --${this.flag}: a computed default needs the text the help shows for it`);
    }
    const shown = text ?? showDefault(value);
    return new CliOption({ ...this.spec, presence: 'default', defaultValue: value, defaultText: shown });
  }

  /** Undefined when absent. The help keeps the declared default: the caller or the library applies that one. */
  optional(): CliOption<F, T, 'optional', M> {
    return new CliOption({ ...this.spec, presence: 'optional', defaultValue: undefined });
  }

  /** Undefined when absent, the library applying `text`'s default: the help shows it, the value stays undefined. */
  shownDefault(text: string): CliOption<F, T, 'optional', M> {
    return new CliOption({ ...this.spec, presence: 'optional', defaultValue: undefined, defaultText: text });
  }

  required(): CliOption<F, T, 'required', M> {
    return new CliOption({ ...this.spec, presence: 'required', defaultValue: undefined, defaultText: undefined });
  }

  /** The flag may be given several times; the value is the list. */
  multiple(): CliOption<F, T, P, true> {
    return new CliOption({ ...this.spec, multiple: true });
  }

  /** A command's own help line, for the one flag whose meaning depends on the command (--model: written or read). */
  describe(help: string): CliOption<F, T, P, M> {
    return new CliOption({ ...this.spec, help });
  }
}

type AnyOption = CliOption<string, any, Presence, boolean>;

function showDefault(value: unknown): string | undefined {
  if (value === null) return 'none';
  if (value === false || value === undefined) return undefined;
  return String(value);
}

const FLAG_NAME = /^[a-z][a-z0-9]*(-[a-z0-9]+)*$/;

/** An option taking a value: `--flag <value>`; optional until a default or required() says otherwise. */
export function option<const F extends string, S extends z.ZodType>(
  flag: F, value: string, schema: S, help: string,
): CliOption<F, z.output<S>, 'optional', false> {
  return new CliOption({ flag, value, schema, help, presence: 'optional', multiple: false });
}

/** An option whose value is one of `choices`; the help shows them: `--engine auto|tfjs|onnx`. */
export function choice<const F extends string, const C extends readonly [string, ...string[]]>(
  flag: F, choices: C, help: string,
): CliOption<F, C[number], 'optional', false> {
  return option(flag, choices.join('|'), z.enum(choices), help);
}

/** A switch: `--wait`; false when absent. */
export function toggle<const F extends string>(flag: F, help: string): CliOption<F, boolean, 'default', false> {
  return new CliOption({ flag, value: null, schema: z.boolean(), help, presence: 'default', defaultValue: false, multiple: false });
}

/**
 * The table of every option, keyed by flag. A flag declared twice, or one that is not a lower-case kebab-case
 * name, is refused when the table is built (at start-up), saying which.
 */
export function optionTable<const L extends readonly AnyOption[]>(options: L): { [O in L[number] as O['spec']['flag']]: O } {
  const table: Record<string, AnyOption> = {};
  for (const o of options) {
    if (!FLAG_NAME.test(o.flag)) throw new Error(`option "${o.flag}": a flag is a lower-case kebab-case name without the leading --`);
    if (o.flag in table) throw new Error(`option --${o.flag} is declared twice`);
    table[o.flag] = o;
  }
  return table as { [O in L[number] as O['spec']['flag']]: O };
}

/** A positional argument, named `<name>` in errors; its schema says what is wrong when it is missing. */
export interface Positional<N extends string = string, T = unknown> {
  name: N;
  schema: z.ZodType<T>;
}

export function positional<const N extends string, S extends z.ZodType = z.ZodString>(
  name: N, schema?: S,
): Positional<N, z.output<S>> {
  return { name, schema: (schema ?? z.string({ error: 'is required' })) as z.ZodType<z.output<S>> };
}

/** A heading in a command's option list ("PatchCore only:"). */
export interface Heading {
  heading: string;
}

export function heading(text: string): Heading {
  return { heading: text };
}

type ValueOf<O extends AnyOption> =
  | (O['_types']['multiple'] extends true ? O['_types']['value'][] : O['_types']['value'])
  | (O['_types']['presence'] extends 'optional' ? undefined : never);

export type ParsedOptions<L extends readonly (AnyOption | Heading)[], PS extends readonly Positional[]> = {
  [O in Extract<L[number], AnyOption> as O['spec']['flag']]: ValueOf<O>;
} & {
  [P in PS[number] as P['name']]: P extends Positional<string, infer T> ? T : never;
};

export interface CommandSpec<L extends readonly (AnyOption | Heading)[], PS extends readonly Positional[]> {
  /** As the user types it, and as errors start: "submit train" -> "patchcore submit train: ...". */
  name: string;
  /** What follows `patchcore <name>` in the usage line; by default the positionals, then "[options]". */
  synopsis?: string;
  /** Text under the usage line (what the command does, environment it reads). */
  about?: string;
  positionals?: PS;
  options?: L;
}

export interface Command<Values> {
  name: string;
  usage: string;
  parse(argv: string[]): Values;
}

/** Help lines wrap at this width; continuation lines align with the help column. */
const HELP_WIDTH = 118;
/** The help column sits after the widest flag-and-value up to this width; wider ones push their own help right. */
const MAX_FLAG_WIDTH = 26;

export function defineCommand<const L extends readonly (AnyOption | Heading)[] = [], const PS extends readonly Positional[] = []>(
  spec: CommandSpec<L, PS>,
): Command<ParsedOptions<L, PS>> {
  const entries = spec.options ?? ([] as unknown as L);
  const options = entries.filter((e): e is Extract<L[number], AnyOption> => e instanceof CliOption);
  const positionals = spec.positionals ?? ([] as unknown as PS);
  const names = new Set<string>(positionals.map((p) => p.name));
  if (names.size !== positionals.length) throw new Error(`patchcore ${spec.name}: a positional argument is declared twice`);
  for (const o of options) {
    if (names.has(o.flag)) throw new Error(`patchcore ${spec.name}: option --${o.flag} is declared twice`);
    names.add(o.flag);
  }

  const parseConfig: NonNullable<ParseArgsConfig['options']> = Object.fromEntries(
    options.map((o) => [o.flag, { type: o.spec.value === null ? 'boolean' : 'string', multiple: o.spec.multiple }] as const),
  );
  // Positionals first, then the options in the order listed: the first problem in that order is the one reported.
  const shape: Record<string, z.ZodType> = {};
  for (const p of positionals) shape[p.name] = p.schema;
  for (const o of options) {
    const one = o.spec.schema;
    const value = o.spec.multiple ? z.array(one) : one;
    shape[o.flag] =
      o.spec.presence === 'required' ? present(value)
      : o.spec.presence === 'default' ? value.default(o.spec.defaultValue as never)
      : value.optional();
  }
  const schema = z.object(shape);
  const usage = renderUsage(spec, positionals, entries);

  return {
    name: spec.name,
    usage,
    parse(argv) {
      const prefix = `patchcore ${spec.name}`;
      let parsed: ReturnType<typeof parseArgs>;
      try {
        parsed = parseArgs({ args: argv, options: parseConfig, allowPositionals: positionals.length > 0, strict: true });
      } catch (err) {
        throw new UsageError(`${prefix}: ${(err as Error).message}`);
      }
      if (parsed.positionals.length > positionals.length) {
        throw new UsageError(`${prefix}: unexpected argument "${parsed.positionals[positionals.length]}"`);
      }
      const values: Record<string, unknown> = { ...parsed.values };
      positionals.forEach((p, i) => {
        if (parsed.positionals[i] !== undefined) values[p.name] = parsed.positionals[i];
      });
      const result = schema.safeParse(values);
      if (!result.success) {
        const issue = result.error.issues[0];
        const key = String(issue.path[0] ?? '');
        const where = positionals.some((p) => p.name === key) ? `<${key}>` : `--${key}`;
        throw new UsageError(`${prefix}: ${where}: ${issue.message}`);
      }
      return result.data as ParsedOptions<L, PS>;
    },
  };
}

/** `schema`, with "is required" when the value is absent. */
function present(schema: z.ZodType): z.ZodType {
  return z.custom((v) => v !== undefined, { message: 'is required' }).pipe(schema);
}

function renderUsage(spec: CommandSpec<any, any>, positionals: readonly Positional[], entries: readonly (AnyOption | Heading)[]): string {
  const synopsis = spec.synopsis ?? [...positionals.map((p) => `<${p.name}>`), ...(entries.length ? ['[options]'] : [])].join(' ');
  const lines = [`patchcore ${spec.name}${synopsis ? ` ${synopsis}` : ''}`];
  if (spec.about) lines.push(...spec.about.split('\n').map((l) => `  ${l}`));
  const lefts = entries.map((e) => (e instanceof CliOption ? `--${e.flag}${e.spec.value === null ? '' : ` ${e.spec.value}`}` : ''));
  const column = Math.min(Math.max(0, ...lefts.map((l) => l.length).filter((n) => n <= MAX_FLAG_WIDTH)), MAX_FLAG_WIDTH) + 2;
  entries.forEach((e, i) => {
    if (!(e instanceof CliOption)) {
      lines.push(` ${e.heading}`);
      return;
    }
    const o = e.spec;
    // "(default 8)", but "(default: $PATCHCORE_DATA or the shared bottle set)" for a phrase.
    const shown = o.defaultText === undefined ? '' : `default${o.defaultText.includes(' ') ? ':' : ''} ${o.defaultText}`;
    const note = o.presence === 'required' ? 'required' : shown;
    const help = note ? `${o.help} (${note})` : o.help;
    const left = lefts[i].length < column ? lefts[i].padEnd(column) : `${lefts[i]}  `;
    lines.push(...wrap(`  ${left}${help}`, 2 + column));
  });
  return lines.join('\n');
}

/** Word-wraps one help line to HELP_WIDTH, indenting continuation lines by `indent`. */
function wrap(line: string, indent: number): string[] {
  const out: string[] = [];
  let rest = line;
  while (rest.length > HELP_WIDTH) {
    const cut = rest.lastIndexOf(' ', HELP_WIDTH);
    if (cut <= indent) break;
    out.push(rest.slice(0, cut));
    rest = ' '.repeat(indent) + rest.slice(cut + 1).trimStart();
  }
  out.push(rest);
  return out;
}

/** A number given as a string flag: "0.1" -> 0.1, with the flag named in the error. */
export const numberFlag = z
  .string()
  .trim()
  .refine((s) => s !== '' && Number.isFinite(Number(s)), { message: 'expected a number' })
  .transform(Number);

export const intFlag = numberFlag.refine((n) => Number.isInteger(n), { message: 'expected an integer' });

export const positiveInt = intFlag.refine((n) => n > 0, { message: 'expected a positive integer' });

/** A ratio in (0, 1]: a fraction of patches kept. */
export const ratio = numberFlag.refine((r) => r > 0 && r <= 1, { message: 'expected a ratio in (0, 1]' });

/** "256" -> 256, "none" -> null (for frame sizes that can be switched off). */
export const sizeOrNone = z
  .string()
  .trim()
  .refine((s) => s === 'none' || /^[1-9][0-9]*$/.test(s), { message: 'expected a positive integer or "none"' })
  .transform((s) => (s === 'none' ? null : Number(s)));
