// Command-line parsing shared by every sub-command: node's parseArgs for the syntax, zod for the values, and one
// error type whose message is printed as is (no stack) because it is the user's input that is wrong.
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { z } from 'zod';

export class UsageError extends Error {}

type Options = NonNullable<ParseArgsConfig['options']>;

export function parseCommand<S extends z.ZodType>(
  command: string,
  argv: string[],
  options: Options,
  schema: S,
  positionalNames: string[] = [],
): z.infer<S> {
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({ args: argv, options, allowPositionals: positionalNames.length > 0, strict: true });
  } catch (err) {
    throw new UsageError(`patchcore ${command}: ${(err as Error).message}`);
  }
  const values: Record<string, unknown> = { ...parsed.values };
  positionalNames.forEach((name, i) => {
    if (parsed.positionals[i] !== undefined) values[name] = parsed.positionals[i];
  });
  if (parsed.positionals.length > positionalNames.length) {
    throw new UsageError(`patchcore ${command}: unexpected argument "${parsed.positionals[positionalNames.length]}"`);
  }
  const result = schema.safeParse(values);
  if (!result.success) {
    const issue = result.error.issues[0];
    const name = String(issue.path[0] ?? '');
    const flag = positionalNames.includes(name) ? `<${name}>` : `--${name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
    throw new UsageError(`patchcore ${command}: ${flag}: ${issue.message}`);
  }
  return result.data;
}

/** A number given as a string flag: "0.1" -> 0.1, with the flag named in the error. */
export const numberFlag = z
  .string()
  .trim()
  .refine((s) => s !== '' && Number.isFinite(Number(s)), { message: 'expected a number' })
  .transform(Number);

export const intFlag = numberFlag.refine((n) => Number.isInteger(n), { message: 'expected an integer' });

/** "256" -> 256, "none" -> null (for frame sizes that can be switched off). */
export const sizeOrNone = z
  .string()
  .trim()
  .refine((s) => s === 'none' || /^[1-9][0-9]*$/.test(s), { message: 'expected a positive integer or "none"' })
  .transform((s) => (s === 'none' ? null : Number(s)));
