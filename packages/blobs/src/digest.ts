/** Blobs are named by the sha256 of their bytes, written `sha256:<64 lowercase hex>`. */
import { InvalidDigestError } from './errors.ts'

const DIGEST = /^sha256:[0-9a-f]{64}$/

export function isDigest(digest: unknown): digest is string {
  return typeof digest === 'string' && DIGEST.test(digest)
}

export function assertDigest(digest: unknown): string {
  if (!isDigest(digest)) {
    throw new InvalidDigestError(`Invalid digest ${JSON.stringify(digest)}`)
  }
  return digest
}
