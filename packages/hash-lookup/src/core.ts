/**
 * `@mtc/hash-lookup/core`: service records, names, errors and limits — what checking a
 * command line or a record needs, without the overlay client (the root) or the daemon.
 */
export * from './constants.ts'
export * from './errors.ts'
export * from './names.ts'
export * from './records.ts'
export * from './scaling.ts'
