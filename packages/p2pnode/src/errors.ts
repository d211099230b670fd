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
