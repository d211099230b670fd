/**
 * hl-cli's exit codes: the one table the README lists. An error from hl-service maps by
 * its code; anything else refused by the service is 1.
 */
export const EXIT_CODES = [
  { exit: 0, code: 'OK', meaning: 'done' },
  {
    exit: 1,
    code: 'ERR_*',
    meaning:
      'refused by hl-service (invalid tarball, image mismatch, not a writer, too large...) or failed',
  },
  { exit: 2, code: 'ERR_USAGE', meaning: 'bad command line' },
  { exit: 3, code: 'ERR_UNKNOWN_SERVICE', meaning: 'no such service' },
  { exit: 4, code: 'ERR_VERSION_CONFLICT', meaning: 'the record changed since the version given' },
  {
    exit: 5,
    code: 'ERR_REGISTRY_UNAVAILABLE',
    meaning: 'no hl-service reachable, or its etcd is down',
  },
  {
    exit: 6,
    code: 'ERR_STORAGE_FULL',
    meaning: "hl-service's disk is full: the tarball was discarded; free space or delete services",
  },
  {
    exit: 6,
    code: 'ERR_QUOTA_EXCEEDED',
    meaning: "the tarball does not fit in hl-service's --max-storage; delete services or raise it",
  },
  {
    exit: 7,
    code: 'ERR_ROLLOUT_FAILED',
    meaning: "rollout status: the new version's instances never got ready; the old ones serve",
  },
] as const

export function exitCodeFor(code: string | undefined): number {
  return EXIT_CODES.find((e) => e.code === code)?.exit ?? 1
}
