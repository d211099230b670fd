/**
 * Content-addressed blobs (image tarballs): the disk store, serving and fetching them over
 * the overlay (BLOB_GET), digest checks, and their errors. hl-service stores uploads with
 * it; allocators fetch, keep and serve the tarballs they load.
 */
export * from './core.ts'
export * from './fetch.ts'
export * from './protocol.ts'
export * from './serve.ts'
export * from './store.ts'
