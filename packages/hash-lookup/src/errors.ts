/**
 * Errors of the hl-service storage layer. Each condition has one class, told apart by
 * `err.name`, and a stable `code` that crosses process boundaries (wire protocol, CLI).
 * `ERRORS` is the single table of those codes; docs and the protocol read it. It includes
 * the blob layer's (`@mtc/blobs`), whose errors hl-service's uploads and blob replies carry.
 */

import {
  BLOB_ERRORS,
  type BlobError,
  BlobNotFoundError,
  BlobTooLargeError,
  DigestMismatchError,
  InvalidDigestError,
  QuotaExceededError,
  StorageFullError,
} from '@mtc/blobs/core'
import { type ErrorInfo, errorTable } from '@mtc/p2pnode/errors'

export {
  BlobError,
  BlobNotFoundError,
  BlobTooLargeError,
  DigestMismatchError,
  InvalidDigestError,
  QuotaExceededError,
  StorageFullError,
} from '@mtc/blobs/core'

export type { ErrorInfo } from '@mtc/p2pnode/errors'

export const ERRORS = [
  {
    code: 'ERR_INVALID_NAME',
    name: 'InvalidNameError',
    message: 'Invalid service name',
    meaning: 'The service name is not a DNS label: [a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?',
  },
  {
    code: 'ERR_INVALID_REFERENCE',
    name: 'InvalidReferenceError',
    message: 'Invalid image reference',
    meaning: 'The image reference is not repo[:tag][@sha256:<64 hex>]',
  },
  {
    code: 'ERR_INVALID_RECORD',
    name: 'InvalidRecordError',
    message: 'Invalid service record',
    meaning: 'A record field is missing, of the wrong type, or out of range',
  },
  {
    code: 'ERR_UNKNOWN_SERVICE',
    name: 'NotFoundError',
    message: 'Unknown service',
    meaning: 'No record exists under this service name',
  },
  {
    code: 'ERR_VERSION_CONFLICT',
    name: 'ConflictError',
    message: 'Service record version conflict',
    meaning: 'The record changed since the version the writer expected; read it again and retry',
  },
  {
    code: 'ERR_REGISTRY_UNAVAILABLE',
    name: 'RegistryUnavailableError',
    message: 'Service registry (etcd) unavailable',
    meaning: 'etcd did not answer in time; the operation may be retried later',
  },
  {
    code: 'ERR_ETCD_START_FAILED',
    name: 'EtcdStartError',
    message: 'Local etcd failed to start',
    meaning: 'The supervised etcd exited or did not become healthy in time; see its log',
  },
  {
    code: 'ERR_INVALID_TARBALL',
    name: 'InvalidTarballError',
    message: 'Invalid image tarball',
    meaning:
      'The upload is not a readable docker save tarball, or its contents do not match their digests',
  },
  {
    code: 'ERR_IMAGE_MISMATCH',
    name: 'ImageMismatchError',
    message: 'Tarball does not contain the named image',
    meaning: 'No image in the tarball has the tag or image ID the reference names',
  },
  {
    code: 'ERR_FORBIDDEN',
    name: 'ForbiddenError',
    message: 'Not a writer',
    meaning: 'hl-service was started with --writer and the requesting peer is not one',
  },
  ...BLOB_ERRORS,
] as const satisfies readonly ErrorInfo[]

export type ErrorCode = (typeof ERRORS)[number]['code']

/** Base of this package's own errors; `code` is one of `ERRORS`. */
export abstract class HashLookupError extends Error {
  abstract readonly code: ErrorCode
}

/** Any error hl-service reports: its own, or the blob layer's. */
export type RegistryError = HashLookupError | BlobError

export class InvalidNameError extends HashLookupError {
  static readonly code = 'ERR_INVALID_NAME'
  override readonly name = 'InvalidNameError'
  readonly code = InvalidNameError.code
  constructor(message = defaultMessage('ERR_INVALID_NAME'), options?: ErrorOptions) {
    super(message, options)
  }
}

export class InvalidReferenceError extends HashLookupError {
  static readonly code = 'ERR_INVALID_REFERENCE'
  override readonly name = 'InvalidReferenceError'
  readonly code = InvalidReferenceError.code
  constructor(message = defaultMessage('ERR_INVALID_REFERENCE'), options?: ErrorOptions) {
    super(message, options)
  }
}

export class InvalidRecordError extends HashLookupError {
  static readonly code = 'ERR_INVALID_RECORD'
  override readonly name = 'InvalidRecordError'
  readonly code = InvalidRecordError.code
  constructor(message = defaultMessage('ERR_INVALID_RECORD'), options?: ErrorOptions) {
    super(message, options)
  }
}

export class NotFoundError extends HashLookupError {
  static readonly code = 'ERR_UNKNOWN_SERVICE'
  override readonly name = 'NotFoundError'
  readonly code = NotFoundError.code
  constructor(message = defaultMessage('ERR_UNKNOWN_SERVICE'), options?: ErrorOptions) {
    super(message, options)
  }
}

export class ConflictError extends HashLookupError {
  static readonly code = 'ERR_VERSION_CONFLICT'
  override readonly name = 'ConflictError'
  readonly code = ConflictError.code
  constructor(message = defaultMessage('ERR_VERSION_CONFLICT'), options?: ErrorOptions) {
    super(message, options)
  }
}

export class RegistryUnavailableError extends HashLookupError {
  static readonly code = 'ERR_REGISTRY_UNAVAILABLE'
  override readonly name = 'RegistryUnavailableError'
  readonly code = RegistryUnavailableError.code
  constructor(message = defaultMessage('ERR_REGISTRY_UNAVAILABLE'), options?: ErrorOptions) {
    super(message, options)
  }
}

export class EtcdStartError extends HashLookupError {
  static readonly code = 'ERR_ETCD_START_FAILED'
  override readonly name = 'EtcdStartError'
  readonly code = EtcdStartError.code
  constructor(message = defaultMessage('ERR_ETCD_START_FAILED'), options?: ErrorOptions) {
    super(message, options)
  }
}

export class InvalidTarballError extends HashLookupError {
  static readonly code = 'ERR_INVALID_TARBALL'
  override readonly name = 'InvalidTarballError'
  readonly code = InvalidTarballError.code
  constructor(message = defaultMessage('ERR_INVALID_TARBALL'), options?: ErrorOptions) {
    super(message, options)
  }
}

export class ImageMismatchError extends HashLookupError {
  static readonly code = 'ERR_IMAGE_MISMATCH'
  override readonly name = 'ImageMismatchError'
  readonly code = ImageMismatchError.code
  constructor(message = defaultMessage('ERR_IMAGE_MISMATCH'), options?: ErrorOptions) {
    super(message, options)
  }
}

export class ForbiddenError extends HashLookupError {
  static readonly code = 'ERR_FORBIDDEN'
  override readonly name = 'ForbiddenError'
  readonly code = ForbiddenError.code
  constructor(message = defaultMessage('ERR_FORBIDDEN'), options?: ErrorOptions) {
    super(message, options)
  }
}

const TABLE = errorTable<typeof ERRORS, RegistryError>(ERRORS, {
  ERR_INVALID_NAME: InvalidNameError,
  ERR_INVALID_REFERENCE: InvalidReferenceError,
  ERR_INVALID_RECORD: InvalidRecordError,
  ERR_UNKNOWN_SERVICE: NotFoundError,
  ERR_VERSION_CONFLICT: ConflictError,
  ERR_REGISTRY_UNAVAILABLE: RegistryUnavailableError,
  ERR_ETCD_START_FAILED: EtcdStartError,
  ERR_INVALID_TARBALL: InvalidTarballError,
  ERR_IMAGE_MISMATCH: ImageMismatchError,
  ERR_FORBIDDEN: ForbiddenError,
  ERR_INVALID_DIGEST: InvalidDigestError,
  ERR_BLOB_TOO_LARGE: BlobTooLargeError,
  ERR_DIGEST_MISMATCH: DigestMismatchError,
  ERR_UNKNOWN_BLOB: BlobNotFoundError,
  ERR_STORAGE_FULL: StorageFullError,
  ERR_QUOTA_EXCEEDED: QuotaExceededError,
})

function defaultMessage(code: ErrorCode): string {
  return TABLE.defaultMessage(code)
}

/** Whether `code` is one of ERRORS. */
export const isErrorCode = TABLE.isCode
/** Rebuilds the typed error a peer reported as `{ code, message }`. */
export const errorFromCode = TABLE.fromCode
