// Typed errors: every failure names a code, the operation and the object it concerned.

export type ErrorCode =
  | 'INVALID_ARGUMENT'
  | 'NOT_FOUND'
  | 'ALREADY_EXISTS'
  | 'CONFLICT'
  | 'FORBIDDEN'
  | 'KERNEL_FEATURE_MISSING'
  | 'KERNEL_ERROR'
  | 'MALFORMED_REPLY'
  | 'TIMEOUT'
  | 'CLOSED'
  | 'EXHAUSTED'
  /** A remote plugin refused a call or could not be reached (its own errors: details.status, details.pluginMessage). */
  | 'PLUGIN_ERROR'
  | 'INTERNAL';

export interface ErrorDetails {
  op: string;
  object?: string;
  errno?: string;
  cause?: unknown;
  [extra: string]: unknown;
}

export class CnmdError extends Error {
  readonly code: ErrorCode;
  readonly op: string;
  readonly object?: string;
  readonly errno?: string;
  readonly details: ErrorDetails;

  constructor(code: ErrorCode, message: string, details: ErrorDetails) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = 'CnmdError';
    this.code = code;
    this.op = details.op;
    this.object = details.object;
    this.errno = details.errno;
    this.details = details;
  }

  toJSON(): Record<string, unknown> {
    return { code: this.code, message: this.message, op: this.op, object: this.object, errno: this.errno };
  }
}

export function invalidArgument(op: string, object: string | undefined, message: string): CnmdError {
  return new CnmdError('INVALID_ARGUMENT', `${op}: ${message}`, { op, object });
}
