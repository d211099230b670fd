/**
 * Limits and defaults of the blob layer, with where the numbers came from. The README's
 * limits table lists the same names.
 */

/**
 * Default cap on a stored blob. Application images are 100 MB to 1 GB as `docker save`
 * tarballs; operators with larger images raise it.
 */
export const DEFAULT_MAX_BLOB_BYTES = 2 * 1024 * 1024 * 1024
