import { UsageError } from '@mtc/p2pnode'

/** `1048576`, `512K`, `500M`, `2G` (powers of 1024) as bytes; a UsageError naming the flag otherwise. */
export function parseByteSize(flag: string, value: string): number {
  const m = /^(\d+)([KMGT])?i?B?$/i.exec(value.trim())
  if (m == null) throw new UsageError(`--${flag}: "${value}" is not a size (e.g. 500M, 2G)`)
  const exp = { K: 1, M: 2, G: 3, T: 4 }[(m[2] ?? '').toUpperCase() as 'K'] ?? 0
  const bytes = Number(m[1]) * 1024 ** exp
  if (!Number.isSafeInteger(bytes) || bytes <= 0)
    throw new UsageError(`--${flag}: "${value}" is out of range`)
  return bytes
}
