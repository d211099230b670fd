/**
 * Errors of the blob layer. Each condition has one class, told apart by `err.name`, and a
 * stable `code` that crosses process boundaries (BLOB_GET replies, hl-service's put
 * replies, hl-cli). `BLOB_ERRORS` is the single table of those codes; hl-service's table
 * (`@mtc/hash-lookup` ERRORS) includes it.
 */

export interface BlobErrorInfo {
  /** Stable code sent on the wire and printed by the CLI. */
  readonly code: string
  /** `err.name` of the class thrown for this condition. */
  readonly name: string
  /** Default message. */
  readonly message: string
  /** What it means for the operator or client. */
  readonly meaning: string
}

export const BLOB_ERRORS = [
  {
    code: 'ERR_INVALID_DIGEST',
    name: 'InvalidDigestError',
    message: 'Invalid digest',
    meaning: 'A digest is not sha256:<64 lowercase hex>',
  },
  {
    code: 'ERR_BLOB_TOO_LARGE',
    name: 'BlobTooLargeError',
    message: 'Blob too large',
    meaning: 'The upload exceeded the size limit and was discarded',
  },
  {
    code: 'ERR_DIGEST_MISMATCH',
    name: 'DigestMismatchError',
    message: 'Blob digest mismatch',
    meaning: 'The uploaded bytes do not hash to the digest the client announced',
  },
  {
    code: 'ERR_UNKNOWN_BLOB',
    name: 'BlobNotFoundError',
    message: 'Unknown blob',
    meaning: 'No blob with this digest is stored here',
  },
  {
    code: 'ERR_STORAGE_FULL',
    name: 'StorageFullError',
    message: 'Blob storage full',
    meaning:
      "hl-service's disk has no room for the upload (ENOSPC/EDQUOT); it was discarded, nothing else changed",
  },
  {
    code: 'ERR_QUOTA_EXCEEDED',
    name: 'QuotaExceededError',
    message: 'Blob storage quota exceeded',
    meaning:
      'The upload would take the stored tarballs over --max-storage; refused before or while it was read',
  },
] as const satisfies readonly BlobErrorInfo[]

export type BlobErrorCode = (typeof BLOB_ERRORS)[number]['code']

function defaultMessage(code: BlobErrorCode): string {
  return BLOB_ERRORS.find((e) => e.code === code)!.message
}

/** Base of every error in this package; `code` is one of `BLOB_ERRORS`. */
export abstract class BlobError extends Error {
  abstract readonly code: BlobErrorCode
}

export class InvalidDigestError extends BlobError {
  static readonly code = 'ERR_INVALID_DIGEST'
  override readonly name = 'InvalidDigestError'
  readonly code = InvalidDigestError.code
  constructor(message = defaultMessage('ERR_INVALID_DIGEST'), options?: ErrorOptions) {
    super(message, options)
  }
}

export class BlobTooLargeError extends BlobError {
  static readonly code = 'ERR_BLOB_TOO_LARGE'
  override readonly name = 'BlobTooLargeError'
  readonly code = BlobTooLargeError.code
  constructor(message = defaultMessage('ERR_BLOB_TOO_LARGE'), options?: ErrorOptions) {
    super(message, options)
  }
}

export class DigestMismatchError extends BlobError {
  static readonly code = 'ERR_DIGEST_MISMATCH'
  override readonly name = 'DigestMismatchError'
  readonly code = DigestMismatchError.code
  constructor(message = defaultMessage('ERR_DIGEST_MISMATCH'), options?: ErrorOptions) {
    super(message, options)
  }
}

export class BlobNotFoundError extends BlobError {
  static readonly code = 'ERR_UNKNOWN_BLOB'
  override readonly name = 'BlobNotFoundError'
  readonly code = BlobNotFoundError.code
  constructor(message = defaultMessage('ERR_UNKNOWN_BLOB'), options?: ErrorOptions) {
    super(message, options)
  }
}

export class StorageFullError extends BlobError {
  static readonly code = 'ERR_STORAGE_FULL'
  override readonly name = 'StorageFullError'
  readonly code = StorageFullError.code
  constructor(message = defaultMessage('ERR_STORAGE_FULL'), options?: ErrorOptions) {
    super(message, options)
  }
}

export class QuotaExceededError extends BlobError {
  static readonly code = 'ERR_QUOTA_EXCEEDED'
  override readonly name = 'QuotaExceededError'
  readonly code = QuotaExceededError.code
  constructor(message = defaultMessage('ERR_QUOTA_EXCEEDED'), options?: ErrorOptions) {
    super(message, options)
  }
}

const CLASSES: Record<BlobErrorCode, new (message?: string) => BlobError> = {
  ERR_INVALID_DIGEST: InvalidDigestError,
  ERR_BLOB_TOO_LARGE: BlobTooLargeError,
  ERR_DIGEST_MISMATCH: DigestMismatchError,
  ERR_UNKNOWN_BLOB: BlobNotFoundError,
  ERR_STORAGE_FULL: StorageFullError,
  ERR_QUOTA_EXCEEDED: QuotaExceededError,
}

export function isBlobErrorCode(code: unknown): code is BlobErrorCode {
  return typeof code === 'string' && Object.hasOwn(CLASSES, code)
}

/** Rebuilds the typed error a peer reported as `{ code, message }`. */
export function blobErrorFromCode(code: BlobErrorCode, message?: string): BlobError {
  return new CLASSES[code](message)
}
