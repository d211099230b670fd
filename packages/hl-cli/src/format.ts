import { type ServiceRecord, scalingOf } from '@mtc/hash-lookup/core'

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB']
  let i = 0
  let v = n
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024
    i++
  }
  return i === 0 ? `${n} B` : `${v.toFixed(1)} ${units[i]}`
}

const short = (id: string) => id.replace(/^sha256:/, '').slice(0, 12)
const rtt = (ms?: number) => (ms == null ? '-' : `${ms}ms`)

/** `hl-cli get`: one field per line. */
export function formatRecord(r: ServiceRecord): string {
  const lines: Array<[string, string]> = [
    ['name', r.name],
    ['image', r.image],
    ['image id', r.imageId],
    ['tarball', r.blob != null ? `${r.blob.digest} (${formatBytes(r.blob.size)})` : '-'],
    ['soft rtt', rtt(r.perf.softRttMs)],
    ['hard rtt', rtt(r.perf.hardRttMs)],
  ]
  if (r.perf.cpus != null) lines.push(['cpus', String(r.perf.cpus)])
  if (r.perf.memoryBytes != null) lines.push(['memory', formatBytes(r.perf.memoryBytes)])
  const scaling = scalingOf(r)
  lines.push(
    ['concurrency', String(scaling.concurrency)],
    ['instances', `${scaling.minInstances} to ${scaling.maxInstances}`],
  )
  if (r.healthPath != null) {
    const every = r.healthIntervalMs != null ? ` every ${r.healthIntervalMs}ms` : ''
    const after = r.healthThreshold != null ? `, ${r.healthThreshold} failures` : ''
    lines.push(['health', `GET ${r.healthPath}${every}${after}`])
  }
  lines.push(['version', String(r.version)], ['created', r.createdAt], ['updated', r.updatedAt])
  return `${lines.map(([k, v]) => `${k.padEnd(11)} ${v}`).join('\n')}\n`
}

/** `hl-cli list`: a table. */
export function formatTable(records: ServiceRecord[]): string {
  const rows = [
    ['NAME', 'IMAGE', 'IMAGE ID', 'TARBALL', 'SOFT/HARD RTT', 'UPDATED'],
    ...records.map((r) => [
      r.name,
      r.image,
      short(r.imageId),
      r.blob != null ? formatBytes(r.blob.size) : '-',
      `${rtt(r.perf.softRttMs)}/${rtt(r.perf.hardRttMs)}`,
      r.updatedAt,
    ]),
  ]
  const widths = rows[0].map((_, i) => Math.max(...rows.map((row) => row[i].length)))
  return `${rows
    .map((row) =>
      row
        .map((c, i) => c.padEnd(widths[i]))
        .join('  ')
        .trimEnd(),
    )
    .join('\n')}\n`
}

/** A one-line progress bar for uploads on a terminal, redrawn at most 10 times a second. */
export function progressBar(total: number, write: (s: string) => void): (sent: number) => void {
  const started = performance.now()
  let last = 0
  return (sent) => {
    const now = performance.now()
    if (now - last < 100 && sent < total) return
    last = now
    const frac = total > 0 ? sent / total : 1
    const width = 30
    const bar = '#'.repeat(Math.round(frac * width)).padEnd(width, '.')
    const rate = sent / Math.max(0.001, (now - started) / 1000)
    write(
      `\r[${bar}] ${(frac * 100).toFixed(0).padStart(3)}% ${formatBytes(sent)}/${formatBytes(total)} ${formatBytes(rate)}/s`,
    )
    if (sent >= total) write('\n')
  }
}

/** `hl-cli history`: one line per version, the current one first. */
export function formatHistory(records: ServiceRecord[]): string {
  const rows = [
    ['VERSION', 'IMAGE', 'IMAGE ID', 'UPDATED', ''],
    ...records.map((r, i) => [
      String(r.version),
      r.image,
      short(r.imageId),
      r.updatedAt,
      i === 0 ? 'current' : '',
    ]),
  ]
  const widths = rows[0].map((_, i) => Math.max(...rows.map((row) => row[i].length)))
  return `${rows
    .map((row) =>
      row
        .map((c, i) => c.padEnd(widths[i]))
        .join('  ')
        .trimEnd(),
    )
    .join('\n')}\n`
}
