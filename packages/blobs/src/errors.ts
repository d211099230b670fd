/**
 * Errors of the blob layer. Each condition has one class, told apart by `err.name`, and a
 * stable `code` that crosses process boundaries (BLOB_GET replies, hl-service's put
 * replies, hl-cli). `BLOB_ERRORS` is the single table of those codes; hl-service's table
 * (`@mtc/hash-lookup` ERRORS) includes it.
 */

import { type ErrorInfo, errorTable } from '@mtc/p2pnode/errors'

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
] as const satisfies readonly ErrorInfo[]

export type BlobErrorCode = (typeof BLOB_ERRORS)[number]['code']

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

const TABLE = errorTable<typeof BLOB_ERRORS, BlobError>(BLOB_ERRORS, {
  ERR_INVALID_DIGEST: InvalidDigestError,
  ERR_BLOB_TOO_LARGE: BlobTooLargeError,
  ERR_DIGEST_MISMATCH: DigestMismatchError,
  ERR_UNKNOWN_BLOB: BlobNotFoundError,
  ERR_STORAGE_FULL: StorageFullError,
  ERR_QUOTA_EXCEEDED: QuotaExceededError,
})

function defaultMessage(code: BlobErrorCode): string {
  return TABLE.defaultMessage(code)
}

/** Whether `code` is one of BLOB_ERRORS. */
export const isBlobErrorCode = TABLE.isCode
/** Rebuilds the typed error a peer reported as `{ code, message }`. */
export const blobErrorFromCode = TABLE.fromCode
