/**
 * `@mtc/blobs/core`: digests, errors and limits — what validating a name or rebuilding a
 * peer's error needs, without the overlay (the root also serves and fetches blobs).
 */
export * from './constants.ts'
export * from './digest.ts'
export * from './errors.ts'
