import { disable, enable } from '@libp2p/logger'
import type { LogLevel } from './node-config.ts'

/**
 * Maps `--log-level` onto the debug namespaces of @libp2p/logger (stderr). mtc modules
 * log through component loggers named `mtc:<module>`; DEBUG adds namespaces on top.
 */
export function configureLogging(level: LogLevel, extra = process.env.DEBUG ?? ''): void {
  const namespaces: Record<LogLevel, string> = {
    silent: '',
    error: 'mtc:*:error',
    info: 'mtc:*,-mtc:*:trace',
    debug: 'mtc:*,-mtc:*:trace,libp2p:*:error',
    trace: 'mtc:*,libp2p:*',
  }
  const ns = [namespaces[level], extra].filter((s) => s !== '').join(',')
  if (ns === '') disable()
  else enable(ns)
}
