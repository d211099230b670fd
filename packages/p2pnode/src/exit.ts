/**
 * Ends a binary with `code` once its main returned: stdout/stderr drain first, and a
 * stray handle cannot keep a stopped daemon alive for more than a second.
 */
export function exitWith(code: number): void {
  process.exitCode = code
  setTimeout(() => process.exit(code), 1000).unref()
}
