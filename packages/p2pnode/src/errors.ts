/** A command line or environment value that cannot be used: printed as one line, exit 2. */
export class UsageError extends Error {
  static readonly code = 'ERR_USAGE'
  override readonly name = 'UsageError'
  readonly code = UsageError.code
}

/** A PSK file or passphrase that does not give a valid 32-byte key. */
export class InvalidPskError extends Error {
  static readonly code = 'ERR_INVALID_PSK'
  override readonly name = 'InvalidPskError'
  readonly code = InvalidPskError.code
}

/** A key file that exists but does not hold a private key. */
export class InvalidKeyFileError extends Error {
  static readonly code = 'ERR_INVALID_KEY_FILE'
  override readonly name = 'InvalidKeyFileError'
  readonly code = InvalidKeyFileError.code
}

/** One row of a package's error table (its codes, listed in docs/ERRORS.md). */
export interface ErrorInfo {
  /** Stable code sent on the wire and printed by the CLI. */
  readonly code: string
  /** `err.name` of the class thrown for this condition. */
  readonly name: string
  /** Default message. */
  readonly message: string
  /** What it means for the operator or client. */
  readonly meaning: string
}

/** What a package makes of its error table and the class of each code. */
export interface ErrorTable<Code extends string, E extends Error> {
  /** Whether `code` (e.g. from a peer's reply) is one of the table's. */
  isCode(code: unknown): code is Code
  /** Rebuilds the typed error a peer reported as `{ code, message }`. */
  fromCode(code: Code, message?: string): E
  /** The table's default message of `code`. */
  defaultMessage(code: Code): string
}

/**
 * One shape of error table for every package: `infos` lists the codes (docs read it),
 * `classes` gives the class thrown for each. Classes may call `defaultMessage` in their
 * constructors: it is read when an error is made, after the module has loaded.
 */
export function errorTable<const Infos extends readonly ErrorInfo[], E extends Error>(
  infos: Infos,
  classes: Record<Infos[number]['code'], new (message?: string) => E>,
): ErrorTable<Infos[number]['code'], E> {
  type Code = Infos[number]['code']
  return {
    isCode: (code: unknown): code is Code =>
      typeof code === 'string' && Object.hasOwn(classes, code),
    fromCode: (code, message) => new classes[code](message),
    defaultMessage: (code) => infos.find((e) => e.code === code)!.message,
  }
}
