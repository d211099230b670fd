import {
  ConflictError,
  NotFoundError,
  QuotaExceededError,
  RegistryUnavailableError,
  StorageFullError,
} from '@mtc/hash-lookup/core'
import { UsageError } from '@mtc/p2pnode/cli'

/**
 * hl-cli's exit codes: the one table the README lists. An error from hl-service maps by
 * its code (imported from the classes that carry it); anything else refused is 1.
 */
export const EXIT_CODES = [
  { exit: 0, code: 'OK', meaning: 'done' },
  {
    exit: 1,
    code: 'ERR_*',
    meaning:
      'refused by hl-service (invalid tarball, image mismatch, not a writer, too large...) or failed',
  },
  { exit: 2, code: UsageError.code, meaning: 'bad command line' },
  { exit: 3, code: NotFoundError.code, meaning: 'no such service' },
  { exit: 4, code: ConflictError.code, meaning: 'the record changed since the version given' },
  {
    exit: 5,
    code: RegistryUnavailableError.code,
    meaning: 'no hl-service reachable, or its etcd is down',
  },
  {
    exit: 6,
    code: StorageFullError.code,
    meaning: "hl-service's disk is full: the tarball was discarded; free space or delete services",
  },
  {
    exit: 6,
    code: QuotaExceededError.code,
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
