/**
 * Longest an allocation may take end to end: fetching a 1 GB image over the overlay at
 * ~60 MB/s plus `docker load` and the instance's start fit in two minutes.
 */
export const ALLOCATION_TIMEOUT_MS = 120_000
