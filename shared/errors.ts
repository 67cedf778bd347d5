// The error classes that decide what happens next, shared by the pure modules, the CLI and the workers. Pure
// modules throw these without knowing about queues; the worker runtime turns a PermanentError into BullMQ's
// UnrecoverableError (the job fails at once, no retries), and the CLI prints a UserError's message without a stack.

/** Retrying cannot help: the same input fails the same way (a malformed payload, a model that does not match). */
export class PermanentError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** Something the user must fix (a flag, a data set, a weights file, a model folder); the message names it. */
export class UserError extends PermanentError {}

/** A job payload that fails validation or names keys outside its prefix. */
export class InvalidPayloadError extends PermanentError {}

/** Backbone weights that differ from the ones a model was trained with. */
export class WeightsMismatchError extends UserError {}

/** A model whose files disagree with its manifest or with the run that uses it (recipe, dims, bank size). */
export class ModelMismatchError extends UserError {}

export function isPermanent(err: unknown): err is PermanentError {
  return err instanceof PermanentError;
}
