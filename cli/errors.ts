/** Errors the CLI turns into a message and a documented exit code, never a stack trace. */
import { ExitCode, REFUSAL_FAILURES } from '../lib/failures';

export class CliError extends Error {
  constructor(message: string, readonly exitCode: number = ExitCode.BadInput) {
    super(message);
    this.name = 'CliError';
  }
}

/** Failure types a workflow raises when a safety rule refused the run (exit 3). */
export const REFUSAL_TYPES: ReadonlySet<string> = new Set(REFUSAL_FAILURES);
